"""CK+: file formats, frame selection, labels, folds, six classes, crops, bad input, the CLI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from fercluster.data.ckplus import (
    EMOTION_NAMES,
    SIX_NAMES,
    assign_folds,
    parse_emotion,
    parse_facs,
    parse_landmarks,
    prepare_ckplus,
)
from fercluster.data.crop import face_crop, landmark_box, resize_grey
from fercluster.data.prepared import load_prepared, write_prepared
from fercluster.errors import DataError

LABELLED_SUBJECTS = [
    "S005", "S010", "S011", "S022", "S037", "S050", "S052", "S055", "S060", "S071", "S080", "S100", "S101",
]  # fmt: skip


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _rows(data) -> pd.DataFrame:
    return data.manifest.to_pandas()


# ----------------------------------------------------------------------------- file formats


def test_parse_emotion_reads_the_float_code(tmp_path):
    assert parse_emotion(_write(tmp_path / "e.txt", "   3.0000000e+00\n")) == 3
    assert parse_emotion(_write(tmp_path / "f.txt", "\n   7.0000000e+00   \n\n")) == 7


@pytest.mark.parametrize(
    ("text", "line", "detail"),
    [
        ("abc\n", 1, "got 'abc'"),
        ("   9.0000000e+00\n", 1, "got '9.0000000e+00'"),
        ("   2.5000000e+00\n", 1, "got '2.5000000e+00'"),
        ("   1.0000000e+00   2.0000000e+00\n", 1, "got '1.0000000e+00   2.0000000e+00'"),
        ("   3.0000000e+00\n   4.0000000e+00\n", 2, "got a second line '4.0000000e+00'"),
        ("", 1, "empty"),
    ],
)
def test_parse_emotion_errors_name_file_and_line(tmp_path, text, line, detail):
    path = _write(tmp_path / "S005_001_00000011_emotion.txt", text)
    with pytest.raises(DataError) as info:
        parse_emotion(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: ")
    assert detail in message and "\n" not in message


def test_parse_emotion_exact_message(tmp_path):
    path = _write(tmp_path / "e.txt", "x\n")
    with pytest.raises(DataError) as info:
        parse_emotion(path)
    assert str(info.value) == f"{path}:1: expected one emotion code 1-7 (e.g. '3.0000000e+00'), got 'x'"


def test_parse_facs_returns_sorted_unique_aus(tmp_path):
    text = "   1.0000000e+00   2.0000000e+00\n\n   2.7000000e+01   0.0000000e+00\n   2.0000000e+00   4.0000000e+00\n"
    assert parse_facs(_write(tmp_path / "f.txt", text)) == [1, 2, 27]
    assert parse_facs(_write(tmp_path / "empty.txt", "\n")) == []


def test_parse_facs_errors_name_file_and_line(tmp_path):
    path = _write(tmp_path / "f.txt", "   1.0000000e+00   2.0000000e+00\n   4.0000000e+00\n")
    expected = rf"^{re.escape(str(path))}:2: expected two numbers 'AU intensity'.*got '4.0000000e\+00'$"
    with pytest.raises(DataError, match=expected):
        parse_facs(path)
    path = _write(tmp_path / "g.txt", "   1.5000000e+00   2.0000000e+00\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:1: AU number must be a positive integer"):
        parse_facs(path)


def test_parse_landmarks_reads_68_points(tmp_path):
    points = np.arange(136, dtype=float).reshape(68, 2)
    path = _write(tmp_path / "l.txt", "".join(f"   {x:.7e}   {y:.7e}\n" for x, y in points))
    np.testing.assert_allclose(parse_landmarks(path), points)


def test_parse_landmarks_errors(tmp_path):
    lines = ["   1.0e+00   2.0e+00\n"] * 68
    lines[4] = "   1.0e+00   nan?\n"
    path = _write(tmp_path / "l.txt", "".join(lines))
    expected = rf"^{re.escape(str(path))}:5: expected two numbers 'x y', got '1.0e\+00   nan\?'$"
    with pytest.raises(DataError, match=expected):
        parse_landmarks(path)
    path = _write(tmp_path / "m.txt", "".join(lines[:3]))
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: 3 landmark lines; expected 68"):
        parse_landmarks(path)


# ----------------------------------------------------------------------------- selection, labels, folds


def test_counts_and_skips_on_the_fixture_tree(ck_root):
    data = prepare_ckplus(ck_root, crop="landmarks")
    assert data.counts == {
        "sequences found": 17,
        "labelled sequences": 15,
        "sequences skipped": 1,
        "sequences used": 14,
        "images written": 56,
        "images skipped": 0,
    }
    (skip,) = data.skips
    assert skip.path.endswith(os.path.join("S060", "001")) and skip.action == "skipped"
    assert skip.reason == "too few frames (3); needs at least 4 (the first and the last three)"
    assert data.breakdown["per class"] == {
        "neutral": 14, "anger": 6, "contempt": 6, "disgust": 3, "fear": 6, "happy": 9, "sadness": 6, "surprise": 6,
    }  # fmt: skip


def test_first_and_last_three_frames_with_labels_and_aus(ck_root):
    rows = _rows(prepare_ckplus(ck_root, crop="landmarks"))
    seq = rows[(rows.subject == "S005") & (rows.sequence == "001")]
    assert seq.image_id.tolist() == [f"S005_001_{f:08d}" for f in (1, 3, 4, 5)]
    assert seq.frame.tolist() == [1, 3, 4, 5]
    assert seq.label.tolist() == [0, 3, 3, 3]
    assert seq.label_name.tolist() == ["neutral", "disgust", "disgust", "disgust"]
    assert [list(a) for a in seq.aus] == [[], [9, 15, 16], [9, 15, 16], [9, 15, 16]]
    four = rows[rows.subject == "S101"]  # exactly four frames: all of them
    assert four.frame.tolist() == [1, 2, 3, 4]
    assert set(rows.label_name) == set(EMOTION_NAMES)
    assert (rows.label_name == [EMOTION_NAMES[i] for i in rows.label]).all()
    # unlabelled sequences and the subject without any label are not used
    assert not ((rows.subject == "S005") & (rows.sequence == "002")).any()
    assert "S999" not in set(rows.subject)
    assert rows.subject.str.len().eq(4).all() and rows.sequence.eq("001").sum() > 0


def test_rgb_frames_become_grey(ck_root):
    data = prepare_ckplus(ck_root, crop="landmarks")
    rows = _rows(data)
    i = int(np.flatnonzero(rows.image_id == "S011_001_00000005")[0])
    path = ck_root / "cohn-kanade-images/S011/001/S011_001_00000005.png"
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).ndim == 3  # the fixture wrote it in colour
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    from skimage.color import rgb2gray  # the authors' call (weights 0.2125, 0.7154, 0.0721)

    grey = (rgb2gray(rgb) * 255).astype(np.uint8) / 255.0  # stored as uint8 grey before the crop, as the authors'
    points = parse_landmarks(ck_root / "Landmarks/S011/001/S011_001_00000005_landmarks.txt")
    diff = data.images[i].astype(int) - face_crop(grey, *landmark_box(points)).astype(int)
    assert np.abs(diff).max() <= 1


def test_folds_round_robin_by_sorted_labelled_subject(ck_root):
    rows = _rows(prepare_ckplus(ck_root, crop="landmarks"))
    expected = {s: i % 10 for i, s in enumerate(LABELLED_SUBJECTS)}
    by_subject = rows.groupby("subject").fold.unique()
    assert all(len(f) == 1 for f in by_subject)  # subject independent: one fold per subject
    assert {s: int(f[0]) for s, f in by_subject.items()} == {s: expected[s] for s in by_subject.index}
    assert assign_folds(["S010", "S005", "S200"], n_folds=2) == {"S005": 0, "S010": 1, "S200": 0}


def test_six_classes_drop_neutral_and_contempt_and_remap(ck_root):
    eight = _rows(prepare_ckplus(ck_root, crop="landmarks"))
    data = prepare_ckplus(ck_root, crop="landmarks", classes=6)
    six = _rows(data)
    assert len(six) == (15 - 2 - 1) * 3  # labelled, minus contempt, minus the short sequence
    assert data.counts["labelled sequences dropped (contempt, 6 classes)"] == 2
    assert set(six.label_name) == set(SIX_NAMES) and sorted(six.label.unique()) == list(range(6))
    assert (six.label_name == [SIX_NAMES[i] for i in six.label]).all()
    remap = {1: 0, 3: 1, 4: 2, 5: 3, 6: 4, 7: 5}
    merged = six.merge(eight, on="image_id", suffixes=("", "_8"))
    assert len(merged) == len(six)
    assert (merged.label == merged.label_8.map(remap)).all()
    assert (merged.fold == merged.fold_8).all()  # same folds as the 8-class set
    assert all(len(a) > 0 for a in six.aus)


def test_emotion_labels_folder_name_is_accepted(tmp_path, make_ckplus):
    root = make_ckplus(tmp_path / "CK", emotion_dir="Emotion_labels")
    assert prepare_ckplus(root, crop="landmarks").counts["images written"] == 56


# ----------------------------------------------------------------------------- crops


def test_crop_none_resizes_the_whole_frame(ck_root):
    data = prepare_ckplus(ck_root, crop="none")
    rows = _rows(data)
    assert set(rows.crop) == {"none"}
    frame = cv2.imread(str(ck_root / "cohn-kanade-images/S005/001/S005_001_00000001.png"), cv2.IMREAD_GRAYSCALE)
    i = int(np.flatnonzero(rows.image_id == "S005_001_00000001")[0])
    np.testing.assert_array_equal(data.images[i], resize_grey(frame / 255.0))


def test_haar_crop_with_landmarks_fallback_listed(ck_root, seq_type, make_ckplus, astronaut):
    make_ckplus(ck_root, [seq_type("S200", "001", 5, frames=4, aus=(6, 12))])
    frame, _ = astronaut()
    for f in range(1, 5):
        cv2.imwrite(str(ck_root / f"cohn-kanade-images/S200/001/S200_001_{f:08d}.png"), frame)
    (ck_root / "Landmarks/S101/001/S101_001_00000004_landmarks.txt").unlink()
    data = prepare_ckplus(ck_root, crop="haar")
    rows = _rows(data)
    assert set(rows[rows.subject == "S200"].crop) == {"haar"}
    assert set(rows[rows.subject != "S200"].crop) == {"landmarks"}
    assert data.counts["faces missed by the Haar cascade"] == 56
    assert data.counts["  of which cropped by landmarks"] == 55
    assert data.counts["images skipped"] == 1 and data.counts["images written"] == 59
    skipped = [s for s in data.skips if s.action == "skipped" and s.what == "image"]
    assert len(skipped) == 1 and skipped[0].path.endswith("S101_001_00000004.png")
    assert skipped[0].reason == "no face found by the Haar cascade and no landmarks file"
    fallbacks = [s for s in data.skips if s.action == "cropped by landmarks"]
    assert len(fallbacks) == 55 and {s.reason for s in fallbacks} == {"no face found by the Haar cascade"}


# ----------------------------------------------------------------------------- bad input


def test_missing_folders_are_clear_errors(tmp_path, ck_root):
    with pytest.raises(DataError, match=r"^CK\+ root not found: .*nope; give the folder holding"):
        prepare_ckplus(tmp_path / "nope")
    with pytest.raises(DataError, match=r"no cohn-kanade-images/ folder \(found: CK\+\); give the CK\+ root$"):
        prepare_ckplus(tmp_path)
    shutil.rmtree(ck_root / "Landmarks")
    with pytest.raises(DataError, match="no Landmarks/ folder, needed by --crop landmarks"):
        prepare_ckplus(ck_root, crop="landmarks")
    shutil.rmtree(ck_root / "Emotion")
    with pytest.raises(DataError, match=r"no Emotion/ or Emotion_labels/ folder"):
        prepare_ckplus(ck_root, crop="none")


def test_bad_emotion_file_in_the_tree_names_file_and_line(ck_root):
    bad = ck_root / "Emotion/S022/001/S022_001_00000005_emotion.txt"
    bad.write_text("   1.0000000e+00\n   garbage\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(bad))}:2: "):
        prepare_ckplus(ck_root, crop="landmarks")


def test_bad_facs_file_in_the_tree_names_file_and_line(ck_root):
    bad = ck_root / "FACS/S022/001/S022_001_00000005_facs.txt"
    bad.write_text("   4.0000000e+00   1.0000000e+00\n   5.0000000e+00\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(bad))}:2: "):
        prepare_ckplus(ck_root, crop="landmarks")


def test_unreadable_and_truncated_images_are_listed_skips(ck_root):
    frame = ck_root / "cohn-kanade-images/S022/001/S022_001_00000005.png"
    frame.write_bytes(frame.read_bytes()[:60])  # truncated
    (ck_root / "cohn-kanade-images/S037/001/S037_001_00000001.png").write_bytes(b"")  # empty
    data = prepare_ckplus(ck_root, crop="landmarks")
    assert data.counts["images written"] == 54 and data.counts["images skipped"] == 2
    skipped = sorted(s.path for s in data.skips if s.reason == "unreadable or truncated image")
    assert [Path(p).name for p in skipped] == ["S022_001_00000005.png", "S037_001_00000001.png"]
    assert "S022_001_00000005" not in set(_rows(data).image_id)


def test_missing_facs_file_is_a_listed_sequence_skip(ck_root):
    (ck_root / "FACS/S022/001/S022_001_00000005_facs.txt").unlink()
    data = prepare_ckplus(ck_root, crop="landmarks")
    assert any(s.reason == "emotion file but no FACS file" and s.path.endswith("S022/001") for s in data.skips)
    assert "S022" not in set(_rows(data).subject)


def test_au_regions_are_copied_when_the_raw_set_has_them(ck_root, tmp_path):
    regions = {"12": {"name": "lip corner puller", "box": [60, 80, 20, 76]}}
    (ck_root / "au_regions.json").write_text(__import__("json").dumps(regions))
    write_prepared(tmp_path / "P", prepare_ckplus(ck_root, crop="landmarks"))
    prepared = load_prepared(tmp_path / "P")
    assert prepared.au_regions == regions and (tmp_path / "P/au_regions.json").is_file()


# ----------------------------------------------------------------------------- CLI


def _app() -> typer.Typer:
    from fercluster.cli import data as data_cli

    app, bench = typer.Typer(), typer.Typer()
    data_cli.register(app, bench)
    return app


def test_cli_prepare_writes_the_set_and_prints_counts(ck_root, tmp_path):
    out = tmp_path / "P"
    args = ["data", "prepare", "ckplus", str(ck_root), "--out", str(out), "--crop", "landmarks"]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    for text in ("sequences found", "17", "labelled sequences", "images written", "56", "per fold", "per class",
                 "too few frames (n)", "skipped.csv"):  # fmt: skip
        assert text in result.output
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert list(manifest.columns) == [
        "image_id", "subject", "sequence", "frame", "label", "label_name", "fold", "aus", "crop",
    ]  # fmt: skip
    skipped = pd.read_csv(out / "skipped.csv")
    assert list(skipped.columns) == ["path", "what", "reason", "action"] and len(skipped) == 1


def test_cli_help_has_an_example():
    for args in (["data", "prepare", "ckplus", "--help"], ["data", "prepare", "tfd", "--help"],
                 ["data", "synth", "ckplus", "--help"], ["data", "synth", "tfd", "--help"]):  # fmt: skip
        result = CliRunner().invoke(_app(), args)
        assert result.exit_code == 0 and "Example: fercluster data" in result.output


def _fercluster(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from fercluster.cli.main import main; sys.argv = ['fercluster', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def test_cli_bad_input_is_one_line_error_exit_2(ck_root, tmp_path):
    bad = ck_root / "Emotion/S022/001/S022_001_00000005_emotion.txt"
    bad.write_text("oops\n")
    result = _fercluster("data", "prepare", "ckplus", str(ck_root), "--out", str(tmp_path / "P"), "--crop", "none")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {bad}:1: expected one emotion code 1-7 (e.g. '3.0000000e+00'), got 'oops'"
    )
    assert not (tmp_path / "P").exists()


def test_cli_usage_errors_exit_2(ck_root, tmp_path):
    args = ["data", "prepare", "ckplus", str(ck_root), "--out", str(tmp_path / "P"), "--classes", "7"]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 2 and "got 7; CK+ has 8 or 6 classes" in result.output
    result = CliRunner().invoke(_app(), args[:-2] + ["--crop", "eyes"])
    assert result.exit_code == 2 and "'eyes'" in result.output and "Invalid value" in result.output
