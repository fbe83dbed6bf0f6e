"""`pla4d models list|pull|verify` end to end against a local server that speaks the hub's download API.

The server (tests/hub_server.py) serves the tiny models of tests/tiny_models.py under real model ids; the client
is the installed huggingface_hub, pointed at the server with HF_ENDPOINT, exactly as a user's machine talks to the
hub. Faults are injected by the server (a response cut mid-way, a failing file, gated answers) or by the test (a
corrupt cache file, the free-space probe, a closed port).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub")
pytest.importorskip("transformers")

from pla4d.cli import main  # noqa: E402
from pla4d.models import KNOWN, hub  # noqa: E402
from pla4d.models.registry import locate, verify  # noqa: E402
from tests.hub_server import HubServer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLIP = "openai/clip-vit-base-patch32"
ZERO123 = "ashawkey/stable-zero123-diffusers"
LOADED_FILES = (
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
)


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny CLIP in the transformers layout, plus files a pull must skip: another framework's weights and a
    .bin copy of the safetensors weights."""
    from tests.tiny_models import save_tiny_random_clip

    folder = save_tiny_random_clip(tmp_path_factory.mktemp("hub") / "clip")
    (folder / "flax_model.msgpack").write_bytes(b"flax weights" * 100)
    (folder / "pytorch_model.bin").write_bytes(b"torch pickle" * 100)
    return folder


@pytest.fixture(scope="module")
def zero123_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("diffusers")
    from tests.tiny_models import save_tiny_random_zero123

    return save_tiny_random_zero123(tmp_path_factory.mktemp("hub") / "zero123")


@pytest.fixture(autouse=True)
def online(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty cache, no token, downloads allowed (huggingface_hub reads HF_HUB_OFFLINE once, at import, and other
    test modules import it with HF_HUB_OFFLINE=1), and a small download chunk so that half of a tiny file is at
    least one chunk (a cut response then leaves bytes to resume from, as with a real multi-GB file)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1024)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_PROGRESS_BARS", True)
    return cache


def _pull(capsys: pytest.CaptureFixture[str], *ids: str) -> tuple[int, str, str]:
    code = main(["models", "pull", *ids])
    out, err = capsys.readouterr()
    return code, out, err


def _fetched(server: HubServer) -> list[str]:
    """The repository files the client downloaded (GETs of resolve URLs), in order."""
    return [r["path"].split("/resolve/", 1)[1].split("/", 1)[1] for r in server.requests("GET", "/resolve/")]


