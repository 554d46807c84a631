"""``fercluster doctor``: what a user checks on the login node before a sweep, one line per check.

Each check is ok, warning or error, with the fix for the last two:

- ``slurm``: ``sinfo`` answers (the controller is reachable);
- ``accounting``: ``sacct`` answers, or accounting is off and ``status`` falls back to
  ``squeue``/``scontrol`` (which forget finished jobs after ``MinJobAge``);
- ``partition``: the config's partition exists and is up (none set: the default partition);
- ``resources``: ``sbatch --test-only`` accepts the sweep's resources (partition, account, qos,
  time, nodes, tasks, CPUs, GPUs, memory, extra flags: the sbatch lines a sweep submits);
- ``gpus``: GPUs per node of the partition (sinfo's Gres) against ``slurm.gpus_per_node``;
- ``data <name>``: a data set's prepared folder or raw data is readable, or it is synthetic;
- ``jobs folder`` / ``results folder``: writable and not world-writable;
- ``node``: one tiny job on a compute node (through submitit, as the sweep; ``--no-job`` skips it)
  reports its Python, torch, CUDA, GPU names and NCCL; versions that differ from this machine's
  are a warning (the job unpickles what this machine pickled).

The SLURM side (commands, sinfo's text) is in ``slurm.preflight``; this module holds the checks
of the config and the report. ``run_doctor`` returns a ``Report``; only the CLI turns its errors
into an exit code.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fercluster.config import Slurm, SweepConfig
from fercluster.orchestration.slurm import preflight

OK, WARNING, ERROR = "ok", "warning", "error"
NODE_TIMEOUT_S = 300  # how long the node's job may wait in the queue and run
COMPARED = ("python", "torch", "cuda", "nccl", "fercluster")  # versions that should agree


@dataclass
class Check:
    name: str
    status: str  # ok, warning, error
    message: str
    fix: str = ""


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    login: dict[str, Any] = field(default_factory=dict)  # this machine's environment
    node: dict[str, Any] | None = None  # the compute node's, when its job ran

    @property
    def errors(self) -> int:
        return sum(c.status == ERROR for c in self.checks)

    @property
    def warnings(self) -> int:
        return sum(c.status == WARNING for c in self.checks)

    def add(self, *checks: Check) -> None:
        self.checks.extend(checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.errors == 0,
            "errors": self.errors,
            "warnings": self.warnings,
            "checks": [asdict(c) for c in self.checks],
            "login": self.login,
            "node": self.node,
        }


def run_doctor(
    cfg: SweepConfig | None, *, job: bool = True, timeout_s: float = NODE_TIMEOUT_S, job_folder: Path | None = None
) -> Report:
    """Every check for ``cfg`` (None: the cluster only, with default resources and no GPU)."""
    report = Report(login=environment())
    slurm = cfg.slurm if cfg is not None else Slurm(gpus_per_node=0)
    nodes = preflight.read_nodes()
    cluster = [_slurm_check(nodes)]
    if isinstance(nodes, list):
        cluster += [
            _accounting_check(),
            _partition_check(slurm, nodes),
            _resources_check(slurm),
            _gpus_check(slurm, nodes),
        ]
    report.add(*cluster)
    if cfg is not None:
        report.add(*data_checks(cfg), *folder_checks(cfg))
    if job and all(c.status != ERROR for c in cluster):
        folder = job_folder or (cfg.jobs_dir / "doctor" if cfg is not None else Path("jobs") / "doctor")
        check, report.node = _node_check(slurm, folder, timeout_s, report.login)
        report.add(check)
    elif job:
        report.add(Check("node", WARNING, "no job submitted: the checks above have errors", "fix them, then run again"))
    return report


# -- SLURM -----------------------------------------------------------------------------------------
def _slurm_check(nodes: list[preflight.NodeLine] | str) -> Check:
    if isinstance(nodes, str):
        return Check(
            "slurm",
            ERROR,
            f"SLURM does not answer: {nodes}",
            "run this on the cluster's login node (or `fercluster sweep CONFIG --local` here); "
            "check the controller with `scontrol ping` and SLURM_CONF",
        )
    parts = sorted({n.partition for n in nodes})
    return Check(
        "slurm",
        OK,
        f"sinfo answers: {len(parts)} partition(s) ({', '.join(parts)}), {len({n.node for n in nodes})} node(s)",
    )


def _accounting_check() -> Check:
    on, detail = preflight.accounting()
    if on:
        return Check("accounting", OK, "sacct answers: `status` reads job states from accounting")
    age = preflight.config_value("MinJobAge")
    return Check(
        "accounting",
        WARNING,
        f"sacct fails ({detail}): `status` falls back to squeue/scontrol, which forget a finished job "
        f"after MinJobAge={age or '?'} s; a job that died without a result is then reported lost (FAILED)",
        "ask the administrators for accounting (slurmdbd), or keep `fercluster status` running while jobs end",
    )


def _partition_check(slurm: Slurm, nodes: list[preflight.NodeLine]) -> Check:
    names = sorted({n.partition for n in nodes})
    default = next((n.partition for n in nodes if n.default), None)
    name = slurm.partition or default
    if name is None:
        return Check(
            "partition",
            ERROR,
            "the config sets no partition and the cluster has no default one",
            f"set slurm.partition to one of: {', '.join(names)}",
        )
    if name not in names:
        return Check(
            "partition",
            ERROR,
            f"partition {name!r} does not exist on this cluster (partitions: {', '.join(names)})",
            f"set slurm.partition to one of: {', '.join(names)}",
        )
    mine = [n for n in nodes if n.partition == name]
    how = "slurm.partition" if slurm.partition else "the default partition (slurm.partition is not set)"
    if not any(n.up for n in mine):
        return Check(
            "partition",
            ERROR,
            f"partition {name!r} ({how}) is down",
            "ask the administrators, or use another partition",
        )
    usable = sum(n.usable for n in mine)
    if usable < slurm.nodes:
        return Check(
            "partition",
            WARNING if usable else ERROR,
            f"partition {name!r} ({how}): {usable} of {len(mine)} node(s) can run jobs now; a job needs slurm.nodes={slurm.nodes}",
            "wait for nodes to come back, or lower slurm.nodes",
        )
    return Check("partition", OK, f"{name!r}, {how}: up, {usable} of {len(mine)} node(s) can run jobs")


def _resources_check(slurm: Slurm) -> Check:
    accepted, text = preflight.test_submit(slurm)
    if accepted:
        return Check("resources", OK, f"sbatch --test-only accepts the sweep's resources: {text}")
    return Check(
        "resources",
        ERROR,
        f"sbatch --test-only refuses the sweep's resources: {text}",
        "fix slurm.partition / account / qos / constraint / time_min / mem_gb / extra in the config "
        "(`sinfo`, `sacctmgr show assoc user=$USER` list what you may use)",
    )


def _gpus_check(slurm: Slurm, nodes: list[preflight.NodeLine]) -> Check:
    name = slurm.partition or next((n.partition for n in nodes if n.default), None)
    mine = [n for n in nodes if n.partition == name]
    if not mine:
        return Check("gpus", WARNING, f"not checked: partition {name!r} is unknown (see the partition line)")
    counts = sorted({n.gpus for n in mine})
    have = f"its nodes have {', '.join(map(str, counts))} GPU(s) ({', '.join(sorted({n.gres for n in mine}))})"
    want = slurm.gpus_per_node
    if want == 0:
        return Check("gpus", OK, f"slurm.gpus_per_node 0: jobs train on the CPU; partition {name!r}: {have}")
    enough = sum(n.gpus >= want for n in mine)
    if enough == 0:
        return Check(
            "gpus",
            ERROR,
            f"slurm.gpus_per_node {want}, but no node of partition {name!r} has that many: {have}",
            f"set slurm.gpus_per_node to at most {max(counts)}, or use a GPU partition",
        )
    if enough < slurm.nodes:
        return Check(
            "gpus",
            ERROR,
            f"slurm.nodes {slurm.nodes} x {want} GPU(s), but only {enough} node(s) of {name!r} have {want}",
            "lower slurm.nodes or slurm.gpus_per_node",
        )
    return Check(
        "gpus", OK, f"slurm.gpus_per_node {want}: {enough} of {len(mine)} node(s) of {name!r} have as many ({have})"
    )


# -- the config's files ----------------------------------------------------------------------------
def data_checks(cfg: SweepConfig) -> list[Check]:
    from fercluster.data.prepared import is_prepared

    out = []
    for name, ds in cfg.datasets.items():
        prepared, root = Path(cfg.prepared_dir(name)), Path(ds.root)
        label = f"data {name}"
        if is_prepared(prepared):
            ok = all(os.access(prepared / f, os.R_OK) for f in ("info.json", "manifest.parquet", "images.npy"))
            out.append(
                Check(label, OK, f"prepared set in {prepared}")
                if ok
                else Check(label, ERROR, f"prepared set in {prepared} is not readable", f"chmod u+r {prepared}/*")
            )
        elif root.exists():
            readable = os.access(root, os.R_OK) and (root.is_file() or os.access(root, os.X_OK))
            out.append(
                Check(label, OK, f"raw data at {root}, prepared into {prepared} on first use")
                if readable
                else Check(label, ERROR, f"raw data at {root} is not readable", f"check the permissions of {root}")
            )
        elif ds.synthetic is not None:
            out.append(Check(label, OK, f"synthetic: generated into {root} on first use (no real data)"))
        else:
            out.append(
                Check(
                    label,
                    ERROR,
                    f"neither raw data at {root} nor a prepared set in {prepared}",
                    f"set datasets.{name}.root to the {'CK+ folder' if ds.kind == 'ckplus' else 'TFD .mat file'}, "
                    "or add `synthetic:` for a stand-in",
                )
            )
    return out


def folder_checks(cfg: SweepConfig) -> list[Check]:
    """The sweep's state folder (submitted pickles run as you: error if others can write) and outputs."""
    return [
        _folder_check("jobs folder", Path(cfg.jobs_dir), ERROR),
        _folder_check("results folder", Path(cfg.results_dir), WARNING),
    ]


