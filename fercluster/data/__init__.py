"""Data sets: CK+ and TFD read as the authors did, prepared once into a folder jobs read.

``ensure_prepared(cfg, name)`` is what jobs call: it returns the prepared folder of a config's data
set, generating the synthetic raw set and preparing it on first use. Several processes (SLURM array
tasks) may call it at once: a file lock beside the folder lets one do the work while the others
wait, then find the finished set.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from fercluster.errors import DataError
from fercluster.lock import file_lock

if TYPE_CHECKING:
    from fercluster.config import Dataset, SweepConfig

__all__ = ["ensure_prepared", "prepare_raw", "generate_synthetic"]


def _lock(target: Path, what: str) -> AbstractContextManager[None]:
    """The exclusive lock ``.<name>.lock`` beside ``target``; waits as long as the holder works."""
    return file_lock(target.parent / f".{target.name}.lock", what=what)


def _matches(out: Path, ds: "Dataset", name: str) -> bool:
    """True if ``out`` holds a complete prepared set made for ``ds``; DataError if made for another."""
    from fercluster.data.prepared import is_prepared, read_info

    if not is_prepared(out):
        return False
    info = read_info(out)
    wanted = {"kind": ds.kind, "classes": ds.classes}
    if ds.kind == "ckplus":
        wanted["crop"] = ds.crop
    wrong = [f"{k}={info.get(k)!r} (config: {v!r})" for k, v in wanted.items() if info.get(k) != v]
    # The raw set too: two configs may give data sets of one name different raw sets.
    wrong += _other_source(info, Path(ds.root))
    if wrong:
        raise DataError(
            f"prepared set {out} does not match data set {name!r}: {', '.join(wrong)}; "
            f"delete {out} to prepare it again, or set `prepared:` of {name!r} to another folder"
        )
    return True


def _other_source(info: dict, root: Path) -> list[str]:
    """Why the prepared set was made from other raw data than ``root`` holds (empty: it was not).

    By content when ``info.json`` records the raw set's fingerprint and there is a raw set at
    ``root``, so moving the project or the data keeps the set, as it keeps the job ids. Else (a
    set prepared before fingerprints were recorded, or no raw data here to compare) by the raw
    set's path, as before.
    """
    from fercluster.data.fingerprint import raw_digest

    source = str(root.resolve())
    recorded = info.get("fingerprint")
    current = raw_digest(root) if recorded is not None else None
    if current is None:
        return [] if info.get("source") == source else [f"source={info.get('source')!r} (config: {source!r})"]
    if current == recorded:
        return []
    return [f"raw data {recorded!r} from {info.get('source')!r} (config: {current!r} at {source!r})"]


def ensure_prepared(cfg: "SweepConfig", name: str) -> Path:
    """The prepared folder of data set ``name``, generated (synthetic) and prepared if missing."""
    if name not in cfg.datasets:
        raise DataError(f"data set {name!r} is not in the config; valid: {', '.join(sorted(cfg.datasets))}")
    ds = cfg.datasets[name]
    out = Path(cfg.prepared_dir(name))
    if _matches(out, ds, name):
        return out
    with _lock(out, f"preparing data set {name!r}"):
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
            with _lock(root, f"generating the synthetic raw set of {name!r}"):
                if not root.exists():
                    generate_synthetic(ds, root)
        prepare_raw(ds.kind, root, out, crop=ds.crop, classes=ds.classes)
    return out


def prepare_raw(kind: str, root: Path, out: Path, *, crop: str, classes: int) -> "object":
    """Prepare a raw set into ``out`` (atomically); returns the in-memory PreparedData (counts).

    ``crop`` and ``classes`` (CK+ only) come from the data set's config, where their defaults live.
    """
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
    """Write the synthetic raw set of ``ds`` at ``root``, atomically.

    CK+: a folder, built beside and swapped in. TFD: the .mat and its two sidecars
    (``<stem>.au_regions.json``, ``<stem>.aus.parquet``), each written atomically, the .mat last:
    its presence is what says the raw set exists.
    """
    from fercluster.data import synth

    syn = ds.synthetic
    assert syn is not None
    if ds.kind == "ckplus":
        synth.synth_ckplus(root, subjects=syn.subjects, seed=syn.seed, sequences_per_subject=syn.sequences_per_subject)
    else:
        synth.synth_tfd(
            root,
            identities=syn.subjects,
            seed=syn.seed,
            images_per_identity=syn.images_per_identity,
            unlabelled=syn.unlabelled,
        )
