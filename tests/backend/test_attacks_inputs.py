"""Issue 18, the inputs: upload names that are only a suffix, damaged zips and oversized PNG headers refused at
submit, failed jobs' unpacked frames removed, no server paths in messages, private data dir and secret files;
real backend processes on 127.0.0.1 only."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zipfile
import zlib

import pytest
from backend_helpers import REPO, TINY

from backend.client import BackendError, Client


def _png(size: int = 16) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGBA", (size, size), (0, 200, 0, 255)).save(out, "PNG")
    return out.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` RGBA pixels (with a token IDAT): nothing to decode."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _zip(path, members: dict[str, bytes], method: int = zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _clip(backend):
    return backend.data_dir / "jobs" / backend.job_id / "result" / "example"


# ---------------------------------------------------------------- 7. names that are only a suffix
def test_uploads_named_only_by_their_suffix_keep_it(shared_backend, tmp_path):
    clip = _clip(shared_backend)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    frames_zip = _zip(tmp_path / "a" / ".zip", {p.name: p.read_bytes() for p in sorted((clip / "input").glob("*.png"))})
    mesh = tmp_path / "b" / ".glb"
    mesh.write_bytes((clip / "first_frame.glb").read_bytes())
    with Client(shared_backend.endpoint, timeout=60) as c:
        video = c.submit("video", TINY, frames=frames_zip, mesh=mesh)
        lift = c.submit("lift", TINY, image=clip / "input" / "000.png", mesh=mesh)
        ends = {job["job_id"]: list(c.follow(job["job_id"], timeout=300))[-1] for job in (video, lift)}
    for end in ends.values():
        assert end["event"] == "done", end
    inputs = shared_backend.data_dir / "jobs" / video["job_id"] / "inputs"
    assert (inputs / "frames.zip").is_file() and (inputs / "mesh.glb").is_file() and (inputs / "frames").is_dir()
    assert (shared_backend.data_dir / "jobs" / lift["job_id"] / "inputs" / "mesh.glb").is_file()


# ---------------------------------------------------------------- 9. damaged zips, oversized PNGs: INVALID_INPUT
def test_bad_crc_and_huge_png_refused_at_submit(shared_backend, tmp_path):
    mesh = _clip(shared_backend) / "first_frame.glb"
    good = _png()
    crc_zip = _zip(tmp_path / "crc.zip", {"000.png": good, "001.png": good})
    raw = bytearray(crc_zip.read_bytes())
    at = raw.index(good[40:60], 100)  # inside the second member's stored bytes: its CRC no longer matches
    raw[at] ^= 0xFF
    crc_zip.write_bytes(bytes(raw))
    huge = _png_header(20000, 20000)
    huge_zip = _zip(tmp_path / "huge.zip", {"000.png": good, "001.png": huge})
    huge_png = tmp_path / "huge.png"
    huge_png.write_bytes(huge)
    before = set((shared_backend.data_dir / "jobs").iterdir())
    with Client(shared_backend.endpoint, timeout=60) as c:
        for call, words in (
            (lambda: c.submit("video", TINY, frames=crc_zip, mesh=mesh), "CRC"),
            (lambda: c.submit("video", TINY, frames=huge_zip, mesh=mesh), "20000x20000"),
            (lambda: c.submit("lift", TINY, image=huge_png, mesh=mesh), "pixels"),
        ):
            with pytest.raises(BackendError) as err:
                call()
            assert err.value.code == "INVALID_INPUT" and words in err.value.message, err.value
            assert str(tmp_path) not in err.value.message and str(shared_backend.data_dir) not in err.value.message
    assert set((shared_backend.data_dir / "jobs").iterdir()) == before, "nothing was queued"


# ---------------------------------------------------------------- 10 + 11. failed jobs: relative names, no frames left
def test_failed_job_names_no_server_paths_and_leaves_no_frames(shared_backend, tmp_path):
    mesh = _clip(shared_backend) / "first_frame.glb"
    truncated = _png(64)[:80]  # a valid header (it passes the submit checks), then the pixel data ends
    frames = _zip(tmp_path / "frames.zip", {f"{i:03d}.png": truncated for i in range(4)})
    with Client(shared_backend.endpoint, timeout=60) as c:
        job = c.submit("video", TINY, frames=frames, mesh=mesh)
        end = list(c.follow(job["job_id"], timeout=300))[-1]
    assert end["event"] == "failed" and end["code"] == "INVALID_INPUT", end
    assert "000.png" in end["message"], end["message"]
    for path in (shared_backend.data_dir, shared_backend.data_dir.resolve(), REPO, tmp_path):
        assert str(path) not in end["message"], end["message"]
    assert not end["message"].lstrip().startswith("/") and " /" not in end["message"], end["message"]
    inputs = shared_backend.data_dir / "jobs" / job["job_id"] / "inputs"
    assert (inputs / "frames.zip").is_file()
    assert not (inputs / "frames").exists() and not (inputs / "frames.partial").exists(), list(inputs.iterdir())


# ---------------------------------------------------------------- 10. private data dir and files, secret files
def test_data_dir_is_private_and_readable_secrets_are_refused(backend_factory, tmp_path):
    backend = backend_factory()
    with Client(backend.endpoint, timeout=10) as c:
        c.request("upload_open", {"name": "a.png", "size": 10, "sha256": "0" * 64})
    data = backend.data_dir
    for folder in (data, data / "jobs", data / "uploads"):
        assert folder.stat().st_mode & 0o777 == 0o700, (folder, oct(folder.stat().st_mode))
    files = [p for p in data.rglob("*") if p.is_file()]
    assert any(p.name == "jobs.sqlite" for p in files) and any(p.suffix == ".part" for p in files)
    for path in files:
        assert path.stat().st_mode & 0o077 == 0, (path, oct(path.stat().st_mode))

    secret = tmp_path / "secret"
    secret.write_text("correct horse battery staple 1234\n")
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    for mode in (0o644, 0o640):
        secret.chmod(mode)
        run = subprocess.run([sys.executable, "-m", "backend", "--bind", "tcp://127.0.0.1:0", "--data-dir",
                              str(tmp_path / "other"), "--secret-file", str(secret)], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert run.returncode == 2 and f"chmod 600 {secret}" in run.stderr, run.stderr
