"""The add-on's reading of the backend's settings table (blender_addon/knobs.py, no bpy) against the engine's own
table: every row the backend sends is usable, and the add-on accepts and refuses what the backend does (list
lengths aside: the rows do not carry them, so the backend checks those)."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from conftest import REPO

from pla4d.config import PRESETS
from pla4d.settings import SettingError, by_path, wire_table


def _load_knobs():
    # The add-on package imports bpy on import; knobs.py does not, so load the file on its own.
    spec = importlib.util.spec_from_file_location("pla4d_addon_knobs", REPO / "blender_addon" / "knobs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


knobs = _load_knobs()
ROWS = wire_table(PRESETS.values())


def _engine_accepts(path: str, value) -> bool:
    try:
        by_path()[path].check(value)
    except SettingError:
        return False
    return True


def _addon_accepts(knob, value) -> bool:
    try:
        knob.check(value)
    except knobs.KnobError:
        return False
    return True


def test_every_row_of_the_backend_table_is_read():
    table, skipped = knobs.parse_table(ROWS)
    assert not skipped
    assert [k.path for k in table] == [r["path"] for r in ROWS]
    seed = next(k for k in table if k.path == "job.seed")
    assert (seed.lo, seed.hi, seed.type, seed.kinds) == (0, 2**31 - 1, "int", ("lift", "example", "video", "text"))
    for knob in table:  # each preset's default is a value the knob accepts
        for preset, default in knob.defaults.items():
            if default is not None:
                assert knob.check(default) == (list(default) if isinstance(default, tuple) else default), preset


def test_addon_checks_agree_with_the_engine():
    table, _ = knobs.parse_table(ROWS)
    samples = {"int": [0, 1, 16, 64, 512, 100_000, 100_001, -1, 2**31 - 1, 2**31, 2.5, 3.0, True, "7"],
               "float": [0, 0.5, 1, 10, 240, 240.5, 1e9, float("nan"), True],
               "bool": [True, False, 1, "yes"], "str": ["", "text", 3],
               "ints": [[32], [128, 256], [8], [4096], [1.5]],
               "floats": [[0.3], [0.5, 0.7], [1.5], [-0.1]]}  # fmt: skip
    checked = 0
    for knob in table:
        for value in samples[knob.type]:
            if knob.type == "int" and isinstance(value, str):
                continue  # text is how the panel's list fields arrive, not an int field's value
            assert _addon_accepts(knob, value) == _engine_accepts(knob.path, value), (knob.path, value)
            checked += 1
    assert checked > 100


def test_refusal_names_the_knob_and_its_range():
    table, _ = knobs.parse_table(ROWS)
    iterations = next(k for k in table if k.path == "motion.iterations")
    with pytest.raises(knobs.KnobError, match=r"Iterations \(motion\.iterations\) must be a whole number from 1 to "
                                              r"100000, not 0"):  # fmt: skip
        iterations.check(0)
    resolutions = next(k for k in table if k.path == "static.resolutions")
    assert resolutions.check("128, 256") == [128, 256]
    with pytest.raises(knobs.KnobError, match="list of whole numbers from 16 to 2048"):
        resolutions.check("128, 4096")
    with pytest.raises(knobs.KnobError, match="list of whole numbers"):
        resolutions.check("128, big")


def test_rows_the_addon_cannot_use_are_left_out():
    rows = [*ROWS[:2], {"path": "future.knob", "type": "matrix", "label": "Future"}, {"type": "int"}, "junk"]
    table, skipped = knobs.parse_table(rows)
    assert [k.path for k in table] == [r["path"] for r in ROWS[:2]]
    assert skipped == ["future.knob", "None", "None"]
    with pytest.raises(knobs.KnobError):
        knobs.parse_table({"not": "a list"})


def test_list_lengths_follow_the_row_when_it_gives_them():
    row = {"path": "static.resolution_steps", "type": "floats", "min": 0, "max": 1, "label": "Steps"}
    (free,), _ = knobs.parse_table([row])
    assert free.check("") == [] and free.check("0.3, 0.6") == [0.3, 0.6]
    (bounded,), _ = knobs.parse_table([dict(row, min_items=1, max_items=2)])
    with pytest.raises(knobs.KnobError, match="takes 1 to 2 values, not 0"):
        bounded.check("")
    with pytest.raises(knobs.KnobError, match="takes 1 to 2 values, not 3"):
        bounded.check([0.1, 0.2, 0.3])


def test_submit_settings_shape():
    assert knobs.submit_settings("draft", 3, {"motion.iterations": 20}) == {
        "preset": "draft", "seed": 3, "values": {"motion.iterations": 20}
    }  # fmt: skip
    assert knobs.submit_settings("draft", None, {}) == {"preset": "draft", "values": {}}
