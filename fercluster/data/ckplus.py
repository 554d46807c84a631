"""CK+ as the authors prepared it.

Only sequences with an emotion file are used; from each, the first frame (neutral, no AUs) and the
last three (the sequence's emotion and its FACS AU set). Frames are turned grey, cropped (Haar
cascade with a landmarks fallback, landmarks, or none) and resized to 96x96. Folds: the subjects
with a labelled sequence, sorted by name, round robin over 10 folds.

Policy for bad input: missing folders and label, FACS or landmarks files that do not parse are
errors (DataError, naming the file and line); sequences with fewer than 4 frames, unreadable
images and faces found neither by the cascade nor by landmarks are skipped, counted and listed.
"""

# Over 400 lines: the CK+ reader follows the authors' pipeline step by step (labels, FACS, frames,
# grey, crop, folds); its parts share the tree's layout and are read together.

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from fercluster.data.crop import face_crop, haar_box, landmark_box, resize_grey, to_grey, to_uint8
from fercluster.data.fingerprint import raw_digest
from fercluster.data.prepared import PreparedData, Skip, read_au_regions
from fercluster.errors import DataError

EMOTION_NAMES = ("neutral", "anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")
SIX_CLASS = {1: 0, 3: 1, 4: 2, 5: 3, 6: 4, 7: 5}  # anger, disgust, fear, happy, sadness, surprise
SIX_NAMES = ("anger", "disgust", "fear", "happy", "sadness", "surprise")
IMAGES_DIR = "cohn-kanade-images"
EMOTION_DIRS = ("Emotion", "Emotion_labels")
FACS_DIR = "FACS"
LANDMARKS_DIR = "Landmarks"
FRAMES_NEEDED = 4  # the first frame and the last three
N_FOLDS = 10
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
LANDMARK_POINTS = 68
Crop = Literal["haar", "landmarks", "none"]
Progress = Callable[[int, int], None]


# ----------------------------------------------------------------------------- file formats


def _numbers(path: Path, lineno: int, line: str, count: int, what: str) -> list[float]:
    try:
        values = [float(v) for v in line.split()]
    except ValueError:
        values = []
    if len(values) != count or not all(np.isfinite(values)):
        raise DataError(f"{path}:{lineno}: expected {what}, got {line.strip()!r}")
    return values


def _lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return [(i, line) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]


def parse_emotion(path: str | Path) -> int:
    """The emotion code (1-7) of a CK+ ``*_emotion.txt`` file: one number, e.g. ``3.0000000e+00``."""
    path = Path(path)
    what = "one emotion code 1-7 (e.g. '3.0000000e+00')"
    lines = _lines(path)
    if not lines:
        raise DataError(f"{path}:1: empty; expected {what}")
    if len(lines) > 1:
        lineno, line = lines[1]
        raise DataError(f"{path}:{lineno}: expected {what} and nothing else, got a second line {line.strip()!r}")
    lineno, line = lines[0]
    (value,) = _numbers(path, lineno, line, 1, what)
    if value != int(value) or not 1 <= value <= 7:
        raise DataError(f"{path}:{lineno}: expected {what}, got {line.strip()!r}")
    return int(value)


def parse_facs(path: str | Path) -> list[int]:
    """The sorted AU numbers of a CK+ ``*_facs.txt`` file (lines of ``AU intensity``)."""
    path = Path(path)
    aus = set()
    for lineno, line in _lines(path):
        what = "two numbers 'AU intensity' (e.g. '1.0000000e+00 2.0000000e+00')"
        au, _intensity = _numbers(path, lineno, line, 2, what)
        if au != int(au) or au < 1:
            raise DataError(f"{path}:{lineno}: AU number must be a positive integer, got {line.strip()!r}")
        aus.add(int(au))
    return sorted(aus)


def parse_landmarks(path: str | Path) -> np.ndarray:
    """The (68, 2) ``x, y`` points of a CK+ ``*_landmarks.txt`` file."""
    path = Path(path)
    lines = _lines(path)
    points = [_numbers(path, n, line, 2, "two numbers 'x y'") for n, line in lines]
    if len(points) != LANDMARK_POINTS:
        raise DataError(f"{path}: {len(points)} landmark lines; expected {LANDMARK_POINTS} lines of 'x y'")
    return np.asarray(points, dtype=np.float64)


