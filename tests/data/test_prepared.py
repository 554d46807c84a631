"""Prepared sets: loading and its checks, split indices, atomic replacement, ensure_prepared."""

from __future__ import annotations

import json
import multiprocessing
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fercluster.data as data_pkg
from fercluster.config import parse_config
from fercluster.data import ensure_prepared
from fercluster.data.ckplus import prepare_ckplus
from fercluster.data.prepared import load_prepared, split_indices, write_prepared
from fercluster.data.tfd import prepare_tfd
from fercluster.errors import DataError


@pytest.fixture
def ck_prepared(ck_root, tmp_path) -> Path:
    out = tmp_path / "prepared-ck"
    write_prepared(out, prepare_ckplus(ck_root, crop="landmarks"))
    return out


@pytest.fixture
def tfd_prepared(tmp_path, make_tfd) -> Path:
    make_tfd(tmp_path / "TFD_96x96.mat", n=45)
    out = tmp_path / "prepared-tfd"
    write_prepared(out, prepare_tfd(tmp_path / "TFD_96x96.mat"))
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ----------------------------------------------------------------------------- loading


def test_load_prepared_round_trip(ck_prepared):
    prepared = load_prepared(ck_prepared)
    assert prepared.images.shape == (56, 96, 96) and prepared.images.dtype == np.uint8
    assert len(prepared) == 56 and prepared.info["n_images"] == 56
    assert prepared.info["kind"] == "ckplus" and prepared.info["crop"] == "landmarks"
    assert prepared.au_regions is None and prepared.path == ck_prepared
    assert [list(a) for a in prepared.manifest.aus[:2]] == [[], [9, 15, 16]]
    assert {p.name for p in ck_prepared.iterdir()} == {"manifest.parquet", "images.npy", "info.json", "skipped.csv"}


def test_load_prepared_checks_name_the_file(ck_prepared, tmp_path):
    with pytest.raises(DataError, match=r"^prepared set not found: .*nowhere; run `fercluster data prepare"):
        load_prepared(tmp_path / "nowhere")
    images = ck_prepared / "images.npy"
    np.save(images, np.zeros((55, 96, 96), np.uint8))
    with pytest.raises(DataError) as info:
        load_prepared(ck_prepared)
    assert str(info.value) == (f"{images}: 55 images but manifest.parquet has 56 rows; prepare the set again")
    np.save(images, np.zeros((56, 48, 48), np.uint8))
    expected = rf"^{re.escape(str(images))}: expected uint8 \(N, 96, 96\), got uint8 \(56, 48, 48\)"
    with pytest.raises(DataError, match=expected):
        load_prepared(ck_prepared)
    images.unlink()
    with pytest.raises(DataError, match=r"incomplete prepared set, missing images\.npy; prepare it again$"):
        load_prepared(ck_prepared)


# ----------------------------------------------------------------------------- splits


def test_ckplus_split_indices_both_protocols(ck_prepared):
    prepared = load_prepared(ck_prepared)
    folds = prepared.manifest.fold.to_numpy()
    for t in range(10):
        train, val, test = split_indices(prepared, t)
        assert set(folds[test]) == {t} and set(folds[val]) == {(t + 1) % 10}
        assert set(folds[train]) == set(range(10)) - {t, (t + 1) % 10}
        assert sorted(np.concatenate([train, val, test])) == list(range(len(folds)))
        assert train.dtype == np.int64
        subjects = [set(prepared.manifest.subject[idx]) for idx in (train, val, test)]
        assert not (subjects[0] & subjects[1]) and not (subjects[0] & subjects[2]) and not (subjects[1] & subjects[2])
        train15, val15, test15 = split_indices(prepared, t, protocol="2015")
        assert len(val15) == 0 and np.array_equal(test15, test)
        assert sorted(np.concatenate([train15, test15])) == list(range(len(folds)))


