"""Point tracks from the input video's optical flow, and the loss that the Gaussians seen in the first frame
follow them (issue 21: moving parts that the photometric loss cannot pull across a large swing).

The photometric and silhouette losses pull a part only where its render still overlaps the frame, so a limb
swung past its own width between the frames the loss ties together is left behind (docs/4d-stage.md, "Why
khr_cesiumman's limbs are not followed"). Flow between *consecutive* input frames moves a few pixels at a time,
inside that basin; chained from the first frame it gives every pixel of the object at frame 0 an image position
at each later frame, which reaches across the swing.

* :func:`video_flows`: forward and backward dense flow between consecutive frames (scikit-image's TV-L1 or
  iterative Lucas-Kanade on the frames' premultiplied luminance, so the silhouette's edge counts);
* :func:`chain_tracks`: the flow chained from every pixel of frame 0, each track dropped (for good) at the first
  frame where it leaves the object's alpha or fails the forward-backward check (an occlusion or a flow error);
* :class:`TrackLoss`: the Gaussians visible in the input view at frame 0 (their centre in front of the rendered
  depth) take the track at their projected centre; the loss is the robust (Charbonnier) distance between each
  one's projection at frame t and its track's position, in units of the image width, weighted by opacity.

Only the image-plane position is supervised; the depth along the input rays is left to the stage's other terms.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pla4d.cameras import Cameras

__all__ = ["TrackLoss", "chain_tracks", "project_points", "video_flows"]

FLOW_METHODS = ("ilk", "tvl1")


def _luminance(frames_rgba: Tensor, size: int) -> np.ndarray:
    """(T, size, size) float32 premultiplied luminance (the object on black) of (T, H, W, 4) straight-alpha frames."""
    rgb = frames_rgba[..., :3] * frames_rgba[..., 3:]
    lum = (rgb * torch.tensor([0.299, 0.587, 0.114])).sum(-1, keepdim=True)
    x = lum.permute(0, 3, 1, 2).float()
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x[:, 0].clamp(0, 1).numpy().astype(np.float32)


def frame_alphas(frames_rgba: Tensor, size: int) -> Tensor:
    """(T, size, size) alpha of the frames at ``size`` pixels."""
    a = frames_rgba[..., 3:].permute(0, 3, 1, 2).float()
    if a.shape[-1] != size or a.shape[-2] != size:
        a = F.interpolate(a, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return a[:, 0].clamp(0, 1)


def video_flows(
    frames_rgba: Tensor, size: int, method: str = "tvl1", radius: int | None = None
) -> tuple[Tensor, Tensor]:
    """Forward and backward flow between consecutive frames at ``size`` pixels: two (T - 1, size, size, 2)
    tensors of (x, y) pixel displacements, ``forward[t]`` from frame t to t + 1 (at frame t's pixels) and
    ``backward[t]`` from frame t + 1 to t (at frame t + 1's pixels). ``radius``: Lucas-Kanade's window
    (default: 7 pixels at 256, scaled with ``size``)."""
    if method not in FLOW_METHODS:
        raise ValueError(f"unknown flow method {method!r}; choose one of {', '.join(FLOW_METHODS)}")
    try:
        from skimage.registration import optical_flow_ilk, optical_flow_tvl1
    except ImportError as exc:  # scikit-image comes with the models and dev extras, not the base install
        raise RuntimeError("the motion stage's point tracks (motion.track_weight > 0) need scikit-image: "
                           "pip install scikit-image, or turn them off") from exc  # fmt: skip
    lum = _luminance(frames_rgba, size)
    window = radius if radius is not None else max(2, round(7 * size / 256))

    def flow(reference: np.ndarray, moving: np.ndarray) -> np.ndarray:
        # scikit-image: reference(x) ~ moving(x + flow(x)), flow as (row, col); returned as (x, y).
        if method == "ilk":
            rc = optical_flow_ilk(reference, moving, radius=window, num_warp=10)
        else:
            rc = optical_flow_tvl1(reference, moving)
        return np.stack([rc[1], rc[0]], axis=-1)

    fwd = [flow(lum[t], lum[t + 1]) for t in range(len(lum) - 1)]
    bwd = [flow(lum[t + 1], lum[t]) for t in range(len(lum) - 1)]
    return torch.from_numpy(np.stack(fwd)).float(), torch.from_numpy(np.stack(bwd)).float()


def texture_maps(frames_rgba: Tensor, size: int, radius: int | None = None) -> Tensor:
    """(T, size, size) the smaller eigenvalue of the luminance's structure tensor over a (2 radius + 1) box (Shi
    and Tomasi's "good features to track"): small on flat shading and along a straight edge, where the flow is
    not determined (the aperture problem) and reads as no motion."""
    lum = torch.from_numpy(_luminance(frames_rgba, size))[:, None]
    window = radius if radius is not None else max(2, round(7 * size / 256))
    gx = F.pad(lum, (1, 1, 0, 0), mode="replicate")
    gy = F.pad(lum, (0, 0, 1, 1), mode="replicate")
    ix = (gx[..., 2:] - gx[..., :-2]) / 2
    iy = (gy[..., 2:, :] - gy[..., :-2, :]) / 2
    k = 2 * window + 1
    a, b, c = (
        F.avg_pool2d(x, k, stride=1, padding=window, count_include_pad=False) for x in (ix * ix, ix * iy, iy * iy)
    )
    return ((a + c) / 2 - (((a - c) / 2) ** 2 + b**2).sqrt())[:, 0].clamp_min(0)


def _sample(image: Tensor, points: Tensor) -> Tensor:
    """Bilinear samples of (H, W, C) ``image`` at (P, 2) continuous pixel positions (x, y; pixel i's centre at
    i + 0.5), edges clamped: (P, C)."""
    h, w = image.shape[:2]
    grid = torch.stack([points[:, 0] / w * 2 - 1, points[:, 1] / h * 2 - 1], -1)[None, None]
    out = F.grid_sample(image.permute(2, 0, 1)[None], grid, mode="bilinear", padding_mode="border",
                        align_corners=False)  # fmt: skip
    return out[0, :, 0].T


def chain_tracks(
    forward: Tensor,
    backward: Tensor,
    alphas: Tensor,
    min_alpha: float = 0.5,
    texture: Tensor | None = None,
    min_texture: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """The flow chained from every pixel of frame 0: (T, H, W, 2) positions (x, y, continuous pixels) and
    (T, H, W) validity. A track is valid at frame 0 where the object is (alpha > ``min_alpha``) and stays valid
    while each step lands on the object and passes the forward-backward check (|F + B| below 0.5 px plus 5% of
    the step, Sundaram et al. 2010); once invalid it stays so. With ``texture`` (:func:`texture_maps`) a track
    must also sit where the texture is at least ``min_texture`` times its frame's 90th percentile on the object,
    at every frame."""
    steps, h, w = forward.shape[:3]
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    pos = torch.stack([xs, ys], -1).reshape(-1, 2)
    valid = alphas[0].reshape(-1) > min_alpha
    if texture is not None and min_texture > 0:
        floors = [min_texture * torch.quantile(texture[t][alphas[t] > min_alpha], 0.9) if (alphas[t] > min_alpha).any()
                  else torch.tensor(0.0) for t in range(steps + 1)]  # fmt: skip
        valid = valid & (texture[0].reshape(-1) >= floors[0])
    positions, valids = [pos.clone()], [valid.clone()]
    for t in range(steps):
        f = _sample(forward[t], pos)
        nxt = pos + f
        b = _sample(backward[t], nxt)
        mismatch = (f + b).square().sum(-1)
        bound = 0.25 + 0.05 * (f.square().sum(-1) + b.square().sum(-1))
        inside = (nxt[:, 0] >= 0) & (nxt[:, 0] < w) & (nxt[:, 1] >= 0) & (nxt[:, 1] < h)
        on_object = _sample(alphas[t + 1][..., None], nxt)[:, 0] > min_alpha
        valid = valid & inside & on_object & (mismatch < bound)
        if texture is not None and min_texture > 0:
            valid = valid & (_sample(texture[t + 1][..., None], nxt)[:, 0] >= floors[t + 1])
        pos = nxt
        positions.append(pos.clone())
        valids.append(valid.clone())
    return torch.stack(positions).reshape(steps + 1, h, w, 2), torch.stack(valids).reshape(steps + 1, h, w)


def step_validity(forward: Tensor, backward: Tensor, alphas: Tensor, min_alpha: float = 0.5) -> Tensor:
    """(T - 1, H, W) where the flow from frame t to t + 1 can be trusted at frame t's pixels: on the object at both
    ends and through the forward-backward check of :func:`chain_tracks`, for one step (nothing chained)."""
    steps, h, w = forward.shape[:3]
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    pos = torch.stack([xs, ys], -1).reshape(-1, 2)
    out = []
    for t in range(steps):
        f = forward[t].reshape(-1, 2)
        nxt = pos + f
        b = _sample(backward[t], nxt)
        bound = 0.25 + 0.05 * (f.square().sum(-1) + b.square().sum(-1))
        ok = (alphas[t].reshape(-1) > min_alpha) & ((f + b).square().sum(-1) < bound)
        ok = ok & (_sample(alphas[t + 1][..., None], nxt)[:, 0] > min_alpha)
        out.append(ok.reshape(h, w))
    return torch.stack(out)


def project_points(points: Tensor, camera: Cameras) -> tuple[Tensor, Tensor]:
    """(..., 2) continuous pixel positions and (...,) camera-space depths of (..., 3) world points in the first
    camera of ``camera`` (OpenCV)."""
    viewmat, K = camera.viewmats[0].to(points), camera.Ks[0].to(points)
    cam = points @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = cam[..., 2]
    uv = cam[..., :2] / z.clamp_min(1e-6)[..., None] * torch.stack([K[0, 0], K[1, 1]]) + torch.stack([K[0, 2], K[1, 2]])
    return uv, z


class TrackLoss:
    """The Gaussians seen in the input view at frame 0 follow the video's point tracks.

    ``means0`` (N, 3) are the canonical centres, ``opacities`` (N,) their opacities, ``depth`` and ``alpha``
    (size, size) the canonical model's front render (expected depth, alpha) at the tracks' resolution, and
    ``camera`` the front camera at that resolution. A Gaussian counts where its centre projects onto the
    object and lies within ``depth_tolerance`` of the rendered depth (the surface the video shows).

    Two modes. Chained (``step_flow`` None): each one takes the track of ``tracks``/``valid`` at its frame-0 pixel,
    an absolute target per frame, lost for good where the track dies. Stepwise (``step_flow`` (T - 1, S, S, 2)
    with ``step_valid``): at frame t its target is where the field puts it at frame t - 1 (no gradient) moved by
    the flow found there, so a part whose chained track died (an occlusion, a flow error on one step) is still
    led by the next steps' flow."""

    def __init__(
        self,
        means0: Tensor,
        opacities: Tensor,
        depth: Tensor,
        alpha: Tensor,
        camera: Cameras,
        tracks: Tensor,
        valid: Tensor,
        weight: float,
        depth_tolerance: float = 0.03,
        step_flow: Tensor | None = None,
        step_valid: Tensor | None = None,
    ):
        size = tracks.shape[1]
        self.camera, self.size, self.weight = camera, size, weight
        self.step_flow = step_flow
        self.step_valid = None if step_valid is None else step_valid.float()[..., None]
        with torch.no_grad():
            uv0, z0 = project_points(means0, camera)
            on = _sample(torch.stack([alpha, depth], -1), uv0)
            seen = (on[:, 0] > 0.5) & (z0 <= on[:, 1] + depth_tolerance) & (z0 > 0)
            self.index = seen.nonzero()[:, 0]
            uv = uv0[self.index]
            steps = tracks.shape[0]
            # Each seen Gaussian takes the track displacement interpolated at its centre; it counts at a frame
            # only where all four tracks around it are still valid there.
            disp = (tracks - tracks[0:1]).permute(1, 2, 0, 3).reshape(size, size, steps * 2)
            self.targets = uv[None] + _sample(disp, uv).reshape(-1, steps, 2).permute(1, 0, 2)  # (T, M, 2)
            self.valid = _sample(valid.float().permute(1, 2, 0), uv).T > 0.999  # (T, M)
            self.opacity = opacities[self.index].detach()
            self.means0 = means0[self.index].detach()

    @classmethod
    def from_video(
        cls,
        frames_rgba: Tensor,
        means0: Tensor,
        opacities: Tensor,
        render_front,
        front: Cameras,
        size: int,
        weight: float,
        method: str = "tvl1",
        stepwise: bool = False,
    ) -> TrackLoss:
        """Tracks of ``frames_rgba`` at ``size`` pixels; ``render_front(camera)`` renders the canonical model
        (a :class:`pla4d.render.gaussians.GaussianRender`) in the front camera scaled to that size."""
        camera = front.scaled(size / front.width)
        forward, backward = video_flows(frames_rgba, size, method)
        alphas = frame_alphas(frames_rgba, size)
        tracks, valid = chain_tracks(forward, backward, alphas)
        step_valid = step_validity(forward, backward, alphas) if stepwise else None
        with torch.no_grad():
            out = render_front(camera)
        return cls(means0.detach().cpu(), opacities.detach().cpu(), out.depth[0, ..., 0].cpu(),
                   out.alpha[0, ..., 0].cpu(), camera, tracks, valid, weight,
                   step_flow=forward if stepwise else None, step_valid=step_valid)  # fmt: skip

    @property
    def count(self) -> int:
        """How many Gaussians are tracked."""
        return int(self.index.numel())

    def to(self, device: torch.device | str) -> TrackLoss:
        self.index, self.targets, self.valid, self.opacity, self.means0 = (
            x.to(device) for x in (self.index, self.targets, self.valid, self.opacity, self.means0)
        )
        if self.step_flow is not None:
            self.step_flow, self.step_valid = self.step_flow.to(device), self.step_valid.to(device)
        return self

    def loss(
        self, means: Tensor, frames: list[int], scale: float = 1.0, before=None
    ) -> tuple[Tensor, dict[str, float]]:
        """``means`` (B, N, 3) the deformed centres at ``frames`` (B frame indices); the term is weighted
        ``weight * scale``. Stepwise, ``before(points, frames)`` gives the (B, M, 3) positions of the tracked
        canonical ``points`` (M, 3) at the frames before ``frames`` (the field, without gradient)."""
        if self.count == 0:
            return means.sum() * 0.0, {"track_px": 0.0}
        uv, _ = project_points(means[:, self.index], self.camera)
        idx = torch.tensor(frames, device=means.device)
        if self.step_flow is None:
            targets, w = self.targets[idx], self.valid[idx].float() * self.opacity[None]
        else:
            targets, ok = self._step_targets(frames, before)
            w = ok * self.opacity[None]
        err = (uv - targets) / self.size  # (B, M, 2), image widths
        dist = (err.square().sum(-1) + 1e-6).sqrt() - 1e-3  # Charbonnier: robust to the tracks' outliers
        term = (w * dist).sum() / w.sum().clamp_min(1e-8)
        px = float(((err.detach().norm(dim=-1) * w).sum() / w.sum().clamp_min(1e-8)) * self.size)
        return self.weight * scale * term, {"track": float(term.detach()), "track_px": px}

    def _step_targets(self, frames: list[int], before) -> tuple[Tensor, Tensor]:
        """Stepwise targets (B, M, 2) and weights (B, M): at frame 0 the frame-0 pixel, else the position at the
        frame before moved by that step's flow, where the flow is trusted."""
        uv0 = self.targets[0]
        targets, ok = [], []
        later = [f for f in frames if f > 0]
        if later:
            with torch.no_grad():
                previous, _ = project_points(before(self.means0, [f - 1 for f in later]), self.camera)
        j = 0
        for f in frames:
            if f == 0:
                targets.append(uv0)
                ok.append(torch.ones_like(uv0[:, 0]))
                continue
            at = previous[j]
            j += 1
            targets.append(at + _sample(self.step_flow[f - 1], at))
            ok.append((_sample(self.step_valid[f - 1], at)[:, 0] > 0.999).float())
        return torch.stack(targets), torch.stack(ok)
