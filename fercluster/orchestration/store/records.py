"""Reading the store's frozen records fast: ``status`` builds tens of thousands at every call.

A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` (its own
``__setattr__`` refuses): 10,000 ``state.json`` job entries of 14 fields took a tenth of a second
that way, a fifth of a warm ``status``. ``Reader`` builds the same instances by handing each its
field values as one dict (its ``__dict__``), as ``pickle`` and ``copy`` do: five times faster,
same type, same fields, still frozen after (assigning a field raises ``FrozenInstanceError``).
So the records it reads are frozen dataclasses WITHOUT ``slots``.

``Reader(cls).keyed(mapping)`` reads the writer's dict form: a missing key takes the field's
default, a missing key without one is a ``TypeError`` (the store turns it into its error naming
the file), a key that is not a field is left out, a ``tuple`` field's JSON list becomes a tuple.
``Reader(cls).row(values)`` reads a positional row (field order), as the run index writes its
entries.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any, Generic, Mapping, Sequence, TypeVar

T = TypeVar("T")

_new = object.__new__
_set = object.__setattr__


class Reader(Generic[T]):
    """Builds instances of one frozen dataclass (without slots) from what its writer wrote."""

    def __init__(self, cls: type[T]) -> None:
        own = fields(cls)  # type: ignore[arg-type]
        if hasattr(cls, "__slots__") or any(f.default_factory is not MISSING for f in own):
            raise TypeError(f"{cls.__name__}: a Reader needs a dataclass without slots or default factories")
        self.cls = cls
        self.names = tuple(f.name for f in own)
        self.defaults = {f.name: f.default for f in own if f.default is not MISSING}
        self.required = frozenset(self.names) - set(self.defaults)
        self.tuples = tuple(f.name for f in own if str(f.type).startswith("tuple"))

    def keyed(self, data: Mapping[str, Any]) -> T:
        """The record from its dict form (see the module doc)."""
        values = {**self.defaults, **data}
        if len(values) != len(self.names):  # keys it does not know (an earlier writer's), or missing ones
            missing = sorted(self.required - set(data))
            if missing:
                raise TypeError(f"{self.cls.__name__}: missing keys {missing}")
            values = {name: values[name] for name in self.names}
        for name in self.tuples:
            values[name] = tuple(values[name] or ())
        return self._build(values)

    def row(self, values: Sequence[Any]) -> T:
        """The record from its fields' values in field order (the caller converts their types)."""
        if len(values) != len(self.names):
            raise TypeError(f"{self.cls.__name__}: {len(values)} values for {len(self.names)} fields")
        return self._build(dict(zip(self.names, values, strict=True)))

    def _build(self, values: dict[str, Any]) -> T:
        obj = _new(self.cls)
        _set(obj, "__dict__", values)
        return obj
