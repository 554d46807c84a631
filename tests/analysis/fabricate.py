"""Fabricated inputs for the analysis tests: a small CK+-like prepared set with planted AU
regions, and run directories written the way a training job writes them (random, untrained
models: the analysis reads files, it does not care how good the model is).

Planted truth: each AU paints its own oriented grating inside its own box; an image carries the
gratings of its AUs. A conv3 filter that responds to one grating fires where that AU's box is,
so its guided-backprop energy should fall in the box of the AU that KL picks for it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fercluster.config import parse_config
from fercluster.data.prepared import load_prepared, split_indices
from fercluster.train import outputs
from fercluster.train.model import build_model, model_config
from fercluster.train.preprocess import preprocess

# Non-overlapping boxes (y0, y1, x0, x1) in 96x96 coordinates, one grating orientation each.
REGIONS = {
    1: ("Inner brow raiser", [6, 30, 6, 42], 0.0),
    5: ("Upper lid raiser", [6, 30, 54, 90], 90.0),
    9: ("Nose wrinkler", [36, 60, 30, 66], 45.0),
    12: ("Lip corner puller", [66, 90, 6, 42], 135.0),
    25: ("Lips part", [66, 90, 54, 90], 22.5),
}
EMOTIONS = ["neutral", "anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"]


def _grating(angle: float, period: float = 6.0) -> np.ndarray:
    yy, xx = np.mgrid[0:96, 0:96].astype(np.float64)
    t = np.deg2rad(angle)
    return np.sin(2 * np.pi * (xx * np.cos(t) + yy * np.sin(t)) / period)


def make_prepared(path: Path, subjects: int = 30, seed: int = 0, with_aus: bool = True) -> Path:
    rng = np.random.default_rng(seed)
    gratings = {au: _grating(angle) for au, (_, _, angle) in REGIONS.items()}
    images, rows = [], []
    for s in range(subjects):
        subject = f"S{s + 5:03d}"
        for q in range(2):
            label = int(rng.integers(1, 8))
            aus = sorted(int(a) for a in rng.choice(list(REGIONS), size=int(rng.integers(1, 3)), replace=False))
            for frame, (lab, au_set) in enumerate([(0, [])] + [(label, aus)] * 3):
                img = 100 + 20 * rng.standard_normal((96, 96))
                for au in au_set:
                    y0, y1, x0, x1 = REGIONS[au][1]
                    img[y0:y1, x0:x1] += 90 * gratings[au][y0:y1, x0:x1]
                images.append(np.clip(img, 0, 255).astype(np.uint8))
                rows.append(
                    {
                        "image_id": f"{subject}_{q + 1:03d}_{frame + 1:08d}",
                        "subject": subject,
                        "sequence": f"{q + 1:03d}",
                        "frame": frame + 1,
                        "label": lab,
                        "label_name": EMOTIONS[lab],
                        "fold": s % 10,
                        "aus": au_set,
                        "crop": "landmarks",
                    }
                )
    path.mkdir(parents=True, exist_ok=True)
    np.save(path / "images.npy", np.stack(images))
    pd.DataFrame(rows).to_parquet(path / "manifest.parquet")
    regions = {str(au): {"name": name, "box": box} for au, (name, box, _) in REGIONS.items()}
    (path / "info.json").write_text(
        json.dumps(
            {
                "kind": "ckplus",
                "classes": 8,
                "label_names": EMOTIONS,
                "n_images": len(rows),
                "source": "fabricated",
                "crop": "landmarks",
                "created": "2024-01-01T00:00:00",
                "au_regions": regions if with_aus else None,
            }
        )
    )
    if with_aus:
        (path / "au_regions.json").write_text(json.dumps(regions))
    return path


def make_config(tmp: Path, prepared: Path, folds=(0, 1, 2), variants=("none", "AD"), **analysis) -> "object":
    return parse_config(
        {
            "name": "fab",
            "paths": {"jobs": str(tmp / "jobs"), "results": str(tmp / "results"), "data": str(tmp / "data")},
            "datasets": {
                "ckplus": {
                    "kind": "ckplus",
                    "root": str(tmp / "raw"),
                    "prepared": str(prepared),
                    "classes": 8,
                    "crop": "landmarks",
                }
            },
            "grid": [{"dataset": "ckplus", "folds": list(folds), "variants": list(variants)}],
            "train": {"iterations": 40, "eval_every": 20, "width": 0.25, "image_size": 32, "k": 0.7},
            "analysis": {"n_filters": 6, "top_n": 5, **analysis},
        }
    )


def write_run(spec, prepared_path: Path, model_seed: int = 0) -> Path:
    """A complete run directory for ``spec`` (a JobSpec), from an untrained model."""
    prepared = load_prepared(prepared_path, mmap=False)
    train, val, test = split_indices(prepared, spec.fold)
    t = spec.train
    model = build_model(
        spec.classes, width=t.width, image_size=t.image_size, dropout=0.5 if spec.dropout else 0, k=1.0, seed=model_seed
    ).eval()
    run = Path(spec.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    ids = prepared.manifest["image_id"].astype(str).to_numpy()
    with torch.no_grad():
        x = preprocess(torch.from_numpy(prepared.images[train]), size=t.image_size)
        maps = model.features(x).flatten(2)
        value, where = maps.max(dim=2)
        w = int(np.sqrt(maps.shape[2]))
        outputs.write_activations(run, list(ids[train]), value.numpy(), (where // w).numpy(), (where % w).numpy())
        probs = torch.softmax(model(preprocess(torch.from_numpy(prepared.images[test]), size=t.image_size)), 1)
    labels = prepared.manifest["label"].to_numpy()[test]
    outputs.write_predictions(run, list(ids[test]), labels, probs.numpy())
    rng = np.random.default_rng(spec.fold)
    acc = float((probs.numpy().argmax(1) == labels).mean())
    outputs.write_metrics(
        run,
        [
            {
                "iteration": i,
                "train_loss": 2.0 - i / 40,
                "train_acc": 0.1 + i / 100,
                "val_acc": 0.2 + i / 100 + 0.05 * rng.random(),
                "test_acc": 0.2 + i / 120 + 0.05 * rng.random(),
                "wall_time": float(i),
            }
            for i in (0, 20, 40)
        ],
    )
    outputs.write_model(run, model.state_dict(), model_config(model), spec.job_id, 40)
    (run / "job.json").write_text(
        json.dumps(
            {
                "job_id": spec.job_id,
                "spec": spec.to_dict(),
                "k": 1.0,
                "seed": spec.seed,
                "selected_iteration": 40,
                "val_acc": 0.5,
                "test_acc": acc,
                "code_version": "abc1234",
                "packages": {"torch": torch.__version__},
                "device": "cpu",
                "timings": {"total_s": 12.5},
                "status": "completed",
            }
        )
    )
    return run


def make_prepared_tfd(path: Path, identities: int = 20, seed: int = 0) -> Path:
    """A TFD-like prepared set: 7 classes, 5 splits, no AU labels."""
    rng = np.random.default_rng(seed)
    rows, images = [], []
    names = ["anger", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    for i in range(identities):
        for k in range(4):
            label = int(rng.integers(0, 7))
            images.append(np.clip(100 + 40 * rng.standard_normal((96, 96)), 0, 255).astype(np.uint8))
            row = {"image_id": f"tfd{i:03d}_{k}", "identity": i, "label": label, "label_name": names[label]}
            for s in range(5):
                row[f"split_{s}"] = ["train", "train", "train", "valid", "test"][(i + s) % 5]
            rows.append(row)
    path.mkdir(parents=True, exist_ok=True)
    np.save(path / "images.npy", np.stack(images))
    pd.DataFrame(rows).to_parquet(path / "manifest.parquet")
    (path / "info.json").write_text(
        json.dumps(
            {
                "kind": "tfd",
                "classes": 7,
                "label_names": names,
                "n_images": len(rows),
                "source": "fabricated",
                "crop": "none",
                "created": "2024-01-01T00:00:00",
                "au_regions": None,
            }
        )
    )
    return path


def make_tfd_config(tmp: Path, prepared: Path) -> "object":
    return parse_config(
        {
            "name": "fabtfd",
            "paths": {"jobs": str(tmp / "jobs"), "results": str(tmp / "results"), "data": str(tmp / "data")},
            "datasets": {"tfd": {"kind": "tfd", "root": str(tmp / "raw.mat"), "prepared": str(prepared), "classes": 7}},
            "grid": [{"dataset": "tfd", "folds": [0], "variants": ["AD"]}],
            "train": {"iterations": 40, "eval_every": 20, "width": 0.25, "image_size": 32, "k": 0.7},
            "analysis": {"n_filters": 2, "top_n": 2},
        }
    )
