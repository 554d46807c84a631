"""README.md kept true by tests, as sqlite-utils keeps its docs with cog.

- every ``fercluster ...`` command line named in README (in shell blocks and in inline code) names a
  command that exists, with options that command has;
- every shell block parses (``bash -n``);
- every measured figure in README sits under a ``<!-- figures: measured by `COMMAND` -->`` line whose
  command exists (a fercluster command, or a pytest file of the repository);
- the front page stays a front page (at most about 15 KB);
- the Python API example runs (``test_readme_api_example_runs``, slow: it trains 4 tiny jobs).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)
FIGURE = re.compile(r"\b\d[\d,.]*\s?(?:%|min\b|s\b|GPU-hours|images/s)")
MEASURED_BY = re.compile(r"<!-- figures: measured by `([^`]+)`")


def cli() -> Any:
    from fercluster.cli.main import _register, app

    _register()
    return typer.main.get_command(app)  # a click group (typer ships its own copy of click)


def blocks(lang: str) -> list[str]:
    return [body for kind, body in FENCE.findall(README) if kind == lang]


def command_lines() -> list[list[str]]:
    """Each ``fercluster ...`` invocation in README: shell lines and inline code alike."""
    out = []
    shell = [line for block in blocks("bash") for line in block.splitlines()]
    inline = re.findall(r"`(fercluster [^`]+)`", FENCE.sub("", README))
    for line in shell + inline:
        for part in re.split(r"&&|\|\||;|\|", line.split("#")[0]):
            words = shlex.split(part.strip()) if part.strip() else []
            if words and words[0] == "fercluster":
                out.append(words[1:])
    return out


def resolve(group: Any, words: list[str]) -> tuple[Any, list[str]]:
    """The (sub)command the words name, and the words after it."""
    cmd = group
    rest = list(words)
    while hasattr(cmd, "commands") and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        if name.isupper():  # a placeholder (COMMAND, CONFIG): nothing to check past it
            return cmd, []
        if "|" in name:  # "train | gpu | orchestration": each alternative must exist
            for alt in name.split("|"):
                assert alt.strip() in cmd.commands, f"no command {alt!r}"
            return cmd, []
        sub = cmd.commands.get(name)
        if sub is None:
            if cmd is group:
                raise AssertionError(f"README names `fercluster {name}`, which is no command")
            rest.insert(0, name)  # an argument (CONFIG), not a sub-command
            break
        cmd = sub
    return cmd, rest


def test_readme_names_only_commands_and_options_that_exist():
    group = cli()
    lines = command_lines()
    assert len(lines) >= 6, lines  # the demo, the cluster path, ...
    for words in lines:
        cmd, rest = resolve(group, words)
        names = {"--help"} | {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}
        for word in rest:
            if word.startswith("--"):
                flag = word.split("=")[0]
                assert flag in names, f"`fercluster {' '.join(words)}`: {cmd.name} has no option {flag}"


def test_every_command_is_named_in_readme():
    """The front page lists every command (their options are in --help)."""
    for name in cli().commands:
        assert f"`{name}`" in README or f"fercluster {name}" in README, f"README never names `{name}`"


def test_readme_shell_blocks_parse():
    shells = blocks("bash")
    assert shells
    for body in shells:
        proc = subprocess.run(["bash", "-n"], input=body, text=True, capture_output=True)
        assert proc.returncode == 0, f"README shell block does not parse: {proc.stderr}\n{body}"


def figure_paragraphs() -> list[tuple[str, str | None]]:
    """(paragraph, the command its figures comment names, or None) for prose with measured figures."""
    prose = FENCE.sub("", README)
    out = []
    pending = None
    for para in re.split(r"\n\s*\n", prose):
        marker = MEASURED_BY.search(para)
        text = MEASURED_BY.sub(
            "", re.sub(r"<!--.*?-->", lambda m: m.group(0) if "figures:" in m.group(0) else "", para)
        )
        text = re.sub(r"`[^`]*`", "", text)  # code spans hold settings, not measurements
        if marker:
            pending = marker.group(1)
        if re.search(r"\bmeasured\b", text, re.I) and FIGURE.search(text):
            out.append((para, pending))
            pending = None
    return out


def test_every_quoted_figure_names_the_command_that_measures_it():
    found = figure_paragraphs()
    assert found, "README quotes the demo's measured figures"
    group = cli()
    for para, command in found:
        assert command, f"measured figures without a `<!-- figures: measured by ... -->` line:\n{para}"
        words = shlex.split(command)
        if words[0] == "fercluster":
            resolve(group, words[1:])
        else:
            assert words[:3] == ["python", "-m", "pytest"], command
            test_file = words[3].split("::")[0]
            assert (ROOT / test_file).is_file(), f"{command}: no {test_file}"


def test_readme_is_a_front_page():
    assert len(README.encode()) <= 15_500, len(README.encode())
    for heading in ("## Install", "## Demo", "## Tests", "## On a SLURM cluster", "## Python API", "## Job states"):
        assert heading in README


def test_readme_links_point_at_files():
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), f"README links to missing {target}"


@pytest.mark.slow
def test_readme_api_example_runs(tmp_path, monkeypatch):
    """The README's Python example, executed as it stands, in a scratch folder with the configs."""
    (example,) = blocks("python")
    (tmp_path / "configs").mkdir()
    for cfg in (ROOT / "configs").glob("*.yaml"):
        (tmp_path / "configs" / cfg.name).write_text(cfg.read_text())
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(example, "README.md", "exec"), namespace)
    jobs = namespace["r"].jobs  # type: ignore[attr-defined]
    assert len(jobs) == 4 and set(jobs.state) == {"COMPLETED"}
