"""Every model a preset needs: what it is, how big, under which licence, where it is cached, and whether it is here.

Models are named the way they are loaded: Hugging Face model ids (``owner/name``; the local Hugging Face cache,
``$HF_HUB_CACHE``, never a download at run time), a local folder in the same layout, or rembg session names
(files in ``$U2NET_HOME`` or rembg's model folder). ``pla4d models pull`` downloads (the only place that touches the
network), ``pla4d models verify`` re-hashes what is on disk, and :func:`require` is the check every command runs
before it does any work: one message naming each missing model and the command that fetches it.

The hub side (what to fetch, disk space, hashes, the messages for gated models and no network) is
:mod:`pla4d.models.hub`.

Sizes are the download sizes (float32 files where the repository ships them), rounded; VRAM figures are in
docs/text-to-4d.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pla4d.errors import MissingWeightsError
from pla4d.models import hub
from pla4d.models.hub import DownloadError, hf_cache_dir
from pla4d.runfolder import file_digest

KINDS = ("text-to-video", "matting", "image-to-mesh", "guidance", "clip")
# Weight files the loaders read; other formats in a repository (TensorFlow, Flax, ONNX exports) are not pulled.
IGNORE_PATTERNS = ("*.h5", "*.msgpack", "*.onnx", "*.onnx_data", "*.tflite", "*.ot", "*.ckpt", "*.mlmodel")


@dataclass(frozen=True)
class ModelSpec:
    """One model: ``id`` as it is loaded; ``source`` "huggingface" or "rembg"."""

    id: str
    kind: str
    source: str = "huggingface"
    size: str = "unknown"
    licence: str = "see the model card"
    purpose: str = ""
    layout: str = "diffusers"  # huggingface: "diffusers" (model_index.json), "transformers" or "zero123"
    optional: bool = False  # the run goes on without it (Zero123: reference refinement off)
    md5: str | None = None  # rembg files
    url: str | None = None
    ignore_patterns: tuple[str, ...] = IGNORE_PATTERNS
    notes: dict[str, Any] = field(default_factory=dict)


def _rembg(name: str, size: str, licence: str, md5: str, file: str, purpose: str) -> ModelSpec:
    return ModelSpec(
        id=name, kind="matting", source="rembg", size=size, licence=licence, md5=md5, purpose=purpose,
        url=f"https://github.com/danielgatis/rembg/releases/download/v0.0.0/{file}",
    )  # fmt: skip


KNOWN: dict[str, ModelSpec] = {
    s.id: s
    for s in (
        ModelSpec(
            "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
            "text-to-video",
            size="~29 GB (float32 files)",
            licence="Apache-2.0",
            purpose="default text-to-video (480p, 16 fps)",
        ),
        ModelSpec(
            "THUDM/CogVideoX-2b",
            "text-to-video",
            size="~13 GB (fp16 files)",
            licence="Apache-2.0",
            purpose="text-to-video, 480x720, 8 fps",
        ),
        ModelSpec(
            "THUDM/CogVideoX-5b",
            "text-to-video",
            size="~21 GB",
            licence="CogVideoX licence (see the model card)",
            purpose="text-to-video, 480x720, 8 fps, larger",
        ),
        ModelSpec(
            "Lightricks/LTX-Video",
            "text-to-video",
            size="~30 GB (several checkpoints)",
            licence="LTX-Video open-weights licence (see the model card)",
            purpose="text-to-video, fast, 24 fps",
        ),
        ModelSpec(
            "openai/shap-e-img2img",
            "image-to-mesh",
            size="~2.5 GB",
            licence="MIT",
            purpose="default in-process image-to-mesh (vertex-coloured)",
        ),
        ModelSpec(
            "ashawkey/stable-zero123-diffusers",
            "guidance",
            layout="zero123",
            size="~5 GB",
            licence="Stability AI non-commercial research community licence",
            optional=True,
            purpose="4D reference refinement (Zero123 SDS); optional",
        ),
        ModelSpec(
            "ashawkey/zero123-xl-diffusers",
            "guidance",
            layout="zero123",
            size="~5 GB",
            licence="MIT",
            optional=True,
            purpose="4D reference refinement (Zero123-XL SDS); optional",
        ),
        ModelSpec(
            "openai/clip-vit-large-patch14",
            "clip",
            layout="transformers",
            size="~1.7 GB",
            licence="MIT",
            purpose="CLIP score (pla4d eval --prompt)",
        ),
        ModelSpec(
            "openai/clip-vit-base-patch32",
            "clip",
            layout="transformers",
            size="~0.6 GB",
            licence="MIT",
            purpose="CLIP score, smaller",
        ),
        _rembg(
            "u2net",
            "176 MB",
            "Apache-2.0",
            "60024c5c889badc19c04ad937298a77b",
            "u2net.onnx",
            "matting, general (rembg's default of old)",
        ),
        _rembg(
            "u2netp",
            "4.6 MB",
            "Apache-2.0",
            "8e83ca70e441ab06c318d82300c84806",
            "u2netp.onnx",
            "matting, tiny and fast",
        ),
        _rembg(
            "isnet-general-use",
            "179 MB",
            "Apache-2.0",
            "fc16ebd8b0c10d971d3513d564d01e29",
            "isnet-general-use.onnx",
            "matting, sharper edges than u2net",
        ),
        _rembg(
            "birefnet-general",
            "973 MB",
            "MIT",
            "7a35a0141cbbc80de11d9c9a28f52697",
            "BiRefNet-general-epoch_244.onnx",
            "matting, best quality, slowest",
        ),
        _rembg(
            "birefnet-general-lite",
            "224 MB",
            "MIT",
            "4fab47adc4ff364be1713e97b7e66334",
            "BiRefNet-general-bb_swin_v1_tiny-epoch_232.onnx",
            "matting, BiRefNet with a small backbone",
        ),
    )  # fmt: skip
}

REMBG_SESSIONS = tuple(s.id for s in KNOWN.values() if s.source == "rembg")


def spec_for(model: str, kind: str) -> ModelSpec:
    """The registry's entry for ``model``, or a generic one (a local folder or an id not listed here)."""
    if model in KNOWN:
        return KNOWN[model]
    if kind == "matting":
        raise ValueError(f"unknown rembg session {model!r}; choose one of {', '.join(REMBG_SESSIONS)}")
    layout = {"guidance": "zero123", "clip": "transformers"}.get(kind, "diffusers")
    optional = kind == "guidance"
    return ModelSpec(model, kind, layout=layout, optional=optional, purpose=f"{kind} (not in the registry)")


