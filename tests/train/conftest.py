import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import fake_prepared  # noqa: E402

fake_prepared.install()
# The machine is shared: with 2 threads, OpenMP spin-waiting under load is ~50x slower than 1 thread.
torch.set_num_threads(1)

from fercluster.config import Train  # noqa: E402
from fercluster.train.spec import JobSpec  # noqa: E402

TINY_TRAIN = {
    "iterations": 30,
    "eval_every": 10,
    "checkpoint_every": 7,
    "batch_size": 16,
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 1e-5,
    "k": 0.8,
    "k_low": 0.2,
    "k_high": 1.2,
    "selection": "2017",
    "fc4_init": "code",
    "normalize": "mean",
    "dropout": 0.5,
    "width": 0.125,
    "image_size": 32,
    "device": "cpu",
    "bf16": False,
    "compile": False,
    "channels_last": True,
}


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory) -> Path:
    return fake_prepared.make_prepared(tmp_path_factory.mktemp("prepared") / "ckplus")


@pytest.fixture
def make_spec(prepared_dir, tmp_path):
    def make(variant="AD", run_dir=None, classes=8, **train) -> JobSpec:
        return JobSpec(
            sweep="test",
            dataset="ckplus",
            kind="ckplus",
            classes=classes,
            fold=0,
            variant=variant,
            seed=3,
            train=Train(**{**TINY_TRAIN, **train}),
            prepared_dir=str(prepared_dir),
            run_dir=str(run_dir or tmp_path / "run"),
        )

    return make
