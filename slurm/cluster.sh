#!/usr/bin/env bash
# A real single-node SLURM cluster (controller, node daemon, accounting) for fercluster's tests.
#
#   bash slurm/cluster.sh start    # install the packages if missing, start everything, wait for the node
#   bash slurm/cluster.sh status   # which daemons run (exit 0 only if all do), then sinfo
#   bash slurm/cluster.sh stop     # end the daemons by the pids in their pid files
#
# Runs as root, without systemd (Debian 12, SLURM 22.05). See ../shared/spec/slurm-test-cluster.md.
# Everything the cluster writes (configs, munge key, MariaDB data, spool, logs, pid files) lives
# under one folder, $FERCLUSTER_SLURM_DIR (default /var/lib/fercluster-slurm); it runs its own
# munged and its own MariaDB (on 127.0.0.1:$FERCLUSTER_SLURM_DB_PORT), so it touches neither a
# system munge nor a system database. The one file outside that folder is /etc/slurm/slurm.conf,
# a symbolic link to the generated slurm.conf so that sbatch, squeue, sacct and submitit find the
# cluster without SLURM_CONF (the script refuses to replace a slurm.conf it did not write).
#
# Settings (environment):
#   FERCLUSTER_SLURM_DIR            state folder (default /var/lib/fercluster-slurm)
#   FERCLUSTER_SLURM_DB_PORT        MariaDB TCP port on 127.0.0.1 (default 3399)
#   FERCLUSTER_SLURM_REQUEUE_DELAY  seconds a requeued job waits before it may start again (default 10)
#   FERCLUSTER_SLURM_TIMEOUT        seconds to wait for each daemon and for the node (default 120)
#
# The requeue hold. After `scontrol requeue`, SLURM gives the job a begin time of now +
# cred_expire + 1 s (the job step credential lifetime, AuthInfo=cred_expire, default 120 s, minimum
# 5 s; slurm.conf(5): "This also controls how long a requeued job must wait before starting
# again"), so that the old credential has expired before the job runs again. Once eligible, the
# pending job is only looked at again by the periodic schedulers (main loop sched_interval, default
# 60 s; backfill bf_interval, default 30 s); a job that ignores SIGTERM (submitit does) also lives
# KillWait (default 30 s) before SIGKILL. Together that is the ~2.5 minutes seen with the defaults.
# Here: cred_expire=$FERCLUSTER_SLURM_REQUEUE_DELAY (10 s), sched_interval=2, bf_interval=2 and
# KillWait=5. Measured: a running job that ignores SIGTERM, requeued with `scontrol requeue`, runs
# again 16 s later (5 s KillWait, then the 11 s hold). A lower cred_expire also means a step must
# be launched within that many seconds of its credential being made, which takes well under a
# second on this single machine; raise the delay if slurmd.log says "Credential expired".
set -euo pipefail

STATE=${FERCLUSTER_SLURM_DIR:-/var/lib/fercluster-slurm}
DB_PORT=${FERCLUSTER_SLURM_DB_PORT:-3399}
REQUEUE_DELAY=${FERCLUSTER_SLURM_REQUEUE_DELAY:-10}
TIMEOUT=${FERCLUSTER_SLURM_TIMEOUT:-120}
CLUSTER=fercluster
PARTITION=local
NODE=localhost
PACKAGES=(munge slurm-wlm slurmdbd mariadb-server)
MARKER="# Written by fercluster slurm/cluster.sh"

ETC=$STATE/etc
RUN=$STATE/run
LOG=$STATE/log
MYSQL_RUN=$STATE/mysqld        # socket and pid file of MariaDB, owned by mysql
MYSQL_DATA=$STATE/mysql
MUNGE_SOCKET=$RUN/munge/munge.socket.2
SLURM_CONF_FILE=$ETC/slurm.conf
export SLURM_CONF=$SLURM_CONF_FILE   # the daemons and this script's clients read our config

DAEMONS=(munged mysqld slurmdbd slurmctld slurmd)

say() { printf 'cluster.sh: %s\n' "$*"; }
die() { printf 'cluster.sh: error: %s\n' "$*" >&2; exit 1; }

pid_file() {
    case $1 in
        mysqld) echo "$MYSQL_RUN/mysqld.pid" ;;
        *) echo "$RUN/$1.pid" ;;
    esac
}

