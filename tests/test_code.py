"""``fercluster.code``: the content hash of the package's source and its read-only snapshots."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fercluster import code
from fercluster.errors import CodeError
from fercluster.orchestration.slurm.resources import code_setup

REPO = Path(__file__).resolve().parents[1]


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)  # fmt: skip


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A git checkout holding a small package ``pkg`` (committed), an ignored file and a .gitignore."""
    repo = tmp_path / "repo"
    (repo / "pkg" / "sub").mkdir(parents=True)
    (repo / "pkg" / "__init__.py").write_text("VALUE = 1\n")
    (repo / "pkg" / "sub" / "model.py").write_text("K = 0.5\n")
    (repo / ".gitignore").write_text("*.log\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "first")
    return repo


def test_hash_is_stable_and_independent_of_where_the_files_are(checkout: Path, tmp_path: Path) -> None:
    first = code.code_files(checkout / "pkg")
    assert first.source == "git" and sorted(first.contents) == ["pkg/__init__.py", "pkg/sub/model.py"]
    assert code.code_files(checkout / "pkg").hash == first.hash and len(first.hash) == code.HASH_LEN
    elsewhere = tmp_path / "installed" / "pkg"
    shutil.copytree(checkout / "pkg", elsewhere)
    assert code.code_files(elsewhere).source == "folder" and code.code_files(elsewhere).hash == first.hash


def test_hash_changes_with_edits_committed_or_not_and_untracked_files(checkout: Path) -> None:
    pkg = checkout / "pkg"
    h0 = code.code_files(pkg).hash
    (pkg / "sub" / "model.py").write_text("K = 0.25\n")  # uncommitted change
    h1 = code.code_files(pkg).hash
    assert h1 != h0
    git(checkout, "commit", "-qam", "edit")
    assert code.code_files(pkg).hash == h1  # the content counts, not the commit
    (pkg / "sub" / "model.py").write_text("K = 0.5\n")
    git(checkout, "commit", "-qam", "back")
    assert code.code_files(pkg).hash == h0  # a tracked-file edit and back
    (pkg / "extra.py").write_text("X = 2\n")  # untracked, not ignored: part of the code
    assert code.code_files(pkg).hash not in (h0, h1)
    (pkg / "extra.py").unlink()
    (pkg / "sub" / "model.py").unlink()  # a tracked file deleted in the working tree is gone
    assert "pkg/sub/model.py" not in code.code_files(pkg).contents


def test_hash_ignores_pycache_and_ignored_files(checkout: Path) -> None:
    pkg = checkout / "pkg"
    h0 = code.code_files(pkg).hash
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"\0junk")  # not ignored here: still skipped
    (pkg / "stray.pyc").write_bytes(b"\0")
    (pkg / "run.log").write_text("ignored by .gitignore\n")
    assert code.code_files(pkg).hash == h0
    shutil.rmtree(pkg / "__pycache__")
    assert code.code_files(pkg).hash == h0


def test_installed_package_folder_is_the_fallback(tmp_path: Path, checkout: Path) -> None:
    site = tmp_path / "site-packages"
    shutil.copytree(checkout / "pkg", site / "pkg")
    (site / "pkg" / "data.json").write_text("{}")  # every file of the folder counts, not only .py
    files = code.code_files(site / "pkg")
    assert files.source == "folder" and "pkg/data.json" in files.contents
    ignored_venv = checkout / "venv" / "pkg"  # inside a checkout but ignored there (a venv): the folder
    (checkout / ".gitignore").write_text("*.log\nvenv/\n")
    shutil.copytree(checkout / "pkg", ignored_venv)
    assert code.code_files(ignored_venv).source == "folder"
    assert code.code_files(ignored_venv).hash == code.code_files(checkout / "pkg").hash
    with pytest.raises(CodeError, match="no source files"):
        code.code_files(tmp_path / "empty")


def test_snapshot_is_read_only_written_once_per_hash(checkout: Path, tmp_path: Path) -> None:
    root = tmp_path / "jobs" / "s" / "code"
    files = code.code_files(checkout / "pkg")
    snap = code.make_snapshot(root, files)
    assert snap.created and snap.path == root / files.hash
    record = code.read_snapshot(snap.path)
    assert record["hash"] == files.hash and record["source"] == "git" and record["commit"]
    for path in [p for p in snap.path.rglob("*") if p.is_file()]:
        assert stat.S_IMODE(path.stat().st_mode) & 0o222 == 0, path  # read-only
    model = snap.path / "pkg" / "sub" / "model.py"
    inode = model.stat().st_ino
    again = code.make_snapshot(root, code.code_files(checkout / "pkg"))
    assert not again.created and again.path == snap.path and model.stat().st_ino == inode  # not copied again
    assert code.code_files(snap.path / "pkg").hash == files.hash  # the copy hashes as its origin
    (checkout / "pkg" / "sub" / "model.py").write_text("K = 0.1\n")
    other = code.make_snapshot(root, code.code_files(checkout / "pkg"))
    assert other.created and other.hash != snap.hash
    assert sorted(p.name for p in root.iterdir()) == sorted([snap.hash, other.hash])  # no leftovers


