#!/usr/bin/env bash
# A real two-node SLURM cluster (controller, two node daemons, accounting) on one machine, for
# fercluster's tests.
#
#   bash slurm/cluster.sh start    # install the packages if missing, start everything, wait for the nodes
#   bash slurm/cluster.sh status   # which daemons run and which nodes answer (exit 0 only if all), then sinfo
#   bash slurm/cluster.sh stop     # end the daemons by the pids in their pid files
#   bash slurm/cluster.sh stop-daemon NAME   # end one (slurmctld, slurmdbd, slurmd@NODE, ...): a fault
#                                  # for the tests; `start` starts again whatever is not running
#
# Runs as root, without systemd (Debian 12, SLURM 22.05). See ../shared/spec/slurm-test-cluster.md.
# Everything the cluster writes (configs, munge key, MariaDB data, spool, logs, pid files) lives
# under one folder, $FERCLUSTER_SLURM_DIR (default /var/lib/fercluster-slurm); it runs its own
# munged and its own MariaDB (on 127.0.0.1:$FERCLUSTER_SLURM_DB_PORT), so it touches neither a
# system munge nor a system database. The one file outside that folder is /etc/slurm/slurm.conf,
# a symbolic link to the generated slurm.conf so that sbatch, squeue, sacct and submitit find the
# cluster without SLURM_CONF (the script refuses to replace a slurm.conf it did not write);
# FERCLUSTER_SLURM_LINK=0 leaves it alone (clients then need SLURM_CONF=$STATE/etc/slurm.conf).
#
# Two nodes on one machine (Debian's SLURM is built with MULTIPLE_SLURMD): one slurmd per node,
# started as `slurmd -N NAME`, each with its own port, pid file, log and spool (`%n` in
# slurm.conf), 2 CPUs and 2 fake GPUs (gres.conf lines per node). The node names must resolve to
# this machine, since DDP's MASTER_ADDR is the job's first node name: the machine's short host
# name and the same in upper case (e.g. `vm` and `VM`; names resolve regardless of case, SLURM's
# node names do not). Where the host name is `localhost` or does not resolve to this machine,
# the cluster has the one node `localhost` (and tests that need two nodes say so).
#
# Settings (environment):
#   FERCLUSTER_SLURM_DIR            state folder (default /var/lib/fercluster-slurm)
#   FERCLUSTER_SLURM_PORT_BASE      slurmctld's port; the first slurmd takes BASE+1, slurmdbd BASE+2,
#                                   further slurmds BASE+3, BASE+4, ... (default 6817: 6817-6820)
#   FERCLUSTER_SLURM_DB_PORT        MariaDB TCP port on 127.0.0.1 (default 3399 + BASE - 6817)
#   FERCLUSTER_SLURM_NODES          node names, space-separated (default: the host name, in lower
#                                   and upper case)
#   FERCLUSTER_SLURM_LINK           1: link /etc/slurm/slurm.conf to this cluster (default); 0: do not
#   FERCLUSTER_SLURM_FIRST_JOB_ID   first SLURM job id (default 1, SLURM's); a second cluster on the
#                                   same machine should start elsewhere, e.g. 5001, so that DDP's
#                                   MASTER_PORT (10000 + job id % 10000) does not collide with the first's
#   FERCLUSTER_SLURM_REQUEUE_DELAY  seconds a requeued job waits before it may start again (default 10)
#   FERCLUSTER_SLURM_TIMEOUT        seconds to wait for each daemon and for the nodes (default 120)
#
# A second cluster beside the default one (its own state, ports and job ids; /etc/slurm untouched):
#   export FERCLUSTER_SLURM_DIR=/var/lib/fercluster-slurm2 FERCLUSTER_SLURM_PORT_BASE=6917 \
#          FERCLUSTER_SLURM_LINK=0 FERCLUSTER_SLURM_FIRST_JOB_ID=5001
#   bash slurm/cluster.sh start && export SLURM_CONF=$FERCLUSTER_SLURM_DIR/etc/slurm.conf
#   ... bash slurm/cluster.sh stop   (with the same variables)
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
PORT_BASE=${FERCLUSTER_SLURM_PORT_BASE:-6817}
[[ $PORT_BASE =~ ^[0-9]+$ ]] && ((PORT_BASE >= 1024 && PORT_BASE <= 65000)) ||
    { echo "cluster.sh: error: FERCLUSTER_SLURM_PORT_BASE: got '$PORT_BASE'; valid: 1024-65000" >&2; exit 2; }
