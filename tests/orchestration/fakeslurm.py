#!/usr/bin/env python3
"""A stand-in SLURM for fault-injection tests: installed as sbatch, squeue, sacct, scontrol, scancel.

The tests put a folder of links to this script first on PATH. It keeps a small cluster in
``$FAKESLURM/world.json`` (jobs of this user and of others), injects the faults listed in
``$FAKESLURM/faults.json`` ({command: "fail" | "timeout" | "ratelimit"}, sbatch also "busy": the
controller refuses new jobs, sbatch says so and retries after 30 s; "lag": ids that sacct does not
show yet; "sbatch_ok": submissions that go in before the sbatch fault; "max_array", "max_jobs") and records every call (argv) in ``$FAKESLURM/calls.jsonl``.
Only the flags fercluster uses are understood; an unfiltered query prints every user's jobs.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import sys
import time
from pathlib import Path

HOME = Path(os.environ["FAKESLURM"])
WORLD, FAULTS, CALLS = HOME / "world.json", HOME / "faults.json", HOME / "calls.jsonl"


def load(path: Path, default: dict) -> dict:
    return json.loads(path.read_text()) if path.exists() else default


def option(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
    return None


def tasks(job: dict) -> list[tuple[str, str]]:
    """(per-task id, state) of a job: ``<id>_<i>`` for arrays."""
    if job["n"] == 1 and not job.get("array"):
        return [(job["id"], job["states"]["0"])]
    return [(f"{job['id']}_{i}", job["states"][str(i)]) for i in range(job["n"])]


def main() -> int:
    cmd, argv = Path(sys.argv[0]).name, sys.argv[1:]
    if argv[:1] == ["--as"]:  # run through a wrapper script: ``fakeslurm.py --as squeue ...``
        cmd, argv = argv[1], argv[2:]
    with CALLS.open("a") as f:
        f.write(json.dumps([cmd, *argv]) + "\n")
    faults = load(FAULTS, {})
    fault = faults.get(cmd)
    if cmd == "sbatch" and sum(1 for ln in CALLS.read_text().splitlines() if ln.startswith('["sbatch"')) <= faults.get(
        "sbatch_ok", 0
    ):
        fault = None  # the first sbatch_ok submissions go in; the fault starts after them (a job limit)
    if fault == "timeout":
        time.sleep(30)
    if fault == "busy":  # the controller refuses new jobs (MaxJobCount): sbatch says so once, then retries
        print(
            "sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying", file=sys.stderr, flush=True
        )
        time.sleep(30)
        with CALLS.open("a") as f:
            f.write(json.dumps(["sbatch-retry"]) + "\n")
        print("sbatch: error: Batch job submission failed: Resource temporarily unavailable", file=sys.stderr)
        return 1
    if fault == "fail":
        print(f"{cmd}: error: Unable to contact slurm controller (connect failure)", file=sys.stderr)
        return 1
    if fault == "disabled":  # a site without accounting (AccountingStorageType none)
        print(f"{cmd}: error: Slurm accounting storage is disabled", file=sys.stderr)
        return 1
    if fault == "ratelimit":
        print(f"{cmd}: error: RPC rate limit exceeded, try again later", file=sys.stderr)
        return 1
    world = load(WORLD, {"next_id": 5000, "jobs": []})
    me = getpass.getuser()
    if cmd == "sbatch":
        return sbatch(world, argv, me)
    if cmd == "scontrol":
        print(f"MaxArraySize            = {faults.get('max_array', 1001)}")
        print(f"MaxJobCount             = {faults.get('max_jobs', 10000)}")
        return 0
    if cmd == "scancel":
        return 0
    mine = [j for j in world["jobs"] if j["user"] == me]
    if cmd == "squeue":
        jobs = mine if ("--me" in argv or option(argv, "-u")) else world["jobs"]
        jobs = [j for j in jobs if not j.get("gone")]  # ended longer than MinJobAge ago: left the queue
        names = option(argv, "--name")
        if names:
            jobs = [j for j in jobs if j["name"] in names.split(",")]
        ids = option(argv, "-j")
        if ids:
            jobs = [j for j in jobs if j["id"] in ids.split(",")]
        fmt = option(argv, "-o")
        for j in jobs:
            if fmt == "%F|%j|%u":
                print(f"{j['id']}|{j['name']}|{j['user']}")
            else:
                for tid, state in tasks(j):
                    print(f"{tid}|{state}|0:10|node1|None")
        return 0
    if cmd == "sacct":
        ids, names = option(argv, "-j"), option(argv, "--name")
        jobs = world["jobs"]
        if option(argv, "-u") or not ids:
            jobs = [j for j in jobs if j["user"] == (option(argv, "-u") or me)]
        if names:
            jobs = [j for j in jobs if j["name"] in names.split(",")]
            for j in jobs:
                print(f"{j['id']}|{j['name']}|{j['user']}")
            return 0
        lag = set(load(FAULTS, {}).get("lag", []))
        for j in jobs:
            if ids and j["id"] not in ids.split(","):
                continue
            for tid, state in tasks(j):
                if tid not in lag:
                    print(f"{tid}|{state}|0:0|00:01:00|node1|None")
        return 0
    print(f"fakeslurm: {cmd} not faked", file=sys.stderr)
    return 2


def sbatch(world: dict, argv: list[str], me: str) -> int:
    text = Path(argv[-1]).read_text()
    name = re.search(r"#SBATCH --job-name=(\S+)", text)
    array = re.search(r"#SBATCH --array=0-(\d+)", text)
    n = int(array.group(1)) + 1 if array else 1
    jid = str(world["next_id"])
    world["next_id"] += 1
    world["jobs"].append({"id": jid, "name": name.group(1) if name else "", "user": me, "n": n,
                          "array": bool(array), "states": {str(i): "PENDING" for i in range(n)}})  # fmt: skip
    WORLD.write_text(json.dumps(world))
    print(f"Submitted batch job {jid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
