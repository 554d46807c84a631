"""A data set's fingerprint: what its images are made of, never where they lie.

Part of every job id (``fercluster.train.spec.identity``), so moving the project, the data, or the
jobs and results folders keeps every id, and changing the data changes them. The content is, in
order of preference:

- ``synthetic``: the generator's parameters (the raw set is generated from them on first use, so
  planning before and after generation gives the same ids; a raw tree already at ``root`` is taken
  to be the one they generated);
- ``raw``: a listing of the raw tree (each file's name relative to ``root`` and its size, sorted;
  dot files left out), or the size of a raw file (TFD's .mat). Contents are not read: a listing of
  a real CK+ tree takes tens of milliseconds;
- ``prepared``: when the raw set is not there but the prepared folder is, a digest of its
  ``manifest.parquet`` and the size of its ``images.npy``;
- ``missing``: neither is there yet (the jobs could not run; their ids change once data appears).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from fercluster.config import Dataset, SweepConfig


def data_id(cfg: SweepConfig, dataset: str, trees: dict[str, str] | None = None) -> str:
    """The short fingerprint of data set ``dataset`` of ``cfg``: how its images are prepared
    (kind, classes, crop) and what they are made of (``content``). ``trees``: raw folders already
    listed (``data_ids`` shares it, so data sets of one raw tree list it once)."""
    ds = cfg.datasets[dataset]
    recipe = {
        "kind": ds.kind,
        "classes": ds.classes,
        "crop": ds.crop if ds.kind == "ckplus" else None,
        "content": content(ds, Path(cfg.prepared_dir(dataset)), {} if trees is None else trees),
    }
    return _digest(json.dumps(recipe, sort_keys=True))[:10]


def data_ids(cfg: SweepConfig, datasets: Iterable[str]) -> dict[str, str]:
    """``data_id`` of each of ``datasets``, each raw tree listed once."""
    trees: dict[str, str] = {}
    return {name: data_id(cfg, name, trees) for name in dict.fromkeys(datasets)}


def content(ds: Dataset, prepared: Path, trees: dict[str, str]) -> dict[str, Any]:
    """What a data set's images are made of (see the module's docstring), as plain JSON data.
    ``trees``: digests of raw folders by resolved path (only a cache key), filled as they are listed."""
    if ds.synthetic is not None:
        return {"synthetic": ds.synthetic.model_dump(mode="json")}
    root = Path(ds.root)
    if root.is_dir():
        key = str(root.resolve())
        if key not in trees:
            trees[key] = tree_digest(root)
        return {"raw": trees[key]}
    if root.is_file():
        return {"raw": raw_digest(root)}
    if (prepared / "manifest.parquet").is_file() and (prepared / "images.npy").is_file():
        return {"prepared": prepared_digest(prepared)}
    return {"missing": True}


def raw_digest(root: str | os.PathLike[str]) -> str | None:
    """The ``raw`` content of a raw set at ``root``: the digest of its tree's listing (a folder) or
    of its size (a file, TFD's .mat); None when nothing is there. ``info.json`` of a prepared set
    records it as ``fingerprint`` (``ensure_prepared`` compares it, so a moved set still matches)."""
    root = Path(root)
    if root.is_dir():
        return tree_digest(root)
    if root.is_file():
        return _digest(f"{root.stat().st_size}")
    return None


def listing(root: Path) -> list[tuple[str, int]]:
    """Every file under ``root`` as (name relative to ``root`` with '/', size), sorted; dot files
    and dot folders left out. Reads directory entries only (os.scandir), never file contents."""
    out: list[tuple[str, int]] = []
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                name = prefix + entry.name
                if entry.is_dir():
                    stack.append((Path(entry.path), name + "/"))
                elif entry.is_file():
                    out.append((name, entry.stat().st_size))
    out.sort()
    return out


def tree_digest(root: Path) -> str:
    """A digest of ``listing(root)``: the same for a copy of the tree anywhere."""
    return _digest("".join(f"{name}\t{size}\n" for name, size in listing(root)))


def prepared_digest(prepared: Path) -> str:
    """A digest of a prepared set's manifest (one row per image: its source and label) and the
    size of its images; info.json is left out (it holds the source's path and a timestamp)."""
    h = hashlib.sha1((prepared / "manifest.parquet").read_bytes())
    h.update(f"\n{(prepared / 'images.npy').stat().st_size}".encode())
    return h.hexdigest()


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()
