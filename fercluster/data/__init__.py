"""Data sets: CK+ and TFD read as the authors did, prepared once into a folder jobs read.

``ensure_prepared(cfg, name)`` is what jobs call: it returns the prepared folder of a config's data
set, generating the synthetic raw set and preparing it on first use. Several processes (SLURM array
tasks) may call it at once: a file lock beside the folder lets one do the work while the others
wait, then find the finished set.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from fercluster.errors import DataError

if TYPE_CHECKING:
    from fercluster.config import Dataset, SweepConfig

__all__ = ["ensure_prepared", "prepare_raw", "generate_synthetic"]


@contextlib.contextmanager
def file_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive lock on the hidden file ``.<name>.lock`` beside ``target``."""
    import fcntl

    target.parent.mkdir(parents=True, exist_ok=True)
    lock = target.parent / f".{target.name}.lock"
    with open(lock, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _matches(out: Path, ds: "Dataset", name: str) -> bool:
    """True if ``out`` holds a complete prepared set made for ``ds``; DataError if made for another."""
    from fercluster.data.prepared import is_prepared, read_info

    if not is_prepared(out):
        return False
    info = read_info(out)
    # The source too: two configs may give data sets of one name different raw sets.
    wanted = {"kind": ds.kind, "classes": ds.classes, "source": str(Path(ds.root).resolve())}
    if ds.kind == "ckplus":
        wanted["crop"] = ds.crop
    wrong = [f"{k}={info.get(k)!r} (config: {v!r})" for k, v in wanted.items() if info.get(k) != v]
    if wrong:
        raise DataError(
            f"prepared set {out} does not match data set {name!r}: {', '.join(wrong)}; "
            f"delete {out} to prepare it again, or set `prepared:` of {name!r} to another folder"
        )
    return True


def ensure_prepared(cfg: "SweepConfig", name: str) -> Path:
    """The prepared folder of data set ``name``, generated (synthetic) and prepared if missing."""
    if name not in cfg.datasets:
        raise DataError(f"data set {name!r} is not in the config; valid: {', '.join(sorted(cfg.datasets))}")
    ds = cfg.datasets[name]
    out = Path(cfg.prepared_dir(name))
    if _matches(out, ds, name):
        return out
    with file_lock(out):
        if _matches(out, ds, name):  # another process finished it while we waited
            return out
        root = Path(ds.root)
        if not root.exists():
            if ds.synthetic is None:
                what = "CK+ folder (holding cohn-kanade-images/)" if ds.kind == "ckplus" else "TFD .mat file"
                raise DataError(
                    f"raw data of {name!r} not found at {root}: give the {what} as `root:`, "
                    "or add `synthetic:` to generate a synthetic stand-in"
                )
            with file_lock(root):
                if not root.exists():
                    generate_synthetic(ds, root)
        prepare_raw(ds.kind, root, out, crop=ds.crop, classes=ds.classes)
    return out


def prepare_raw(kind: str, root: Path, out: Path, crop: str = "haar", classes: int = 8) -> "object":
    """Prepare a raw set into ``out`` (atomically); returns the in-memory PreparedData (counts)."""
    from fercluster.data.prepared import write_prepared

    if kind == "ckplus":
        from fercluster.data.ckplus import prepare_ckplus

        data = prepare_ckplus(root, crop=crop, classes=classes)  # type: ignore[arg-type]
    else:
        from fercluster.data.tfd import prepare_tfd

        data = prepare_tfd(root)
    write_prepared(out, data)
    return data


def generate_synthetic(ds: "Dataset", root: Path) -> None:
    """Write the synthetic raw set of ``ds`` at ``root``, atomically (built beside, then moved)."""
    from fercluster.data import synth

    syn = ds.synthetic
    assert syn is not None
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{root.name}.", dir=root.parent))
    try:
        if ds.kind == "ckplus":
            synth.synth_ckplus(tmp / "set", subjects=syn.subjects, seed=syn.seed,
                               sequences_per_subject=syn.sequences_per_subject)  # fmt: skip
            os.rename(tmp / "set", root)
        else:
            synth.synth_tfd(tmp / root.name, identities=syn.subjects, seed=syn.seed,
                            images_per_identity=syn.images_per_identity, unlabelled=syn.unlabelled)  # fmt: skip
            # the sidecars (<stem>.au_regions.json, <stem>.aus.parquet) first, the .mat last:
            # the .mat's presence is what says the raw set exists
            for sidecar in sorted(p for p in tmp.iterdir() if p.name != root.name):
                os.replace(sidecar, root.parent / sidecar.name)
            os.replace(tmp / root.name, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
