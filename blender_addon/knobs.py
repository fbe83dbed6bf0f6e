"""The backend's settings table, read and checked without bpy.

A backend's ``hello`` capabilities carry ``settings``: one row per knob a client may set, e.g.
``{"path": "motion.iterations", "type": "int", "min": 1, "max": 100000, "choices": null, "help": "4D stage
iterations", "kinds": ["example", "video", "text"], "label": "Iterations", "defaults": {"draft": 400}}``.
The add-on hard-codes no knob and no bound: the panel is built from these rows (:mod:`.panel_settings`), values
are checked here against the row before anything is sent, and the messages name the knob and the allowed range.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

TYPES = ("int", "float", "bool", "str", "ints", "floats")
LIST_TYPES = {"ints": "int", "floats": "float"}


class KnobError(ValueError):
    """A value the knob does not allow, or a malformed row; the message is for the user."""


@dataclass(frozen=True)
class Knob:
    """One row of the table."""

    path: str  # "section.name", e.g. "motion.iterations"
    type: str  # one of TYPES ("ints"/"floats": short lists)
    label: str
    help: str = ""
    kinds: tuple[str, ...] = ()  # the job kinds that read it
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)  # preset name -> default (None: the backend decides)
    # Lists: how many values, when the row says; else the length is the backend's to check.
    min_items: int | None = None
    max_items: int | None = None

    @property
    def section(self) -> str:
        return self.path.split(".", 1)[0]

    def default(self, preset: str) -> Any:
        return self.defaults.get(preset)

    def describe_range(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        noun = {"int": "a whole number", "float": "a number", "bool": "on or off", "str": "text",
                "ints": "a list of whole numbers", "floats": "a list of numbers"}[self.type]  # fmt: skip
        if self.lo is not None and self.hi is not None:
            return f"{noun} from {_num(self.lo)} to {_num(self.hi)}"
        if self.lo is not None:
            return f"{noun} of at least {_num(self.lo)}"
        if self.hi is not None:
            return f"{noun} of at most {_num(self.hi)}"
        return noun

    def check(self, value: Any) -> Any:
        """``value`` in the knob's wire type; :class:`KnobError` naming the knob and its range otherwise.

        List knobs take a list or comma-separated text ("128, 256")."""
        if self.type in LIST_TYPES:
            items = parse_list(value) if isinstance(value, str) else value
            if not isinstance(items, list | tuple):
                raise self._refuse(value)
            if (self.min_items is not None and len(items) < self.min_items) or (
                self.max_items is not None and len(items) > self.max_items
            ):
                raise KnobError(f"{self.label} ({self.path}) takes {self._count()} values, not {len(items)}")
            return [self._check_item(LIST_TYPES[self.type], v, value) for v in items]
        if self.type == "bool":
            if not isinstance(value, bool):
                raise self._refuse(value)
            return value
        if self.type == "str":
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                raise self._refuse(value)
            return value
        return self._check_item(self.type, value, value)

    def _check_item(self, kind: str, item: Any, shown: Any) -> int | float:
        if isinstance(item, str):
            try:
                item = int(item) if kind == "int" else float(item)
            except ValueError:
                raise self._refuse(shown) from None
        ok = isinstance(item, int) if kind == "int" else isinstance(item, int | float)
        if isinstance(item, bool) or not ok or (isinstance(item, float) and not math.isfinite(item)):
            raise self._refuse(shown)
        if (self.lo is not None and item < self.lo) or (self.hi is not None and item > self.hi):
            raise self._refuse(shown)
        return int(item) if kind == "int" else float(item)

    def _count(self) -> str:
        if self.min_items is not None and self.max_items is not None:
            return f"{self.min_items} to {self.max_items}"
        return f"at least {self.min_items}" if self.min_items is not None else f"at most {self.max_items}"

    def _refuse(self, value: Any) -> KnobError:
        shown = ", ".join(map(_show, value)) if isinstance(value, list | tuple) else _show(value)
        return KnobError(f"{self.label} ({self.path}) must be {self.describe_range()}, not {shown}")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _show(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.7g}"
    elif isinstance(value, str):
        text = repr(value)
    else:
        text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_list(text: str) -> list[str]:
    """Comma-separated text -> its items, stripped ("128, 256" -> ["128", "256"]); empty items are dropped."""
    return [part.strip() for part in text.split(",") if part.strip()]


def format_list(values: Iterable[Any]) -> str:
    return ", ".join(_num(v) if isinstance(v, int | float) and not isinstance(v, bool) else str(v) for v in values)


def _count_bound(row: Mapping[str, Any], key: str) -> int | None:
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise KnobError(f"setting {row.get('path')!r}: {key} is not a count")
    return value


def _bound(row: Mapping[str, Any], key: str) -> float | None:
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise KnobError(f"setting {row.get('path')!r}: {key} is not a number")
    return value


def parse_table(rows: Any) -> tuple[list[Knob], list[str]]:
    """The knobs of a capabilities ``settings`` list, and the paths of rows this add-on cannot use (an unknown
    type from a newer backend, or a malformed row): those are left out, never guessed."""
    if not isinstance(rows, list):
        raise KnobError("the backend's settings table is not a list")
    knobs, skipped = [], []
    for row in rows:
        path = row.get("path") if isinstance(row, Mapping) else None
        try:
            if not isinstance(path, str) or "." not in path:
                raise KnobError("no path")
            kind = row.get("type")
            if kind not in TYPES:
                raise KnobError(f"unknown type {kind!r}")
            choices = row.get("choices")
            defaults = row.get("defaults") or {}
            if not isinstance(defaults, Mapping):
                raise KnobError("defaults is not a map")
            knobs.append(Knob(
                path=path, type=kind, label=str(row.get("label") or path.split(".", 1)[1]),
                help=str(row.get("help") or ""), kinds=tuple(str(k) for k in row.get("kinds") or ()),
                lo=_bound(row, "min"), hi=_bound(row, "max"),
                choices=tuple(str(c) for c in choices) if choices else None, defaults=dict(defaults),
                min_items=_count_bound(row, "min_items"), max_items=_count_bound(row, "max_items"),
            ))  # fmt: skip
        except KnobError:
            skipped.append(str(path))
    return knobs, skipped


def submit_settings(preset: str, seed: int | None, values: Mapping[str, Any]) -> dict[str, Any]:
    """The ``settings`` of a submit: the preset, the seed, and the knobs the user changed (path -> value)."""
    out: dict[str, Any] = {"preset": preset, "values": dict(values)}
    if seed is not None:
        out["seed"] = seed
    return out