def data_warnings(cfg: SweepConfig) -> list[str]:
    """One line per data set that a run would not find (neither raw, prepared nor synthetic), with the fix."""
    return [f"{c.name}: {c.message}; {c.fix}" for c in data_checks(cfg) if c.status == ERROR]


def _folder_check(label: str, path: Path, open_level: str) -> Check:
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return Check(
            label,
            ERROR,
            f"{existing} is not a writable folder" + (f" (for {path})" if existing != path else ""),
            "set paths.jobs / paths.results to a folder you can write, on a file system the nodes share",
        )
    for folder in (path, path.parent):  # the sweep's folder and the one holding it
        if folder.exists():
            mode = folder.stat().st_mode
            if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
                return Check(label, open_level, f"{folder} is writable by every user", f"chmod o-w {folder}")
    if existing != path:
        return Check(label, OK, f"{path} will be created (not world-writable) in {existing}")
    return Check(label, OK, f"{path} is writable and not world-writable")


# -- the compute node ------------------------------------------------------------------------------
def environment() -> dict[str, Any]:
    """Python, torch, CUDA, GPUs and NCCL of this process (run here and, as a job, on a node)."""
    import platform
    import socket

    import fercluster

    env: dict[str, Any] = {
        "host": socket.gethostname(),
        "node": os.environ.get("SLURMD_NODENAME"),
        "python": platform.python_version(),
        "executable": sys.executable,
        "fercluster": fercluster.__version__,
        "fercluster_path": str(Path(fercluster.__file__).parent),
    }
    try:
        import torch
    except ImportError as exc:
        return {**env, "torch": None, "error": f"torch: {exc}"}
    env.update(
        torch=torch.__version__,
        cuda=torch.version.cuda,
        cuda_available=torch.cuda.is_available(),
        gpus=[],
        nccl=None,
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
    )
    if env["cuda_available"]:
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        try:
            version = torch.cuda.nccl.version()
            env["nccl"] = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
        except (AttributeError, RuntimeError):
            pass
    return env


