"""Actor messages, answers and refusals as JSON, for calls forwarded between nodes.

A forwarded call carries the message a local :meth:`~actors.Router.call` would have
delivered (``Mutate(Progress(...))``, ``Read()``, a durable ``Incoming``...), and brings
back its answer or the error it raised, so the caller's node handles both exactly as if
the object lived there. Python values become JSON with a tag for what JSON lacks:

- a dataclass or named tuple: ``{"\\u0000": "module:Class", "f": {field: value}}``;
- an enum member: ``{"\\u0000": "module:Class", "e": value}``;
- a tuple: ``{"\\u0000": "tuple", "t": [...]}``;
- an exception: ``{"\\u0000": "module:Class", "x": [args], "a": {attribute: value}}``;
- a dict that happens to hold the tag key: ``{"\\u0000": "dict", "d": {...}}``;
- a watcher message (:class:`spectral.wire.Outgoing`): ``{"\\u0000": "out", "s", "t", "f"}``.

Only the classes of the modules in :data:`MODULES` are ever built from a frame (an
allow-list; nothing is imported or called by name otherwise), so a frame cannot make a
node construct arbitrary objects. A value of any other class cannot be encoded
(``TypeError``): e.g. a ``Watch`` holding a live socket is never forwarded.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
from collections.abc import Mapping
from typing import Any

from spectral.wire import Outgoing

#: The modules whose dataclasses, named tuples, enums and exceptions may cross nodes.
MODULES = (
    "actors.errors",
    "actors.messaging",
    "spectral.tasks.state",
    "spectral.tasks.actor",
    "spectral.rooms.actor",
)

TAG = "\u0000"


class Codec:
    """Encode and decode with one allow-list of classes (built once)."""

    def __init__(self, modules: tuple[str, ...] = MODULES) -> None:
        self._classes: dict[str, type] = {}
        for name in modules:
            module = importlib.import_module(name)
            for value in vars(module).values():
                if isinstance(value, type) and value.__module__ == name and _crossable(value):
                    self._classes[f"{name}:{value.__qualname__}"] = value
        self._fields: dict[type, tuple[str, ...]] = {}

    def encode(self, value: Any) -> Any:
        """``value`` as JSON-ready data (raises TypeError for a class not allowed)."""
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, str):
            if isinstance(value, enum.Enum):
                return {TAG: self._name(type(value)), "e": value.value}
            return value
        if isinstance(value, list):
            return [self.encode(item) for item in value]
        if isinstance(value, Outgoing):
            return {TAG: "out", "s": value.seq, "t": value.text, "f": value.final}
        if isinstance(value, tuple) and not hasattr(value, "_fields"):
            return {TAG: "tuple", "t": [self.encode(item) for item in value]}
        if isinstance(value, Mapping):
            encoded = {key: self.encode(item) for key, item in value.items()}
            return {TAG: "dict", "d": encoded} if TAG in encoded else encoded
        if isinstance(value, BaseException):
            attributes = {k: self.encode(v) for k, v in vars(value).items() if k[:1] != "_"}
            return {
                TAG: self._name(type(value)),
                "x": [self.encode(arg) for arg in value.args],
                "a": attributes,
            }
        if isinstance(value, enum.Enum):
            return {TAG: self._name(type(value)), "e": value.value}
        names = self._field_names(type(value))
        fields = {name: self.encode(getattr(value, name)) for name in names}
        return {TAG: self._name(type(value)), "f": fields}

    def decode(self, data: Any) -> Any:
        """The value :meth:`encode` made ``data`` from (raises ValueError on a bad tag)."""
        if isinstance(data, list):
            return [self.decode(item) for item in data]
        if not isinstance(data, dict):
            return data
        tag = data.get(TAG)
        if tag is None:
            return {key: self.decode(item) for key, item in data.items()}
        if tag == "tuple":
            return tuple(self.decode(item) for item in data["t"])
        if tag == "dict":
            return {key: self.decode(item) for key, item in data["d"].items()}
        if tag == "out":
            return Outgoing(int(data["s"]), str(data["t"]), bool(data["f"]))
        cls = self._classes.get(tag)
        if cls is None:
            raise ValueError(f"class {tag!r} may not cross nodes")
        if "e" in data:
            return cls(data["e"])
        if "x" in data:
            # Built without its __init__ (whose signature varies), then given its args.
            error: BaseException = BaseException.__new__(cls)
            BaseException.__init__(error, *(self.decode(arg) for arg in data["x"]))
            for key, item in data.get("a", {}).items():
                setattr(error, key, self.decode(item))
            return error
        fields = {key: self.decode(item) for key, item in data["f"].items()}
        return cls(**fields)

    def _name(self, cls: type) -> str:
        name = f"{cls.__module__}:{cls.__qualname__}"
        if self._classes.get(name) is not cls:
            raise TypeError(f"{name} may not cross nodes")
        return name

    def _field_names(self, cls: type) -> tuple[str, ...]:
        names = self._fields.get(cls)
        if names is None:
            if dataclasses.is_dataclass(cls):
                names = tuple(f.name for f in dataclasses.fields(cls) if f.init)
            elif issubclass(cls, tuple) and hasattr(cls, "_fields"):
                names = tuple(cls._fields)
            else:
                raise TypeError(f"{cls.__module__}:{cls.__qualname__} may not cross nodes")
            self._name(cls)
            self._fields[cls] = names
        return names


def _crossable(cls: type) -> bool:
    """Classes a frame may name: plain data and errors, nothing with behaviour to trigger."""
    if dataclasses.is_dataclass(cls):
        return True
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):
        return True
    return issubclass(cls, (enum.Enum, Exception))
