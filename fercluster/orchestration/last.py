"""The last sweep started from each working folder, so that ``status`` works without CONFIG.

``sweep`` records ``{working folder: config path}`` in a small per-user file,
``$XDG_STATE_HOME/fercluster/last.json`` (default ``~/.local/state/fercluster/last.json``), so
it is found whatever the config's ``paths.jobs`` is. ``jobs/.last`` (written by earlier
versions under the default ``paths.jobs``) is still read when the file has no entry.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fercluster.atomic import write_json

LEGACY = Path("jobs") / ".last"  # relative to the working folder


def state_file() -> Path:
    """``$XDG_STATE_HOME/fercluster/last.json``; a relative XDG_STATE_HOME is ignored (XDG spec)."""
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "state"
    return root / "fercluster" / "last.json"


def _read() -> dict[str, str]:
    try:
        data = json.loads(state_file().read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def record_last(config_path: str | Path, cwd: Path | None = None) -> Path:
    """Remember ``config_path`` as the last sweep started from ``cwd`` (default: here); returns the file.

    Raises OSError when the file cannot be written (the caller decides whether that matters).
    """
    folder = str((cwd or Path.cwd()).resolve())
    entries = {**_read(), folder: str(Path(config_path).resolve())}
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_json(path, entries)  # in a 0700 folder: private to the user
    return path


def last_config(cwd: Path | None = None) -> Path | None:
    """The config of the last sweep started from ``cwd`` (default: here), or None."""
    folder = (cwd or Path.cwd()).resolve()
    recorded = _read().get(str(folder))
    if recorded:
        return Path(recorded)
    try:
        text = (folder / LEGACY).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return Path(text) if text else None
