"""The one runner: every stage is a :class:`Stage` declaration, and :func:`run_stages` runs a list of them.

The runner alone owns the stage cache (``STAGE/stage.json`` holds the key of everything the stage's result depends
on), ``force``, the ``stage_started`` / ``stage_finished`` / ``stage_skipped`` events, time and peak memory per
stage, and cancellation between stages. A stage's key chains the keys of the artifacts it needs (a user's file:
its content hash; another stage's output: that stage's key), its settings and the code version, so every key is
known before the first stage runs: the models that the stages still to run will load are checked up front, and a
changed input or setting re-runs exactly the stages downstream of it.

Stages in one process hand results over in memory (:meth:`RunContext.get`); a cached stage's results are read from
its folder only when a later stage asks for them. The run folder stays the durable form.
"""

from __future__ import annotations

import hashlib
import json
import resource
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pla4d import __version__
from pla4d.config import PresetConfig
from pla4d.errors import raise_if_cancelled
from pla4d.runfolder import write_json

EventSink = Callable[[dict[str, Any]], None]
MARKER = "stage.json"


@dataclass
class RunContext:
    """What the stages of one run share: settings, checked inputs, and results handed over in memory."""

    out: Path
    preset: PresetConfig
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    inputs: dict[str, Any] = field(default_factory=dict)  # checked user inputs (paths, prompt, loaded frames)
    values: dict[str, Any] = field(default_factory=dict)  # run-level settings (asset.fps, example.*)
    on_event: EventSink | None = None
    should_cancel: Callable[[], bool] | None = None
    show_progress: bool = True
    keys: dict[str, str] = field(default_factory=dict)  # artifact -> key (inputs: content hashes)
    found: dict[str, Path] = field(default_factory=dict)  # model id -> local files, located before any work
    _results: dict[str, Any] = field(default_factory=dict)
    _loaders: dict[str, Callable[[], Any]] = field(default_factory=dict)

    def emit(self, event: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def put(self, name: str, value: Any) -> None:
        self._results[name] = value

    def lazy(self, name: str, loader: Callable[[], Any]) -> None:
        """``name`` is read by ``loader`` the first time a stage asks for it (cached stages load nothing)."""
        self._results.pop(name, None)
        self._loaders[name] = loader

    def get(self, name: str) -> Any:
        if name not in self._results:
            loader = self._loaders.get(name)
            if loader is None:
                raise KeyError(f"no stage of this run provides {name!r}")
            self._results[name] = loader()
        return self._results[name]

    def has(self, name: str) -> bool:
        return name in self._results or name in self._loaders

    def folder(self, stage: str) -> Path:
        return self.out / stage


@dataclass(frozen=True)
class Stage:
    """One stage, declared once. ``needs``/``makes`` name artifacts (``frames``, ``mesh``, ``canonical``, ...);
    ``settings(ctx)`` is what else its result depends on; ``run(ctx, folder)`` computes and writes the folder,
    puts its results in ``ctx`` and returns extras for its ``stage_finished`` event; ``load(ctx, folder)``
    registers lazy loaders of its results from a cached folder; ``models(ctx)`` lists the models it would load."""

    name: str
    needs: tuple[str, ...]
    makes: tuple[str, ...]
    settings: Callable[[RunContext], Any]
    run: Callable[[RunContext, Path], dict[str, Any] | None]
    load: Callable[[RunContext, Path], None]
    models: Callable[[RunContext], list[Any]] = lambda ctx: []


def digest(parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def stage_key(ctx: RunContext, stage: Stage) -> str:
    missing = [a for a in stage.needs if a not in ctx.keys]
    if missing:
        raise ValueError(f"stage {stage.name!r} needs {missing}, which no input or earlier stage provides")
    return digest({"stage": stage.name, "needs": {a: ctx.keys[a] for a in stage.needs},
                   "settings": stage.settings(ctx), "version": __version__})  # fmt: skip


def is_cached(folder: Path, key: str) -> bool:
    try:
        return json.loads((folder / MARKER).read_text()).get("key") == key
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def expand_force(force: Sequence[str], stages: Sequence[Stage]) -> set[str]:
    """Forced stages and every stage after the first forced one (later results depend on it)."""
    names = [s.name for s in stages]
    unknown = set(force) - set(names)
    if unknown:
        raise ValueError(f"--force takes stage names {', '.join(names)}; got {sorted(unknown)}")
    first = min((names.index(s) for s in force), default=len(names))
    return set(names[first:])


class Meter:
    """Time and peak memory of one stage: GPU peak via torch's allocator, CPU as the process's peak RSS."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda" and torch.cuda.is_available()
        self._start = 0.0

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self._start = time.perf_counter()

    def stop(self) -> dict[str, Any]:
        record: dict[str, Any] = {"seconds": round(time.perf_counter() - self._start, 2)}
        if self.cuda:
            torch.cuda.synchronize()
            record["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        record["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
        return record


@dataclass
class Plan:
    stage: Stage
    key: str
    cached: bool


def plan_stages(ctx: RunContext, stages: Sequence[Stage], force: Sequence[str] = ()) -> list[Plan]:
    """Every stage's key and whether its folder already holds that result; no work is done."""
    forced = expand_force(force, stages)
    plans = []
    for stage in stages:
        key = stage_key(ctx, stage)
        for artifact in stage.makes:
            ctx.keys[artifact] = key
        plans.append(Plan(stage, key, stage.name not in forced and is_cached(ctx.folder(stage.name), key)))
    return plans


def locate_models(ctx: RunContext, plans: list[Plan]) -> None:
    """The models the stages still to run will load, found before any work (MissingWeightsError names each
    missing one and its pull command)."""
    specs = [spec for p in plans if not p.cached for spec in p.stage.models(ctx) if spec.id not in ctx.found]
    if specs:
        from pla4d.models import require

        ctx.found.update(require(specs))


def run_stages(
    ctx: RunContext, stages: Sequence[Stage], force: Sequence[str] = (), plans: list[Plan] | None = None
) -> dict[str, dict[str, Any]]:
    """Run ``stages`` in order with the cache; returns per-stage records (seconds and peak memory, or cached)."""
    plans = plan_stages(ctx, stages, force) if plans is None else plans
    locate_models(ctx, plans)
    meter = Meter(ctx.device)
    records: dict[str, dict[str, Any]] = {}
    for plan in plans:
        name, folder = plan.stage.name, ctx.folder(plan.stage.name)
        raise_if_cancelled(ctx.should_cancel, f"the {name} stage")
        if plan.cached:
            ctx.emit({"type": "stage_skipped", "stage": name})
            plan.stage.load(ctx, folder)
            records[name] = {"cached": True}
            continue
        # A stage that fails or is cancelled half-way leaves no marker, so the next run redoes it.
        (folder / MARKER).unlink(missing_ok=True)
        if folder.is_dir():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        ctx.emit({"type": "stage_started", "stage": name})
        meter.start()
        extras = plan.stage.run(ctx, folder) or {}
        record = meter.stop()
        write_json(folder / MARKER, {"key": plan.key, "version": __version__, **record})
        records[name] = {**record, **{k: v for k, v in extras.items() if k in ("source", "frames")}}
        ctx.emit({"type": "stage_finished", "stage": name, **record, **extras})
    # A cancel asked for during the last stage still cancels the run (as it did before the runner).
    raise_if_cancelled(ctx.should_cancel, "the end")
    return records
