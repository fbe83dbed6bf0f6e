"""The panel's job settings, built from the backend's settings table (its ``hello`` capabilities).

After ``hello`` the scene holds one knob per table row (``scene.pla4d.knobs``, keyed by path): its label, type,
bounds, help, the job kinds that read it, its value and whether the user changed it. An unchanged knob shows the
chosen preset's default and follows the preset; only changed knobs are sent. Values are checked against the row
(:mod:`.knobs`) when edited and again before a submit, so a bad value is a status message, never a traceback or
a job the backend refuses. A backend that sends no table is "too old for settings": jobs use the preset's
defaults.
"""

from __future__ import annotations

import json
from typing import Any

from . import knobs
from .status import set_status

# The property that holds a knob's value, by type (lists are edited as comma-separated text).
VALUE_PROPS = {"int": "int_value", "float": "float_value", "bool": "bool_value", "str": "text_value",
               "ints": "text_value", "floats": "text_value"}  # fmt: skip
# Sections that say what to make rather than how a stage trains: drawn in the main panel, the rest under Settings.
RUN_SECTIONS = ("job", "example", "asset")
SEED_PATH = "job.seed"
KIND_OF_SOURCE = {"TEXT": "text", "EXAMPLE": "example", "VIDEO": "video"}  # the panel's source -> job kind


def as_knob(item: Any) -> knobs.Knob:
    """The table row a knob item was made from (kept as JSON, so bounds stay exact, not float32)."""
    (knob,), _ = knobs.parse_table([json.loads(item.row)])
    return knob


def load_table(scene: Any, rows: Any) -> list[str]:
    """Replace the scene's knobs with the table's; values the user changed are kept where the knob still exists
    with the same type. Returns the paths of rows this add-on could not use."""
    sp = scene.pla4d
    table, skipped = knobs.parse_table(rows)
    kept = {item.name: (item.type, raw_value(item)) for item in sp.knobs if item.changed}
    sp.knobs.clear()
    for knob in table:
        item = sp.knobs.add()
        item.name = knob.path
        item.row = json.dumps({"path": knob.path, "type": knob.type, "label": knob.label, "help": knob.help,
                               "kinds": list(knob.kinds), "min": knob.lo, "max": knob.hi,
                               "choices": list(knob.choices) if knob.choices else None,
                               "defaults": dict(knob.defaults), "min_items": knob.min_items,
                               "max_items": knob.max_items})  # fmt: skip
        item.label, item.type, item.help, item.kinds = knob.label, knob.type, knob.help, ",".join(knob.kinds)
        item.has_min, item.has_max = knob.lo is not None, knob.hi is not None
        item.min = float(knob.lo) if knob.lo is not None else 0.0
        item.max = float(knob.hi) if knob.hi is not None else 0.0
        previous = kept.get(knob.path)
        if previous is not None and previous[0] == knob.type:
            _store(item, previous[1])
            item["changed"] = True
            _validate(item)
        else:
            show_default(item, sp.preset)
    sp.settings_source = "TABLE"
    return skipped


def mark_too_old(scene: Any) -> None:
    """The backend sent no settings table: drop the knobs, jobs use the preset's defaults."""
    scene.pla4d.knobs.clear()
    scene.pla4d.settings_source = "OLD_SERVER"


def show_default(item: Any, preset: str) -> None:
    """Show the preset's default in an unchanged knob (without marking it changed)."""
    default = as_knob(item).default(preset)
    item.has_default = default is not None
    if default is None:  # the backend decides (e.g. the fps of the video): show the low bound, greyed out
        default = {"int": int(item.min) if item.has_min else 0, "float": item.min if item.has_min else 0.0,
                   "bool": False}.get(item.type, "")  # fmt: skip
    _store(item, default)
    item.error = ""


def preset_changed(scene: Any) -> None:
    """Unchanged knobs follow the newly chosen preset."""
    sp = scene.pla4d
    for item in sp.knobs:
        if not item.changed:
            show_default(item, sp.preset)


def _store(item: Any, value: Any) -> None:
    # Item assignment skips the update callbacks: showing a default is not a user edit.
    prop = VALUE_PROPS[item.type]
    if item.type in knobs.LIST_TYPES:
        value = knobs.format_list(value) if isinstance(value, list | tuple) else str(value)
    elif item.type == "int":
        value = int(value)
    elif item.type == "float":
        value = float(value)
    elif item.type == "bool":
        value = bool(value)
    else:
        value = str(value)
    item[prop] = value


def raw_value(item: Any) -> Any:
    """The knob's value as edited (floats rounded to float32's 7 digits, so 0.1 stays 0.1)."""
    value = getattr(item, VALUE_PROPS[item.type])
    if item.type == "float":
        return float(f"{value:.7g}")
    return value


def check(item: Any) -> Any:
    """The knob's value checked against its row; :class:`knobs.KnobError` with the allowed range otherwise."""
    return as_knob(item).check(raw_value(item))


def _validate(item: Any) -> str:
    try:
        check(item)
    except knobs.KnobError as exc:
        item.error = str(exc)
    else:
        item.error = ""
    return item.error


def value_edited(item: Any) -> None:
    """A user edit: the knob is now changed; a bad value is reported at once (and refused at submit)."""
    item["changed"] = True
    error = _validate(item)
    scene = item.id_data
    if error:
        set_status(scene, error, "ERROR")
    elif scene.pla4d.status_level == "ERROR" and scene.pla4d.status.startswith(f"{item.label} ({item.name})"):
        set_status(scene, f"{item.label}: {knobs.format_list([raw_value(item)])}")


def changed_toggled(item: Any) -> None:
    """Unticking a knob returns it to the preset's default; ticking it checks the value shown."""
    if item.changed:
        value_edited(item)
    else:
        show_default(item, item.id_data.pla4d.preset)


def for_kind(scene: Any, kind: str) -> list[Any]:
    """The knobs a job kind (``text``, ``example``, ``video``) reads, in table order."""
    return [item for item in scene.pla4d.knobs if kind in item.kinds.split(",")]


def submit_settings(scene: Any, kind: str) -> dict[str, Any]:
    """The ``settings`` of a submit for ``kind``: preset, seed and the changed knobs' values.

    Raises :class:`knobs.KnobError` naming every bad knob. Without a table (an old backend, or no Test Connection
    yet and none saved in the file) only the preset is sent, so the job runs with its defaults."""
    sp = scene.pla4d
    if sp.settings_source != "TABLE":
        return {"preset": sp.preset}
    values, errors, seed = {}, [], None
    for item in for_kind(scene, kind):
        if item.name == SEED_PATH:
            try:
                seed = check(item) if item.changed else as_knob(item).default(sp.preset)
            except knobs.KnobError as exc:
                errors.append(str(exc))
        if not item.changed:
            continue
        try:
            values[item.name] = check(item)
        except knobs.KnobError as exc:
            errors.append(str(exc))
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise knobs.KnobError(errors[0] + more)
    return knobs.submit_settings(sp.preset, seed, values)
