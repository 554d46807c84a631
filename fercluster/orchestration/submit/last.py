"""The last sweep started from each working folder, so that ``status`` works without CONFIG.

``sweep`` records ``{working folder: {"config": path, "overrides": [key=value, ...]}}`` in a
small per-user file, ``$XDG_STATE_HOME/fercluster/last.json`` (default
``~/.local/state/fercluster/last.json``), so it is found whatever the config's ``paths.jobs`` (or
an override of ``name``) is; an entry that is a bare path (earlier versions) has no overrides. ``jobs/.last`` (written by earlier
versions under the default ``paths.jobs``) is still read when the file has no entry.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from fercluster.atomic import write_json

LEGACY = Path("jobs") / ".last"  # relative to the working folder


def state_file() -> Path:
    """``$XDG_STATE_HOME/fercluster/last.json``; a relative XDG_STATE_HOME is ignored (XDG spec)."""
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "state"
    return root / "fercluster" / "last.json"


def _read() -> dict[str, Any]:
    try:
        data = json.loads(state_file().read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return {str(k): v for k, v in data.items()} if isinstance(data, dict) else {}


def record_last(config_path: str | Path, cwd: Path | None = None, overrides: Sequence[str] = ()) -> Path:
    """Remember ``config_path`` (and its ``overrides``) as the last sweep started from ``cwd``
    (default: here); returns the file.

    Raises OSError when the file cannot be written (the caller decides whether that matters).
    """
    folder = str((cwd or Path.cwd()).resolve())
    entry = {"config": str(Path(config_path).resolve()), "overrides": list(overrides)}
    entries = {**_read(), folder: entry}
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_json(path, entries)  # in a 0700 folder: private to the user
    return path


def last_config(cwd: Path | None = None) -> Path | None:
    """The config of the last sweep started from ``cwd`` (default: here), or None."""
    last = last_sweep(cwd)
    return last[0] if last is not None else None


def last_sweep(cwd: Path | None = None) -> tuple[Path, list[str]] | None:
    """The config and overrides of the last sweep started from ``cwd`` (default: here), or None."""
    folder = (cwd or Path.cwd()).resolve()
    recorded = _read().get(str(folder))
    if isinstance(recorded, str) and recorded:
        return Path(recorded), []
    if isinstance(recorded, dict) and recorded.get("config"):
        overrides = recorded.get("overrides") or []
        return Path(str(recorded["config"])), [str(o) for o in overrides] if isinstance(overrides, list) else []
    try:
        text = (folder / LEGACY).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (Path(text), []) if text else None
