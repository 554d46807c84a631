"""Parsing sacct / squeue / scontrol text and mapping SLURM states to fercluster's."""

from __future__ import annotations

import pytest

from fercluster.orchestration.slurm.parse import (
    SlurmInfo,
    elapsed_seconds,
    expand_task_ids,
    failure_reason,
    map_state,
    parse_max_array_size,
    parse_sacct,
    parse_scontrol_jobs,
    parse_squeue,
)

SACCT = """\
101_0|COMPLETED|0:0|00:00:12|localhost|None
101_0.batch|COMPLETED|0:0|00:00:12|localhost|
101_0.0|COMPLETED|0:0|00:00:11|localhost|
101_1|RUNNING|0:0|00:00:05|localhost|None
101_[2-4%2]|PENDING|0:0|00:00:00|None assigned|JobArrayTaskLimit
102|CANCELLED by 0|0:0|00:00:03|localhost|None
103_0|FAILED|0:9|00:00:02|localhost|None
103_1|OUT_OF_MEMORY|0:125|00:00:02|localhost|None
104_0|FAILED|1:0|00:00:02|localhost|None
104_0.batch|FAILED|1:0|00:00:02|localhost|
104_0.0|OUT_OF_MEMORY|0:125|00:00:02|localhost|
105|REQUEUED|0:0|00:00:07|localhost|None
106|TIMEOUT|0:0|00:10:00|localhost|None
107|NODE_FAIL|0:0|00:01:00|localhost|None
108|PREEMPTED|0:15|00:01:00|localhost|None
"""


def test_sacct_rows_tasks_and_pending_ranges() -> None:
    jobs = parse_sacct(SACCT)
    assert jobs["101_0"].state == "COMPLETED"
    assert jobs["101_1"].state == "RUNNING" and jobs["101_1"].node == "localhost"
    for i in (2, 3, 4):  # the pending range is expanded per task
        assert jobs[f"101_{i}"].state == "PENDING" and jobs[f"101_{i}"].reason == "JobArrayTaskLimit"
        assert jobs[f"101_{i}"].node == ""
    assert "101_0.batch" not in jobs
    assert jobs["102"].state == "CANCELLED" and jobs["102"].raw_state == "CANCELLED"
    assert jobs["105"].state == "PENDING"  # a requeue is not a failure
    assert [jobs[j].state for j in ("106", "107", "108")] == ["TIMEOUT", "FAILED", "PREEMPTED"]


def test_sacct_reasons_signal_oom_timeout() -> None:
    jobs = parse_sacct(SACCT)
    assert "killed by signal 9 (SIGKILL)" in failure_reason(jobs["103_0"])
    assert "out of memory" in failure_reason(jobs["103_1"])
    assert jobs["104_0"].raw_state == "OUT_OF_MEMORY"  # seen on a step, lifted to the job
    assert "out of memory" in failure_reason(jobs["104_0"])
    assert "time limit" in failure_reason(jobs["106"])
    assert "node failure" in failure_reason(jobs["107"])
    assert "cancelled" in failure_reason(jobs["102"])


def test_state_mapping_covers_slurm_words() -> None:
    assert map_state("PENDING") == "PENDING"
    assert map_state("REQUEUE_HOLD") == "PENDING"
    assert map_state("COMPLETING") == "RUNNING"
    assert map_state("CANCELLED by 1000") == "CANCELLED"
    assert map_state("BOOT_FAIL") == "FAILED"
    assert map_state("SOMETHING_NEW") == "PENDING"


