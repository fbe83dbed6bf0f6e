"""The panel's job settings come from the backend's settings table (its ``hello`` capabilities), here a fake one
handed to the main-thread timer as the hello task would: no backend needed."""

from __future__ import annotations

import bpy
import pytest

# fmt: off
SEED = {"path": "job.seed", "type": "int", "min": 0, "max": 2**31 - 1, "choices": None, "help": "random seed",
        "kinds": ["lift", "example", "video", "text"], "label": "Seed", "defaults": {"draft": 0, "standard": 0}}
FRAMES = {"path": "example.frames", "type": "int", "min": 1, "max": 64, "choices": None, "help": "example frames",
          "kinds": ["example"], "label": "Frames", "defaults": {"draft": 8, "standard": 8}}
FPS = {"path": "asset.fps", "type": "float", "min": 1, "max": 240, "choices": None, "help": "frame rate",
       "kinds": ["example", "video", "text"], "label": "Fps", "defaults": {"draft": None, "standard": None}}
# A knob no version of the add-on has heard of: it must still show up, with its bounds and defaults.
WOBBLE = {"path": "motion.wobble", "type": "float", "min": 0, "max": 2, "choices": None, "help": "how much to wobble",
          "kinds": ["example"], "label": "Wobble", "defaults": {"draft": 0.5, "standard": 1.0}}
RESOLUTIONS = {"path": "static.resolutions", "type": "ints", "min": 16, "max": 2048, "choices": None,
               "help": "training resolutions", "kinds": ["example", "video", "text"], "label": "Resolutions",
               "defaults": {"draft": [128, 256], "standard": [128, 256]}}
STEPS = {"path": "video.steps", "type": "int", "min": 1, "max": 200, "choices": None, "help": "video steps",
         "kinds": ["video", "text"], "label": "Steps", "defaults": {"draft": 30, "standard": 50}}
TABLE = [SEED, FRAMES, FPS, WOBBLE, RESOLUTIONS, STEPS]
# fmt: on


def hello(addon, settings=None) -> None:
    info = {"server_version": "test", "engine_version": "test", "presets": ["draft", "standard"],
            "kinds": {"example": {"available": True}, "text": {"available": True}}}  # fmt: skip
    if settings is not None:
        info["settings"] = settings
    addon.jobs.post("hello", key="hello", scene=bpy.context.scene.name, info=info, server="tcp://127.0.0.1:9")
    addon.job_updates.tick()


def test_knobs_come_from_the_table(addon):
    sp = bpy.context.scene.pla4d
    assert sp.settings_source == "NONE" and not sp.knobs
    hello(addon, TABLE)
    assert sp.settings_source == "TABLE" and sp.status == "Connected to tcp://127.0.0.1:9"
    assert [k.name for k in sp.knobs] == [row["path"] for row in TABLE]
    wobble = sp.knobs["motion.wobble"]
    assert (wobble.label, wobble.type, wobble.kinds) == ("Wobble", "float", "example")
    assert wobble.help == "how much to wobble"
    assert (wobble.has_min, wobble.min, wobble.has_max, wobble.max) == (True, 0.0, True, 2.0)
    seed = sp.knobs["job.seed"]
    assert addon.panel_settings.as_knob(seed).hi == 2**31 - 1  # exact, not the float32 of the display copy
    # Unchanged knobs show the chosen preset's default and follow the preset.
    sp.preset = "draft"
    assert wobble.float_value == pytest.approx(0.5) and not wobble.changed
    assert sp.knobs["static.resolutions"].text_value == "128, 256"
    assert not sp.knobs["asset.fps"].has_default  # the backend decides (the video's rate)
    sp.preset = "standard"
    assert wobble.float_value == pytest.approx(1.0) and not wobble.changed
    example = addon.panel_settings.for_kind(bpy.context.scene, "example")
    assert [k.name for k in example] == ["job.seed", "example.frames", "asset.fps", "motion.wobble",
                                         "static.resolutions"]  # fmt: skip
    assert addon.panel_settings.submit_settings(bpy.context.scene, "example") == {
        "preset": "standard", "seed": 0, "values": {}
    }  # fmt: skip
    # A user edit marks the knob changed; only changed knobs of the job's kind are sent, in their wire types.
    wobble.float_value = 1.5
    sp.knobs["static.resolutions"].text_value = "32, 64"
    sp.knobs["video.steps"].int_value = 10  # not read by example jobs
    sp.knobs["job.seed"].int_value = 7
    assert wobble.changed and not wobble.error
    sent = addon.panel_settings.submit_settings(bpy.context.scene, "example")
    assert sent == {"preset": "standard", "seed": 7,
                    "values": {"job.seed": 7, "motion.wobble": 1.5, "static.resolutions": [32, 64]}}  # fmt: skip
    sp.preset = "draft"
    assert wobble.float_value == pytest.approx(1.5)  # a changed knob keeps its value
    # A second hello keeps the user's values where the knob still exists.
    hello(addon, TABLE)
    assert sp.knobs["motion.wobble"].changed and sp.knobs["motion.wobble"].float_value == pytest.approx(1.5)
    assert not sp.knobs["example.frames"].changed