def test_a_job_imports_the_snapshot_even_from_the_repository_root(tmp_path: Path) -> None:
    """The sbatch lines of ``code_setup``, run from the checkout's root (where ``python -m`` and
    ``-c`` would otherwise import the checkout's fercluster/ first)."""
    snap = code.make_snapshot(tmp_path / "code")
    probe = "import fercluster.code as c; c.check_imported_snapshot(); print(c.package_dir()); print(c.fingerprint())"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONSAFEPATH", code.ENV)}
    script = "\n".join([*code_setup(snap.path), f"{sys.executable} -c '{probe}'"])
    out = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(snap.path / "fercluster"), snap.hash]
    unsafe = "\n".join([*code_setup(snap.path)[:2], f"{sys.executable} -c '{probe}'"])  # without PYTHONSAFEPATH
    out = subprocess.run(["bash", "-c", unsafe], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "imported fercluster from" in out.stderr  # caught, not run


def test_job_record_names_the_snapshot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    snap = code.make_snapshot(tmp_path / "code")
    monkeypatch.setattr(code, "package_dir", lambda: snap.path / "fercluster")
    record = code.code_record()
    assert record["snapshot"] == str(snap.path) and record["package"] == str(snap.path / "fercluster")
    assert record["hash"] == code.fingerprint() == snap.hash  # the checkout's code, unchanged
    monkeypatch.setenv(code.ENV, str(tmp_path / "elsewhere"))
    with pytest.raises(CodeError, match="should run the code snapshot"):
        code.check_imported_snapshot()


def test_untracked_files_count_only_when_of_the_package_kinds(checkout: Path, tmp_path: Path) -> None:
    (checkout / "pyproject.toml").write_text('[tool.setuptools.package-data]\npkg = ["py.typed", "*.yaml"]\n')
    pkg = checkout / "pkg"
    for name in ("new.py", "py.typed", "grid.yaml", ".env", "notes.txt", "scratch.ipynb"):
        (pkg / name).write_text("SECRET=1\n" if name == ".env" else "x\n")
    files = code.code_files(pkg)
    kept = ["pkg/__init__.py", "pkg/grid.yaml", "pkg/new.py", "pkg/py.typed", "pkg/sub/model.py"]
    assert sorted(files.contents) == kept
    snap = code.make_snapshot(tmp_path / "snaps", files)
    assert not (snap.path / "pkg" / ".env").exists() and (snap.path / "pkg" / "new.py").exists()


def test_symbolic_links_are_skipped_with_a_warning_never_followed(checkout: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.py"
    secret.write_text("TOKEN = 'x'\n")
    pkg = checkout / "pkg"
    (pkg / "tracked_link.py").symlink_to(secret)
    git(checkout, "add", "-A")
    git(checkout, "commit", "-qm", "a link")
    (pkg / "untracked_link.py").symlink_to(secret)
    for where in (pkg, shutil.copytree(pkg, tmp_path / "installed" / "pkg", symlinks=True)):
        with pytest.warns(UserWarning, match="is a symbolic link: left out of the code snapshot") as seen:
            files = code.code_files(where)
        assert len(seen) == 2 and sorted(files.ids) == ["pkg/__init__.py", "pkg/sub/model.py"]


def test_hashing_reads_only_edited_and_untracked_files(checkout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = checkout / "pkg"
    (pkg / "sub" / "model.py").write_text("K = 0.25\n")  # edited
    (pkg / "extra.py").write_text("X = 2\n")  # untracked
    read, real = [], Path.read_bytes

    def counting(path: Path) -> bytes:
        read.append(path.relative_to(pkg).as_posix())
        return real(path)

    monkeypatch.setattr(Path, "read_bytes", counting)
    files = code.code_files(pkg)
    assert sorted(read) == ["extra.py", "sub/model.py"]  # __init__.py: its id from git's index
    assert files.ids["pkg/__init__.py"] == code.blob_id(b"VALUE = 1\n")
    assert files.ids["pkg/sub/model.py"] == code.blob_id(b"K = 0.25\n")


def test_a_file_changed_between_hashing_and_copying_is_an_error(checkout: Path, tmp_path: Path) -> None:
    files = code.code_files(checkout / "pkg")
    (checkout / "pkg" / "__init__.py").write_text("VALUE = 2\n")
    with pytest.raises(CodeError, match="changed while the code was being copied"):
        code.make_snapshot(tmp_path / "snaps", files)
    assert not (tmp_path / "snaps" / files.hash).exists()
