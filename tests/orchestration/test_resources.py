"""A sweep's ``Resources`` -> submitit parameters (one function), and the split of %K over arrays."""

from __future__ import annotations

from dataclasses import replace

from fercluster.config import Slurm
from fercluster.orchestration.backend import Resources
from fercluster.orchestration.slurm import resources as slurm_resources
from fercluster.orchestration.submit.lanes import array_lanes, array_throttles


def submitit_parameters(
    slurm: Slurm, *, job_name: str, array_parallelism=None, dependency=(), gpus=True, code_dir=None
):
    """The parameters of a training job (``gpus=False``: the aggregation job) of ``slurm``."""
    res = Resources.training(slurm) if gpus else Resources.aggregation(slurm)
    res = replace(res, throttle=array_parallelism)
    return slurm_resources.submitit_parameters(res, job_name=job_name, dependency=dependency, code_dir=code_dir)


def processes(slurm: Slurm) -> int:
    return Resources.training(slurm).processes


def test_all_resources_map() -> None:
    slurm = Slurm(
        partition="gpu",
        account="lab",
        qos="high",
        time_min=30,
        gpus_per_node=1,
        cpus_per_task=4,
        mem_gb=16,
        constraint="a100",
        extra={"mail-type": "END"},
    )
    p = submitit_parameters(slurm, job_name="fc-x-1", array_parallelism=8, dependency=("12",))
    assert p["partition"] == "gpu" and p["account"] == "lab" and p["qos"] == "high"
    assert p["time"] == 30 and p["cpus_per_task"] == 4 and p["mem"] == "16384MB"
    assert p["gpus_per_node"] == 1 and p["ntasks_per_node"] == 1
    assert p["constraint"] == "a100" and p["additional_parameters"] == {"mail-type": "END"}
    assert p["array_parallelism"] == 8 and p["dependency"] == "afterany:12" and p["job_name"] == "fc-x-1"
    assert p["signal_delay_s"] == slurm.signal_delay_s


def test_unset_resources_are_left_to_the_site_and_ddp_gets_a_task_per_gpu() -> None:
    p = submitit_parameters(Slurm(gpus_per_node=0), job_name="n")
    assert not {"partition", "account", "qos", "constraint", "mem", "gpus_per_node", "additional_parameters"} & set(p)
    p = submitit_parameters(Slurm(gpus_per_node=4, mem_gb=1.5), job_name="n")
    assert p["ntasks_per_node"] == 4 and p["gpus_per_node"] == 4 and p["mem"] == "1536MB"
    assert "gpus_per_node" not in submitit_parameters(Slurm(gpus_per_node=4), job_name="agg", gpus=False)


def test_parameters_are_valid_for_submitit_and_render_sbatch() -> None:
    from submitit.slurm.slurm import _make_sbatch_string

    p = submitit_parameters(
        Slurm(partition="gpu", gpus_per_node=2, mem_gb=4, extra={"mail-type": "END"}),
        job_name="fc-s-abc",
        array_parallelism=3,
    )
    text = _make_sbatch_string(command="python -c 1", folder="/tmp/x/%j", map_count=10, **p)
    for line in (
        "#SBATCH --job-name=fc-s-abc",
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --ntasks-per-node=2",
        "#SBATCH --mem=4096MB",
        "#SBATCH --array=0-9%3",
        "#SBATCH --mail-type=END",
    ):
        assert line in text
    assert "wckey" not in text


def test_throttles_sum_to_the_sweep_limit() -> None:
    assert array_throttles(1, 64) == [64]
    assert array_throttles(10, 64) == [7, 7, 7, 7, 6, 6, 6, 6, 6, 6]
    assert sum(array_throttles(10, 64)) == 64
    assert array_throttles(3, 2) == [1, 1, 1]  # every array can run at least one task


def test_processes_match_the_tasks_submitit_starts() -> None:
    assert processes(Slurm()) == 1
    assert processes(Slurm(gpus_per_node=0, nodes=3)) == 3
    assert processes(Slurm(gpus_per_node=4, nodes=2)) == 8
    params = submitit_parameters(Slurm(gpus_per_node=4, nodes=2), job_name="x")
    assert params["nodes"] * params["ntasks_per_node"] == 8