# squeue(1)/sacct(1) "JOB STATE CODES", and the state flags squeue prints in their place
MAN_PAGE_STATES = {
    "BOOT_FAIL": "FAILED", "CANCELLED": "CANCELLED", "COMPLETED": "COMPLETED", "CONFIGURING": "PENDING",
    "COMPLETING": "RUNNING", "DEADLINE": "FAILED", "FAILED": "FAILED", "NODE_FAIL": "FAILED",
    "OUT_OF_MEMORY": "FAILED", "PENDING": "PENDING", "PREEMPTED": "PREEMPTED", "RUNNING": "RUNNING",
    "RESV_DEL_HOLD": "PENDING", "REQUEUE_FED": "PENDING", "REQUEUE_HOLD": "PENDING", "REQUEUED": "PENDING",
    "RESIZING": "RUNNING", "REVOKED": "CANCELLED", "SIGNALING": "RUNNING", "SPECIAL_EXIT": "FAILED",
    "STAGE_OUT": "RUNNING", "STOPPED": "PENDING", "SUSPENDED": "PENDING", "TIMEOUT": "TIMEOUT",
    "LAUNCH_FAILED": "PENDING", "POWER_UP_NODE": "PENDING", "UPDATE_DB": "RUNNING", "RECONFIG_FAIL": "PENDING",
}  # fmt: skip


def test_every_state_of_the_man_pages_is_mapped_explicitly() -> None:
    from fercluster.orchestration.slurm.parse import _SLURM_TO_STATE

    assert {word: _SLURM_TO_STATE.get(word) for word in MAN_PAGE_STATES} == MAN_PAGE_STATES


@pytest.mark.parametrize("word", ["LAUNCH_FAILED", "POWER_UP_NODE", "UPDATE_DB", "SOMETHING_NEW", ""])
def test_a_state_that_is_not_final_is_never_failed_so_never_retried(word) -> None:
    from fercluster.orchestration.store.vocabulary import ACTIVE, ENDED_BADLY

    info = SlurmInfo("7", word, "0:0", source="squeue").job_info()
    assert info.state in ACTIVE and info.state not in ENDED_BADLY and not info.failure


def test_an_unknown_state_word_is_pending_with_the_word_as_its_reason() -> None:
    info = SlurmInfo("7", "SOMETHING_NEW", "0:0", reason="None", source="squeue").job_info()
    assert info.state == "PENDING"
    assert info.reason == "SLURM state SOMETHING_NEW, unknown to fercluster: counted as active"
    assert SlurmInfo("8", "PENDING", reason="Priority").job_info().reason == "Priority"  # known words keep theirs


def test_every_slurm_word_maps_to_a_fercluster_state() -> None:
    from fercluster.orchestration.slurm.parse import _SLURM_TO_STATE
    from fercluster.orchestration.store.vocabulary import ACTIVE, ENDED_BADLY, STATES

    assert set(_SLURM_TO_STATE.values()) <= set(STATES)
    assert set(ACTIVE) | set(ENDED_BADLY) <= set(STATES) and not set(ACTIVE) & set(ENDED_BADLY)


def test_squeue_fallback_format() -> None:
    text = "200_0|RUNNING|0:12|localhost|None\n200_[1-2]|PENDING|0:00||Priority\n201|FAILED|0:01|localhost|NonZeroExitCode\n"
    jobs = parse_squeue(text)
    assert jobs["200_0"].state == "RUNNING" and jobs["200_0"].source == "squeue"
    assert jobs["200_2"].state == "PENDING" and jobs["200_2"].reason == "Priority"
    assert jobs["201"].state == "FAILED"


def test_scontrol_one_line_per_job() -> None:
    text = (
        "JobId=301 ArrayJobId=300 ArrayTaskId=1 JobName=fc-x JobState=CANCELLED Reason=None "
        "ExitCode=0:15 RunTime=00:00:04 NodeList=localhost\n"
        "JobId=302 JobName=agg JobState=PENDING Reason=Dependency ExitCode=0:0 RunTime=00:00:00 NodeList=(null)\n"
    )
    jobs = parse_scontrol_jobs(text)
    assert jobs["300_1"].state == "CANCELLED" and jobs["300_1"].exit_code == "0:15"
    assert jobs["302"].state == "PENDING" and jobs["302"].node == ""