CTLD_PORT=$PORT_BASE
DBD_PORT=$((PORT_BASE + 2))
DB_PORT=${FERCLUSTER_SLURM_DB_PORT:-$((3399 + PORT_BASE - 6817))}
LINK=${FERCLUSTER_SLURM_LINK:-1}
FIRST_JOB_ID=${FERCLUSTER_SLURM_FIRST_JOB_ID:-}
REQUEUE_DELAY=${FERCLUSTER_SLURM_REQUEUE_DELAY:-10}
TIMEOUT=${FERCLUSTER_SLURM_TIMEOUT:-120}
CLUSTER=fercluster
PARTITION=local
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

say() { printf 'cluster.sh: %s\n' "$*"; }
die() { printf 'cluster.sh: error: %s\n' "$*" >&2; exit 1; }

# The node names: FERCLUSTER_SLURM_NODES, else the short host name and the same name in upper case
# (or lower case), two names of this machine: host names resolve regardless of case, and DDP's
# MASTER_ADDR is a node name. SLURM keeps a node named `localhost` to itself (with one, any name
# finds it: "Duplicated NodeHostName"), so `localhost` serves only as the one node of a machine
# whose host name does not resolve to it.
default_nodes() {
    local host twin addr
    host=$(hostname -s 2>/dev/null || true)
    twin=${host^^}
    [[ $twin != "$host" ]] || twin=${host,,}
    addr=$(getent hosts "$host" 2>/dev/null | awk '{print $1; exit}')
    if [[ -n $host && $host != localhost && $twin != "$host" && -n $addr ]] && ip_is_local "$addr"; then
        echo "$host $twin"
    else
        echo "localhost"
    fi
}
ip_is_local() {
    [[ $1 == 127.* || $1 == ::1 ]] && return 0
    command -v ip >/dev/null && ip -o addr show 2>/dev/null | grep -qF " $1/"
}
read -r -a NODES <<<"${FERCLUSTER_SLURM_NODES:-$(default_nodes)}"
((${#NODES[@]} >= 1)) || die "FERCLUSTER_SLURM_NODES is empty"
for n in "${NODES[@]}"; do
    [[ $n =~ ^[A-Za-z][A-Za-z0-9-]*$ ]] || die "node name '$n': letters, digits and '-' only, starting with a letter"
done
# slurmd of node i: BASE+1 for the first, BASE+3, BASE+4, ... for the others (BASE+2 is slurmdbd's).
node_port() { if (($1 == 0)); then echo $((PORT_BASE + 1)); else echo $((PORT_BASE + 2 + $1)); fi; }

DAEMONS=(munged mysqld slurmdbd slurmctld)
for n in "${NODES[@]}"; do DAEMONS+=("slurmd@$n"); done

pid_file() {
    case $1 in
        mysqld) echo "$MYSQL_RUN/mysqld.pid" ;;
        slurmd@*) echo "$RUN/slurmd.${1#slurmd@}.pid" ;;
        *) echo "$RUN/$1.pid" ;;
    esac
}