def test_tfd_split_indices_both_protocols(tfd_prepared):
    prepared = load_prepared(tfd_prepared)
    for k in range(5):
        split = prepared.manifest[f"split_{k}"].to_numpy()
        train, val, test = split_indices(prepared, k)
        assert set(split[train]) == {"train"} and set(split[val]) == {"valid"} and set(split[test]) == {"test"}
        assert len(train) + len(val) + len(test) == len(split)
        train15, val15, test15 = split_indices(prepared, k, protocol="2015")
        # the paper: "we train all of our models using just the training set of each fold"
        assert len(val15) == 0 and np.array_equal(test15, test) and np.array_equal(train15, train)
        assert not set(train15) & set(val)


def test_split_indices_rejects_bad_fold_and_protocol(ck_prepared, tfd_prepared):
    with pytest.raises(DataError, match=r"^fold: got 10; ckplus has folds 0\.\.9$"):
        split_indices(load_prepared(ck_prepared), 10)
    with pytest.raises(DataError, match=r"^fold: got 5; tfd has folds 0\.\.4$"):
        split_indices(load_prepared(tfd_prepared), 5)
    with pytest.raises(DataError, match=r"^protocol: got '2016'; valid: 2017, 2015$"):
        split_indices(load_prepared(ck_prepared), 0, protocol="2016")


# ----------------------------------------------------------------------------- atomic output


def test_failing_prepare_leaves_a_good_output_untouched(ck_root, ck_prepared):
    before = _snapshot(ck_prepared)
    (ck_root / "Emotion/S022/001/S022_001_00000005_emotion.txt").write_text("broken\n")
    with pytest.raises(DataError):
        write_prepared(ck_prepared, prepare_ckplus(ck_root, crop="landmarks"))
    assert _snapshot(ck_prepared) == before


