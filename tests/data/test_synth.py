"""Synthetic FACS faces: determinism, real file formats, AU composition, AU regions."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from scipy.io import loadmat

from fercluster.data.crop import crop_box, landmark_box
from fercluster.data.synth import synth_ckplus, synth_tfd
from fercluster.data.synth.aus import ACTION_UNITS, CKPLUS_EMOTIONS, PROTOTYPES, Expression
from fercluster.data.synth.faces import Stage, sample_subject
from fercluster.data.synth.regions import crop_boxes
from fercluster.data.synth.shape import Pose
from fercluster.errors import DataError

SMALL = dict(subjects=4, seed=0, sequences_per_subject=3, frames=(4, 5), size=(320, 245))


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _floats(path: Path) -> list[list[float]]:
    return [[float(v) for v in line.split()] for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def ck(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("ck") / "CK"
    return root, synth_ckplus(root, **SMALL)


def test_ckplus_is_deterministic_for_a_seed(ck, tmp_path):
    root, _ = ck
    again = tmp_path / "again"
    synth_ckplus(again, **SMALL)
    assert _digest(again) == _digest(root)
    other = tmp_path / "other"
    synth_ckplus(other, **{**SMALL, "seed": 1})
    assert _digest(other) != _digest(root)


def test_ckplus_tree_has_the_real_layout_and_formats(ck):
    root, summary = ck
    subjects = sorted(p.name for p in (root / "cohn-kanade-images").iterdir())
    assert len(subjects) == 4 and all(len(s) == 4 and s[0] == "S" and s[1:].isdigit() for s in subjects)
    sizes, channels, n_frames = set(), set(), 0
    for seq in sorted((root / "cohn-kanade-images").glob("S*/*")):
        s, q = seq.parent.name, seq.name
        frames = sorted(seq.glob("*.png"))
        assert [f.name for f in frames] == [f"{s}_{q}_{k:08d}.png" for k in range(1, len(frames) + 1)]
        assert 4 <= len(frames) <= 5
        n_frames += len(frames)
        for f in frames:
            img = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
            sizes.add(img.shape[:2])
            channels.add(1 if img.ndim == 2 else img.shape[2])
            lm = np.array(_floats(root / "Landmarks" / s / q / f"{f.stem}_landmarks.txt"))
            assert lm.shape == (68, 2)
            assert (lm[:, 0] > 0).all() and (lm[:, 0] < img.shape[1]).all()
        last = frames[-1].stem
        facs = _floats(root / "FACS" / s / q / f"{last}_facs.txt")
        assert facs and all(len(row) == 2 and int(row[0]) in ACTION_UNITS and 0 <= row[1] <= 5 for row in facs)
        emotion = root / "Emotion" / s / q / f"{last}_emotion.txt"
        if emotion.exists():
            text = emotion.read_text()
            assert text.strip() == f"{float(text):.7e}" and int(float(text)) in CKPLUS_EMOTIONS
            assert text.startswith("   ") and text.endswith("\n")
    assert sizes == {(245, 320)} and channels == {1, 3}  # a few 3-channel sequences, like the real set
    assert summary["frames"] == n_frames and summary["sequences"] == 12
    assert summary["labelled_sequences"] == len(list((root / "Emotion").rglob("*_emotion.txt")))


def test_ckplus_default_size_includes_640x480_subjects(tmp_path):
    root = tmp_path / "ck"
    synth_ckplus(root, subjects=4, sequences_per_subject=1, frames=(4, 4))
    shapes = {cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).shape for p in (root / "cohn-kanade-images").rglob("*.png")}
    assert shapes == {(490, 640), (480, 640)}


def test_emotions_carry_their_prototype_aus(ck):
    root, _ = ck
    names = {v: k for k, v in CKPLUS_EMOTIONS.items()}
    checked = 0
    for emotion in (root / "Emotion").rglob("*_emotion.txt"):
        code = int(float(emotion.read_text()))
        facs = Path(str(emotion).replace("Emotion", "FACS", 1).replace("_emotion.txt", "_facs.txt"))
        aus = {int(row[0]) for row in _floats(facs)}
        proto = PROTOTYPES[CKPLUS_EMOTIONS[code]]
        required = set(proto.required)
        if proto.swap and proto.swap[1] in aus:
            required = (required - {proto.swap[0]}) | {proto.swap[1]}
        assert required <= aus, (CKPLUS_EMOTIONS[code], aus)
        assert names[CKPLUS_EMOTIONS[code]] == code
        checked += 1
    assert checked >= 4


def test_au_regions_are_inside_the_crop_and_brows_apart_from_mouth(ck):
    root, _ = ck
    regions = json.loads((root / "au_regions.json").read_text())
    assert set(regions) == {str(a) for a in ACTION_UNITS}
    for au, entry in regions.items():
        y0, y1, x0, x1 = entry["box"]
        assert 0 <= y0 < y1 <= 96 and 0 <= x0 < x1 <= 96, (au, entry)
        assert entry["name"] == ACTION_UNITS[int(au)].name
    for brow in ("1", "2", "4"):
        for mouth in ("12", "15", "17", "20", "23", "24", "25", "26", "27"):
            assert regions[brow]["box"][1] <= regions[mouth]["box"][0], (brow, mouth)


@pytest.mark.parametrize("au", sorted(ACTION_UNITS))
def test_each_au_changes_pixels_inside_its_region_more_than_outside(au):
    rng = np.random.default_rng(7)
    sub = dataclasses.replace(sample_subject(rng), noise=0.0)
    pose = Pose(120.0, 0.03, 320.0, 245.0)
    stage = Stage(sub, pose, (640, 490), rng)
    neutral, landmarks = stage.render(Expression({}), rng)
    apex, _ = stage.render(Expression({au: 1.0}), rng)
    box = landmark_box(landmarks)  # both frames cropped like the neutral face, so only the AU moves
    diff = np.abs(crop_box(apex, *box).astype(float) - crop_box(neutral, *box).astype(float))
    y0, y1, x0, x1 = (int(round(v)) for v in crop_boxes(sub.shape, pose)[au])
    inside = np.zeros_like(diff, dtype=bool)
    inside[max(y0, 0) : y1, max(x0, 0) : x1] = True
    assert diff[inside].mean() > 4 * diff[~inside].mean() + 0.05, au
    assert diff[inside].sum() > 0.8 * diff.sum(), au


def test_tfd_mat_layout_folds_and_sidecars(tmp_path):
    path = tmp_path / "TFD_96x96.mat"
    summary = synth_tfd(path, identities=10, seed=0, images_per_identity=3, unlabelled=4)
    mat = loadmat(path)
    images, labs_ex, labs_id, folds = mat["images"], mat["labs_ex"], mat["labs_id"], mat["folds"]
    assert images.shape == (34, 96, 96) and images.dtype == np.uint8
    assert labs_ex.shape == labs_id.shape == (34, 1) and folds.shape == (34, 5)
    unl = labs_ex[:, 0] == -1
    assert unl.sum() == 4 and (folds[unl] == 0).all() and (labs_id[unl] == -1).all()
    assert set(labs_ex[~unl, 0]) <= set(range(1, 8)) and set(np.unique(folds[~unl])) == {1, 2, 3}
    for f in range(5):  # identity-disjoint splits
        owners = {s: set(labs_id[~unl, 0][folds[~unl, f] == s]) for s in (1, 2, 3)}
        assert not (owners[1] & owners[2] or owners[1] & owners[3] or owners[2] & owners[3])
    regions = json.loads((tmp_path / "TFD_96x96.au_regions.json").read_text())
    assert set(regions) == {str(a) for a in ACTION_UNITS}
    aus = pd.read_parquet(tmp_path / "TFD_96x96.aus.parquet")
    assert len(aus) == 34 and list(aus["label"]) == list(labs_ex[:, 0])
    happy = aus[aus["label"] == 4]
    assert all({6, 12} <= set(a) for a in happy["aus"]) and all(len(a) == 0 for a in aus[aus["label"] == 7]["aus"])
    assert summary["images"] == 34 and summary["labelled"] == 30
    first = path.read_bytes()
    synth_tfd(path, identities=10, seed=0, images_per_identity=3, unlabelled=4)
    assert path.read_bytes() == first  # byte-identical, the .mat header included
    synth_tfd(path, identities=10, seed=1, images_per_identity=3, unlabelled=4)
    assert path.read_bytes() != first


def test_ckplus_refuses_a_non_empty_root_and_leaves_no_temp(tmp_path):
    root = tmp_path / "ck"
    root.mkdir()
    (root / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="already exists"):
        synth_ckplus(root, subjects=2, frames=(4, 4))
    with pytest.raises(DataError, match="frames"):
        synth_ckplus(tmp_path / "new", subjects=2, frames=(2, 3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
