"""The built-in example renders into a clip folder that the clip loader and mesh loader read back."""

import json

import numpy as np
import pytest
import torch

from pla4d.cli import main
from pla4d.clip import composite_on_white, load_clip
from pla4d.example.clip import ExampleSettings, write_example_clip
from pla4d.metrics import mask_iou, psnr
from pla4d.render.mesh import load_mesh, render_mesh

SETTINGS = ExampleSettings(num_frames=4, fps=8.0, resolution=64, supersample=3, novel_azimuths=(90.0, 270.0))


@pytest.fixture(scope="module")
def example_clip(tmp_path_factory):
    return write_example_clip(tmp_path_factory.mktemp("example"), SETTINGS)


def test_clip_layout_reads_back(example_clip):
    clip = load_clip(example_clip)
    assert clip.views == ("input", "novel/090", "novel/270")
    assert (clip.width, clip.height, clip.n_frames) == (64, 64, 4)
    assert clip.fps == pytest.approx(8.0)
    frames = clip.load_frames("input")
    assert frames.shape == (4, 64, 64, 4)
    alpha = frames[..., 3]
    # The creature is in view, not clipped by the border, and moves between frames.
    assert 0.05 < alpha.mean() < 0.6
    assert alpha[:, 0, :].max() == 0 and alpha[:, -1, :].max() == 0
    assert (frames[0] - frames[2]).abs().max() > 0.5
    verts = np.load(example_clip / "gt_verts.npz")["verts"]
    assert verts.shape[0] == 4


def test_first_frame_glb_renders_like_frame_zero(example_clip):
    # The exported GLB keeps glTF's linear vertex colours, so loading and rendering it reproduces frame 0.
    clip = load_clip(example_clip)
    mesh = load_mesh(clip.mesh_path)
    cams = clip.camera_batch()
    out = render_mesh(mesh, cams, supersample=SETTINGS.supersample)
    for c, view in enumerate(clip.views):
        truth = clip.load_frame(view, 0)
        straight = torch.where(out.alpha[c] > 0, out.rgb[c] / out.alpha[c].clamp_min(1e-8), 0.0)
        ours = torch.cat([straight, out.alpha[c]], dim=-1)
        assert mask_iou(out.alpha[c, ..., 0], truth[..., 3]) > 0.99
        # 8-bit colours in the GLB and the PNG quantisation leave a small difference only.
        assert psnr(composite_on_white(ours), composite_on_white(truth)) > 35.0


def test_cameras_json_matches_loader(example_clip):
    meta = json.loads((example_clip / "cameras.json").read_text())
    clip = load_clip(example_clip)
    assert torch.allclose(clip.camera("novel/090").viewmats[0], torch.tensor(meta["views"]["novel/090"]["w2c_opencv"]))


def test_demo_command_writes_picture_and_video(tmp_path, capsys):
    argv = ["demo", "--out", str(tmp_path), "--frames", "3", "--resolution", "64", "--iterations", "3"]
    code = main([*argv, "--motion-iterations", "3"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert (tmp_path / "preview.png").stat().st_size > 1000
    assert (tmp_path / "video.mp4").stat().st_size > 1000
    assert summary["frames"] == 3
    run_summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "mirror plane" in run_summary["depth_prior"]  # the example creature is mirror symmetric
    field_meta = json.loads((tmp_path / "run" / "motion" / "field.json").read_text())
    assert field_meta["depth_prior"] == run_summary["depth_prior"]
    assert (tmp_path / "run" / "static" / "canonical.ply").is_file()
    assert (tmp_path / "run" / "asset" / "asset.json").is_file()
    assert (tmp_path / "run" / "exports" / "animated_mesh.glb").is_file()