# Pid of a daemon if its pid file names a live process of that program, else nothing.
# The program name is checked so that a reused pid is never taken for (or killed as) the daemon.
daemon_pid() {
    local file pid comm
    file=$(pid_file "$1")
    [[ -r $file ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    [[ -n $pid && -d /proc/$pid ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ $comm == "$1"* ]] || return 1   # mysqld may show as mariadbd
    echo "$pid"
}
daemon_pid_any() { daemon_pid "$1" 2>/dev/null || { [[ $1 == mysqld ]] && daemon_pid_mariadb; }; }
daemon_pid_mariadb() {
    local file=$MYSQL_RUN/mysqld.pid pid
    [[ -r $file ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    [[ -n $pid && -d /proc/$pid ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == mariadbd ]] || return 1
    echo "$pid"
}
running() { daemon_pid_any "$1" >/dev/null; }

log_file() {
    case $1 in
        munged) echo "$LOG/munged.log" ;;
        mysqld) echo "$LOG/mysqld.log" ;;
        *) echo "$LOG/$1.log" ;;
    esac
}

show_logs() {
    local d f
    for d in "$@"; do
        f=$(log_file "$d")
        [[ -s $f ]] || continue
        printf '\n--- last lines of %s ---\n' "$f" >&2
        tail -n 25 "$f" >&2
    done
}

# wait_for DESCRIPTION DAEMON-LOGS... -- COMMAND...: poll COMMAND once a second up to TIMEOUT.
wait_for() {
    local what=$1 logs=()
    shift
    while [[ $1 != -- ]]; do logs+=("$1"); shift; done
    shift
    local deadline=$((SECONDS + TIMEOUT))
    while ((SECONDS < deadline)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 1
    done
    printf 'cluster.sh: error: %s did not happen within %s s (FERCLUSTER_SLURM_TIMEOUT)\n' \
        "$what" "$TIMEOUT" >&2
    show_logs "${logs[@]}"
    exit 1
}

ensure_packages() {
    local missing=0 c
    for c in munged mungekey mysqld_safe mariadb-install-db slurmdbd slurmctld slurmd sacctmgr sinfo; do
        command -v "$c" >/dev/null 2>&1 || missing=1
    done
    ((missing)) || return 0
    command -v apt-get >/dev/null || die "SLURM packages missing and no apt-get: install ${PACKAGES[*]}"
    say "installing ${PACKAGES[*]} (apt-get)"
    # No init scripts during the install: this script runs its own munged and MariaDB.
    local policy=/usr/sbin/policy-rc.d own_policy=0 rc=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1
    fi
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${PACKAGES[@]}"; } || rc=$?
    if ((own_policy)); then rm -f "$policy"; fi
    ((rc == 0)) || die "apt-get install ${PACKAGES[*]} failed (exit $rc)"
}

write_configs() {
    mkdir -p "$ETC" "$RUN/munge" "$LOG" "$STATE/munge" "$STATE/spool/ctld" "$STATE/spool/d" \
        "$MYSQL_RUN" "$MYSQL_DATA"
    chmod 755 "$STATE" "$RUN" "$RUN/munge"
    chmod 700 "$STATE/munge"
    chown mysql:mysql "$MYSQL_RUN" "$MYSQL_DATA"
    touch "$LOG/mysqld.log"
    chown mysql:mysql "$LOG/mysqld.log"

    if [[ ! -s $STATE/munge/munge.key ]]; then
        (umask 077 && dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none)
    fi
    if [[ ! -s $ETC/db.pass ]]; then
        (umask 077 && head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$ETC/db.pass")
    fi

    cat >"$ETC/my.cnf" <<EOF
$MARKER
[mysqld]
user=mysql
datadir=$MYSQL_DATA
socket=$MYSQL_RUN/mysqld.sock
pid-file=$MYSQL_RUN/mysqld.pid
log-error=$LOG/mysqld.log
port=$DB_PORT
bind-address=127.0.0.1
skip-name-resolve
innodb_buffer_pool_size=64M
innodb_lock_wait_timeout=900
[client]
socket=$MYSQL_RUN/mysqld.sock
EOF

    (umask 077 && cat >"$ETC/slurmdbd.conf" <<EOF
$MARKER
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(cat "$ETC/db.pass")
StorageLoc=slurm_acct_db
EOF
    )
    chmod 600 "$ETC/slurmdbd.conf"

    cat >"$SLURM_CONF_FILE" <<EOF
$MARKER
# Single-node test cluster; see the comments in slurm/cluster.sh.
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire is also the hold of a requeued job (see cluster.sh).
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=$REQUEUE_DELAY
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
# No cgroups in these machines.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job without --mem takes the whole node and jobs run one at a time.
DefMemPerCPU=1000
# Finished jobs stay visible to squeue/scontrol for a day (0 is refused and becomes 2 s).
MinJobAge=86400
ReturnToService=2
# The node is what this file says, whatever the machine (a CI runner may have less memory).
SlurmdParameters=config_overrides
KillWait=5
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
# For connections to slurmdbd the munge socket comes from here, not from AuthInfo.
AccountingStoragePass=socket=$MUNGE_SOCKET
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
GresTypes=gpu
NodeName=$NODE CPUs=2 RealMemory=8000 Gres=gpu:2 State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

    # Two fake GPUs: requests are scheduled and CUDA_VISIBLE_DEVICES is set as on a GPU node.
    cat >"$ETC/gres.conf" <<EOF
$MARKER
AutoDetect=off
NodeName=$NODE Name=gpu File=/dev/null
NodeName=$NODE Name=gpu File=/dev/zero
EOF
}

# /etc/slurm/slurm.conf -> our slurm.conf, so that clients find the cluster without SLURM_CONF.
link_client_config() {
    local target=/etc/slurm/slurm.conf
    mkdir -p /etc/slurm
    if [[ -L $target ]]; then
        [[ $(readlink "$target") == "$SLURM_CONF_FILE" ]] && return 0
        grep -qF "$MARKER" "$target" 2>/dev/null || [[ ! -e $target ]] ||
            die "$target links to $(readlink "$target"), not written by this script; remove it, or use SLURM_CONF=$SLURM_CONF_FILE"
    elif [[ -e $target ]]; then
        grep -qF "$MARKER" "$target" ||
            die "$target exists and was not written by this script; move it away, or use SLURM_CONF=$SLURM_CONF_FILE"
    fi
    ln -sfn "$SLURM_CONF_FILE" "$target"
}

start_munged() {
    running munged && return 0
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    munged --force --socket="$MUNGE_SOCKET" --key-file="$STATE/munge/munge.key" \
        --pid-file="$RUN/munged.pid" --log-file="$LOG/munged.log" \
        --seed-file="$STATE/munge/munged.seed" 9>&- </dev/null >>"$LOG/munged.log" 2>&1 ||
        { show_logs munged; die "munged did not start"; }
    wait_for "munge answering on $MUNGE_SOCKET" munged -- \
        bash -c "munge -n -S '$MUNGE_SOCKET' | unmunge -S '$MUNGE_SOCKET'"
}

sql() { mariadb --defaults-file="$ETC/my.cnf" -u root; }  # SQL on stdin

start_mysqld() {
    if ! running mysqld; then
        # Left behind by a mysqld that was killed (no live process has this pid file).
        rm -f "$MYSQL_RUN/mysqld.sock" "$MYSQL_RUN/mysqld.pid"
        if [[ ! -d $MYSQL_DATA/mysql ]]; then
            say "initialising the accounting database in $MYSQL_DATA"
            mariadb-install-db --defaults-file="$ETC/my.cnf" --user=mysql --skip-test-db \
                --auth-root-authentication-method=socket >>"$LOG/mysqld-install.log" 2>&1 ||
                { show_logs mysqld-install; die "mariadb-install-db failed"; }
        fi
        # mysqld_safe stays in the foreground and restarts mysqld if it crashes: detach it.
        setsid mysqld_safe --defaults-file="$ETC/my.cnf" 9>&- </dev/null >>"$LOG/mysqld_safe.log" 2>&1 &
        echo $! >"$RUN/mysqld_safe.pid"
        wait_for "MariaDB answering on $MYSQL_RUN/mysqld.sock" mysqld mysqld_safe -- \
            mariadb-admin --defaults-file="$ETC/my.cnf" -u root ping
        wait_for "MariaDB pid file" mysqld -- daemon_pid_any mysqld
    fi
    local pass
    pass=$(cat "$ETC/db.pass")
    sql <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$pass';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
EOF
}

start_slurmdbd() {
    if ! running slurmdbd; then
        slurmdbd 9>&- </dev/null >>"$LOG/slurmdbd.log" 2>&1 || { show_logs slurmdbd; die "slurmdbd did not start"; }
    fi
    wait_for "slurmdbd answering" slurmdbd mysqld -- sacctmgr -n list cluster
    if [[ -z $(sacctmgr -n -P list cluster "$CLUSTER" format=cluster) ]]; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster $CLUSTER failed"
    fi
}

start_slurmctld() {
    running slurmctld && return 0
    slurmctld -f "$SLURM_CONF_FILE" 9>&- </dev/null >>"$LOG/slurmctld.log" 2>&1 ||
        { show_logs slurmctld; die "slurmctld did not start"; }
    wait_for "slurmctld answering" slurmctld slurmdbd -- scontrol ping
}

start_slurmd() {
    running slurmd && return 0
    slurmd -f "$SLURM_CONF_FILE" -N "$NODE" 9>&- </dev/null >>"$LOG/slurmd.log" 2>&1 ||
        { show_logs slurmd; die "slurmd did not start"; }
}

node_state() { sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n 1; }

wait_node_idle() {
    local state="" deadline=$((SECONDS + TIMEOUT)) resumed=0
    while ((SECONDS < deadline)); do
        state=$(node_state || true)
        case $state in
            idle | mixed | allocated | completing) return 0 ;;
            drained | draining)
                # e.g. "Kill task failed" drains the node; on a test cluster, put it back once.
                if ((!resumed)); then
                    say "node $NODE is $state ($(sinfo -h -N -n "$NODE" -o %E)); resuming it"
                    scontrol update NodeName="$NODE" State=RESUME || true
                    resumed=1
                fi
                ;;
        esac
        sleep 1
    done
    printf 'cluster.sh: error: node %s is %s, not idle, after %s s (FERCLUSTER_SLURM_TIMEOUT)\n' \
        "$NODE" "${state:-unknown}" "$TIMEOUT" >&2
    sinfo -R >&2 || true
    show_logs slurmctld slurmd slurmdbd
    exit 1
}

all_running() {
    local d
    for d in "${DAEMONS[@]}"; do running "$d" || return 1; done
}

cmd_start() {
    [[ $(id -u) == 0 ]] || die "run as root (the test cluster's daemons and jobs run as root)"
    ensure_packages
    mkdir -p "$STATE"
    # Serialise concurrent starts; every daemon is started with 9>&- so none inherits the lock.
    exec 9>"$STATE/.lock"
    flock -w "$TIMEOUT" 9 || die "another cluster.sh holds $STATE/.lock"
    if all_running && [[ $(node_state) =~ ^(idle|mixed|allocated|completing)$ ]]; then
        link_client_config
        say "already running (state in $STATE); node $NODE is $(node_state)"
        return 0
    fi
    local t0=$SECONDS
    write_configs
    link_client_config
    start_munged
    start_mysqld
    start_slurmdbd
    start_slurmctld
    start_slurmd
    wait_node_idle
    say "started in $((SECONDS - t0)) s: cluster $CLUSTER, partition $PARTITION, node $NODE ($(node_state)), state in $STATE"
}

stop_daemon() {
    local d=$1 pid i
    pid=$(daemon_pid_any "$d") || { say "$d: not running"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        [[ -d /proc/$pid ]] || { say "$d: stopped (pid $pid)"; return 0; }
        sleep 0.1
    done
    say "$d: still running 30 s after SIGTERM, sending SIGKILL (pid $pid)"
    kill -KILL "$pid" 2>/dev/null || true
}

cmd_stop() {
    local d i pid
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do stop_daemon "${DAEMONS[i]}"; done
    # mysqld_safe ends by itself after a clean mysqld shutdown; wait for it (by its own pid file).
    if [[ -r $RUN/mysqld_safe.pid ]]; then
        pid=$(tr -dc '0-9' <"$RUN/mysqld_safe.pid")
        for ((i = 0; i < 100; i++)); do
            [[ -n $pid && -d /proc/$pid && $(cat "/proc/$pid/comm" 2>/dev/null) == mysqld_safe ]] || break
            sleep 0.1
        done
    fi
}

cmd_status() {
    local d pid all=0
    for d in "${DAEMONS[@]}"; do
        if pid=$(daemon_pid_any "$d"); then
            printf '%-10s running (pid %s)\n' "$d" "$pid"
        else
            printf '%-10s stopped\n' "$d"
            all=3
        fi
    done
    echo "state: $STATE"
    if running slurmctld; then sinfo || true; fi
    return $all
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *)
        echo "usage: bash slurm/cluster.sh start|stop|status" >&2
        exit 2
        ;;
esac
