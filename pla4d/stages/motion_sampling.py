"""What one motion iteration trains on: the frames of its front views (the frame curriculum, then frames in
epochs) and the random views of the first-frame consistency and reference-refinement terms.

Every random draw comes from the one generator the motion stage seeds, in a fixed order per iteration (the
front frames, the consistency views, the guidance views and frames), so a seed fixes the whole run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pla4d.cameras import Cameras
from pla4d.config import MotionConfig
from pla4d.deform.hexplane import DeformationField, frame_time
from pla4d.gaussians.model import GaussianModel
from pla4d.stages.static3d import sample_orbit_views, select_cameras

__all__ = ["MotionBatch", "MotionSampler", "ViewPool", "frames_reached", "returns_to_start"]


def frames_reached(curriculum: float, iteration: int, total: int, num_frames: int) -> int:
    """How many frames (from the first) training draws from at ``iteration``: with a ``curriculum`` fraction
    f > 0 the count grows from 2 to all over the first f of the iterations, else all frames from the start."""
    if curriculum <= 0 or num_frames <= 2:
        return num_frames
    span = curriculum * total
    return min(num_frames, 2 + int((num_frames - 2) * iteration / max(span, 1.0)))


def returns_to_start(frames_rgba: Tensor, ratio: float) -> bool:
    """Whether the clip's last frame is back near its first: its (premultiplied, 64 px) squared difference from
    frame 0 is at most ``ratio`` times the largest any frame has, as at the end of a walk cycle."""
    if frames_rgba.shape[0] < 4 or ratio <= 0:
        return False
    with torch.no_grad():
        small = torch.nn.functional.interpolate(frames_rgba.permute(0, 3, 1, 2).float(), size=(64, 64), mode="area")
        small = torch.cat([small[:, :3] * small[:, 3:], small[:, 3:]], dim=1)
        distance = (small - small[:1]).pow(2).mean(dim=(1, 2, 3))
    return bool(distance.max() > 0 and distance[-1] <= ratio * distance.max())


class ViewPool:
    """Random cameras on the front camera's orbit (with their angles), and the static model's renders from
    them, made once per resolution (premultiplied rgb, alpha) and on white (the guidance reference)."""

    def __init__(self, front: Cameras, size: int, cfg: MotionConfig, radius: float, generator: torch.Generator):
        self.cameras, self.azimuths, self.elevations = sample_orbit_views(
            front, size, cfg.elevation_range_deg, cfg.focal_jitter, radius, generator
        )
        self.radius = radius
        self._cache: dict[int, tuple[Tensor, Tensor]] = {}

    def __len__(self) -> int:
        return len(self.cameras)

    def at(self, idx: Tensor, size: int) -> Cameras:
        return select_cameras(self.cameras, idx, size)

    def static_renders(self, model: GaussianModel, size: int) -> tuple[Tensor, Tensor]:
        if size not in self._cache:
            cams = self.cameras.scaled(size / self.cameras.width).to(model.means.device)
            rgbs, alphas = [], []
            with torch.no_grad():
                for i in range(0, len(cams), 8):
                    out = model.render(cams[i : i + 8])  # black background: premultiplied
                    rgbs.append(out.rgb)
                    alphas.append(out.alpha)
            self._cache[size] = (torch.cat(rgbs), torch.cat(alphas))
        return self._cache[size]


@dataclass
class MotionBatch:
    """One iteration's draw. The field deforms the model to all of ``times`` in one call: first the front
    ``frames``' times, then t = 0 for the consistency views (when drawn), then the guidance frames' times."""

    frames: list[int]
    times: list[float]
    consistency_views: Tensor | None = None  # indices into the view pool
    guidance_views: Tensor | None = None

    @property
    def n_front(self) -> int:
        return len(self.frames)

    @property
    def first_frame_slot(self) -> int:
        """The index in ``times`` of the consistency term's t = 0."""
        return self.n_front

    @property
    def guidance_slot(self) -> int:
        """The index in ``times`` of the first guidance frame."""
        return self.n_front + (1 if self.consistency_views is not None else 0)