# Pid of a daemon if its pid file names a live process of that program, else nothing.
# The program name is checked so that a reused pid is never taken for (or killed as) the daemon.
daemon_pid() { pid_from_file "$(pid_file "$1")" "${1%@*}"; }
# pid_from_file FILE PROGRAM: the pid in FILE if it is a live PROGRAM process.
pid_from_file() {
    local file=$1 program=$2 pid comm
    [[ -r $file ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    [[ -n $pid && -d /proc/$pid ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ $comm == "$program"* ]] || return 1   # mysqld may show as mariadbd
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
        slurmd@*) echo "$LOG/slurmd.${1#slurmd@}.log" ;;
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
    local deadline=$((SECONDS + TIMEOUT)) t0=$SECONDS
    while ((SECONDS < deadline)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        # a SLURM daemon that died (e.g. on a fatal config error) will not answer: say so now
        if [[ ${logs[0]:-} == slurm* ]] && ((SECONDS - t0 > 3)) && ! running "${logs[0]}"; then
            printf 'cluster.sh: error: %s did not happen: %s exited\n' "$what" "${logs[0]}" >&2
            show_logs "${logs[@]}"
            exit 1
        fi
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
    mkdir -p "$ETC" "$RUN/munge" "$LOG" "$STATE/munge" "$STATE/spool/ctld" \
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
DbdPort=$DBD_PORT
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

    slurm_conf_text >"$SLURM_CONF_FILE"
    gres_conf_text >"$ETC/gres.conf"
}

slurm_conf_text() {
    local i nodes
    nodes=$(IFS=,; echo "${NODES[*]}")
    cat <<EOF
$MARKER
# Test cluster of ${#NODES[@]} node(s) on one machine; see the comments in slurm/cluster.sh.
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire is also the hold of a requeued job (see cluster.sh).
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=$REQUEUE_DELAY
StateSaveLocation=$STATE/spool/ctld
# One slurmd per node on this machine (MULTIPLE_SLURMD): %n is the node's name.
SlurmdSpoolDir=$STATE/spool/d.%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.%n.log
SlurmctldPort=$CTLD_PORT
SlurmdPort=$(node_port 0)
EOF
    [[ -z $FIRST_JOB_ID ]] || echo "FirstJobId=$FIRST_JOB_ID"
    cat <<EOF
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
# The nodes are what this file says, whatever the machine (a CI runner may have less memory,
# and the nodes share its cores).
SlurmdParameters=config_overrides
KillWait=5
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
# For connections to slurmdbd the munge socket comes from here, not from AuthInfo.
AccountingStoragePass=socket=$MUNGE_SOCKET
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
GresTypes=gpu
EOF
    for i in "${!NODES[@]}"; do
        echo "NodeName=${NODES[i]} NodeHostname=localhost NodeAddr=127.0.0.1 Port=$(node_port "$i") CPUs=2 RealMemory=8000 Gres=gpu:2 State=UNKNOWN"
    done
    echo "PartitionName=$PARTITION Nodes=$nodes Default=YES MaxTime=INFINITE State=UP"
}

# Two fake GPUs per node: requests are scheduled and CUDA_VISIBLE_DEVICES is set as on a GPU node.
gres_conf_text() {
    local n
    printf '%s\nAutoDetect=off\n' "$MARKER"
    for n in "${NODES[@]}"; do
        printf 'NodeName=%s Name=gpu File=/dev/null\nNodeName=%s Name=gpu File=/dev/zero\n' "$n" "$n"
    done
}

# A running cluster keeps the configuration it started with: starting it again with other
# settings (nodes, ports) would leave daemons and files disagreeing. Stop it first.
check_running_config() {
    running slurmctld || return 0
    local f=$SLURM_CONF_FILE
    if [[ ! -r $f ]] || ! diff -q <(slurm_conf_text) "$f" >/dev/null ||
        ! diff -q <(gres_conf_text) "$ETC/gres.conf" >/dev/null; then
        die "the cluster in $STATE runs with another configuration than these settings would write ($f); stop it first (bash slurm/cluster.sh stop, with the same FERCLUSTER_SLURM_* variables), then start it"
    fi
}

# /etc/slurm/slurm.conf -> our slurm.conf, so that clients find the cluster without SLURM_CONF.
link_client_config() {
    local target=/etc/slurm/slurm.conf
    if [[ $LINK == 0 ]]; then
        [[ $(readlink "$target" 2>/dev/null) == "$SLURM_CONF_FILE" ]] ||
            say "clients find this cluster with: export SLURM_CONF=$SLURM_CONF_FILE"
        return 0
    fi
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

start_slurmd() {  # start_slurmd NODE
    running "slurmd@$1" && return 0
    mkdir -p "$STATE/spool/d.$1"
    slurmd -f "$SLURM_CONF_FILE" -N "$1" 9>&- </dev/null >>"$LOG/slurmd.$1.log" 2>&1 ||
        { show_logs "slurmd@$1"; die "slurmd of node $1 did not start"; }
}

# sinfo's state of a node ("idle", "idle*" when its slurmd does not answer, ...); empty if unknown.
node_state() { sinfo -h -N -n "$1" -o %T 2>/dev/null | head -n 1; }
node_usable() { [[ $(node_state "$1") =~ ^(idle|mixed|allocated|completing)$ ]]; }
all_nodes_usable() {
    local n
    for n in "${NODES[@]}"; do node_usable "$n" || return 1; done
}
nodes_summary() {
    local n out=()
    for n in "${NODES[@]}"; do out+=("$n ($(node_state "$n"))"); done
    (IFS=,; echo "${out[*]}") | sed 's/,/, /g'
}

wait_nodes_idle() {
    local n state="" deadline=$((SECONDS + TIMEOUT)) resumed=" "
    while ((SECONDS < deadline)); do
        all_nodes_usable && return 0
        for n in "${NODES[@]}"; do
            state=$(node_state "$n" || true)
            case $state in
                drained | draining)
                    # e.g. "Kill task failed" drains a node; on a test cluster, put it back once.
                    if [[ $resumed != *" $n "* ]]; then
                        say "node $n is $state ($(sinfo -h -N -n "$n" -o %E)); resuming it"
                        scontrol update NodeName="$n" State=RESUME || true
                        resumed+="$n "
                    fi
                    ;;
            esac
        done
        sleep 1
    done
    printf 'cluster.sh: error: not every node is idle after %s s (FERCLUSTER_SLURM_TIMEOUT): %s\n' \
        "$TIMEOUT" "$(nodes_summary)" >&2
    sinfo -R >&2 || true
    local logs=(slurmctld slurmdbd)
    for n in "${NODES[@]}"; do logs+=("slurmd@$n"); done
    show_logs "${logs[@]}"
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
    check_running_config
    if all_running && all_nodes_usable; then
        link_client_config
        say "already running (state in $STATE); nodes $(nodes_summary)"
        return 0
    fi
    local t0=$SECONDS n
    write_configs
    link_client_config
    start_munged
    start_mysqld
    start_slurmdbd
    start_slurmctld
    for n in "${NODES[@]}"; do start_slurmd "$n"; done
    wait_nodes_idle
    say "started in $((SECONDS - t0)) s: cluster $CLUSTER, partition $PARTITION, nodes $(nodes_summary), slurmctld on port $CTLD_PORT, state in $STATE"
}

stop_daemon() {
    local pid
    pid=$(daemon_pid_any "$1") || { say "$1: not running"; return 0; }
    stop_pid "$1" "$pid"
}

stop_pid() {  # stop_pid NAME PID: SIGTERM, then SIGKILL after 30 s
    local d=$1 pid=$2 i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        [[ -d /proc/$pid ]] || { say "$d: stopped (pid $pid)"; return 0; }
        sleep 0.1
    done
    say "$d: still running 30 s after SIGTERM, sending SIGKILL (pid $pid)"
    kill -KILL "$pid" 2>/dev/null || true
}

cmd_stop() {
    local i pid f stopped=0
    # Every slurmd with a pid file here, also of nodes no longer in the settings.
    for f in "$RUN"/slurmd.*.pid "$RUN"/slurmd.pid; do
        [[ -e $f ]] || continue
        if pid=$(pid_from_file "$f" slurmd); then
            stop_pid "slurmd ($(basename "$f" .pid))" "$pid"
            stopped=1
        fi
    done
    ((stopped)) || say "slurmd: not running"
    for ((i = 3; i >= 0; i--)); do stop_daemon "${DAEMONS[i]}"; done   # slurmctld ... munged
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
    local d pid n state all=0
    for d in "${DAEMONS[@]}"; do
        if pid=$(daemon_pid_any "$d"); then
            printf '%-16s running (pid %s)\n' "$d" "$pid"
        else
            printf '%-16s stopped\n' "$d"
            all=3
        fi
    done
    echo "state: $STATE, slurmctld port $CTLD_PORT, SLURM_CONF=$SLURM_CONF_FILE"
    if running slurmctld && scontrol ping >/dev/null 2>&1; then
        for n in "${NODES[@]}"; do
            state=$(node_state "$n")
            if node_usable "$n"; then
                printf 'node %-10s answers (%s)\n' "$n" "$state"
            else
                printf 'node %-10s does not answer (%s)\n' "$n" "${state:-unknown to slurmctld}"
                all=3
            fi
        done
        sinfo -N || true
    else
        echo "slurmctld does not answer: no node state"
        all=3
    fi
    return $all
}

# One daemon, by its pid file (tests inject a fault with it; `start` brings it back).
cmd_stop_daemon() {
    local name=${1:-} d
    for d in "${DAEMONS[@]}"; do
        if [[ $d == "$name" ]]; then
            stop_daemon "$d"
            return 0
        fi
    done
    die "stop-daemon: got '$name'; valid: ${DAEMONS[*]}"
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    stop-daemon) cmd_stop_daemon "${2:-}" ;;
    *)
        echo "usage: bash slurm/cluster.sh start|stop|status|stop-daemon NAME" >&2
        exit 2
        ;;
esac