def test_multi_task_jobs_end_every_rank_when_one_dies() -> None:
    """srun --kill-on-bad-exit=1 for jobs of several tasks (a dead rank would leave the others
    waiting in a collective); not for one task, nor for the aggregation job."""
    from submitit.slurm.slurm import _make_sbatch_string

    for slurm in (Slurm(gpus_per_node=2), Slurm(gpus_per_node=0, nodes=2), Slurm(gpus_per_node=1, nodes=2)):
        p = submitit_parameters(slurm, job_name="x")
        assert p["srun_args"] == ["--kill-on-bad-exit=1"]
        assert p["nodes"] * p["ntasks_per_node"] == processes(slurm)
        assert "--kill-on-bad-exit=1" in _make_sbatch_string(command="python -c 1", folder="/tmp/x/%j", **p)
    assert "srun_args" not in submitit_parameters(Slurm(gpus_per_node=1), job_name="x")
    assert "srun_args" not in submitit_parameters(Slurm(gpus_per_node=0), job_name="x")
    assert "srun_args" not in submitit_parameters(Slurm(gpus_per_node=2, nodes=2), job_name="agg", gpus=False)


def test_tune_allocation_is_one_task_per_node_without_kill_on_bad_exit(tmp_path) -> None:
    from orch_helpers import make_config

    from fercluster.orchestration.slurm.resources import submission_parameters
    from fercluster.orchestration.tune.allocation import allocation

    cfg = make_config(tmp_path, tune={"datasets": ["ckplus"]}, slurm={"nodes": 2, "gpus_per_node": 2}, grid=[])
    sub = allocation(cfg)
    assert sub.kind == "search" and sub.n_tasks == 1 and sub.resources.processes == 2  # one Ray node per node
    p = submission_parameters(sub)
    assert p["nodes"] == 2 and p["ntasks_per_node"] == 1 and p["gpus_per_node"] == 2 and "srun_args" not in p


def test_site_setup_exclusive_gpu_type_and_memory_per_gpu(tmp_path) -> None:
    from submitit.slurm.slurm import _make_sbatch_string

    slurm = Slurm(gpus_per_node=2, gpu_type="a100", mem_per_gpu_gb=20, exclusive=True,
                  setup=["module load cuda/12.1", "conda activate fer"])  # fmt: skip
    p = submitit_parameters(slurm, job_name="fc-s-abc", array_parallelism=3, code_dir=tmp_path)
    assert p["setup"][:2] == ["module load cuda/12.1", "conda activate fer"]  # the site's lines, then
    assert any(line.startswith("export PYTHONPATH=") for line in p["setup"][2:])  # the snapshot's (kept)
    text = _make_sbatch_string(command="python -c 1", folder="/tmp/x/%j", map_count=4, **p)
    for line in ("#SBATCH --gpus-per-node=a100:2", "#SBATCH --mem-per-gpu=20480MB", "#SBATCH --exclusive"):
        assert line in text
    assert text.index("conda activate fer") < text.index("export PYTHONPATH=") < text.index("srun")
    agg = submitit_parameters(slurm, job_name="agg", gpus=False)
    assert (
        agg["setup"] == slurm.setup
        and agg["nodes"] == 1
        and not {"exclusive", "mem_per_gpu", "gpus_per_node"} & set(agg)
    )


def test_lanes_keep_the_whole_sweep_within_its_limit() -> None:
    assert array_lanes(4, 1, []) == [(1, None), (1, 0), (1, 1), (1, 2)]  # one at a time: a chain
    assert array_lanes(3, 64, []) == [(22, None), (21, None), (21, None)]
    assert array_lanes(5, 2, []) == [(1, None), (1, None), (1, 0), (1, 1), (1, 2)]
    assert array_lanes(2, 4, [("900", 2)]) == [(1, None), (1, None)]  # the slots the active array leaves
    assert array_lanes(3, 4, [("900", 3), ("901", 1)]) == [
        (2, ("900", "901")),
        (1, ("900", "901")),
        (1, ("900", "901")),
    ]
    assert array_lanes(2, 1, [("900", 1)]) == [(1, ("900",)), (1, 0)]  # none free: after every active array
