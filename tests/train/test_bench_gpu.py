"""``fercluster bench gpu``: the mode table on the CPU with a tiny model (the modes coincide there),
the answer without CUDA, the projection's numbers; the real measurement on a GPU (marker ``gpu``)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fercluster.train.bench_gpu import (
    PAPER_BATCH,
    PAPER_IMAGES,
    PAPER_ITERATIONS,
    PAPER_RUNS,
    all_modes,
    bench_gpu,
    close_to,
)

REPO = Path(__file__).resolve().parents[2]
TINY = {"size": 32, "width": 0.125, "batch": 16, "iterations": 3, "warmup": 1, "loss_steps": 55}


def test_modes_cover_precisions_layouts_and_compile_with_fp32_first():
    modes = all_modes()
    assert len(modes) == 12 and modes[0].name == "fp32"
    assert {m.name for m in modes} >= {"tf32", "bf16 + channels_last + compile", "fp32 + channels_last"}
    assert modes[0].settings() == {"tf32": False, "bf16": False, "channels_last": False, "compile": False}
    assert [m.compile for m in all_modes(compile=False)] == [False] * 6


def test_mode_table_on_the_cpu():
    result = bench_gpu(device="cpu", compile=False, **TINY)
    assert result["cuda"] is False and result["device"] == "cpu" and result["ddp"] is None
    rows = result["modes"]
    assert [r["mode"] for r in rows] == [m.name for m in all_modes(compile=False)]
    for row in rows:
        assert not row["error"] and row["images_per_s"] > 0 and math.isfinite(row["loss"])
        assert row["sweep_hours"] == pytest.approx(PAPER_IMAGES / row["images_per_s"] / 3600)
    # on a CPU the Trainer ignores TF32, bf16 and channels_last: the same steps, the same loss
    assert {r["loss"] for r in rows} == {rows[0]["loss"]} and all(r["close"] for r in rows)
    assert result["best"] == max(rows, key=lambda r: r["images_per_s"])["mode"]


def test_loss_check_tolerance():
    assert close_to(1.00, 1.10) and close_to(0.52, 0.50) and not close_to(1.4, 1.0) and not close_to(math.nan, 1.0)


def test_table_text_flags_modes_that_miss_fp32s_loss():
    from fercluster.cli.train import gpu_lines

    result = bench_gpu(device="cpu", compile=False, **TINY)
    result["modes"][2].update(loss=9.0, close=False)
    text = "\n".join(gpu_lines({**result, "cuda": True}))
    assert "NOT close" in text and "(ref)" in text and "70 runs x 31,000 iterations x 64 images" in text


def test_paper_sweep_numbers_match_configs_paper():
    from fercluster.config import load_config
    from fercluster.orchestration.submit.plan import expand

    specs = expand(load_config(REPO / "configs" / "paper.yaml"))
    assert len(specs) == PAPER_RUNS
    assert {s.train.iterations for s in specs} == {PAPER_ITERATIONS} and {s.train.batch_size for s in specs} == {
        PAPER_BATCH
    }


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_says_so_and_exits_0():
    out = subprocess.run([sys.executable, "-m", "fercluster.cli.main", "bench", "gpu"], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0 and out.stdout.startswith("no CUDA device here") and "nothing measured" in out.stdout
    as_json = subprocess.run([sys.executable, "-m", "fercluster.cli.main", "bench", "gpu", "--json"],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert json.loads(as_json.stdout)["modes"] == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_every_mode_runs_on_the_gpu_and_reaches_fp32s_loss():
    result = bench_gpu(iterations=20, warmup=10, loss_steps=300)
    assert result["cuda"] and len(result["modes"]) == 12
    failed = [(r["mode"], r["error"]) for r in result["modes"] if r["error"]]
    assert not failed, failed
    assert all(r["close"] for r in result["modes"]), [(r["mode"], r["loss"]) for r in result["modes"]]
    if result["gpus"] >= 2:
        assert result["ddp"]["images_per_s"] > 0 and 0 < result["ddp"]["efficiency"] <= 1.5
