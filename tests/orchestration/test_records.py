"""The store's fast record reader (``store.records.Reader``) builds the same frozen records as their
constructors, and the files read through it keep their contracts: defaults for what a file leaves
out, a clear error for what it lacks, ``known.json`` rewritten only when what it holds changed."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from fercluster.errors import StoreError
from fercluster.orchestration.backend import JobInfo
from fercluster.orchestration.store import Attempt
from fercluster.orchestration.store.entries import ArrayEntry, JobEntry
from fercluster.orchestration.store.index import RunEntry
from fercluster.orchestration.store.known import RESTAMP_S, FinalCost, load_known, save_known
from fercluster.orchestration.store.records import Reader
from fercluster.orchestration.store.state import SweepState, load_state, save_state
from fercluster.orchestration.tune.state import SearchRecord, load_search, save_search


def test_a_read_entry_equals_the_constructed_one_and_stays_frozen() -> None:
    entry = JobEntry(slurm_ids=("1_0", "2_3"), submissions=2, retries=1, array="fc-a", task=3, seed=7)
    read = JobEntry.from_dict(json.loads(json.dumps(entry.to_dict())))
    assert read == entry and type(read) is JobEntry and read.slurm_ids == ("1_0", "2_3")
    assert read.slurm_id == "2_3" and read.local is None and read.requeues == 0  # defaults for what it left out
    with pytest.raises(dataclasses.FrozenInstanceError):
        read.retries = 5  # type: ignore[misc]
    assert dataclasses.replace(read, retries=4).retries == 4 and read.retries == 1


def test_unknown_keys_are_left_out_and_missing_required_ones_raise() -> None:
    read = JobEntry.from_dict({"slurm_ids": ["9"], "an_earlier_key": 1})
    assert read == JobEntry(slurm_ids=("9",)) and not hasattr(read, "an_earlier_key")
    with pytest.raises(TypeError, match=r"ArrayEntry: missing keys \['slurm_id'\]"):
        ArrayEntry.from_dict({"job_ids": ["a"]})

    @dataclasses.dataclass(frozen=True, slots=True)
    class Slotted:
        x: int = 0

    with pytest.raises(TypeError, match="needs a dataclass without slots"):
        Reader(Slotted)


def test_a_run_entry_row_round_trips() -> None:
    entry = RunEntry(
        "abc",
        (123, 45),
        "",
        None,
        "ckplus",
        3,
        "AD",
        1,
        "ckplus",
        8,
        0.7,
        0.9,
        0.8,
        1000,
        1000,
        "node1",
        60.0,
        "deadbeef",
        (tuple(Attempt(1, "5_0", "node1", "h", 1.0, 2.0, "completed", "job", 0, 1000, "", "ab").to_row()),),
    )
    assert RunEntry.from_row(json.loads(json.dumps(entry.to_row()))) == entry
    assert (
        RunEntry.from_row(json.loads(json.dumps(dataclasses.replace(entry, attempts=None).to_row()))).attempts is None
    )
    with pytest.raises(TypeError, match="2 values for 19 fields"):
        RunEntry.from_row(["abc", [1, 2]])


def test_a_state_entry_that_lacks_a_required_key_is_a_store_error(tmp_path: Path) -> None:
    state = SweepState(sweep="t", jobs={"a": JobEntry(slurm_ids=("5",))})
    save_state(tmp_path, state)
    assert load_state(tmp_path, "t") == state
    data = json.loads((tmp_path / "state.json").read_text())
    data["arrays"] = {"fc-t-x": {"job_ids": ["a"]}}
    (tmp_path / "state.json").write_text(json.dumps(data))
    with pytest.raises(StoreError, match="entry that does not read.*slurm_id"):
        load_state(tmp_path, "t")


def test_known_json_is_rewritten_only_when_what_it_holds_changed(tmp_path: Path) -> None:
    info = JobInfo(state="RUNNING", node="n1")
    known = load_known(tmp_path)
    known.remember({"7": info}, now=1000.0)
    save_known(known)
    written = (tmp_path / "known.json").stat()
    again = load_known(tmp_path)
    again.remember({"7": info}, now=1000.0 + RESTAMP_S / 2)  # the same answer, a moment later
    save_known(again)
    assert (tmp_path / "known.json").stat().st_ino == written.st_ino  # not rewritten
    assert again.last("7").at == 1000.0
    again.costs["job"] = FinalCost("7", 1.5, 3.0)
    save_known(again)
    assert (tmp_path / "known.json").stat().st_ino != written.st_ino
    assert load_known(tmp_path).costs["job"] == FinalCost("7", 1.5, 3.0)
    later = load_known(tmp_path)
    later.remember({"7": dataclasses.replace(info, state="COMPLETED")}, now=1001.0)  # a new answer
    assert later.changed and later.last("7").state == "COMPLETED" and later.last("7").at == 1001.0


def test_a_search_record_round_trips_and_reads_what_it_does_not_know(tmp_path: Path) -> None:
    class Cfg:  # what load_search and save_search need of a config
        jobs_dir = tmp_path / "jobs"

    assert load_search(Cfg()) == SearchRecord() and SearchRecord().state == "not_started"  # type: ignore[arg-type]
    record = SearchRecord(state="running", mode="local", host="h", pid=12, started=5.0, summary={"trials": 3})
    save_search(Cfg(), record)  # type: ignore[arg-type]
    assert load_search(Cfg()) == record  # type: ignore[arg-type]
    path = tmp_path / "jobs" / "tune" / "search.json"
    path.write_text(json.dumps({**record.to_dict(), "from_a_later_version": 1}))
    assert load_search(Cfg()) == record  # type: ignore[arg-type]
    path.write_text("{not json")
    assert load_search(Cfg()) == SearchRecord()  # type: ignore[arg-type]