def test_max_array_size_and_helpers() -> None:
    assert parse_max_array_size("MaxArraySize            = 1001\nMaxJobCount = 10000\n") == 1001
    assert parse_max_array_size("nothing here") == 1001
    assert expand_task_ids("7_[0-2,5%3]") == ["7_0", "7_1", "7_2", "7_5"]
    assert expand_task_ids("7_4") == ["7_4"]
    assert elapsed_seconds("1-02:03:04") == 93784
    assert elapsed_seconds("03:04") == 184
    assert failure_reason(SlurmInfo("1", "FAILED", "2:0")) == "exit code 2"


def test_oom_exit_code_is_named_as_out_of_memory_not_a_signal() -> None:
    jobs = parse_sacct(SACCT)
    for why in (failure_reason(jobs["103_1"]), failure_reason(jobs["104_0"])):
        assert "out of memory (killed by the OOM killer)" in why and "signal 125" not in why
        assert why.count("out of memory") == 1  # the state and the exit code say it once
    failed = failure_reason(SlurmInfo("9", "FAILED", "0:125"))  # the state hides it, the exit code does not
    assert failed.startswith("out of memory (killed by the OOM killer): raise slurm.mem_gb")
    assert failure_reason(SlurmInfo("9", "FAILED", "0:9")) == "killed by signal 9 (SIGKILL)"


def test_gpu_count_reads_typed_gres_without_counting_twice() -> None:
    from fercluster.orchestration.slurm.parse import tres_count

    assert tres_count("billing=2,cpu=2,gres/gpu:a100=2,mem=8G,node=1", "gres/gpu") == 2  # typed only
    assert tres_count("cpu=2,gres/gpu=2,gres/gpu:a100=2,node=1", "gres/gpu") == 2  # both: the total
    assert tres_count("cpu=2,gres/gpu:a100=1,gres/gpu:v100=1", "gres/gpu") == 2  # two types summed
    assert tres_count("cpu=2,gres/gpumem=40G,mem=8G", "gres/gpu") == 0  # another GRES: no GPU
    assert tres_count("", "gres/gpu") is None
    info = SlurmInfo("7", "COMPLETED", "0:0", alloc_tres="cpu=4,gres/gpu:a100=2,node=1", elapsed_raw=1800)
    assert (info.gpu_hours, info.cpu_hours) == (1.0, 2.0)


@pytest.mark.parametrize(
    ("reason", "starts"),
    [
        ("PartitionTimeLimit", False),
        ("PartitionConfig", False),
        ("BadConstraints", False),
        ("InvalidAccount", False),
        ("InvalidQOS", False),
        ("QOSMaxGRESPerJob", False),
        ("QOSMaxWallDurationPerJobLimit", False),
        ("AssocMaxCpuPerNode", False),
        ("ReqNodeNotAvail, UnavailableNodes:node[1-2]", False),
        ("ReqNodeNotAvail, May be reserved for other job", True),  # busy nodes: it waits its turn
        ("ReqNodeNotAvail, UnavailableNodes:", True),
        ("Priority", True),
        ("Resources", True),
        ("Dependency", True),
        ("JobArrayTaskLimit", True),
        ("AssocMaxJobsLimit", True),  # the user's running jobs end, then it starts
        ("QOSMaxJobsPerUserLimit", True),
        ("QOSGrpGRES", True),
        ("None", True),
        ("", True),
    ],
)
def test_pending_reasons_that_waiting_never_clears(reason: str, starts: bool) -> None:
    from fercluster.orchestration.slurm.reasons import never_starts

    why = never_starts(reason)
    assert (why is None) is starts
    if reason == "PartitionTimeLimit":
        assert "lower slurm.time_min or change slurm.partition" in why and "--retry-failed" in why
    if reason.startswith("ReqNodeNotAvail") and not starts:
        assert "(node[1-2])" in why and "administrator" in why