def test_out_of_range_value_is_refused_before_submit(addon):
    sp = bpy.context.scene.pla4d
    hello(addon, TABLE)
    sp.source, sp.preset = "EXAMPLE", "draft"
    wobble = sp.knobs["motion.wobble"]
    wobble.float_value = 3.0
    message = "Wobble (motion.wobble) must be a number from 0 to 2, not 3"
    assert wobble.error == message
    assert sp.status_level == "ERROR" and sp.status == message  # at once, in the panel
    with pytest.raises(RuntimeError, match=r"Wobble \(motion\.wobble\) must be a number from 0 to 2, not 3"):
        bpy.ops.pla4d.generate()
    assert not addon.jobs.busy() and not sp.jobs and sp.status == message  # nothing was sent
    sp.knobs["static.resolutions"].text_value = "32, big"
    assert "must be a list of whole numbers from 16 to 2048" in sp.knobs["static.resolutions"].error
    with pytest.raises(RuntimeError, match=r"motion\.wobble.*\(and 1 more\)"):
        bpy.ops.pla4d.generate()
    # Unticking returns a knob to the preset's default, and its error goes.
    wobble.changed = False
    sp.knobs["static.resolutions"].changed = False
    assert wobble.float_value == pytest.approx(0.5) and not wobble.error
    assert sp.knobs["static.resolutions"].text_value == "128, 256"
    assert addon.panel_settings.submit_settings(bpy.context.scene, "example")["values"] == {}


def test_old_server_without_a_table(addon):
    sp = bpy.context.scene.pla4d
    hello(addon, TABLE)
    sp.knobs["motion.wobble"].float_value = 1.5
    hello(addon, None)  # an older backend: no "settings" in its capabilities
    assert sp.settings_source == "OLD_SERVER" and not sp.knobs
    assert "too old for settings" in sp.status and sp.status_level == "INFO"
    assert addon.panel_settings.submit_settings(bpy.context.scene, "example") == {"preset": sp.preset}


def test_unusable_rows_are_left_out(addon):
    sp = bpy.context.scene.pla4d
    hello(addon, [SEED, {"path": "motion.curve", "type": "spline", "label": "Curve"}, WOBBLE])
    assert [k.name for k in sp.knobs] == ["job.seed", "motion.wobble"]
    hello(addon, "not a table")
    assert sp.settings_source == "OLD_SERVER" and not sp.knobs and "Traceback" not in sp.status


class FakeLayout:
    """Stands in for Blender's UILayout (panels cannot draw in background mode): records what a panel draws and
    checks that every property it draws exists."""

    def __init__(self, log: list) -> None:
        self.log, self.active, self.scale_y = log, True, 1.0

    def row(self, **_kwargs) -> FakeLayout:
        return FakeLayout(self.log)

    column = box = row

    def prop(self, data, name: str, text: str | None = None, **_kwargs) -> None:
        assert name in data.bl_rna.properties, f"{data} has no property {name!r}"
        self.log.append(("prop", name, text if text is not None else name, self.active))

    def label(self, text: str = "", **_kwargs) -> None:
        self.log.append(("label", text))

    def operator(self, idname: str, **_kwargs):
        self.log.append(("operator", idname))
        return type("Props", (), {})()

    def progress(self, **_kwargs) -> None:
        self.log.append(("progress",))


def draw(panel) -> list:
    log: list = []
    panel.draw(type("Panel", (), {"layout": FakeLayout(log)})(), bpy.context)
    return log


def test_panels_draw_the_knobs_of_the_chosen_kind(addon):
    sp = bpy.context.scene.pla4d
    assert ("operator", "pla4d.test_connection") in draw(addon.ui.PLA4D_PT_generate)  # no table yet: load it
    hello(addon, TABLE)
    sp.source, sp.preset = "EXAMPLE", "draft"
    main = draw(addon.ui.PLA4D_PT_generate)
    drawn = [entry[2] for entry in main if entry[0] == "prop" and entry[1] in ("int_value", "float_value")]
    assert drawn == ["Seed", "Frames"]  # the run-level knobs of example jobs; fps has no default:
    assert ("label", "Fps: the backend's default") in main
    assert ("prop", "int_value", "Seed", False) in main  # unchanged: greyed out
    settings = draw(addon.ui.PLA4D_PT_settings)
    assert [e[1] for e in settings if e[0] == "label"] == ["Motion", "Static"]
    assert ("prop", "float_value", "Wobble", False) in settings
    assert ("prop", "text_value", "Resolutions", False) in settings
    sp.knobs["motion.wobble"].float_value = 9.0
    settings = draw(addon.ui.PLA4D_PT_settings)
    assert ("prop", "float_value", "Wobble", True) in settings
    assert any(e[0] == "label" and e[1].startswith("Wobble (motion.wobble) must be") for e in settings)
    sp.source = "TEXT"
    settings = draw(addon.ui.PLA4D_PT_settings)
    assert [e[1] for e in settings if e[0] == "label"] == ["Static", "Video"]  # the text kind's sections
    hello(addon, None)
    assert any(e[0] == "label" and "too old for settings" in e[1] for e in draw(addon.ui.PLA4D_PT_generate))
