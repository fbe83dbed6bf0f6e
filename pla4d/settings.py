"""The one settings table: every knob a user can set, declared once.

Each :class:`Setting` names a path (``motion.iterations``: the ``iterations`` field of the preset's ``motion``
section, or a run-level value such as ``asset.fps`` / ``example.frames`` / ``job.seed``), its type, bounds and help.
Everything else derives from it:

- the CLI's flags (:func:`add_flags`: ``--motion-iterations``; a command gets the flags of the stages it runs),
- the backend's checks of a submitted job (:func:`check`, messages name the allowed range),
- the backend's capabilities (:func:`wire_table`, so the Blender panel hard-codes no bounds),
- the worker's mapping onto a preset (:func:`apply`).

Adding a knob is one line in :data:`SETTINGS` (plus its test).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pla4d.config import PresetConfig

# Sections that are not part of a preset: values a run carries beside it.
RUN_SECTIONS = ("job", "example", "asset")
# Which sections each entry point (CLI command or backend job kind) reads: a knob shows up where it acts.
SCOPES: dict[str, tuple[str, ...]] = {
    "lift": ("job", "focal", "static"),
    "run": ("job", "focal", "static", "motion", "rig", "asset"),
    "eval": ("job", "focal", "static", "motion"),
    "demo": ("job", "example", "focal", "static", "motion", "rig", "asset"),
    "generate": ("job", "video", "matte", "mesh", "focal", "static", "motion", "rig", "asset"),
    # backend job kinds
    "example": ("job", "example", "focal", "static", "motion", "rig", "asset"),
    "video": ("job", "video", "matte", "mesh", "focal", "static", "motion", "rig", "asset"),
    "text": ("job", "video", "matte", "mesh", "focal", "static", "motion", "rig", "asset"),
}
TYPES = ("int", "float", "bool", "str", "ints", "floats")
MAX_LIST = 8


class SettingError(ValueError):
    """A value outside its setting's type or range; the message names the setting and what is allowed."""


@dataclass(frozen=True)
class Setting:
    path: str  # "section.field"
    type: str  # one of TYPES ("ints"/"floats": short lists)
    help: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] | None = None
    remote: bool = True  # a backend client may set it (False: local-only, e.g. a command to run on this machine)
    flag: str | None = None  # the CLI flag, when not derived from the path
    # How the flag reads: "value" (--x N), "off" (--no-x sets False), "on" (--x sets True).
    switch: str = "value"
    none_word: str | None = None  # a str setting whose value None is spelled like this (e.g. "none")
    also: tuple[tuple[str, Any], ...] = ()  # other preset fields set with it
    aliases: tuple[str, ...] = ()  # older wire names (protocol 1: "overrides.iterations", "generate.frames")
    default: Any = None  # run-level settings only; preset settings default to the preset's value
    defaults: tuple[tuple[str, Any], ...] = ()  # per-scope defaults of a run-level setting (the demo's 32 frames)
    shortcut: tuple[str, Any, str] | None = None  # an extra CLI flag that sets a fixed value: (flag, value, help)
    min_items: int = 1  # lists: the fewest values (resolution steps: none, for a single resolution)

    @property
    def section(self) -> str:
        return self.path.split(".", 1)[0]

    @property
    def name(self) -> str:
        return self.path.split(".", 1)[1]

    @property
    def cli_flag(self) -> str:
        if self.flag:
            return self.flag
        base = self.path.replace("_", "-").replace(".", "-")
        return f"--no-{base}" if self.switch == "off" else f"--{base}"

    def default_in(self, scope: str) -> Any:
        return dict(self.defaults).get(scope, self.default)

    def describe_range(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        noun = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "text",
                "ints": "a list of integers", "floats": "a list of numbers"}[self.type]  # fmt: skip
        if self.lo is not None and self.hi is not None:
            return f"{noun} from {_num(self.lo)} to {_num(self.hi)}"
        return noun

    def check(self, value: Any) -> Any:
        """The value in its canonical type, or SettingError naming the setting and its range."""
        if value is None and self.none_word is not None:
            return None
        if self.type in ("ints", "floats"):
            items = list(value) if isinstance(value, list | tuple) else None
            if items is None or not self.min_items <= len(items) <= MAX_LIST:
                raise SettingError(f"{self.path} must be a list of {self.min_items} to {MAX_LIST} values, "
                                   f"each {self._item().describe_range()} (got {_show(value)})")  # fmt: skip
            return tuple(self._item().check(v) for v in items)
        if self.type == "bool":
            if not isinstance(value, bool):
                raise SettingError(f"{self.path} must be true or false (got {_show(value)})")
            return value
        if self.type == "str":
            if not isinstance(value, str) or len(value) > 4000:
                raise SettingError(f"{self.path} must be text (got {_show(value)})")
            if self.none_word is not None and value.strip().lower() == self.none_word:
                return None
            if self.choices and value not in self.choices:
                raise SettingError(f"{self.path} must be {self.describe_range()} (got {_show(value)})")
            return value
        ok = isinstance(value, int) if self.type == "int" else isinstance(value, int | float)
        if isinstance(value, bool) or not ok or (isinstance(value, float) and not math.isfinite(value)):
            raise SettingError(f"{self.path} must be {self.describe_range()} (got {_show(value)})")
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise SettingError(f"{self.path} must be {self.describe_range()} (got {_show(value)})")
        return int(value) if self.type == "int" else float(value)

    def _item(self) -> Setting:
        return dataclasses.replace(self, type="int" if self.type == "ints" else "float")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


