"""YAML as sweep configs read it: one reader for files and for ``--set`` values.

PyYAML reads YAML 1.1, where a float needs a dot (``1.0e-3``) and an unquoted ``1e-3`` is a
string. A config means a number there, as YAML 1.2 (and a shell user) does, so ``Loader`` adds
YAML 1.2's exponent form to the float resolver; everything else is PyYAML's safe loader.
``read_yaml`` turns every way a file can fail to be read into one ``ConfigError`` line: a missing
file, a folder, an unreadable file, and a syntax error with its file, line and column.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from fercluster.errors import ConfigError

# YAML 1.2's float without a dot (1e-3, 5E+2, .5e1), which YAML 1.1 reads as a string
FLOAT_12 = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+$")


class Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's floats (``1e-3`` is 0.001)."""


Loader.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT_12, list("-+.0123456789"))


def parse_yaml(text: str) -> Any:
    """``text`` as YAML with ``Loader`` (raises ``yaml.YAMLError``)."""
    return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: str | Path) -> Any:
    """The parsed content of the YAML file ``path``; ``ConfigError`` (one line) when it cannot be read."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder; give a sweep config file, e.g. configs/smoke.yaml") from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not a text file"
        raise ConfigError(f"cannot read the config {path}: {why}; give a readable YAML file") from None
    try:
        return parse_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(syntax_error(path, exc)) from None


def syntax_error(path: Path, exc: yaml.YAMLError) -> str:
    """``file:line:column: not valid YAML: problem (context at line:column)``, 1-based as in an editor."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and start is not None and start is not mark:
        context += f" that starts at {start.line + 1}:{start.column + 1}"
    return f"{where}: not valid YAML: {problem}" + (f" ({context})" if context else "") + "; fix the file there"
