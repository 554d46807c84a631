"""``fercluster.atomic``: files and folders appear whole or not at all, with the modes of the umask."""

from __future__ import annotations

import os
import stat

import pytest

from fercluster import atomic


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith((".tmp-", ".old-")))


def test_umask_is_read_without_changing_it(umask_027):
    assert atomic.umask() == 0o027
    assert atomic.umask() == 0o027


def test_files_follow_the_umask_unless_a_mode_is_given(tmp_path, umask_027):
    atomic.write_text(tmp_path / "a.txt", "a")
    atomic.write_json(tmp_path / "b.json", {"b": 1}, mode=0o600)
    assert _mode(tmp_path / "a.txt") == 0o640 and _mode(tmp_path / "b.json") == 0o600
    assert (tmp_path / "a.txt").read_text() == "a" and _leftovers(tmp_path) == []


def test_a_failed_file_write_leaves_the_old_file(tmp_path):
    atomic.write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert (tmp_path / "a.txt").read_text() == "old" and _leftovers(tmp_path) == []


def test_a_folder_appears_whole_with_the_umask_mode(tmp_path, umask_027):
    target = tmp_path / "out"
    with atomic.atomic_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".tmp-out.") and not target.exists()
        (tmp / "f.txt").write_text("new")
    assert (target / "f.txt").read_text() == "new" and _mode(target) == 0o750
    with atomic.atomic_dir(tmp_path / "private", mode=0o700):
        pass
    assert _mode(tmp_path / "private") == 0o700 and _leftovers(tmp_path) == []


def test_a_folder_replaces_an_existing_one_only_when_complete(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_dir(target) as tmp:
            (tmp / "new.txt").write_text("half")
            raise RuntimeError("failed while writing")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"] and _leftovers(tmp_path) == []
    with atomic.atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (target / "old.txt").exists()  # the old folder stays readable until the swap
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"] and _leftovers(tmp_path) == []


def test_a_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    rename = os.rename

    def fail_second(src, dst):
        if str(src).startswith(str(tmp_path / ".tmp-")):
            raise OSError(28, "No space left on device")
        rename(src, dst)

    monkeypatch.setattr(atomic.os, "rename", fail_second)
    with pytest.raises(OSError, match="No space left"):
        with atomic.atomic_dir(target) as tmp:
            (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"] and _leftovers(tmp_path) == []


def test_the_folder_is_synced_after_the_rename(tmp_path, monkeypatch):
    """The file's fsync does not cover its new name: the folder is fsynced after os.replace."""
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    atomic.write_bytes(tmp_path / "state.json", b"{}")
    assert events == ["fsync file", "replace", "fsync folder"]
    events.clear()
    with atomic.atomic_dir(tmp_path / "out") as tmp:
        (tmp / "a").write_text("x")
    assert events == ["fsync folder"]


def test_a_folder_that_cannot_be_synced_is_skipped(tmp_path, monkeypatch):
    import errno

    def refuse(fd: int) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    real_fsync = os.fsync
    monkeypatch.setattr(
        atomic.os, "fsync", lambda fd: refuse(fd) if stat.S_ISDIR(os.fstat(fd).st_mode) else real_fsync(fd)
    )
    atomic.write_bytes(tmp_path / "a", b"1")  # a file system that does not sync folders: written all the same
    assert (tmp_path / "a").read_bytes() == b"1"
