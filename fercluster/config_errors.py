"""A config's validation problems as lines a person reads: one per problem, each naming the key,
the value received and what is valid; an unknown key also gets the closest known one ("did you
mean"). ``fercluster.config`` raises them, all at once, in one ``ConfigError``.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

# pydantic's location parts that are not keys: union members, validator wrappers, dict-key marker.
_TAG_RE = re.compile(r"^(literal\[.*\]|[a-z-]+\[.*\]|function-.*)$")


def format_problems(lines: list[str]) -> str:
    """One line for one problem; a head line and one indented line per problem for several."""
    return "invalid config: " + lines[0] if len(lines) == 1 else "invalid config:\n  " + "\n  ".join(lines)


def problem_lines(exc: ValidationError, root: type[BaseModel], prefix: str = "") -> list[str]:
    """One line per problem, each naming the key (with ``prefix``), the value and what is valid.

    ``root``: the model validated (it knows the keys an unknown key may have meant).
    """
    located = []  # (where, key parts, error, bad dict key?, member of a union?)
    for err in exc.errors():
        parts = [str(p) for p in err["loc"]]
        is_key = parts[-1:] == ["[key]"]  # a bad dict key: the error belongs to the dict
        if is_key:
            parts = parts[:-2]
        tagged = any(_TAG_RE.match(p) for p in parts)
        parts = [p for p in parts if not _TAG_RE.match(p)]
        located.append((prefix + ".".join(parts), parts, err, is_key, tagged))
    lines: dict[str, str] = {}
    for loc, parts, err, is_key, tagged in located:
        # A union-typed value gets one error per member: keep the deepest, join the rest with "or".
        if tagged and any(other.startswith(loc + ".") for other, *_ in located):
            continue
        value, msg = err.get("input"), err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            line = f"{loc}: unknown key (value {value!r})" + did_you_mean(root, parts)
        elif err["type"] == "missing":
            line = f"{loc}: missing; {msg.lower()}"
        elif is_key:
            line = f"{loc}: bad key {value!r}; {msg}"
        elif isinstance(value, dict) and err["type"] == "value_error":
            # A model's own cross-field check: its message names the keys, one line each.
            for i, part in enumerate(msg.split("\n")):
                where = f"{loc}." if re.match(r"^[\w.-]+: ", part) else f"{loc}: "
                lines[f"{loc}#{i}"] = (where if loc else "") + part
            continue
        else:
            line = f"{loc or '(top level)'}: got {value!r}; {msg}"
        key = f"{loc}#union" if tagged else f"{loc}#{len(lines)}"
        lines[key] = f"{lines[key]} or {msg}" if key in lines else line
    return list(lines.values())


def did_you_mean(root: type[BaseModel], parts: list[str]) -> str:
    """``"; did you mean `iterations`?"`` for the unknown key ``parts[-1]``, or ``""``."""
    model: Any = root
    for part in parts[:-1]:
        model = _child(model, part)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return ""
    close = difflib.get_close_matches(parts[-1], list(model.model_fields), n=1)
    return f"; did you mean `{close[0]}`?" if close else ""


def _child(tp: Any, part: str) -> Any:
    """The type one step down ``tp``: a model's field, a dict's value, a list's item (None: unknown)."""
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(part)
        return _unwrap(field.annotation) if field is not None else None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is dict and len(args) == 2:
        return _unwrap(args[1])
    if origin is list and args:
        return _unwrap(args[0])
    return None


def _unwrap(tp: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` -> ``X`` (the model of a union with one model)."""
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and args:
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if models else args[0]
    return tp