# ----------------------------------------------------------------------------- the tree


@dataclass(frozen=True)
class Sequence:
    subject: str  # "S005"
    sequence: str  # "001"
    frames: tuple[Path, ...]  # sorted by frame number
    frame_numbers: tuple[int, ...]
    emotion_file: Path | None
    facs_file: Path | None


@dataclass(frozen=True)
class Layout:
    root: Path
    images: Path
    emotion: Path
    facs: Path
    landmarks: Path | None


def find_layout(root: str | Path, crop: Crop = "haar") -> Layout:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"CK+ root not found: {root}; give the folder holding {IMAGES_DIR}/, Emotion/, FACS/")
    images = root / IMAGES_DIR
    if not images.is_dir():
        found = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))[:8]
        raise DataError(f"{root}: no {IMAGES_DIR}/ folder (found: {', '.join(found) or 'nothing'}); give the CK+ root")
    emotion = next((root / d for d in EMOTION_DIRS if (root / d).is_dir()), None)
    if emotion is None:
        raise DataError(f"{root}: no Emotion/ or Emotion_labels/ folder; CK+ labels are needed")
    if not (root / FACS_DIR).is_dir():
        raise DataError(f"{root}: no {FACS_DIR}/ folder; the AU sets come from it")
    landmarks = root / LANDMARKS_DIR if (root / LANDMARKS_DIR).is_dir() else None
    if landmarks is None and crop == "landmarks":
        raise DataError(f"{root}: no {LANDMARKS_DIR}/ folder, needed by --crop landmarks; use --crop haar or none")
    return Layout(root, images, emotion, root / FACS_DIR, landmarks)


def _frame_number(path: Path) -> int | None:
    match = re.search(r"(\d+)$", path.stem)
    return int(match.group(1)) if match else None


def _one(folder: Path, pattern: str) -> Path | None:
    found = sorted(folder.glob(pattern)) if folder.is_dir() else []
    if len(found) > 1:
        raise DataError(f"{folder}: {len(found)} files match {pattern}; expected one per sequence")
    return found[0] if found else None


def _dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def find_sequences(layout: Layout) -> tuple[list[Sequence], list[Skip]]:
    """Every sequence under cohn-kanade-images/, with its emotion and FACS files if present."""
    sequences, skips = [], []
    for subject_dir in _dirs(layout.images):
        for seq_dir in _dirs(subject_dir):
            frames = []
            for p in sorted(seq_dir.iterdir()):
                if p.name.startswith(".") or p.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                number = _frame_number(p)
                if number is None:
                    skips.append(Skip(str(p), "file", "no frame number in the file name", "skipped"))
                else:
                    frames.append((number, p))
            frames.sort()
            rel = Path(subject_dir.name, seq_dir.name)
            sequences.append(
                Sequence(
                    subject=subject_dir.name,
                    sequence=seq_dir.name,
                    frames=tuple(p for _, p in frames),
                    frame_numbers=tuple(n for n, _ in frames),
                    emotion_file=_one(layout.emotion / rel, "*_emotion.txt"),
                    facs_file=_one(layout.facs / rel, "*_facs.txt"),
                )
            )
    return sequences, skips


def assign_folds(subjects: list[str] | set[str], n_folds: int = N_FOLDS) -> dict[str, int]:
    """Subjects sorted by name; the one at sorted index i goes to fold i % n_folds."""
    return {s: i % n_folds for i, s in enumerate(sorted(subjects))}


# ----------------------------------------------------------------------------- frames and crops


@dataclass(frozen=True)
class Frame:
    path: Path
    subject: str
    sequence: str
    frame: int
    emotion: int  # 0 for the neutral first frame
    aus: tuple[int, ...]


def select_frames(seq: Sequence, emotion: int, aus: list[int], classes: int = 8) -> list[Frame]:
    """The first frame (neutral, no AUs) and the last three (emotion, AUs); 6 classes drop neutral."""
    picks = [(0, 0, ())] if classes == 8 else []
    picks += [(i, emotion, tuple(aus)) for i in (-3, -2, -1)]
    return [
        Frame(seq.frames[i], seq.subject, seq.sequence, seq.frame_numbers[i], code, frame_aus)
        for i, code, frame_aus in picks
    ]