def test_failure_while_writing_leaves_old_output_and_no_temp(ck_root, ck_prepared, monkeypatch):
    before = _snapshot(ck_prepared)
    data = prepare_ckplus(ck_root, crop="none")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("fercluster.data.prepared.write_parquet", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_prepared(ck_prepared, data)
    assert _snapshot(ck_prepared) == before
    assert sorted(p.name for p in ck_prepared.parent.iterdir() if p.name.startswith(".")) == []


def test_a_good_output_is_replaced_by_a_complete_new_one(ck_root, ck_prepared):
    write_prepared(ck_prepared, prepare_ckplus(ck_root, crop="none", classes=6))
    prepared = load_prepared(ck_prepared)
    assert prepared.info["classes"] == 6 and prepared.info["crop"] == "none" and len(prepared) == 36
    assert not [p for p in ck_prepared.parent.iterdir() if p.name.startswith((".tmp-", ".old-"))]


def test_a_folder_that_is_not_a_prepared_set_is_never_replaced(ck_root, tmp_path):
    folder = tmp_path / "my-photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(DataError, match=r"exists and is not a prepared set \(no info\.json\); choose a new folder"):
        write_prepared(folder, prepare_ckplus(ck_root, crop="none"))
    assert (folder / "holiday.jpg").read_bytes() == b"precious"


# ----------------------------------------------------------------------------- ensure_prepared


def _config(tmp_path: Path, root: Path, **dataset) -> "object":
    ds = {"kind": "ckplus", "root": str(root), "crop": "landmarks", **dataset}
    return parse_config(
        {"name": "t", "paths": {"data": str(tmp_path / "data")}, "datasets": {"ck": ds}, "grid": [{"dataset": "ck"}]}
    )


def test_ensure_prepared_prepares_once_then_reuses(ck_root, tmp_path):
    cfg = _config(tmp_path, ck_root)
    out = ensure_prepared(cfg, "ck")
    assert out == tmp_path / "data/prepared/ck"
    created = json.loads((out / "info.json").read_text())["created"]
    stamp = (out / "images.npy").stat().st_mtime_ns
    assert ensure_prepared(cfg, "ck") == out
    assert (out / "images.npy").stat().st_mtime_ns == stamp
    assert json.loads((out / "info.json").read_text())["created"] == created


def test_ensure_prepared_rejects_a_set_made_for_other_settings(ck_root, tmp_path):
    ensure_prepared(_config(tmp_path, ck_root), "ck")
    out = tmp_path / "data/prepared/ck"
    with pytest.raises(DataError) as info:
        ensure_prepared(_config(tmp_path, ck_root, classes=6, crop="none"), "ck")
    assert str(info.value) == (
        f"prepared set {out} does not match data set 'ck': classes=8 (config: 6), crop='landmarks' "
        f"(config: 'none'); delete {out} to prepare it again, or set `prepared:` of 'ck' to another folder"
    )


def test_ensure_prepared_without_raw_data_or_synthetic(tmp_path):
    with pytest.raises(DataError, match=r"^raw data of 'ck' not found at .*missing: give the CK\+ folder"):
        ensure_prepared(_config(tmp_path, tmp_path / "missing"), "ck")
    with pytest.raises(DataError, match=r"^data set 'other' is not in the config; valid: ck$"):
        ensure_prepared(_config(tmp_path, tmp_path / "missing"), "other")


def _ensure_in_child(cfg, log: str, queue) -> None:
    original = data_pkg.prepare_raw

    def logged(*args, **kwargs):
        with open(log, "a") as f:
            f.write("prepare\n")
        return original(*args, **kwargs)

    data_pkg.prepare_raw = logged
    try:
        queue.put(str(ensure_prepared(cfg, "ck")))
    except Exception as exc:  # reported to the parent
        queue.put(f"failed: {exc!r}")


def test_ensure_prepared_is_safe_for_concurrent_callers(ck_root, tmp_path):
    cfg = _config(tmp_path, ck_root)
    log = tmp_path / "prepare.log"
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_ensure_in_child, args=(cfg, str(log), queue)) for _ in range(3)]
    for w in workers:
        w.start()
    results = [queue.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(timeout=60)
    assert results == [str(tmp_path / "data/prepared/ck")] * 3
    assert log.read_text() == "prepare\n"  # one process did the work, the others found it done
    assert len(load_prepared(tmp_path / "data/prepared/ck")) == 56


# ----------------------------------------------------------------------------- synthetic round trip


def _synth():
    try:
        from fercluster.data import synth
    except ImportError as exc:  # the generator is written in parallel; skip until it lands
        pytest.skip(f"synthetic generator not available: {exc}")
    return synth


def test_synthetic_ckplus_round_trip(tmp_path):
    synth = _synth()
    root = tmp_path / "CK"
    summary = synth.synth_ckplus(root, subjects=4, seed=1, sequences_per_subject=2, frames=(4, 5), size=(200, 160))
    data = prepare_ckplus(root, crop="landmarks")
    rows = data.manifest.to_pandas()
    assert data.counts["labelled sequences"] == summary["labelled_sequences"]
    assert data.counts["images written"] == 4 * summary["labelled_sequences"]
    assert not [s for s in data.skips if s.action == "skipped"]
    assert set(rows.crop) == {"landmarks"} and sorted(rows.fold.unique()) == list(range(rows.subject.nunique()))
    peaks = rows[rows.label_name != "neutral"]
    assert all(len(a) > 0 for a in peaks.aus) and all(len(a) == 0 for a in rows[rows.frame == 1].aus)
    assert data.au_regions == json.loads((root / "au_regions.json").read_text())
    write_prepared(tmp_path / "P", data)
    assert load_prepared(tmp_path / "P").au_regions == data.au_regions


def test_synthetic_tfd_round_trip(tmp_path):
    synth = _synth()
    mat = tmp_path / "TFD_96x96.mat"
    synth.synth_tfd(mat, identities=5, seed=1, images_per_identity=4, unlabelled=3)
    data = prepare_tfd(mat)
    assert data.counts["images in file"] == 23 and data.counts["images written"] == 20
    rows = data.manifest.to_pandas()
    assert rows.identity.nunique() == 5 and set(rows.split_0) <= {"train", "valid", "test"}
    assert data.au_regions is not None
    truth = pd.read_parquet(tmp_path / "TFD_96x96.aus.parquet").set_index("index")
    index = rows.image_id.str.removeprefix("TFD_").astype(int)
    assert [list(a) for a in rows.aus] == [list(truth.aus[i]) for i in index]


def test_ensure_prepared_generates_the_synthetic_raw_set(tmp_path):
    _synth()
    root = tmp_path / "data/synthetic/ck"
    cfg = _config(tmp_path, root, synthetic={"subjects": 4, "seed": 0, "sequences_per_subject": 1})
    out = ensure_prepared(cfg, "ck")
    assert (root / "au_regions.json").is_file() and (root / "cohn-kanade-images").is_dir()
    prepared = load_prepared(out)
    assert prepared.info["crop"] == "landmarks" and prepared.au_regions is not None
    assert len(prepared) == 4 * prepared.info["counts"]["labelled sequences"]
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".tmp-")]


