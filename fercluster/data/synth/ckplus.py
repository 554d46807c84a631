"""Synthetic CK+ in the real layout: cohn-kanade-images/, Emotion/, FACS/, Landmarks/, au_regions.json.

Sequences go from neutral (first frame) to apex (last frame). Most have an emotion file (codes
1 anger .. 7 surprise, named after the last frame); the rest carry FACS codes only, as in the real
set. A few subjects are filmed at 640x480 and a few sequences are written as 3-channel PNGs.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fercluster.atomic import atomic_dir
from fercluster.data.synth.aus import (
    CKPLUS_EMOTIONS,
    EMOTION_WEIGHTS,
    Expression,
    intensity_code,
    sample_expression,
    sample_free_expression,
)
from fercluster.data.synth.faces import Stage, Subject, sample_subject
from fercluster.data.synth.regions import average_regions, crop_boxes
from fercluster.data.synth.shape import Pose, Tracking
from fercluster.errors import DataError

LABELLED_P = 0.85  # share of sequences (after each subject's first) that get an emotion file
_PNG = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]  # fast, small
_CODE = {name: code for code, name in CKPLUS_EMOTIONS.items()}


@dataclass(frozen=True)
class Sequence:
    subject: str
    name: str  # "001"
    emotion: int | None  # CK+ code, None = no emotion file
    expression: Expression  # at apex
    frames: int
    size: tuple[int, int]
    rgb: bool
    pose: Pose
    tracking: Tracking


def subject_names(n: int, rng: np.random.Generator) -> list[str]:
    """Sorted, irregular subject names like the real set: S005, S010, S011, ..."""
    upper = max(1000, 5 + 3 * n)
    width = len(str(upper - 1))
    numbers = np.sort(rng.choice(np.arange(5, upper), size=n, replace=False))
    return [f"S{int(k):0{width}d}" for k in numbers]


def _emotions(rng: np.random.Generator, n: int) -> list[str]:
    names = list(EMOTION_WEIGHTS)
    w = np.array([EMOTION_WEIGHTS[k] for k in names], dtype=np.float64)
    picks: list[str] = []
    while len(picks) < n:  # distinct within a subject while possible
        k = min(n - len(picks), len(names))
        picks += [names[i] for i in rng.choice(len(names), size=k, replace=False, p=w / w.sum())]
    return picks


def plan_subject(
    name: str,
    index: int,
    rng: np.random.Generator,
    sequences: int,
    frames: tuple[int, int],
    size: tuple[int, int],
    seq_counter: int,
) -> tuple[Subject, Pose, list[Sequence]]:
    """A subject, its neutral pose and its sequences (all random draws from ``rng``)."""
    subject = sample_subject(rng)
    w, h = (size[0], 480) if index % 10 == 3 and size == (640, 490) else size
    s = rng.uniform(0.15, 0.21) * min(w, h * 1.3)  # pixels per canonical unit: face 190-270 px wide
    pose = Pose(
        s,
        np.deg2rad(np.clip(rng.normal(0, 4), -10, 10)),
        w / 2 + rng.uniform(-0.12, 0.12) * w,
        h / 2 + rng.uniform(-0.06, 0.06) * h,
    )
    seqs = []
    for k, emotion in enumerate(_emotions(rng, sequences)):
        labelled = k == 0 or rng.random() < LABELLED_P
        expr = sample_expression(emotion, rng) if labelled else sample_free_expression(rng)
        seq_pose = Pose(
            pose.scale * rng.uniform(0.96, 1.04),
            pose.angle + np.deg2rad(rng.normal(0, 1.5)),
            pose.tx + rng.normal(0, 0.02 * w),
            pose.ty + rng.normal(0, 0.02 * h),
        )
        seqs.append(
            Sequence(
                name,
                f"{k + 1:03d}",
                _CODE[emotion] if labelled else None,
                expr,
                int(rng.integers(frames[0], frames[1] + 1)),
                (w, h),
                (seq_counter + k) % 12 == 5,
                seq_pose,
                Tracking.sample(rng, s, 0.05, 0.04),
            )
        )
    return subject, pose, seqs


def ramp(t: int, frames: int) -> float:
    """Expression intensity at frame t: 0 at the first frame, 1 at the last (eased)."""
    return float(0.5 - 0.5 * np.cos(np.pi * t / (frames - 1)))


def _fmt(*values: float) -> str:
    return "".join(f"{v:16.7e}" for v in values) + "\n"


def _write_sequence(root: Path, sub: Subject, seq: Sequence, rng: np.random.Generator, facs_coded: bool) -> None:
    stem = f"{seq.subject}_{seq.name}"
    folders = {k: root / k / seq.subject / seq.name for k in ("cohn-kanade-images", "Landmarks")}
    for f in folders.values():
        f.mkdir(parents=True)
    stage = Stage(sub, seq.pose, seq.size, rng)
    for t in range(seq.frames):
        img, landmarks = stage.render(seq.expression.scaled(ramp(t, seq.frames)), rng)
        if seq.rgb:
            img = np.clip(img[..., None] * np.array([0.93, 1.0, 1.07]) + 0.5, 0, 255).astype(np.uint8)
        frame = f"{stem}_{t + 1:08d}"
        (folders["cohn-kanade-images"] / f"{frame}.png").write_bytes(cv2.imencode(".png", img, _PNG)[1].tobytes())
        pts = seq.tracking.apply(landmarks, rng)
        (folders["Landmarks"] / f"{frame}_landmarks.txt").write_text("".join(_fmt(x, y) for x, y in pts))
    last = f"{stem}_{seq.frames:08d}"
    facs = root / "FACS" / seq.subject / seq.name
    facs.mkdir(parents=True)
    (facs / f"{last}_facs.txt").write_text(
        "".join(_fmt(au, intensity_code(v) if facs_coded else 0) for au, v in sorted(seq.expression.aus.items()))
    )
    if seq.emotion is not None:
        emo = root / "Emotion" / seq.subject / seq.name
        emo.mkdir(parents=True)
        (emo / f"{last}_emotion.txt").write_text(_fmt(seq.emotion))


def _check(subjects: int, sequences_per_subject: int, frames: tuple[int, int], size: tuple[int, int]) -> None:
    problems = []
    if subjects < 1:
        problems.append(f"subjects={subjects} (need >= 1)")
    if sequences_per_subject < 1:
        problems.append(f"sequences_per_subject={sequences_per_subject} (need >= 1)")
    if len(frames) != 2 or not 4 <= frames[0] <= frames[1]:
        problems.append(f"frames={frames} (need (lo, hi) with 4 <= lo <= hi: neutral + three peak frames)")
    if len(size) != 2 or min(size) < 64:
        problems.append(f"size={size} (need (width, height), both >= 64)")
    if problems:
        raise DataError("synthetic CK+: bad arguments: " + "; ".join(problems))


def _check_root(root: Path) -> None:
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DataError(
            f"synthetic CK+: {root} already exists and is not an empty folder; remove it or choose a new folder"
        )


def synth_ckplus(
    root: str | os.PathLike[str],
    subjects: int = 40,
    seed: int = 0,
    sequences_per_subject: int = 3,
    frames: tuple[int, int] = (6, 10),
    size: tuple[int, int] = (640, 490),
) -> dict:
    """Write a synthetic CK+ tree at ``root`` (a new or empty folder), atomically; return a summary.

    Deterministic: the same arguments give byte-identical files. ``frames``: (min, max) frames per
    sequence; ``size``: (width, height) of the frames.
    """
    frames, size = tuple(int(v) for v in frames), tuple(int(v) for v in size)
    _check(subjects, sequences_per_subject, frames, size)
    root = Path(root)
    _check_root(root)
    start = time.perf_counter()
    with atomic_dir(root) as tmp:  # an empty folder at root is replaced
        summary = _write_tree(tmp, subjects, seed, sequences_per_subject, frames, size)
    return {"root": str(root), **summary, "seconds": round(time.perf_counter() - start, 2)}


def _write_tree(
    root: Path, subjects: int, seed: int, sequences: int, frames: tuple[int, int], size: tuple[int, int]
) -> dict:
    children = np.random.SeedSequence(seed).spawn(subjects + 1)
    names = subject_names(subjects, np.random.default_rng(children[0]))
    boxes, counts = [], {name: 0 for name in CKPLUS_EMOTIONS.values()}
    n_seq = n_frames = n_labelled = 0
    for i, name in enumerate(names):
        rng = np.random.default_rng(children[i + 1])
        sub, _, seqs = plan_subject(name, i, rng, sequences, frames, size, i * sequences)
        boxes.append(crop_boxes(sub.shape, seqs[0].pose))
        coded = rng.random() < 0.8  # some subjects' FACS files carry no intensities (0), as in CK+
        for seq in seqs:
            _write_sequence(root, sub, seq, rng, coded)
            n_seq, n_frames = n_seq + 1, n_frames + seq.frames
            if seq.emotion is not None:
                n_labelled += 1
                counts[CKPLUS_EMOTIONS[seq.emotion]] += 1
    regions = average_regions(boxes)
    (root / "au_regions.json").write_text(json.dumps(regions, indent=2, sort_keys=True) + "\n")
    info = {
        "generator": "fercluster.data.synth",
        "kind": "ckplus",
        "seed": seed,
        "subjects": subjects,
        "sequences_per_subject": sequences,
        "frames": list(frames),
        "size": list(size),
    }
    (root / "synth.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return {
        "subjects": subjects,
        "sequences": n_seq,
        "labelled_sequences": n_labelled,
        "frames": n_frames,
        "emotions": counts,
    }
