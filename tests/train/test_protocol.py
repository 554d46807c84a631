"""Details of the paper's protocol, each a test that fails when the detail changes."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fercluster.config import load_config
from fercluster.orchestration.submit.plan import expand
from fercluster.train import distributed
from fercluster.train.augment import augment
from fercluster.train.dataset import load_job_data
from fercluster.train.job import run_job
from fercluster.train.model import build_model
from fercluster.train.preprocess import local_normalize
from fercluster.train.seeds import resolve_k
from fercluster.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]


def test_every_job_of_the_paper_sweep_draws_its_own_k_reproducibly():
    specs = expand(load_config(REPO / "configs" / "paper.yaml"))
    ks = [resolve_k(s) for s in specs]
    assert len(specs) == 70 and len(set(ks)) == 70
    assert all(0.2 <= k < 1.2 for k in ks)
    assert ks == [resolve_k(s) for s in expand(load_config(REPO / "configs" / "paper.yaml"))]  # re-plan
    # not one k per data set, fold or variant: all three move it
    by = {(s.dataset, s.fold, s.variant): k for s, k in zip(specs, ks, strict=True)}
    assert by[("ckplus", 0, "none")] != by[("ckplus", 0, "AD")] != by[("ckplus6", 0, "AD")]
    assert by[("ckplus", 0, "AD")] != by[("ckplus", 1, "AD")] != by[("tfd", 1, "AD")]


def test_jobs_start_from_their_own_weights_unless_variants_are_paired(make_spec, prepared_dir):
    def first_weights(spec):
        data = load_job_data(spec, torch.device("cpu"))
        return Trainer(spec, data, torch.device("cpu"), distributed.DistInfo(), resolve_k(spec)).model.conv1.weight

    a, b = make_spec("none", k="random"), make_spec("AD", k="random")
    assert resolve_k(a) != resolve_k(b) and not torch.equal(first_weights(a), first_weights(b))
    pa, pb = make_spec("none", k="random", pair_variants=True), make_spec("AD", k="random", pair_variants=True)
    assert resolve_k(pa) == resolve_k(pb) and torch.equal(first_weights(pa), first_weights(pb))
    assert pa.job_id != a.job_id  # a paired design is another experiment


def test_init_std_per_layer_is_the_authors():
    k = 0.9
    model = build_model(8, k=k, seed=0)  # width 1: the paper's layer sizes
    expected = {
        "conv1": k / 5,  # 1 x 5 x 5 inputs
        "conv2": k / 40,  # 64 x 5 x 5
        "conv3": k / math.sqrt(3200),  # 128 x 5 x 5
        "fc4": k / 256,  # the code's quirk: sqrt(64 * 1024), the batch size in the product
        "out": k / math.sqrt(300),
    }
    for name, std in expected.items():
        assert getattr(model, name).weight.std().item() == pytest.approx(std, rel=0.03), name
    assert torch.all(model.fc4.bias == 1.0) and torch.all(model.out.bias == 0.0)
    assert build_model(8, k=k, seed=0, fc4_init="fan_in").fc4.weight.std().item() == pytest.approx(k / 32, rel=0.03)


def test_weight_decay_reaches_every_parameter_biases_too(make_spec):
    spec = make_spec("AD")
    data = load_job_data(spec, torch.device("cpu"))
    trainer = Trainer(spec, data, torch.device("cpu"), distributed.DistInfo(), 0.8)
    decayed = {id(p) for g in trainer.optimizer.param_groups if g["weight_decay"] == spec.train.weight_decay
               for p in g["params"]}  # fmt: skip
    names = [n for n, p in trainer.model.named_parameters() if id(p) not in decayed]
    assert names == [] and {"fc4.bias", "out.bias"} <= {n for n, _ in trainer.model.named_parameters()}


def test_training_batch_is_augmented_then_normalised(make_spec):
    spec = make_spec("A")
    data = load_job_data(spec, torch.device("cpu"))
    trainer = Trainer(spec, data, torch.device("cpu"), distributed.DistInfo(), 0.8)
    batch_state, aug_state = trainer.batch_gen.get_state(), trainer.aug_gen.get_state()
    x, y = trainer.batch_inputs()
    idx = torch.randint(len(data.train), (trainer.batch,), generator=torch.Generator().set_state(batch_state))
    raw = data.train_raw[idx]
    expected = local_normalize(augment(raw, torch.Generator().set_state(aug_state)), spec.train.normalize)
    torch.testing.assert_close(x, expected)
    assert torch.equal(y, data.train.y[idx])
    other_order = augment(local_normalize(raw, spec.train.normalize), torch.Generator().set_state(aug_state))
    assert not torch.allclose(x, other_order)


def test_un_augmented_batch_is_the_normalised_image(make_spec):
    spec = make_spec("none")
    data = load_job_data(spec, torch.device("cpu"))
    trainer = Trainer(spec, data, torch.device("cpu"), distributed.DistInfo(), 0.8)
    x, _ = trainer.batch_inputs()
    assert not trainer.augment and all(any(torch.equal(row, ref) for ref in data.train.x) for row in x[:4])


@pytest.mark.parametrize("tf32, precision", [(False, "ieee"), (True, "tf32")])
def test_tf32_is_set_explicitly_by_the_job(make_spec, tmp_path, tf32, precision):
    torch.backends.cudnn.conv.fp32_precision = "none" if tf32 else "tf32"  # the opposite of what is asked
    run_job(make_spec("none", run_dir=tmp_path / "run", iterations=1, eval_every=1, tf32=tf32))
    assert torch.backends.cudnn.conv.fp32_precision == precision
    assert torch.backends.cuda.matmul.fp32_precision == precision


def test_tf32_is_part_of_the_job_identity(make_spec):
    base = make_spec("none")
    assert replace(base, train=base.train.model_copy(update={"tf32": True}), job_id="").job_id != base.job_id


def test_folds_start_from_different_weights(make_spec):
    def first_weights(spec):
        data = load_job_data(spec, torch.device("cpu"))
        return Trainer(spec, data, torch.device("cpu"), distributed.DistInfo(), resolve_k(spec)).model.conv3.weight

    a = make_spec("AD", k="random")
    b = replace(a, fold=1, job_id="")
    assert b.job_id != a.job_id and resolve_k(a) != resolve_k(b)
    assert not torch.equal(first_weights(a), first_weights(b))
    # with k fixed the weights still differ: the fold moves the init seed, not only k
    fa, fb = make_spec("AD", k=0.8), replace(make_spec("AD", k=0.8), fold=1, job_id="")
    assert not torch.equal(first_weights(fa) / 0.8, first_weights(fb) / 0.8)


def test_tf32_default_is_ieee_fp32(make_spec, tmp_path):
    if not hasattr(torch.backends.cudnn, "conv") or not hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        pytest.skip("this torch has no torch.backends.cudnn.conv.fp32_precision (torch < 2.9)")
    from fercluster.config import Train

    assert Train().tf32 is False
    torch.backends.cudnn.conv.fp32_precision = "tf32"  # the opposite of the default
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    spec = make_spec("none", run_dir=tmp_path / "run", iterations=1, eval_every=1)
    spec = replace(spec, train=spec.train.model_copy(update={"tf32": Train().tf32}))
    run_job(spec)
    assert torch.backends.cudnn.conv.fp32_precision == "ieee"
    assert torch.backends.cuda.matmul.fp32_precision == "ieee"


def test_paper_yaml_pins_the_kl_selection_and_timing_settings():
    cfg = load_config(REPO / "configs" / "paper.yaml")
    # the literal KL reading: a tiny epsilon in every bin, evenly ("uniform"), 20 bins
    assert (cfg.analysis.kl_prior, cfg.analysis.kl_eps, cfg.analysis.kl_bins) == ("uniform", 1e-6, 20)
    t = cfg.train
    assert (t.selection, t.eval_at, t.eval_every, t.iterations) == ("2017", "code", 1000, 31_000)
    assert (t.augment_centre, t.normalize, t.fc4_init, t.k, t.tf32) == ("code", "mean", "code", "random", False)