def test_list_pull_verify(monkeypatch, capsys, clip_folder: Path) -> None:
    with HubServer({CLIP: clip_folder}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        assert main(["models", "list", CLIP, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)[0]["installed"] is False

        code, out, err = _pull(capsys, CLIP)
        assert code == 0, err
        path = Path(json.loads(out)["path"])
        fetched = _fetched(server)
        # No flax weights, and no second copy of the weights in .bin.
        assert sorted(fetched) == sorted(LOADED_FILES)
        assert main(["models", "list", CLIP, "--json"]) == 0
        row = json.loads(capsys.readouterr().out)[0]
        assert row["installed"] is True and Path(row["location"]) == path
        assert main(["models", "verify", CLIP]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["ok"] is True and result["files_hashed"] == 5  # small files by git sha1, weights by sha256

        # A second pull of a complete model asks for the file list and downloads nothing.
        assert _pull(capsys, CLIP)[0] == 0
        assert _fetched(server) == fetched

    # What was pulled loads through the real loader, offline.
    from pla4d.clipscore import ClipScorer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    scorer = ClipScorer.load(CLIP, "cpu")
    assert scorer.size == 32


def test_cut_download_resumes_with_a_range_request(monkeypatch, capsys, clip_folder: Path) -> None:
    size = (clip_folder / "model.safetensors").stat().st_size
    with HubServer({CLIP: clip_folder}, cut_once={"model.safetensors"}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        code, _, err = _pull(capsys, CLIP)
        assert code == 0, err
        gets = server.requests("GET", "/model.safetensors")
    assert [g["range"] is None for g in gets] == [True, False]
    start = int(gets[1]["range"].removeprefix("bytes=").removesuffix("-"))
    assert 0 < start < size  # the second request asked only for what the cut left out
    assert verify(KNOWN[CLIP])["ok"] is True


def test_failed_pull_keeps_what_arrived_and_the_next_pull_fetches_the_rest(monkeypatch, capsys, clip_folder) -> None:
    with HubServer({CLIP: clip_folder}, fail={"model.safetensors"}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        code, _, err = _pull(capsys, CLIP)
    assert code == 2
    assert "HTTP 500" in err and "run the same command again" in err and "Traceback" not in err
    path, why = locate(KNOWN[CLIP])
    assert path is None and why == "incomplete download: missing model.safetensors"

    with HubServer({CLIP: clip_folder}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        assert _pull(capsys, CLIP)[0] == 0
        assert _fetched(server) == ["model.safetensors"]
    assert locate(KNOWN[CLIP])[0] is not None


def test_corrupt_files_are_caught_by_verify_and_fetched_again_by_pull(monkeypatch, capsys, clip_folder) -> None:
    with HubServer({CLIP: clip_folder}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        assert _pull(capsys, CLIP)[0] == 0
        path, _ = locate(KNOWN[CLIP])
        assert path is not None
        weights = (path / "model.safetensors").resolve()
        weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # same size: only a hash can tell
        config = (path / "config.json").resolve()
        config.write_text(config.read_text().replace("1", "2", 1))
        assert main(["models", "verify", CLIP]) == 1
        assert json.loads(capsys.readouterr().out)["bad"] == ["config.json", "model.safetensors"]

        before = len(_fetched(server))
        assert _pull(capsys, CLIP)[0] == 0
        assert sorted(_fetched(server)[before:]) == ["config.json", "model.safetensors"]
        assert main(["models", "verify", CLIP]) == 0


def test_not_enough_disk_space_is_refused_before_downloading(monkeypatch, capsys, clip_folder, online) -> None:
    probed: list[Path] = []

    def small_disk(path: Path) -> int:
        probed.append(Path(path))
        return 20_000

    monkeypatch.setattr(hub, "free_bytes", small_disk)
    with HubServer({CLIP: clip_folder}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        code, _, err = _pull(capsys, CLIP)
        assert server.requests(path_contains="/resolve/") == []
    needed = sum((clip_folder / f).stat().st_size for f in LOADED_FILES)
    assert code == 2 and probed == [online]
    assert f"not enough disk space for {CLIP}: {hub.human_size(needed)} to download, 20.0 KB free in {online}" in err
    assert not (online / "models--openai--clip-vit-base-patch32" / "snapshots").exists()


def test_no_network_is_one_clear_message(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_CACHE": str(tmp_path / "hf"),
           "HF_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}  # fmt: skip
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "PLA4D_DEBUG"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-m", "pla4d", "models", "pull", CLIP], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith("pla4d: error:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"cannot reach the model hub at http://127.0.0.1:{port}" in lines[0]


def test_offline_mode_refuses_to_pull(monkeypatch, capsys) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = _pull(capsys, CLIP)
    assert code == 2 and "HF_HUB_OFFLINE is set" in err


def test_gated_model_says_what_to_accept_and_where(monkeypatch, capsys, zero123_folder: Path) -> None:
    licence = KNOWN[ZERO123].licence
    with HubServer({ZERO123: zero123_folder}, gated={ZERO123}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        page = f"{server.endpoint}/{ZERO123}"
        code, _, err = _pull(capsys, ZERO123)  # no token: refused before any file is requested
        assert code == 2 and server.requests(path_contains="/resolve/") == []
        assert f"{ZERO123} is gated: its licence ({licence}) must be accepted" in err and page in err
        assert "hf auth login" in err

        monkeypatch.setenv("HF_TOKEN", "hf_not_accepted")  # a token whose account did not accept: the hub says 403
        code, _, err = _pull(capsys, ZERO123)
        assert code == 2 and "Traceback" not in err
        assert f"{ZERO123} is gated and the account of your Hugging Face token has no access yet: open {page}" in err
        assert licence in err
        assert all(r["auth"] == "Bearer hf_not_accepted" for r in server.requests(path_contains="/resolve/"))


def test_unknown_model_is_named(monkeypatch, capsys, clip_folder: Path) -> None:
    with HubServer({CLIP: clip_folder}) as server:
        endpoint = server.endpoint
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        code, _, err = _pull(capsys, "owner/no-such-model")
    assert code == 2 and f"owner/no-such-model was not found on {endpoint}" in err


def test_hub_server_is_bounded_and_stops_by_itself(clip_folder: Path) -> None:
    import urllib.request

    server = HubServer({CLIP: clip_folder}, lifetime=0.5)
    with server:
        endpoint = server.endpoint
        with urllib.request.urlopen(f"{endpoint}/api/models/{CLIP}") as reply:
            assert json.loads(reply.read())["id"] == CLIP
        server._timer.join(5)  # noqa: SLF001 - the self-stop timer
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{endpoint}/api/models/{CLIP}", timeout=2)


def test_pulled_guidance_model_loads_by_id(monkeypatch, capsys, zero123_folder: Path, tmp_path: Path) -> None:
    """A pull skips a .bin copy beside safetensors weights; the model still loads by id, offline (the loader must
    not call the snapshot incomplete for the file the pull left out)."""
    import shutil

    repo = shutil.copytree(zero123_folder, tmp_path / "repo")
    (repo / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"a second copy of the weights")
    with HubServer({ZERO123: repo}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        assert _pull(capsys, ZERO123)[0] == 0
        assert "unet/diffusion_pytorch_model.bin" not in _fetched(server)
    from pla4d.guidance.zero123 import load_zero123_or_none

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    guidance, why = load_zero123_or_none(ZERO123, "cpu")
    assert guidance is not None, why
    assert locate(KNOWN[ZERO123])[0] is not None