def is_local_folder(model: str) -> bool:
    return Path(model).expanduser().is_dir()


def rembg_home() -> Path:
    """Where rembg looks first: ``$U2NET_HOME`` when set (the folder itself), else rembg's own data folder."""
    if os.environ.get("U2NET_HOME"):
        return Path(os.environ["U2NET_HOME"]).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    default = Path(xdg) / "rembg" if xdg else Path("~/.rembg")
    return Path(os.environ.get("REMBG_HOME", default)).expanduser()


def cache_location(spec: ModelSpec) -> Path:
    """Where the model is (or would be) stored."""
    if spec.source == "rembg":
        found = _rembg_file(spec)
        return found if found is not None else rembg_home() / "models" / spec.id / f"{spec.id}.onnx"
    if is_local_folder(spec.id):
        return Path(spec.id).expanduser()
    return hub.repo_cache(spec.id)


# --------------------------------------------------------------------------------------------- presence


def _rembg_file(spec: ModelSpec) -> Path | None:
    """The session's .onnx where rembg would find it (its per-model folder, then the flat legacy folder)."""
    home = rembg_home()
    name = f"{spec.id}.onnx"
    for path in (home / "models" / spec.id / name, home / name):
        if path.is_file():
            return path
    return None


def _weights_in(folder: Path) -> bool:
    return (
        any(folder.glob("*.safetensors")) or any(folder.glob("*.bin")) or any(folder.glob("*.safetensors.index.json"))
    )


def check_folder(folder: Path, layout: str) -> list[str]:
    """What is missing from a model folder in ``layout`` (empty list: complete)."""
    if layout == "zero123":
        from pla4d.guidance.zero123 import resolve_model_folder

        try:
            resolve_model_folder(folder)
        except MissingWeightsError as exc:
            return [str(exc)]
        return []
    if layout == "transformers":
        missing = [] if (folder / "config.json").is_file() else ["config.json"]
        if not _weights_in(folder):
            missing.append("weights (*.safetensors or *.bin)")
        return missing
    index = folder / "model_index.json"
    if not index.is_file():
        return ["model_index.json"]
    try:
        components = json.loads(index.read_text())
    except json.JSONDecodeError:
        return ["a readable model_index.json"]
    missing = []
    for name, value in components.items():
        if name.startswith("_") or not isinstance(value, list) or value[0] is None:
            continue
        sub = folder / name
        if not sub.is_dir():
            missing.append(f"{name}/")
        elif (sub / "config.json").is_file() and not _weights_in(sub):
            missing.append(f"{name}/ weights")
    return missing