S = Setting
# fmt: off
SETTINGS: list[Setting] = [
    # run-level
    S("job.seed", "int", "random seed", 0, 2**31 - 1, flag="--seed", default=0),
    S("asset.fps", "float", "frame rate of the result (default: the video's, else 8; the example's 16)", 1, 240,
      flag="--fps", aliases=("fps",)),
    S("asset.exports", "str", "splat exports the exports stage adds: a comma list of ply-sequence, khr-glb, "
      "khr-glb-sequence, spz, spz-sequence, or none (pla4d export RUN --format ... writes any later)",
      flag="--exports", default="spz"),
    S("example.frames", "int", "frames of the built-in example clip", 1, 64, aliases=("example.frames",),
      flag="--frames", default=8, defaults=(("demo", 32),)),
    S("example.resolution", "int", "image size of the built-in example clip, in pixels", 16, 512,
      flag="--resolution", aliases=("example.resolution",), default=128, defaults=(("demo", 256),)),
    S("example.supersample", "int", "anti-aliasing samples per pixel side of the example's renders", 1, 4,
      aliases=("example.supersample",), default=2, defaults=(("demo", 3),)),
    # focal alignment
    S("focal.enabled", "bool", "ablation: keep the initial fov (49.1 degrees) instead of the focal search",
      switch="off", flag="--no-focal-alignment"),
    # static 3D
    S("static.iterations", "int", "static stage iterations", 1, 100_000, flag="--iterations",
      aliases=("overrides.iterations",)),
    S("static.batch_views", "int", "random GS-mesh views per iteration (0: the ablation without contrastive "
      "learning)", 0, 32, aliases=("overrides.batch_views",),
      shortcut=("--no-contrastive", 0, "ablation: front view only, no GS-mesh views")),
    S("static.num_gaussians", "int", "Gaussians sampled on the mesh at the start", 16, 2_000_000,
      aliases=("overrides.num_gaussians",)),
    S("static.max_gaussians", "int", "cap on the Gaussians after densification", 16, 4_000_000,
      aliases=("overrides.max_gaussians",)),
    S("static.view_pool", "int", "random views whose mesh renders are cached", 1, 1024,
      aliases=("overrides.view_pool",)),
    S("static.resolutions", "ints", "training resolutions, in pixels, coarse to fine", 16, 2048,
      aliases=("overrides.resolutions",)),
    S("static.resolution_steps", "floats", "fractions of training where the next resolution starts", 0.0, 1.0,
      aliases=("overrides.resolution_steps",), min_items=0),
    S("static.perceptual_weight", "float", "weight of the LPIPS loss", 0.0, 10.0,
      aliases=("overrides.perceptual_weight",)),
    S("static.perceptual_max_size", "int", "LPIPS sees renders downsampled to at most this size", 16, 2048,
      aliases=("overrides.perceptual_max_size",)),
    S("static.densify_every", "int", "iterations between densification steps", 1, 100_000,
      aliases=("overrides.densify_every",)),
    # motion 4D
    S("motion.iterations", "int", "4D stage iterations", 1, 100_000, also=(("motion.epochs", None),),
      aliases=("overrides.motion_iterations",)),
    S("motion.first_frame_consistency", "bool", "ablation: the 4D stage without eq. 10's first-frame "
      "consistency term", switch="off", flag="--no-first-frame-consistency"),
    S("motion.deform_opacity", "bool", "the 4D stage's d-opacity head (the paper's; off since issue 21: parts fade "
      "instead of moving)", switch="on", flag="--deform-opacity"),
    S("motion.parts", "int", "coarse rigid parts moved under the 4D field (issue 21); 0: none", 0, 256),
    S("motion.part_clustering", "str", "how the 4D stage's parts are cut: kmeans (straight distance) or graph "
      "(geodesic over the Gaussians' k-NN graph; a candidate, issue 21)", choices=("kmeans", "graph")),
    S("motion.frame_curriculum_ends", "str", "where the 4D stage's frame curriculum starts: first, both (the first "
      "and the last frame, for a clip that returns to its first pose) or auto (both when it does)",
      choices=("first", "both", "auto")),
    S("motion.depth_anchor_weight", "float", "weight of the 4D stage's depth anchor: where the mirror plane is seen "
      "edge-on (a subject facing the camera) the motion's depth along the input rays is held near rest, and the frame "
      "curriculum runs there too; 0: off", 0.0, 1000.0),
    S("motion.track_weight", "float", "candidate (issue 21): weight of the input video's optical-flow point tracks "
      "in the 4D stage (needs scikit-image); 0: off", 0.0, 100.0),
    S("motion.export_frame_factor", "int", "asset frames per video frame (the field is continuous in time)", 1, 16,
      flag="--time-multiplier"),
    S("motion.guidance_model", "str", "Zero123 model id or folder for reference refinement, or none",
      none_word="none", remote=False, flag="--guidance-model"),
    # rig (issue 23)
    S("rig.enabled", "bool", "no rig stage (armature, skinned mesh, rigged.glb)", switch="off", flag="--no-rig"),
    S("rig.bones", "int", "bones of the rig", 1, 128, flag="--rig-bones"),
    # text front end
    S("video.model", "str", "text-to-video model id or folder", remote=False, flag="--video-model"),
    S("video.num_frames", "int", "video frames", 2, 129, flag="--frames", aliases=("generate.frames",)),
    S("video.width", "int", "video width, in pixels", 64, 1920, aliases=("generate.width",), flag="--width"),
    S("video.height", "int", "video height, in pixels", 64, 1920, aliases=("generate.height",), flag="--height"),
    S("video.steps", "int", "text-to-video sampling steps", 1, 200, aliases=("generate.steps",), flag="--steps"),
    S("video.negative_prompt", "str", "text-to-video negative prompt", flag="--negative-prompt"),
    S("video.use_prompt_suffix", "bool", "do not add the single-centred-object, plain-background suffix to the "
      "prompt", switch="off", flag="--no-prompt-suffix"),
    S("matte.session", "str", "rembg session (u2net, u2netp, isnet-general-use, ...)", remote=False,
      flag="--matte-session"),
    S("matte.size", "int", "matted frames' size, in pixels", 32, 1024, aliases=("generate.matte_size",)),
    S("mesh.model", "str", "image-to-mesh model id or folder", remote=False, flag="--mesh-model"),
    S("mesh.command", "str", "external image-to-mesh command template ({image}, {outdir}, {mesh}; "
      "docs/text-to-4d.md)", also=(("mesh.model", "external"),), remote=False, flag="--mesh-command"),
    S("mesh.command_cwd", "str", "working folder of --mesh-command", remote=False, flag="--mesh-command-cwd"),
    S("mesh.steps", "int", "image-to-mesh sampling steps", 1, 256, aliases=("generate.mesh_steps",)),
    S("mesh.grid_size", "int", "marching-cubes grid of the image-to-mesh decoder", 16, 512,
      aliases=("generate.mesh_grid",)),
]
# fmt: on