def test_prepared_set_of_another_raw_source_is_refused(tmp_path, monkeypatch):
    """Two configs may name a data set alike with different raw sets: never train on the wrong one."""
    import pytest

    from fercluster.config import parse_config
    from fercluster.data import ensure_prepared
    from fercluster.errors import DataError

    monkeypatch.chdir(tmp_path)

    def cfg(root: str):
        return parse_config(
            {
                "name": "s",
                "datasets": {
                    "ck": {
                        "kind": "ckplus",
                        "root": root,
                        "crop": "landmarks",
                        "synthetic": {"subjects": 4, "sequences_per_subject": 1},
                    }
                },
                "grid": [{"dataset": "ck"}],
            }
        )

    out = ensure_prepared(cfg("raw-a"), "ck")
    with pytest.raises(DataError, match=r"source='.*raw-a' \(config: '.*raw-b'\)"):
        ensure_prepared(cfg("raw-b"), "ck")
    assert ensure_prepared(cfg("raw-a"), "ck") == out


def _no_preparing(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("prepared again")

    monkeypatch.setattr(data_pkg, "prepare_raw", refuse)


def test_a_moved_prepared_set_is_kept_by_its_content(ck_root, tmp_path, monkeypatch):
    """Job ids do not depend on where the data lies, nor does ensure_prepared; changed data does."""
    import shutil

    from fercluster.data.fingerprint import data_id

    before = _config(tmp_path, ck_root)
    out = ensure_prepared(before, "ck")
    job_data = data_id(before, "ck")
    stamp = (out / "images.npy").stat().st_mtime_ns
    moved = tmp_path / "elsewhere"
    shutil.move(ck_root, moved / "CK+")
    shutil.move(tmp_path / "data", moved / "data")
    after = _config(moved, moved / "CK+")
    _no_preparing(monkeypatch)
    assert ensure_prepared(after, "ck") == moved / "data/prepared/ck"
    assert (moved / "data/prepared/ck/images.npy").stat().st_mtime_ns == stamp
    assert data_id(after, "ck") == job_data
    (moved / "CK+" / "FACS" / "S005" / "001" / "extra.txt").write_text("changed raw data")
    with pytest.raises(DataError, match=r"does not match data set 'ck': raw data '\w+' from '.*CK\+' \(config: "):
        ensure_prepared(after, "ck")


def test_a_set_prepared_before_fingerprints_is_compared_by_path(ck_root, tmp_path, monkeypatch):
    import shutil

    out = ensure_prepared(_config(tmp_path, ck_root), "ck")
    info = json.loads((out / "info.json").read_text())
    del info["fingerprint"]  # as the previous version wrote it
    (out / "info.json").write_text(json.dumps(info))
    _no_preparing(monkeypatch)
    assert ensure_prepared(_config(tmp_path, ck_root), "ck") == out
    shutil.copytree(ck_root, tmp_path / "copy")
    with pytest.raises(DataError, match=r"source='.*CK\+' \(config: '.*copy'\)"):
        ensure_prepared(_config(tmp_path, tmp_path / "copy"), "ck")