def differences(login: dict[str, Any], node: dict[str, Any]) -> list[str]:
    """``"torch 2.4.0 there, 2.5.1 here"`` for each version that differs (NCCL only when both have one)."""
    out = []
    for key in COMPARED:
        a, b = node.get(key), login.get(key)
        if key == "nccl" and (a is None or b is None):
            continue
        if a != b:
            out.append(f"{key} {a or 'none'} there, {b or 'none'} here")
    return out


def _node_check(slurm: Slurm, folder: Path, timeout_s: float, login: dict[str, Any]) -> tuple[Check, dict | None]:
    outcome = preflight.run_on_node(environment, slurm, folder, timeout_s)
    if outcome.error:
        return Check("node", ERROR if outcome.started else WARNING, outcome.error, outcome.fix), None
    node = outcome.result
    where = f"job {outcome.slurm_id} on {node.get('node') or node.get('host')} ({outcome.seconds:.0f} s)"
    gpus = ", ".join(node.get("gpus") or []) or "none"
    what = (
        f"Python {node['python']}, torch {node.get('torch')}, CUDA {node.get('cuda') or 'none'}"
        f" ({'available' if node.get('cuda_available') else 'no device'}), GPUs {gpus}, NCCL {node.get('nccl') or 'none'}"
    )
    if node.get("torch") is None:
        return Check(
            "node", ERROR, f"{where}: {node.get('error')}", "install torch in the environment the jobs use"
        ), node
    if slurm.gpus_per_node > 0 and not node.get("cuda_available"):
        return Check(
            "node",
            ERROR,
            f"{where}: {what}; slurm.gpus_per_node {slurm.gpus_per_node} but torch there sees no CUDA device",
            "install a CUDA build of torch in the environment the jobs use, or set slurm.gpus_per_node: 0",
        ), node
    diff = differences(login, node)
    if diff:
        return Check(
            "node",
            WARNING,
            f"{where}: {what}; differs from here: {'; '.join(diff)}",
            "use one environment on the login and compute nodes: jobs unpickle what this machine pickled",
        ), node
    return Check("node", OK, f"{where}: {what}; the same versions as here"), node
