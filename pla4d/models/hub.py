"""Downloads from the Hugging Face hub and checks of the local hub cache (the only network code of the engine).

huggingface_hub does the transfer (its cache layout, resumable ranged GETs, locks); this module decides what to
fetch and says what went wrong in one sentence a user can act on:

- the repository's file list and sizes come first (one ``model_info`` request), so a download that cannot fit is
  refused before a byte is written, with both sizes (:func:`free_bytes` is the probe; tests replace it);
- files that are already here and intact are not fetched again; files whose content no longer matches their hash
  (the hub names every cached blob by its hash: sha256 for LFS files, the git blob sha1 for the others) are
  deleted first and fetched again;
- a gated or licence-restricted model names the licence and the page where it is accepted; no network, an
  unknown model and a failing hub each give one message (:class:`DownloadError`), never a traceback.

Environment read at call time (huggingface_hub reads it once, at import): ``HF_ENDPOINT``, ``HF_HUB_CACHE`` /
``HF_HOME``, ``HF_HUB_OFFLINE``.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

DEFAULT_ENDPOINT = "https://huggingface.co"
_HEX = frozenset("0123456789abcdef")
# Exception class names (in any exception's MRO) that mean "the hub could not be reached", across the HTTP
# libraries huggingface_hub has used (requests, httpx and its forks).
_NETWORK_ERRORS = {
    "ConnectError",
    "ConnectTimeout",
    "TimeoutException",
    "NetworkError",
    "ProxyError",
    "ConnectionError",
    "Timeout",
    "ReadTimeout",
    "OfflineModeIsEnabled",
    "LocalEntryNotFoundError",
}


class DownloadError(RuntimeError):
    """A download could not be done; the message says why and what to do (files already fetched are kept)."""


# --------------------------------------------------------------------------------------------- environment


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def model_page(repo_id: str) -> str:
    """The model's page on the hub: where its card, files and licence (for gated models, the form) are."""
    return f"{hub_endpoint()}/{repo_id}"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time (huggingface_hub reads it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_cache(repo_id: str, cache: Path | None = None) -> Path:
    return (cache or hf_cache_dir()) / ("models--" + repo_id.replace("/", "--"))


def free_bytes(path: Path) -> int:
    """Free space on the disk that holds ``path`` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover - the loop always returns


# --------------------------------------------------------------------------------------------- the cache


def wanted(files: Iterable[str], ignore_patterns: Sequence[str]) -> list[str]:
    """The repository files the loaders read: not matching ``ignore_patterns`` (other weight formats), and no
    ``.bin`` in a folder that also has ``.safetensors`` (the loaders take those; the weights would come twice)."""
    kept = [f for f in files if not any(fnmatch(f, p) for p in ignore_patterns)]
    with_safetensors = {str(Path(f).parent) for f in kept if f.endswith(".safetensors")}
    return [f for f in kept if not (f.endswith(".bin") and str(Path(f).parent) in with_safetensors)]


def cached_snapshot(repo_id: str, cache: Path | None = None) -> Path | None:
    """The cached snapshot of the repository's main branch (``refs/main``), without touching the network."""
    repo = repo_cache(repo_id, cache)
    ref = repo / "refs" / "main"
    if ref.is_file():
        folder = repo / "snapshots" / ref.read_text().strip()
        return folder if folder.is_dir() else None
    snapshots = [p for p in (repo / "snapshots").glob("*") if p.is_dir()]
    return snapshots[0] if len(snapshots) == 1 else None  # a copied cache without refs: only when unambiguous


def cached_listing(snapshot: Path) -> dict[str, dict[str, Any]] | None:
    """The repository's file list at this commit as huggingface_hub cached it (``trees/<commit>.json``, written by
    every download): path -> {size, blob_id, lfs_sha256?}. None when absent or in a format this code does not know."""
    path = snapshot.parent.parent / "trees" / f"{snapshot.name}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("format_version") != 1 or not isinstance(data.get("files"), dict):
        return None
    return data["files"]


def missing_files(snapshot: Path, ignore_patterns: Sequence[str]) -> list[str]:
    """Files a pull would fetch that the snapshot lacks (an interrupted download); [] when the list is unknown."""
    listing = cached_listing(snapshot)
    if listing is None:
        return []
    return [f for f in wanted(listing, ignore_patterns) if not (snapshot / f).is_file()]


def git_blob_sha1(path: Path) -> str:
    """The git blob id of a file: sha1 of ``b"blob <size>\\0"`` + content (the hub's ETag for non-LFS files)."""
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _expected_hash(rel: str, blob: Path, listing: dict[str, dict[str, Any]] | None) -> tuple[str, str] | None:
    """("sha256" | "git", hex) that the file must hash to: from the cached listing, else from the blob's name."""
    entry = (listing or {}).get(rel)
    if entry is not None:
        if entry.get("lfs_sha256"):
            return "sha256", entry["lfs_sha256"]
        if entry.get("blob_id"):
            return "git", entry["blob_id"]
    name = blob.name
    if set(name) <= _HEX and len(name) in (40, 64):
        return ("sha256" if len(name) == 64 else "git"), name
    return None


def check_files(snapshot: Path) -> tuple[int, list[str]]:
    """(files hashed, files whose content does not match their hash), paths relative to the snapshot."""
    from pla4d.runfolder import sha256_of

    listing = cached_listing(snapshot)
    checked, bad = 0, []
    for file in sorted(p for p in snapshot.rglob("*") if p.is_file()):
        rel = file.relative_to(snapshot).as_posix()
        expected = _expected_hash(rel, file.resolve(), listing)
        if expected is None:
            continue
        checked += 1
        kind, value = expected
        if (sha256_of(file) if kind == "sha256" else git_blob_sha1(file)) != value:
            bad.append(rel)
    return checked, bad


def remove_files(snapshot: Path, rels: Iterable[str]) -> None:
    """Delete files from the cache (the blob and the snapshot's link to it), so the next download fetches them."""
    for rel in rels:
        link = snapshot / rel
        blob = link.resolve()
        blob.unlink(missing_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()


# --------------------------------------------------------------------------------------------- download


def _is_network_error(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionError | TimeoutError) or any(
        c.__name__ in _NETWORK_ERRORS for c in type(exc).__mro__
    )


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _gated_message(repo_id: str, licence: str, status: int | None) -> str:
    page = model_page(repo_id)
    if status == 403:
        return (
            f"{repo_id} is gated and the account of your Hugging Face token has no access yet: open {page}, "
            f"accept its licence ({licence}) and wait for approval if the page asks for it, then pull again."
        )
    return (
        f"{repo_id} is gated: its licence ({licence}) must be accepted before it can be downloaded. Open {page}, "
        f"log in and accept the terms; then give this machine a token (`hf auth login`, or HF_TOKEN="
        f"<token from {hub_endpoint()}/settings/tokens>) and pull again."
    )


def _explain(exc: BaseException, repo_id: str, licence: str, during: str) -> DownloadError:
    """The one-line reason for a failed hub call (the error chain is kept for PLA4D_DEBUG)."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    endpoint = hub_endpoint()
    if isinstance(exc, GatedRepoError):
        message = _gated_message(repo_id, licence, _status(exc))
    elif isinstance(exc, RepositoryNotFoundError):
        message = (
            f"{repo_id} was not found on {endpoint} (check the id; a private model needs `hf auth login` or HF_TOKEN)."
        )
    elif isinstance(exc, RevisionNotFoundError):
        message = f"{repo_id} has no main branch on {endpoint}."
    elif isinstance(exc, HfHubHTTPError):
        message = (
            f"the hub at {endpoint} answered HTTP {_status(exc)} {during} {repo_id}; files fetched so far are "
            "kept: run the same command again to fetch the rest."
        )
    elif _is_network_error(exc):
        message = (
            f"cannot reach the model hub at {endpoint} (no network, a proxy or firewall, or a wrong "
            f"HF_ENDPOINT) {during} {repo_id}. On an offline machine, pull on one with network access and copy "
            f"the Hugging Face cache ({hf_cache_dir()}) over."
        )
    elif isinstance(exc, OSError):
        message = f"{during} {repo_id} failed: {exc}. Files fetched so far are kept: run the same command again."
    else:
        message = f"{during} {repo_id} failed: {type(exc).__name__}: {exc}"
    return DownloadError(message)


def download(repo_id: str, ignore_patterns: Sequence[str], *, licence: str = "see the model card") -> Path:
    """Fetch the files of ``repo_id`` that the loaders read into the hub cache; returns the snapshot folder.
    Raises :class:`DownloadError` with a message for the user on every failure."""
    if _offline():
        raise DownloadError(f"HF_HUB_OFFLINE is set, so nothing can be downloaded: unset it to pull {repo_id}.")
    from huggingface_hub import HfApi, get_token, snapshot_download

    endpoint, cache = hub_endpoint(), hf_cache_dir()
    try:
        info = HfApi(endpoint=endpoint).model_info(repo_id, files_metadata=True)
    except Exception as exc:
        raise _explain(exc, repo_id, licence, "while looking up") from exc
    sizes = {s.rfilename: int(s.size or 0) for s in info.siblings or ()}
    keep = wanted(sizes, ignore_patterns)
    if not keep:
        raise DownloadError(f"{repo_id} on {endpoint} has no files that pla4d loads ({len(sizes)} files listed).")
    if info.gated and get_token() is None:
        raise DownloadError(_gated_message(repo_id, licence, 401))

    snapshot = cache / ("models--" + repo_id.replace("/", "--")) / "snapshots" / str(info.sha)
    if snapshot.is_dir():
        _, bad = check_files(snapshot)
        remove_files(snapshot, bad)  # corrupt: fetched again below
    need = sum(sizes[f] for f in keep if not (snapshot / f).is_file())
    free = free_bytes(cache)
    if need > free:
        raise DownloadError(
            f"not enough disk space for {repo_id}: {human_size(need)} to download, "
            f"{human_size(free)} free in {cache}. Free some space, or point HF_HUB_CACHE at a "
            "larger disk."
        )
    try:
        folder = Path(
            snapshot_download(
                repo_id,
                revision=info.sha,
                cache_dir=cache,
                endpoint=endpoint,
                allow_patterns=[glob.escape(f) for f in keep],
            )
        )
    except Exception as exc:
        raise _explain(exc, repo_id, licence, "while downloading") from exc
    _, bad = check_files(folder)
    if bad:
        remove_files(folder, bad)
        raise DownloadError(
            f"{len(bad)} file(s) of {repo_id} arrived corrupted ({', '.join(bad[:3])}) and were "
            "removed: run the same command again."
        )
    # A download by commit id leaves the branch ref unwritten; locate() finds the snapshot through it.
    ref = folder.parent.parent / "refs" / "main"
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(str(info.sha))
    gaps = [f for f in keep if not (folder / f).is_file()]
    if gaps:
        raise DownloadError(f"{repo_id}: {len(gaps)} file(s) did not arrive ({', '.join(gaps[:3])}): run again.")
    return folder