def read_grey(path: Path) -> np.ndarray | None:
    """A frame as float grey in [0, 1] (``crop.to_grey``: scikit-image's weights for colour frames),
    or None if it cannot be read or decoded (missing, truncated)."""
    import cv2

    try:
        data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    except OSError:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None or image.dtype not in (np.uint8, np.uint16):
        return None
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    elif image.ndim == 3:  # OpenCV decodes colour as BGR(A)
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return to_grey(image)


def landmarks_file(layout: Layout, frame: Frame) -> Path | None:
    if layout.landmarks is None:
        return None
    path = layout.landmarks / frame.subject / frame.sequence / f"{frame.path.stem}_landmarks.txt"
    return path if path.is_file() else None


def crop_frame(
    image: np.ndarray, frame: Frame, layout: Layout, crop: Crop
) -> tuple[np.ndarray | None, str, Skip | None]:
    """``(crop96 or None, how it was cropped, Skip or None)`` for one float grey frame."""
    if crop == "none":
        return resize_grey(image), "none", None
    reason = "no landmarks file"
    if crop == "haar":
        box = haar_box(to_uint8(image))  # the cascade runs on 8-bit grey
        if box is not None:
            return face_crop(image, *box), "haar", None
        reason = "no face found by the Haar cascade"
    points_file = landmarks_file(layout, frame)
    if points_file is None:
        why = reason if crop == "landmarks" else f"{reason} and no landmarks file"
        return None, crop, Skip(str(frame.path), "image", why, "skipped")
    cropped = face_crop(image, *landmark_box(parse_landmarks(points_file)))
    note = Skip(str(frame.path), "image", reason, "cropped by landmarks") if crop == "haar" else None
    return cropped, "landmarks", note


# ----------------------------------------------------------------------------- the whole set


def _labelled_frames(sequences: list[Sequence], classes: int, skips: list[Skip]) -> tuple[list[Frame], int]:
    """The frames to keep, and how many labelled sequences the class set drops (contempt)."""
    frames, dropped = [], 0
    for seq in sequences:
        emotion = parse_emotion(seq.emotion_file)  # type: ignore[arg-type]
        aus = parse_facs(seq.facs_file) if seq.facs_file is not None else None
        where = str(seq.frames[0].parent) if seq.frames else f"{seq.subject}/{seq.sequence}"
        if classes == 6 and emotion not in SIX_CLASS:
            dropped += 1
        elif len(seq.frames) < FRAMES_NEEDED:
            reason = (
                f"too few frames ({len(seq.frames)}); needs at least {FRAMES_NEEDED} (the first and the last three)"
            )
            skips.append(Skip(where, "sequence", reason, "skipped"))
        elif aus is None:
            skips.append(Skip(where, "sequence", "emotion file but no FACS file", "skipped"))
        else:
            frames += select_frames(seq, emotion, aus, classes)
    return frames, dropped


def _orphan_labels(layout: Layout, sequences: list[Sequence]) -> list[Skip]:
    known = {(s.subject, s.sequence) for s in sequences}
    return [
        Skip(str(p), "sequence", f"emotion file but no {IMAGES_DIR}/ frames", "skipped")
        for p in sorted(layout.emotion.glob("*/*/*_emotion.txt"))
        if (p.parent.parent.name, p.parent.name) not in known
    ]


def _manifest(rows: list[tuple[Frame, str]], folds: dict[str, int], classes: int) -> "object":
    import pyarrow as pa

    names = EMOTION_NAMES if classes == 8 else SIX_NAMES
    labels = [f.emotion if classes == 8 else SIX_CLASS[f.emotion] for f, _ in rows]
    schema = pa.schema(
        [
            ("image_id", pa.string()),
            ("subject", pa.string()),
            ("sequence", pa.string()),
            ("frame", pa.int64()),
            ("label", pa.int64()),
            ("label_name", pa.string()),
            ("fold", pa.int64()),
            ("aus", pa.list_(pa.int64())),
            ("crop", pa.string()),
        ]
    )
    columns = {
        "image_id": [f.path.stem for f, _ in rows],
        "subject": [f.subject for f, _ in rows],
        "sequence": [f.sequence for f, _ in rows],
        "frame": [f.frame for f, _ in rows],
        "label": labels,
        "label_name": [names[label] for label in labels],
        "fold": [folds[f.subject] for f, _ in rows],
        "aus": [list(f.aus) for f, _ in rows],
        "crop": [how for _, how in rows],
    }
    return pa.Table.from_pydict(columns, schema=schema)


