"""Part labels of the built-in example's vertices, from its skeleton (pla4d/example/creature.py).

Each vertex goes to the part of the bone with its largest skinning weight; bones are grouped into the parts an
artist names (the waving left arm with its paw, each leg, the tail, the head with the ears, the body). The
vertex order is the one of ``animate_creature`` and the example clip's ``gt_verts.npz``.
"""

from __future__ import annotations

import numpy as np

from pla4d.example.creature import build_creature

__all__ = ["CREATURE_PARTS", "creature_vertex_parts"]

# Part -> the bones it spans. "arm_l" is the arm that waves above the head (the waving paw).
CREATURE_PARTS: dict[str, tuple[str, ...]] = {
    "body": ("root", "chest"),
    "head": ("head", "ear_l", "ear_r"),
    "arm_l": ("arm_l_upper", "arm_l_lower"),
    "arm_r": ("arm_r_upper", "arm_r_lower"),
    "leg_l": ("leg_l_upper", "leg_l_lower"),
    "leg_r": ("leg_r_upper", "leg_r_lower"),
    "tail": ("tail_0", "tail_1", "tail_2"),
}


def creature_vertex_parts() -> tuple[np.ndarray, tuple[str, ...]]:
    """(V,) part index of every vertex of the example creature, and the part names the indices refer to."""
    rig = build_creature()
    names = tuple(CREATURE_PARTS)
    bone_part = np.empty(len(rig.bones), dtype=np.int64)
    for part, bones in enumerate(CREATURE_PARTS.values()):
        for bone in bones:
            bone_part[rig.bone_index(bone)] = part
    return bone_part[np.argmax(rig.weights, axis=1)], names
