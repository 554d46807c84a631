"""TFD: reading the v5 .mat, labels, splits, 48x48 files, and the clear errors for bad files."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from fercluster.data.tfd import LABEL_NAMES, prepare_tfd
from fercluster.errors import DataError


def test_labelled_images_labels_identities_and_splits(tmp_path, make_tfd):
    mat = tmp_path / "TFD_96x96.mat"
    raw = make_tfd(mat, n=30)
    data = prepare_tfd(mat)
    rows = data.manifest.to_pandas()
    labels = raw["labs_ex"].ravel().astype(int)
    keep = np.flatnonzero(labels > 0)
    assert len(rows) == len(keep) == 20
    assert rows.image_id.tolist() == [f"TFD_{i:06d}" for i in keep]
    assert rows.label.tolist() == (labels[keep] - 1).tolist()
    assert rows.label_name.tolist() == [LABEL_NAMES[v - 1] for v in labels[keep]]
    assert rows.identity.tolist() == raw["labs_id"].ravel()[keep].astype(int).tolist()
    names = {1: "train", 2: "valid", 3: "test"}
    for k in range(5):
        assert rows[f"split_{k}"].tolist() == [names[int(v)] for v in raw["folds"][keep, k]]
    np.testing.assert_array_equal(data.images, raw["images"][keep])
    assert data.counts == {
        "images in file": 30, "labelled": 20, "unlabelled (dropped)": 10, "identities": 8, "images written": 20,
    }  # fmt: skip
    assert data.info["kind"] == "tfd" and data.info["classes"] == 7 and data.info["label_names"] == list(LABEL_NAMES)
    assert LABEL_NAMES == ("anger", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def test_48x48_file_is_resized_to_96(tmp_path, make_tfd):
    mat = tmp_path / "TFD_48x48.mat"
    make_tfd(mat, n=9, size=48)
    data = prepare_tfd(mat)
    assert data.images.shape == (6, 96, 96) and data.images.dtype == np.uint8
    assert data.info["source_size"] == 48


def test_v73_hdf5_file_is_a_clear_error(tmp_path, make_v73):
    mat = tmp_path / "TFD_96x96.mat"
    make_v73(mat)
    with pytest.raises(DataError) as info:
        prepare_tfd(mat)
    assert str(info.value) == (
        f"{mat}: MATLAB v7.3 (HDF5) file, which scipy cannot read; re-save it as v7 "
        "(in MATLAB: s = load('TFD_96x96.mat'); save('TFD_96x96_v7.mat', '-struct', 's', '-v7'))"
    )


def test_not_a_mat_file_and_missing_file(tmp_path):
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"hello, not MATLAB" * 20)
    with pytest.raises(DataError, match=rf"^{re.escape(str(junk))}: not a MATLAB \.mat file"):
        prepare_tfd(junk)
    with pytest.raises(DataError, match=r"^TFD file not found: .*nope\.mat; give the path of TFD_96x96\.mat$"):
        prepare_tfd(tmp_path / "nope.mat")


def test_missing_keys_are_named(tmp_path, make_tfd):
    mat = tmp_path / "t.mat"
    make_tfd(mat, n=6, folds=None, labs_id=None)
    with pytest.raises(DataError) as info:
        prepare_tfd(mat)
    assert str(info.value) == (
        f"{mat}: missing key(s) labs_id, folds; a TFD file holds images, labs_ex, labs_id, folds "
        "(found: images, labs_ex)"
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"labs_ex": np.full((6, 1), 9.0)}, r"'labs_ex' holds \[9\]; expected -1 \(unlabelled\) or 1\.\.7"),
        ({"folds": np.ones((6, 4))}, r"'folds' has shape \(6, 4\); expected \(6, 5\)"),
        ({"folds": np.zeros((6, 5))}, r"'folds' is not 1, 2 or 3 .* at row\(s\) \[1, 2, 4, 5\]"),
        ({"images": np.zeros((6, 96, 80), np.uint8)}, r"'images' has shape \(6, 96, 80\)"),
        ({"labs_id": np.ones((5, 1))}, r"'labs_id' has shape \(5, 1\); expected \(6, 1\)"),
        ({"labs_ex": -np.ones((6, 1))}, r"no labelled image"),
    ],
)
def test_bad_contents_are_clear_errors(tmp_path, make_tfd, override, message):
    mat = tmp_path / "t.mat"
    make_tfd(mat, n=6, **override)
    with pytest.raises(DataError, match=message):
        prepare_tfd(mat)


def test_cli_prepare_tfd(tmp_path, make_tfd):
    from fercluster.cli import data as data_cli

    app = typer.Typer()
    data_cli.register(app, typer.Typer())
    make_tfd(tmp_path / "TFD_96x96.mat", n=30)
    out = tmp_path / "P"
    result = CliRunner().invoke(app, ["data", "prepare", "tfd", str(tmp_path / "TFD_96x96.mat"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for text in ("images in file", "30", "unlabelled (dropped)", "images written", "20", "per fold", "train"):
        assert text in result.output
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert list(manifest.columns) == ["image_id", "identity", "label", "label_name"] + [f"split_{k}" for k in range(5)]
    assert np.load(out / "images.npy").shape == (20, 96, 96)