def _crop_all(
    frames: list[Frame], layout: Layout, crop: Crop, skips: list[Skip], progress: Progress | None
) -> tuple[list[np.ndarray], list[tuple[Frame, str]]]:
    images, rows = [], []
    for i, frame in enumerate(frames):
        image = read_grey(frame.path)
        if image is None:
            skips.append(Skip(str(frame.path), "image", "unreadable or truncated image", "skipped"))
        else:
            cropped, how, note = crop_frame(image, frame, layout, crop)
            if note is not None:
                skips.append(note)
            if cropped is not None:
                images.append(cropped)
                rows.append((frame, how))
        if progress is not None:
            progress(i + 1, len(frames))
    return images, rows


def prepare_ckplus(
    root: str | Path, crop: Crop = "haar", classes: int = 8, progress: Progress | None = None
) -> PreparedData:
    """Read a CK+ tree into memory as the authors prepared it; write it with ``write_prepared``."""
    if crop not in ("haar", "landmarks", "none"):
        raise DataError(f"crop: got {crop!r}; valid: haar, landmarks, none")
    if classes not in (6, 8):
        raise DataError(f"classes: got {classes!r}; CK+ has 8 or 6 classes")
    fingerprint = raw_digest(root)  # before reading: what was read, not what came after
    layout = find_layout(root, crop)
    sequences, skips = find_sequences(layout)
    skips += _orphan_labels(layout, sequences)
    labelled = [s for s in sequences if s.emotion_file is not None]
    if not labelled:
        raise DataError(f"{layout.root}: no sequence under {IMAGES_DIR}/ has an emotion file in {layout.emotion.name}/")
    folds = assign_folds({s.subject for s in labelled})
    frames, dropped = _labelled_frames(labelled, classes, skips)
    images, rows = _crop_all(frames, layout, crop, skips, progress)
    if not images:
        reasons = "; ".join(sorted({s.reason for s in skips})) or "no labelled sequence in the class set"
        raise DataError(f"{layout.root}: no image could be prepared ({reasons})")
    manifest = _manifest(rows, folds, classes)
    names = EMOTION_NAMES if classes == 8 else SIX_NAMES
    counts = _counts(sequences, labelled, rows, skips, dropped, crop, classes)
    labels = manifest.column("label").to_pylist()
    fold_col = manifest.column("fold").to_pylist()
    breakdown = {
        "per fold": {str(k): fold_col.count(k) for k in range(N_FOLDS)},
        "per class": {name: labels.count(i) for i, name in enumerate(names)},
    }
    info = {
        "kind": "ckplus",
        "classes": classes,
        "label_names": list(names),
        "source": str(layout.root.resolve()),
        "fingerprint": fingerprint,
        "crop": crop,
        "folds": N_FOLDS,
        "subjects": len(folds),
    }
    return PreparedData(
        images=np.stack(images).astype(np.uint8),
        manifest=manifest,
        info=info,
        skips=skips,
        au_regions=read_au_regions(layout.root / "au_regions.json"),
        counts=counts,
        breakdown=breakdown,
    )


def _counts(sequences, labelled, rows, skips, dropped, crop, classes) -> dict[str, int]:
    used = {(f.subject, f.sequence) for f, _ in rows}
    counts = {"sequences found": len(sequences), "labelled sequences": len(labelled)}
    if classes == 6:
        counts["labelled sequences dropped (contempt, 6 classes)"] = dropped
    counts["sequences skipped"] = sum(s.what == "sequence" for s in skips)
    counts["sequences used"] = len(used)
    counts["images written"] = len(rows)
    if crop == "haar":
        counts["faces missed by the Haar cascade"] = sum("Haar" in s.reason for s in skips)
        counts["  of which cropped by landmarks"] = sum(s.action == "cropped by landmarks" for s in skips)
    counts["images skipped"] = sum(s.what == "image" and s.action == "skipped" for s in skips)
    return counts
