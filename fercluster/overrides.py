"""``key=value`` overrides of a sweep config (``fercluster sweep CONFIG --set train.iterations=500``).

An override names a place in the parsed YAML with a dotted key (mapping keys, and list indices for
lists: ``grid.0.folds``) and gives a YAML value (``500``, ``[0, 1]``, ``gpu``, ``null``; an unquoted
``1e-3`` is a number, as in YAML 1.2), read as the file is (``fercluster.yaml_io``).
Overrides are applied in order to the parsed mapping, before validation, so the result is checked
as strictly as the file. A missing mapping on the way is created (``slurm.partition=gpu`` in a
file without a ``slurm:`` section); a list index past the end, a key through a value that is not a
mapping, a missing ``=`` or a value that is not YAML is a problem naming the override. Keys are
plain names: a mapping key with a dot in it cannot be addressed.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Sequence

import yaml

from fercluster.yaml_io import parse_yaml

KEY_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
EXAMPLE = "e.g. train.iterations=500"


def split(override: str) -> tuple[str, Any]:
    """``"train.iterations=500"`` -> ``("train.iterations", 500)``; ValueError says what is wrong."""
    if not isinstance(override, str):
        raise ValueError(f"override {override!r}: expected a string key=value, {EXAMPLE}")
    key, eq, text = override.partition("=")
    key = key.strip()
    if not eq:
        raise ValueError(f"override {override!r}: expected key=value, {EXAMPLE}")
    if not KEY_RE.match(key):
        raise ValueError(
            f"override {override!r}: the key must be names and list indices joined by dots, {EXAMPLE} or grid.0.folds=[0,1]"
        )
    try:
        value = parse_yaml(text)
    except yaml.YAMLError as exc:
        detail = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise ValueError(f"override {override!r}: the value is not valid YAML ({detail})") from None
    return key, value


def apply_overrides(data: Any, overrides: Sequence[str]) -> tuple[Any, list[str]]:
    """A deep copy of ``data`` with ``overrides`` applied in order, and the problems (one line each).

    An override with a problem is left out; the others are applied, so validation can report the
    rest of the problems at the same time.
    """
    data = copy.deepcopy(data)
    problems = []
    for override in overrides:
        try:
            key, value = split(override)
            _set(data, key.split("."), value, override)
        except ValueError as exc:
            problems.append(str(exc))
    return data, problems


def _set(data: Any, parts: list[str], value: Any, override: str) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"override {override!r}: the config is not a mapping")
    node: dict[str, Any] | list[Any] = data
    for depth, part in enumerate(parts):
        where = ".".join(parts[: depth + 1])
        slot: str | int = part if isinstance(node, dict) else _index(part, node, where, override)
        if depth == len(parts) - 1:
            node[slot] = value  # type: ignore[index]
            return
        child = node.get(slot) if isinstance(node, dict) else node[slot]  # type: ignore[call-overload]
        if child is None:  # a section the file leaves out (or null): created
            child = node[slot] = {}  # type: ignore[index]
        elif not isinstance(child, (dict, list)):
            raise ValueError(
                f"{where}: is {child!r}, not a mapping or a list, so it has no keys (override {override!r})"
            )
        node = child


def _index(part: str, items: list[Any], where: str, override: str) -> int:
    parent = where.rpartition(".")[0]
    valid = f"valid: 0..{len(items) - 1}" if items else "the list is empty"
    if not part.isdigit():
        raise ValueError(f"{where}: {parent} is a list, {part!r} is not an index; {valid} (override {override!r})")
    index = int(part)
    if index >= len(items):
        raise ValueError(
            f"{where}: index {index} is past the end of {parent} ({len(items)} {'entry' if len(items) == 1 else 'entries'}; {valid}) (override {override!r})"
        )
    return index


def annotate(lines: list[str], overrides: Sequence[str]) -> list[str]:
    """Problem lines of the validated config, each marked with the override that set its key."""
    keys = {}
    for override in overrides:
        try:
            keys[split(override)[0]] = override
        except ValueError:
            continue  # reported on its own
    out = []
    for line in lines:
        loc = line.split(":", 1)[0]
        hit = [o for k, o in keys.items() if loc == k or loc.startswith(k + ".")]
        out.append(f"{line} (override {hit[-1]!r})" if hit else line)
    return out