def settings_for(scope: str, remote_only: bool = False) -> list[Setting]:
    """The knobs an entry point (a CLI command or a backend job kind) reads."""
    try:
        sections = SCOPES[scope]
    except KeyError:
        raise ValueError(f"unknown settings scope {scope!r}; one of {', '.join(SCOPES)}") from None
    return [s for s in SETTINGS if s.section in sections and (s.remote or not remote_only)]


def by_path() -> dict[str, Setting]:
    return {s.path: s for s in SETTINGS}


def check(values: Mapping[str, Any], scope: str, remote: bool = True) -> dict[str, Any]:
    """Checked, canonical values (path -> value) for ``scope``; SettingError for an unknown or bad one."""
    known = {s.path: s for s in settings_for(scope, remote_only=remote)}
    out = {}
    for path, value in values.items():
        setting = known.get(path)
        if setting is None:
            allowed = ", ".join(sorted(known))
            raise SettingError(f"unknown setting {str(path)[:64]!r} for {scope}; allowed: {allowed}")
        out[path] = setting.check(value)
    return out


def from_legacy(body: Mapping[str, Any]) -> dict[str, Any]:
    """Protocol-1 settings (``overrides``/``generate``/``example`` maps, top-level ``fps``) as paths."""
    aliases = {alias: s.path for s in SETTINGS for alias in s.aliases}
    out: dict[str, Any] = {}
    for group in ("overrides", "generate", "example"):
        values = body.get(group) or {}
        if not isinstance(values, Mapping):
            raise SettingError(f"settings.{group} must be a map")
        for name, value in values.items():
            path = aliases.get(f"{group}.{name}")
            if path is None:
                allowed = sorted(a.split(".", 1)[1] for a in aliases if a.startswith(group + "."))
                raise SettingError(f"unknown {group} setting {str(name)[:64]!r}; allowed: {', '.join(allowed)}")
            out[path] = value
    if body.get("fps") is not None:
        out["asset.fps"] = body["fps"]
    return out


