"""A data set's fingerprint comes from what its images are made of, never from where they lie."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from fercluster.config import parse_config
from fercluster.data import fingerprint
from fercluster.data.fingerprint import data_id, listing


def raw_tree(root: Path) -> Path:
    """A tiny CK+-like raw tree (names and sizes are all the fingerprint reads)."""
    for rel, size in (("cohn-kanade-images/S005/001/a.png", 10), ("cohn-kanade-images/S005/001/b.png", 12),
                      ("Emotion/S005/001/b_emotion.txt", 3), ("Landmarks/S005/001/b_landmarks.txt", 7)):  # fmt: skip
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x" * size)
    return root


def config(root: Path, prepared: Path | None = None, **dataset: Any):
    ds = {"kind": "ckplus", "root": str(root), "classes": 8, "crop": "landmarks", **dataset}
    if prepared is not None:
        ds["prepared"] = str(prepared)
    return parse_config({"name": "t", "datasets": {"ck": ds}, "grid": [{"dataset": "ck"}]})


def test_listing_is_relative_sorted_and_skips_dot_files(tmp_path: Path) -> None:
    root = raw_tree(tmp_path / "raw")
    (root / ".DS_Store").write_bytes(b"junk")
    assert listing(root) == [
        ("Emotion/S005/001/b_emotion.txt", 3),
        ("Landmarks/S005/001/b_landmarks.txt", 7),
        ("cohn-kanade-images/S005/001/a.png", 10),
        ("cohn-kanade-images/S005/001/b.png", 12),
    ]


def test_a_raw_tree_keeps_its_id_when_moved_and_changes_it_when_a_size_changes(tmp_path: Path) -> None:
    root = raw_tree(tmp_path / "a" / "raw")
    before = data_id(config(root), "ck")
    moved = tmp_path / "elsewhere" / "CK+"
    moved.parent.mkdir()
    shutil.move(root, moved)
    assert data_id(config(moved), "ck") == before
    (moved / "cohn-kanade-images/S005/001/a.png").write_bytes(b"x" * 11)
    assert data_id(config(moved), "ck") != before


def test_a_renamed_or_added_file_changes_the_id(tmp_path: Path) -> None:
    root = raw_tree(tmp_path / "raw")
    before = data_id(config(root), "ck")
    (root / "Emotion/S005/001/b_emotion.txt").rename(root / "Emotion/S005/001/c_emotion.txt")
    renamed = data_id(config(root), "ck")
    (root / "Emotion/S005/001/d_emotion.txt").write_bytes(b"1")
    assert len({before, renamed, data_id(config(root), "ck")}) == 3


def test_synthetic_data_is_fingerprinted_by_its_parameters_before_and_after_generation(tmp_path: Path) -> None:
    from fercluster.data import generate_synthetic

    syn = {"subjects": 4, "sequences_per_subject": 1, "seed": 3}
    cfg = config(tmp_path / "synthetic" / "ck", synthetic=syn)
    before = data_id(cfg, "ck")
    generate_synthetic(cfg.datasets["ck"], tmp_path / "synthetic" / "ck")
    assert (tmp_path / "synthetic" / "ck").is_dir()
    assert data_id(cfg, "ck") == before
    assert data_id(config(tmp_path / "other", synthetic=syn), "ck") == before  # a copy elsewhere
    assert data_id(config(tmp_path / "synthetic" / "ck", synthetic={**syn, "seed": 4}), "ck") != before


def test_the_preparation_options_are_part_of_the_id(tmp_path: Path) -> None:
    root = raw_tree(tmp_path / "raw")
    ids = {data_id(config(root, crop=crop, classes=classes), "ck") for crop in ("haar", "landmarks")
           for classes in (6, 8)}  # fmt: skip
    assert len(ids) == 4


def test_a_prepared_set_alone_is_fingerprinted_by_its_manifest(tmp_path: Path) -> None:
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    (prepared / "manifest.parquet").write_bytes(b"manifest rows")
    (prepared / "images.npy").write_bytes(b"\0" * 96)
    (prepared / "info.json").write_text('{"source": "/where/it/was/made", "created": "today"}')
    before = data_id(config(tmp_path / "gone", prepared), "ck")
    assert fingerprint.content(config(tmp_path / "gone", prepared).datasets["ck"], prepared, {}).keys() == {"prepared"}
    shutil.move(prepared, tmp_path / "moved")
    assert data_id(config(tmp_path / "gone", tmp_path / "moved"), "ck") == before
    (tmp_path / "moved" / "manifest.parquet").write_bytes(b"other manifest rows")
    assert data_id(config(tmp_path / "gone", tmp_path / "moved"), "ck") != before


def test_data_sets_sharing_a_raw_tree_list_it_once(tmp_path: Path, monkeypatch) -> None:
    root = raw_tree(tmp_path / "raw")
    cfg = parse_config({"name": "t", "grid": [{"dataset": "ck"}], "datasets": {
        "ck": {"kind": "ckplus", "root": str(root), "classes": 8},
        "ck6": {"kind": "ckplus", "root": str(root), "classes": 6}}})  # fmt: skip
    calls = []
    real = fingerprint.tree_digest
    monkeypatch.setattr(fingerprint, "tree_digest", lambda path: calls.append(path) or real(path))
    ids = fingerprint.data_ids(cfg, ["ck", "ck6", "ck"])
    assert list(ids) == ["ck", "ck6"] and ids["ck"] != ids["ck6"]
    assert calls == [root]