def locate(spec: ModelSpec) -> tuple[Path | None, str]:
    """(folder or file, "") when the model is here and complete; (None, what is missing) otherwise. Never
    touches the network."""
    if spec.source == "rembg":
        path = _rembg_file(spec)
        return (path, "") if path is not None else (None, f"{spec.id}.onnx not in {rembg_home()}")
    path = Path(spec.id).expanduser()
    if path.is_dir():
        folder = path
    elif spec.id.count("/") != 1 or spec.id.startswith((".", "/", "~")):
        return None, f"folder {spec.id} not found"
    else:
        found = hub.cached_snapshot(spec.id)
        if found is None:
            return None, f"not in the Hugging Face cache ({hf_cache_dir()})"
        folder = found
        gaps = hub.missing_files(folder, spec.ignore_patterns)
        if gaps:
            more = f", ... ({len(gaps) - 3} more)" if len(gaps) > 3 else ""
            return None, f"incomplete download: missing {', '.join(gaps[:3])}{more}"
    missing = check_folder(folder, spec.layout)
    if missing:
        return None, "incomplete: missing " + ", ".join(missing)
    return folder, ""


def missing_message(missing: Sequence[tuple[ModelSpec, str]]) -> str:
    """One message naming each missing model, what it is for, its size, and the command that fetches it."""
    lines = ["models needed for this run are not installed (nothing was started):"]
    for spec, why in missing:
        lines.append(f"  - {spec.id} ({spec.kind}, {spec.size}, {spec.licence}): {why}")
    ids = " ".join(spec.id for spec, _ in missing if not is_local_folder(spec.id))
    lines.append(
        f"fetch them with `pla4d models pull {ids}` on a machine with network access (then copy the Hugging Face "
        "cache / rembg folder over if this one is offline), or pass a local model folder."
    )
    return "\n".join(lines)


def require(specs: Iterable[ModelSpec]) -> dict[str, Path]:
    """The location of every required model; MissingWeightsError naming all the missing ones at once.
    Optional models (Zero123) that are missing are left out of the result (the run turns their use off)."""
    found: dict[str, Path] = {}
    missing = []
    for spec in specs:
        path, why = locate(spec)
        if path is not None:
            found[spec.id] = path
        elif not spec.optional:
            missing.append((spec, why))
    if missing:
        raise MissingWeightsError(missing_message(missing))
    return found


# --------------------------------------------------------------------------------------------- pull / verify


def pull(spec: ModelSpec) -> Path:
    """Download the model into its cache (network). Returns where it landed; :class:`DownloadError` (a
    RuntimeError) with a message for the user when it cannot."""
    if is_local_folder(spec.id):
        return Path(spec.id)
    if spec.source == "rembg":
        try:
            from rembg.sessions import sessions_class
        except ImportError as exc:
            raise MissingWeightsError("matting needs rembg: pip install 'pla4d[models]'") from exc
        session = next((s for s in sessions_class if s.name() == spec.id), None)
        if session is None:
            raise ValueError(f"this rembg version has no session {spec.id!r}")
        try:
            return Path(session.download_models())
        except Exception as exc:  # pooch / requests errors: the release file could not be fetched
            raise DownloadError(f"could not download {spec.id} from {spec.url}: {type(exc).__name__}: {exc}") from exc
    try:
        import huggingface_hub  # noqa: F401 - only to say what is missing
    except ImportError as exc:
        raise MissingWeightsError("pulling models needs huggingface_hub: pip install 'pla4d[models]'") from exc
    return hub.download(spec.id, spec.ignore_patterns, licence=spec.licence)


def verify(spec: ModelSpec) -> dict[str, Any]:
    """Re-hash the model's files: rembg files against the published md5; Hugging Face cache files against the
    hash the hub gave them (sha256 for LFS files, the git blob sha1 for the others; both name the cached blobs).
    ``ok`` False lists the bad files; ``pla4d models pull`` deletes and re-fetches them."""
    path, why = locate(spec)
    if path is None:
        return {"id": spec.id, "ok": False, "present": False, "problem": why}
    bad: list[str] = []
    checked = 0
    if spec.source == "rembg":
        checked = 1
        if spec.md5 and file_digest(path, "md5") != spec.md5:  # rembg publishes md5 sums
            bad.append(str(path))
    else:
        checked, bad = hub.check_files(path)
    return {"id": spec.id, "ok": not bad, "present": True, "path": str(path), "files_hashed": checked, "bad": bad}


def describe(spec: ModelSpec) -> dict[str, Any]:
    path, why = locate(spec)
    return {
        "id": spec.id,
        "kind": spec.kind,
        "size": spec.size,
        "licence": spec.licence,
        "purpose": spec.purpose,
        "optional": spec.optional,
        "installed": path is not None,
        "location": str(path if path is not None else cache_location(spec)),
        "problem": why or None,
    }