def apply(preset: PresetConfig, values: Mapping[str, Any]) -> PresetConfig:
    """The preset with the preset-section values (checked ones) applied; run-level sections are left to the
    caller (:func:`run_values`)."""
    changes: dict[str, dict[str, Any]] = {}
    table = by_path()
    for path, value in values.items():
        setting = table.get(path)
        if setting is None:
            raise SettingError(f"unknown setting {path!r}")
        if setting.section in RUN_SECTIONS:
            continue
        for target, target_value in ((path, value), *setting.also):
            section, name = target.split(".", 1)
            changes.setdefault(section, {})[name] = target_value
    for section, fields in changes.items():
        current = getattr(preset, section)
        unknown = set(fields) - {f.name for f in dataclasses.fields(current)}
        if unknown:
            raise SettingError(f"unknown {section} settings: {sorted(unknown)}")
        preset = dataclasses.replace(preset, **{section: dataclasses.replace(current, **fields)})
    return preset


def run_values(values: Mapping[str, Any], scope: str) -> dict[str, Any]:
    """Run-level values (job/example/asset sections) with the scope's defaults filled in."""
    out = {s.path: s.default_in(scope) for s in settings_for(scope) if s.section in RUN_SECTIONS}
    out.update({k: v for k, v in values.items() if k.split(".", 1)[0] in RUN_SECTIONS})
    return out


def preset_value(preset: PresetConfig, path: str) -> Any:
    section, name = path.split(".", 1)
    value = getattr(getattr(preset, section), name)
    return list(value) if isinstance(value, tuple) else value


def wire_table(presets: Iterable[PresetConfig]) -> list[dict[str, Any]]:
    """The remote settings as plain data for the backend's capabilities: the add-on draws its panel from it."""
    presets = list(presets)
    rows = []
    for s in SETTINGS:
        if not s.remote:
            continue
        kinds = [k for k in ("example", "video", "text") if s.section in SCOPES[k]]
        if s.section in SCOPES["lift"]:
            kinds.insert(0, "lift")
        if s.section in RUN_SECTIONS:
            defaults = {p.name: s.default_in("example" if s.section == "example" else "video") for p in presets}
        else:
            defaults = {p.name: preset_value(p, s.path) for p in presets}
        rows.append({"path": s.path, "type": s.type, "min": s.lo, "max": s.hi,
                     "choices": list(s.choices) if s.choices else None, "help": s.help, "kinds": kinds,
                     "label": s.name.replace("_", " ").capitalize(), "defaults": defaults})  # fmt: skip
    return rows


# ----------------------------------------------------------------------------------------------- CLI


def _arg_type(setting: Setting) -> Any:
    def parse(text: str) -> Any:
        try:
            if setting.type in ("ints", "floats"):
                parts = [x for x in text.split(",") if x.strip()]
                raw: Any = [float(x) if setting.type == "floats" else int(x) for x in parts]
            elif setting.type == "int":
                raw = int(text)
            elif setting.type == "float":
                raw = float(text)
            else:
                raw = text
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {setting.describe_range()} (got {text!r})") from None
        try:
            return setting.check(raw)
        except SettingError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = setting.type  # argparse names the type in its messages
    return parse


def add_flags(parser: argparse.ArgumentParser, scope: str, remote_only: bool = False) -> None:
    """One flag per setting of ``scope``; parsed values land in ``args.settings_values`` via :func:`parsed`."""
    group = parser.add_argument_group("settings (default: the preset's)")
    for s in settings_for(scope, remote_only=remote_only):
        dest = "set:" + s.path
        default = s.default_in(scope)
        if s.switch == "off":
            group.add_argument(s.cli_flag, dest=dest, action="store_const", const=False, default=None,
                               help=s.help)  # fmt: skip
        elif s.switch == "on":
            group.add_argument(s.cli_flag, dest=dest, action="store_const", const=True, default=None, help=s.help)
        else:
            shown = f" (default: {default})" if default is not None else ""
            allowed = "" if s.type == "str" and not s.choices else f"; {s.describe_range()}"
            group.add_argument(s.cli_flag, dest=dest, type=_arg_type(s), default=None, metavar=s.type.upper(),
                               help=f"{s.help}{allowed}{shown}")  # fmt: skip
        if s.shortcut is not None:
            flag, value, text = s.shortcut
            group.add_argument(flag, dest=dest, action="store_const", const=value, help=text)


def parsed(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (path -> checked value); absent ones are left out."""
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("set:") and v is not None}
