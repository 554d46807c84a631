"""The sweep's own folders checked before any work: ``paths.jobs`` and ``paths.results`` must be
folders this user can make and write (``doctor`` reports the same, with world-writable checks)."""

from __future__ import annotations

import os
from pathlib import Path

from fercluster.config import SweepConfig
from fercluster.errors import ConfigError


def require_folders(cfg: SweepConfig) -> None:
    """Refuse, before any work, a sweep whose jobs or results folder cannot be made or written
    (under a file, or in a folder that is not writable): one ConfigError line naming the key."""
    for key, path in (("paths.jobs", Path(cfg.jobs_dir)), ("paths.results", Path(cfg.results_dir))):
        existing = next(p for p in (path, *path.absolute().parents) if p.exists())
        if not existing.is_dir():
            why = f"{path} would lie under {existing}, which is a file"
        elif not os.access(existing, os.W_OK | os.X_OK):
            why = f"{existing} is not writable" + (f" (for {path})" if existing != path else "")
        else:
            continue
        raise ConfigError(f"{key}: {why}; set {key} to a folder you can write (--set {key}=DIR)")
