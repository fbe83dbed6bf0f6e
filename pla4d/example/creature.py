"""The built-in example: a small bear-like creature built from primitives, skinned to a skeleton.

It stands in for the text-to-video and image-to-mesh models on machines without weights: its first-frame
mesh plays the image-to-mesh output and its front-view renders play the generated video. Everything is
made in code (no data files, no downloads) and is deterministic.

The creature faces +Z (the front camera), stands on its hind legs, waves its left arm, marches in place,
bobs and squashes its body, nods its head and wags a bendy tail. Linear blend skinning with smooth weights
along each limb makes the motion non-rigid (elbows, knees and the tail bend rather than hinge).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Palette in sRGB (what an artist would pick); converted to linear where a Mesh is built.
FUR = (0.80, 0.47, 0.20)
BELLY = (0.98, 0.87, 0.66)
DARK = (0.30, 0.16, 0.08)
EYE = (0.04, 0.04, 0.05)
EYE_SHINE = (0.95, 0.95, 0.98)
NOSE = (0.12, 0.06, 0.05)
INNER_EAR = (0.93, 0.55, 0.55)
SCARF = (0.20, 0.45, 0.85)


@dataclass(frozen=True)
class Bone:
    name: str
    parent: int  # index of the parent bone, -1 for the root
    head: tuple[float, float, float]  # pivot in the rest pose


@dataclass
class RiggedMesh:
    """Rest-pose geometry with per-vertex skinning weights over ``bones``."""

    vertices: np.ndarray  # (V, 3) float64
    faces: np.ndarray  # (F, 3) int64
    colors_srgb: np.ndarray  # (V, 3) float64 in [0, 1]
    weights: np.ndarray  # (V, B) rows sum to 1
    bones: list[Bone]

    def bone_index(self, name: str) -> int:
        for i, bone in enumerate(self.bones):
            if bone.name == name:
                return i
        raise KeyError(name)


# --------------------------------------------------------------------------------------------------
# Primitive builders. Each returns (vertices, faces, t) where t in [0, 1] runs along the primitive's main
# axis, so skinning weights can blend smoothly between the bones a limb spans.


def _ellipsoid(center, radii, n_lat: int = 18, n_lon: int = 28) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lat = np.linspace(0.0, math.pi, n_lat + 1)
    lon = np.linspace(0.0, 2.0 * math.pi, n_lon, endpoint=False)
    la, lo = np.meshgrid(lat[1:-1], lon, indexing="ij")
    ring = np.stack([np.sin(la) * np.sin(lo), np.cos(la), np.sin(la) * np.cos(lo)], axis=-1).reshape(-1, 3)
    pts = np.concatenate([[[0.0, 1.0, 0.0]], ring, [[0.0, -1.0, 0.0]]])
    verts = pts * np.asarray(radii) + np.asarray(center)
    faces = []
    n_rings = n_lat - 1
    ring_start = 1
    for j in range(n_lon):  # top cap
        faces.append([0, ring_start + (j + 1) % n_lon, ring_start + j])
    for i in range(n_rings - 1):
        a0 = ring_start + i * n_lon
        b0 = a0 + n_lon
        for j in range(n_lon):
            a, a1 = a0 + j, a0 + (j + 1) % n_lon
            b, b1 = b0 + j, b0 + (j + 1) % n_lon
            faces.append([a, a1, b1])
            faces.append([a, b1, b])
    bottom = len(pts) - 1
    last = ring_start + (n_rings - 1) * n_lon
    for j in range(n_lon):
        faces.append([bottom, last + j, last + (j + 1) % n_lon])
    t = (1.0 - pts[:, 1]) * 0.5  # 0 at the top, 1 at the bottom
    return verts, np.asarray(faces, dtype=np.int64), t


def _tube(path: np.ndarray, radii: np.ndarray, n_around: int = 16, caps: bool = True) -> tuple:
    """A generalised cylinder along a polyline ``path`` (K, 3) with per-point ``radii`` (K,)."""
    path = np.asarray(path, dtype=np.float64)
    radii = np.asarray(radii, dtype=np.float64)
    tangents = np.gradient(path, axis=0)
    tangents /= np.linalg.norm(tangents, axis=1, keepdims=True)
    # A rotation-minimising frame keeps the tube from twisting along bends.
    ref = np.array([0.0, 0.0, 1.0]) if abs(tangents[0, 2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    normal = np.cross(tangents[0], ref)
    normal /= np.linalg.norm(normal)
    rings = []
    for k in range(len(path)):
        normal = normal - tangents[k] * np.dot(normal, tangents[k])
        normal /= np.linalg.norm(normal)
        binormal = np.cross(tangents[k], normal)
        ang = np.linspace(0.0, 2.0 * math.pi, n_around, endpoint=False)
        ring = path[k] + radii[k] * (np.cos(ang)[:, None] * normal + np.sin(ang)[:, None] * binormal)
        rings.append(ring)
    verts = np.concatenate(rings)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
    t = np.repeat(arc / arc[-1], n_around)
    faces = []
    for k in range(len(path) - 1):
        for j in range(n_around):
            a, a1 = k * n_around + j, k * n_around + (j + 1) % n_around
            b, b1 = a + n_around, a1 + n_around
            faces.append([a, b, b1])
            faces.append([a, b1, a1])
    if caps:
        # Rounded caps: a vertex pushed out along the tangent by the end radius.
        start = len(verts)
        verts = np.concatenate([verts, [path[0] - tangents[0] * radii[0]], [path[-1] + tangents[-1] * radii[-1]]])
        t = np.concatenate([t, [0.0, 1.0]])
        last = (len(path) - 1) * n_around
        for j in range(n_around):
            faces.append([start, (j + 1) % n_around, j])
            faces.append([start + 1, last + j, last + (j + 1) % n_around])
    return verts, np.asarray(faces, dtype=np.int64), t


# --------------------------------------------------------------------------------------------------


class _Builder:
    def __init__(self, bone_names: list[str]) -> None:
        self.bone_names = bone_names
        self.verts: list[np.ndarray] = []
        self.faces: list[np.ndarray] = []
        self.colors: list[np.ndarray] = []
        self.weights: list[np.ndarray] = []
        self.count = 0

    def add(self, part: tuple, color, bones: dict[str, object]) -> None:
        """Add a primitive. ``bones`` maps bone name -> weight, or -> (t0, t1) ramps along the part.

        A ramp ``(t0, t1)`` on the second of two bones blends smoothly from the first to the second
        between ``t0`` and ``t1`` of the part's length (smoothstep).
        """
        verts, faces, t = part
        weights = np.zeros((len(verts), len(self.bone_names)))
        names = list(bones)
        if len(names) == 1:
            weights[:, self.bone_names.index(names[0])] = 1.0
        else:
            first, second = names
            t0, t1 = bones[second]
            s = np.clip((t - t0) / (t1 - t0), 0.0, 1.0)
            s = s * s * (3.0 - 2.0 * s)
            weights[:, self.bone_names.index(first)] = 1.0 - s
            weights[:, self.bone_names.index(second)] = s
        colors = np.broadcast_to(np.asarray(color, dtype=np.float64), verts.shape)
        self.verts.append(verts)
        self.faces.append(faces + self.count)
        self.colors.append(np.array(colors))
        self.weights.append(weights)
        self.count += len(verts)


def build_creature() -> RiggedMesh:
    """The rest pose of the example creature, in world units before normalisation (about 2 tall)."""
    bones = [
        Bone("root", -1, (0.0, 0.0, 0.0)),
        Bone("chest", 0, (0.0, 0.05, 0.0)),
        Bone("head", 1, (0.0, 0.55, 0.0)),
        Bone("arm_l_upper", 1, (0.36, 0.38, 0.0)),
        Bone("arm_l_lower", 3, (0.62, 0.20, 0.04)),
        Bone("arm_r_upper", 1, (-0.36, 0.38, 0.0)),
        Bone("arm_r_lower", 5, (-0.62, 0.20, 0.04)),
        Bone("leg_l_upper", 0, (0.18, -0.42, 0.0)),
        Bone("leg_l_lower", 7, (0.19, -0.72, 0.05)),
        Bone("leg_r_upper", 0, (-0.18, -0.42, 0.0)),
        Bone("leg_r_lower", 9, (-0.19, -0.72, 0.05)),
        Bone("tail_0", 0, (0.0, -0.30, -0.33)),
        Bone("tail_1", 11, (0.0, -0.22, -0.52)),
        Bone("tail_2", 12, (0.0, -0.05, -0.63)),
        Bone("ear_l", 2, (0.20, 0.92, 0.0)),
        Bone("ear_r", 2, (-0.20, 0.92, 0.0)),
    ]
    b = _Builder([bone.name for bone in bones])

    # Torso: the lower half follows the hips (root), the upper half the chest, so the body bends.
    b.add(_ellipsoid((0.0, 0.0, 0.0), (0.40, 0.52, 0.34), 22, 32), FUR, {"root": 1.0, "chest": (0.65, 0.25)})
    b.add(_ellipsoid((0.0, -0.04, 0.17), (0.29, 0.38, 0.20), 16, 24), BELLY, {"root": 1.0, "chest": (0.7, 0.3)})
    b.add(_tube(np.array([[0.0, 0.42, 0.0], [0.0, 0.47, 0.0]]), np.array([0.30, 0.30]), 24), SCARF, {"chest": 1.0})

    # Head with ears, eyes, snout and nose.
    b.add(_ellipsoid((0.0, 0.78, 0.02), (0.33, 0.30, 0.30), 20, 30), FUR, {"head": 1.0})
    for side, bone in ((1.0, "ear_l"), (-1.0, "ear_r")):
        b.add(_ellipsoid((0.22 * side, 1.03, -0.02), (0.11, 0.11, 0.06), 10, 14), FUR, {bone: 1.0})
        b.add(_ellipsoid((0.22 * side, 1.03, 0.025), (0.065, 0.065, 0.03), 8, 12), INNER_EAR, {bone: 1.0})
        b.add(_ellipsoid((0.12 * side, 0.86, 0.27), (0.055, 0.065, 0.04), 8, 12), EYE, {"head": 1.0})
        b.add(_ellipsoid((0.105 * side, 0.885, 0.305), (0.018, 0.018, 0.01), 6, 8), EYE_SHINE, {"head": 1.0})
    b.add(_ellipsoid((0.0, 0.70, 0.26), (0.14, 0.10, 0.10), 12, 16), BELLY, {"head": 1.0})
    b.add(_ellipsoid((0.0, 0.74, 0.355), (0.05, 0.035, 0.03), 8, 12), NOSE, {"head": 1.0})

    # Arms: one tube per arm spanning upper and lower bones, bending smoothly at the elbow.
    for side, upper, lower in ((1.0, "arm_l_upper", "arm_l_lower"), (-1.0, "arm_r_upper", "arm_r_lower")):
        path = np.array(
            [[0.30 * side, 0.40, 0.0], [0.46 * side, 0.31, 0.02], [0.62 * side, 0.20, 0.04], [0.76 * side, 0.08, 0.07]]
        )
        path = _resample(path, 10)
        b.add(_tube(path, np.linspace(0.095, 0.075, len(path)), 14), FUR, {upper: 1.0, lower: (0.35, 0.65)})
        b.add(_ellipsoid((0.80 * side, 0.04, 0.08), (0.085, 0.075, 0.075), 10, 14), DARK, {lower: 1.0})

    # Legs: thigh to shin with a bending knee, ending in feet that point forward.
    for side, upper, lower in ((1.0, "leg_l_upper", "leg_l_lower"), (-1.0, "leg_r_upper", "leg_r_lower")):
        path = _resample(
            np.array([[0.18 * side, -0.35, 0.0], [0.19 * side, -0.72, 0.05], [0.19 * side, -0.90, 0.04]]), 9
        )
        b.add(_tube(path, np.linspace(0.13, 0.10, len(path)), 14), FUR, {upper: 1.0, lower: (0.45, 0.75)})
        b.add(_ellipsoid((0.19 * side, -0.95, 0.10), (0.11, 0.07, 0.17), 10, 14), DARK, {lower: 1.0})

    # Tail: one bendy tube over three bones.
    tail_path = _resample(
        np.array([[0.0, -0.30, -0.28], [0.0, -0.22, -0.52], [0.0, -0.05, -0.63], [0.0, 0.10, -0.66]]), 14
    )
    tail_radii = np.linspace(0.07, 0.045, len(tail_path))
    verts, faces, t = _tube(tail_path, tail_radii, 12)
    weights_t = t  # tail weights blend across three bones, so blend in two steps
    b.add((verts, faces, weights_t), FUR, {"tail_0": 1.0, "tail_1": (0.15, 0.5)})
    tail = b.weights[-1]
    s2 = np.clip((weights_t - 0.55) / 0.35, 0.0, 1.0)
    s2 = s2 * s2 * (3.0 - 2.0 * s2)
    i1, i2 = b.bone_names.index("tail_1"), b.bone_names.index("tail_2")
    moved = tail[:, i1] * s2
    tail[:, i1] -= moved
    tail[:, i2] += moved
    b.add(
        _ellipsoid(tail_path[-1] + np.array([0.0, 0.03, -0.01]), (0.075, 0.075, 0.075), 10, 12), BELLY, {"tail_2": 1.0}
    )

    return RiggedMesh(
        vertices=np.concatenate(b.verts),
        faces=np.concatenate(b.faces),
        colors_srgb=np.concatenate(b.colors),
        weights=np.concatenate(b.weights),
        bones=bones,
    )


def _resample(path: np.ndarray, n: int) -> np.ndarray:
    """``n`` points evenly spaced in arc length along a polyline (a smooth-enough limb axis)."""
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    s = np.linspace(0.0, arc[-1], n)
    return np.stack([np.interp(s, arc, path[:, k]) for k in range(3)], axis=1)


# --------------------------------------------------------------------------------------------------
# Animation


def _rot(axis: str, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float64)
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float64)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)


def pose_at(phase: float) -> dict[str, np.ndarray]:
    """Local 4x4 transforms per bone at ``phase`` in [0, 1) of the motion cycle (one cycle loops)."""
    w = 2.0 * math.pi * phase
    deg = math.radians
    march = math.sin(w)  # left leg forward when positive
    pose: dict[str, np.ndarray] = {}

    def rot(*pairs: tuple[str, float]) -> np.ndarray:
        m = np.eye(3)
        for axis, angle in pairs:
            m = m @ _rot(axis, angle)
        return m

    # Hips bob twice per cycle and squash slightly (non-uniform scale) when low.
    bob = 0.045 * math.cos(2.0 * w)
    squash = 1.0 + 0.04 * math.cos(2.0 * w)
    root = np.eye(4)
    root[:3, :3] = np.diag([1.0 / math.sqrt(squash), squash, 1.0 / math.sqrt(squash)]) @ rot(("y", deg(8) * march))
    root[1, 3] = bob
    pose["root"] = root
    pose["chest"] = _affine(rot(("z", deg(5) * math.sin(w + 0.6)), ("x", deg(4) * math.cos(2.0 * w))))
    pose["head"] = _affine(rot(("z", deg(10) * math.sin(w + 1.2)), ("x", deg(8) * math.sin(2.0 * w + 0.4))))
    # Left arm waves above the head: raised at the shoulder, the forearm swinging side to side.
    pose["arm_l_upper"] = _affine(rot(("z", deg(115) + deg(12) * math.sin(2.0 * w)), ("x", deg(-10))))
    pose["arm_l_lower"] = _affine(rot(("z", deg(35) * math.sin(2.0 * w + 0.8))))
    # Right arm swings against the right leg, elbow bending as it goes forward.
    pose["arm_r_upper"] = _affine(rot(("x", deg(-30) * march), ("z", deg(25))))
    pose["arm_r_lower"] = _affine(rot(("x", deg(-25) * max(0.0, march))))
    # Marching: thighs lift alternately, knees bend as the thigh rises.
    for side, sign in (("l", 1.0), ("r", -1.0)):
        lift = max(0.0, sign * march)
        pose[f"leg_{side}_upper"] = _affine(rot(("x", deg(-45) * lift)))
        pose[f"leg_{side}_lower"] = _affine(rot(("x", deg(70) * lift)))
    # Tail wags with a phase lag along its length, so it bends like a whip.
    for k in range(3):
        pose[f"tail_{k}"] = _affine(rot(("y", deg(22) * math.sin(2.0 * w - 0.9 * k)), ("x", deg(6) * k)))
    pose["ear_l"] = _affine(rot(("z", deg(-10) * math.sin(2.0 * w + 1.0))))
    pose["ear_r"] = _affine(rot(("z", deg(10) * math.sin(2.0 * w + 1.4))))
    return pose


def _affine(rotation: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rotation
    return m


def skin(rig: RiggedMesh, pose: dict[str, np.ndarray]) -> np.ndarray:
    """Linear blend skinning of the rest pose under ``pose`` (local transforms about each bone's head)."""
    n_bones = len(rig.bones)
    world = [np.eye(4)] * n_bones
    for i, bone in enumerate(rig.bones):  # parents come before children
        head = np.asarray(bone.head)
        local = pose.get(bone.name, np.eye(4))
        about_head = np.eye(4)
        about_head[:3, :3] = local[:3, :3]
        about_head[:3, 3] = head - local[:3, :3] @ head + local[:3, 3]
        world[i] = about_head if bone.parent < 0 else world[bone.parent] @ about_head
    mats = np.stack(world)  # (B, 4, 4)
    homo = np.concatenate([rig.vertices, np.ones((len(rig.vertices), 1))], axis=1)
    per_bone = np.einsum("bij,vj->vbi", mats, homo)[..., :3]  # (V, B, 3)
    return np.einsum("vb,vbi->vi", rig.weights, per_bone)


@dataclass(frozen=True)
class CreatureAnimation:
    """Per-frame vertices of the creature, normalised to the project's frame.

    Normalisation as in the benchmark clips: the bounding-box centre over all frames sits at the origin and
    the largest vertex radius over all frames is 1.
    """

    vertices: np.ndarray  # (T, V, 3) float32
    faces: np.ndarray  # (F, 3) int64
    colors_srgb: np.ndarray  # (V, 3) float32
    times: np.ndarray  # (T,) seconds
    fps: float


def animate_creature(num_frames: int = 32, fps: float = 16.0, cycles: float = 1.0) -> CreatureAnimation:
    """Sample ``num_frames`` frames of the motion at ``fps``; ``cycles`` loops of the motion over the clip."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    rig = build_creature()
    phases = np.arange(num_frames) / max(num_frames, 1) * cycles
    frames = np.stack([skin(rig, pose_at(float(p))) for p in phases])
    lo, hi = frames.reshape(-1, 3).min(0), frames.reshape(-1, 3).max(0)
    centre = (lo + hi) * 0.5
    frames = frames - centre
    frames /= np.linalg.norm(frames, axis=-1).max()
    return CreatureAnimation(
        vertices=frames.astype(np.float32),
        faces=rig.faces,
        colors_srgb=rig.colors_srgb.astype(np.float32),
        times=(np.arange(num_frames) / fps).astype(np.float64),
        fps=float(fps),
    )