class MotionSampler:
    """Draws each iteration's :class:`MotionBatch` and runs the frame curriculum (``curriculum`` > 0): the
    frames reached grow from the first two to all, each newly reached one starting from the motion of the last
    frame trained so far. With ``both_ends`` (a clip that returns to its first pose) they grow from the first
    and the last frame towards the middle, so that neither half carries the other's drift."""

    def __init__(
        self,
        cfg: MotionConfig,
        num_frames: int,
        total: int,
        curriculum: float,
        pool: ViewPool,
        generator: torch.Generator,
        consistency: bool,
        guidance: bool,
        both_ends: bool = False,
    ):
        self.cfg, self.num_frames, self.total, self.curriculum = cfg, num_frames, total, curriculum
        self.pool, self.generator = pool, generator
        self.consistency, self.guidance = consistency, guidance
        self.both_ends = both_ends and curriculum > 0 and num_frames > 2
        self.reached = frames_reached(curriculum, 0, total, num_frames)
        self._order: list[int] = []

    def _split(self, reached: int) -> tuple[int, int]:
        """How many of ``reached`` frames are counted from the first frame and how many from the last."""
        if not self.both_ends or reached >= self.num_frames:
            return reached, 0
        return (reached + 1) // 2, reached // 2

    def reached_frames(self) -> list[int]:
        forward, backward = self._split(self.reached)
        return list(range(forward)) + list(range(self.num_frames - backward, self.num_frames))

    def grow(self, iteration: int, field_: DeformationField) -> None:
        """The curriculum step: reach the frames due at ``iteration``."""
        reach = frames_reached(self.curriculum, iteration, self.total, self.num_frames)
        if reach > self.reached:
            # The frames just reached start from the motion of the nearest frame trained so far, a few pixels
            # away, instead of from rest, which may be further than the photometric loss can pull.
            forward, backward = self._split(self.reached)
            last = float(frame_time(forward - 1, self.num_frames))
            first_of_end = float(frame_time(self.num_frames - backward, self.num_frames)) if backward else None
            field_.hold_gap(last, first_of_end)
            self.reached = reach

    def draw(self, iteration: int) -> MotionBatch:
        frames = self._front_frames()
        times = [float(frame_time(i, self.num_frames)) for i in frames]
        batch = MotionBatch(frames, times)
        if self.consistency:
            batch.consistency_views = self._views(self.cfg.consistency_views)
            times.append(0.0)
        if self.guidance and iteration % max(self.cfg.guidance_every, 1) == 0:
            batch.guidance_views = self._views(self.cfg.guidance_views)
            picked = torch.randint(self.num_frames, (self.cfg.guidance_views,), generator=self.generator).tolist()
            times += [float(frame_time(i, self.num_frames)) for i in picked]
        return batch

    def _views(self, count: int) -> Tensor:
        return torch.randint(len(self.pool), (count,), generator=self.generator)

    def _front_frames(self) -> list[int]:
        cfg, reached = self.cfg, self.reached
        frames: list[int] = []
        if reached < self.num_frames:
            # Growing: the newest frame (one from each end), and others drawn from those reached.
            forward, backward = self._split(reached)
            pool = self.reached_frames()
            newest = [forward - 1] + ([self.num_frames - backward] if backward else [])
            frames += newest[: cfg.batch_frames]
            rest = [f for f in pool if f not in frames]
            picks = torch.randperm(len(rest), generator=self.generator).tolist()
            frames += [rest[i] for i in picks[: max(min(cfg.batch_frames, reached) - len(frames), 0)]]
        else:
            # Frames in epochs: every frame is seen once before any is seen twice.
            while len(frames) < min(cfg.batch_frames, self.num_frames):
                if not self._order:
                    self._order = torch.randperm(self.num_frames, generator=self.generator).tolist()
                frames.append(self._order.pop())
        return frames
