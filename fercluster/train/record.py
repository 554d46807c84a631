"""``job.json``, the record a completed job writes last, read back and checked.

One reader for every place that asks whether a job is complete (the job itself, ``sweep``,
``status``, ``--dry-run``), so they all agree: a record that is absent means not complete; one that
does not parse, or lacks a required field, is a FAILED job with the reason, rerun by
``sweep --retry-failed`` (the job moves the broken record aside and trains again). Light: no torch.
"""

from __future__ import annotations

import json
import os
from typing import Any

FILE = "job.json"
REQUIRED = ("status", "val_acc", "test_acc")  # what status shows and the aggregation needs first


def read_job_record(run_dir: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, str]:
    """``(record, "")`` for a complete job, ``(None, "")`` when there is no ``job.json``,
    ``(None, reason)`` when it is broken."""
    path = os.path.join(run_dir, FILE)
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except (FileNotFoundError, NotADirectoryError):
        return None, ""
    except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError and UnicodeDecodeError
        return None, f"corrupt job.json ({type(exc).__name__}: {str(exc)[:120]}); --retry-failed reruns it"
    if not isinstance(data, dict):
        return None, f"corrupt job.json (a JSON {type(data).__name__}, not an object); --retry-failed reruns it"
    lacking = [key for key in REQUIRED if key not in data]
    if lacking:
        return None, f"corrupt job.json (lacks {', '.join(lacking)}); --retry-failed reruns it"
    if data["status"] != "completed":
        return None, f"corrupt job.json (status {data['status']!r}, not 'completed'); --retry-failed reruns it"
    return data, ""
