"""The project's own CPU mesh rasterizer (numba).

Deferred, in three kernels per camera:

1. ``setup_triangles``: near-plane clipping in camera space (a triangle crossing ``z = near`` becomes one or
   two triangles; one wholly behind it is dropped), projection with the pinhole ``K`` and screen bounds.
   Every clipped vertex carries its barycentric coordinates in the *original* triangle, so attributes are
   always interpolated from the original vertices.
2. ``rasterize``: a z-buffer over horizontal bands of rows, one band per parallel task (no two tasks touch
   the same pixel, so no atomics are needed). Pixel centres are at (j + 0.5, i + 0.5). Both windings are
   drawn (two-sided). Barycentrics are perspective-correct (interpolated as b_k / z_k, renormalised).
3. ``shade``: unlit albedo per sample: linear base factor x linear vertex colour x texture (bilinear,
   REPEAT wrap, texels already decoded to linear).

Everything here works on numpy arrays in the supersampled image; ``pla4d.render.mesh`` handles tensors,
cameras, anti-aliasing and colour encoding.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

# Rows per rasterization task: small enough that 2-16 threads get many tasks, large enough that the
# per-band triangle bounding-box scan stays negligible.
BAND_ROWS = 8


@njit(cache=True, inline="always")
def _edge(ax: float, ay: float, bx: float, by: float, px: float, py: float) -> float:
    # Written relative to p so that E(b, a, p) is the exact negation of E(a, b, p): two triangles sharing
    # an edge then agree bit-for-bit on which side of it a pixel centre lies (no cracks, no double hits
    # except exactly on the edge, where the z-test picks one).
    return (ax - px) * (by - py) - (bx - px) * (ay - py)


@njit(cache=True, parallel=True)
def setup_triangles(
    cam_verts: np.ndarray,  # (V, 3) float64 camera-space positions (OpenCV: z forward)
    faces: np.ndarray,  # (F, 3) int64
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    skew: float,
    near: float,
    width: int,
    height: int,
):
    """Clip, project and bound every face; slot 2f and 2f+1 hold the (up to two) pieces of face f."""
    n_faces = faces.shape[0]
    n_slots = 2 * n_faces
    tri_xy = np.zeros((n_slots, 3, 2), np.float64)
    tri_iz = np.zeros((n_slots, 3), np.float64)
    tri_obary = np.zeros((n_slots, 3, 3), np.float64)
    tri_bbox = np.full((n_slots, 4), -1, np.int32)  # xmin, xmax, ymin, ymax (inclusive pixels)
    tri_face = np.full(n_slots, -1, np.int64)
    for f in prange(n_faces):
        pos = np.empty((4, 3), np.float64)
        bar = np.zeros((4, 3), np.float64)
        n_out = 0
        finite = True
        for k in range(3):
            vk = faces[f, k]
            for c in range(3):
                if not math.isfinite(cam_verts[vk, c]):
                    finite = False
        if not finite:
            continue
        # Sutherland-Hodgman against the single plane z = near; a triangle yields at most 4 vertices.
        for k in range(3):
            a = faces[f, k]
            b = faces[f, (k + 1) % 3]
            za = cam_verts[a, 2]
            zb = cam_verts[b, 2]
            a_in = za > near
            b_in = zb > near
            if a_in:
                for c in range(3):
                    pos[n_out, c] = cam_verts[a, c]
                    bar[n_out, c] = 0.0
                bar[n_out, k] = 1.0
                n_out += 1
            if a_in != b_in:
                t = (near - za) / (zb - za)
                for c in range(3):
                    pos[n_out, c] = cam_verts[a, c] + t * (cam_verts[b, c] - cam_verts[a, c])
                    bar[n_out, c] = 0.0
                bar[n_out, k] = 1.0 - t
                bar[n_out, (k + 1) % 3] = t
                pos[n_out, 2] = max(pos[n_out, 2], near)
                n_out += 1
        if n_out < 3:
            continue
        sx = np.empty(4, np.float64)
        sy = np.empty(4, np.float64)
        iz = np.empty(4, np.float64)
        for k in range(n_out):
            inv = 1.0 / pos[k, 2]
            sx[k] = fx * pos[k, 0] * inv + skew * pos[k, 1] * inv + cx
            sy[k] = fy * pos[k, 1] * inv + cy
            iz[k] = inv
        # Fan triangulation of the clipped polygon: (0, 1, 2) and, for a quad, (0, 2, 3).
        for piece in range(n_out - 2):
            slot = 2 * f + piece
            idx = (0, piece + 1, piece + 2)
            xmin = 1e300
            xmax = -1e300
            ymin = 1e300
            ymax = -1e300
            for k in range(3):
                src = idx[k]
                tri_xy[slot, k, 0] = sx[src]
                tri_xy[slot, k, 1] = sy[src]
                tri_iz[slot, k] = iz[src]
                for c in range(3):
                    tri_obary[slot, k, c] = bar[src, c]
                xmin = min(xmin, sx[src])
                xmax = max(xmax, sx[src])
                ymin = min(ymin, sy[src])
                ymax = max(ymax, sy[src])
            area = _edge(sx[0], sy[0], sx[piece + 1], sy[piece + 1], sx[piece + 2], sy[piece + 2])
            if not (abs(area) > 0.0) or not math.isfinite(area):
                continue
            # Pixel j is covered only if its centre j + 0.5 lies in [xmin, xmax]; clamp in float first so
            # huge coordinates from vertices near the near plane never overflow the int conversion.
            jx0 = math.ceil(min(max(xmin - 0.5, -1.0), width + 1.0))
            jx1 = math.floor(min(max(xmax - 0.5, -1.0), width + 1.0))
            iy0 = math.ceil(min(max(ymin - 0.5, -1.0), height + 1.0))
            iy1 = math.floor(min(max(ymax - 0.5, -1.0), height + 1.0))
            jx0 = max(jx0, 0)
            iy0 = max(iy0, 0)
            jx1 = min(jx1, width - 1)
            iy1 = min(iy1, height - 1)
            if jx0 > jx1 or iy0 > iy1:
                continue
            tri_bbox[slot, 0] = jx0
            tri_bbox[slot, 1] = jx1
            tri_bbox[slot, 2] = iy0
            tri_bbox[slot, 3] = iy1
            tri_face[slot] = f
    return tri_xy, tri_iz, tri_obary, tri_bbox, tri_face


@njit(cache=True, parallel=True)
def rasterize(
    tri_xy: np.ndarray,
    tri_iz: np.ndarray,
    tri_bbox: np.ndarray,
    live: np.ndarray,  # (T,) indices of the slots that survived setup
    width: int,
    height: int,
):
    """Z-buffer: per pixel the nearest slot, its perspective-correct barycentrics and its camera z."""
    zbuf = np.full((height, width), np.inf, np.float32)
    tri_id = np.full((height, width), -1, np.int32)
    bary = np.zeros((height, width, 3), np.float32)
    n_bands = (height + BAND_ROWS - 1) // BAND_ROWS
    for band in prange(n_bands):
        r0 = band * BAND_ROWS
        r1 = min(height, r0 + BAND_ROWS) - 1
        for n in range(live.shape[0]):
            t = live[n]
            y0 = max(tri_bbox[t, 2], r0)
            y1 = min(tri_bbox[t, 3], r1)
            if y0 > y1:
                continue
            x0 = tri_bbox[t, 0]
            x1 = tri_bbox[t, 1]
            ax = tri_xy[t, 0, 0]
            ay = tri_xy[t, 0, 1]
            bx = tri_xy[t, 1, 0]
            by = tri_xy[t, 1, 1]
            qx = tri_xy[t, 2, 0]
            qy = tri_xy[t, 2, 1]
            iz0 = tri_iz[t, 0]
            iz1 = tri_iz[t, 1]
            iz2 = tri_iz[t, 2]
            inv_area = 1.0 / _edge(ax, ay, bx, by, qx, qy)
            for i in range(y0, y1 + 1):
                py = i + 0.5
                for j in range(x0, x1 + 1):
                    px = j + 0.5
                    l0 = _edge(bx, by, qx, qy, px, py) * inv_area
                    if l0 < 0.0:
                        continue
                    l1 = _edge(qx, qy, ax, ay, px, py) * inv_area
                    if l1 < 0.0:
                        continue
                    l2 = _edge(ax, ay, bx, by, px, py) * inv_area
                    if l2 < 0.0:
                        continue
                    w = l0 * iz0 + l1 * iz1 + l2 * iz2
                    if not w > 0.0:
                        continue
                    z = np.float32(1.0 / w)
                    if z < zbuf[i, j]:
                        zbuf[i, j] = z
                        tri_id[i, j] = t
                        inv_w = 1.0 / w
                        bary[i, j, 0] = l0 * iz0 * inv_w
                        bary[i, j, 1] = l1 * iz1 * inv_w
                        bary[i, j, 2] = l2 * iz2 * inv_w
    return zbuf, tri_id, bary


@njit(cache=True, inline="always")
def _wrap(i: int, n: int) -> int:
    r = i % n
    return r + n if r < 0 else r


@njit(cache=True, parallel=True)
def shade(
    tri_id: np.ndarray,  # (H, W) int32 slot or -1
    bary: np.ndarray,  # (H, W, 3) float32 barycentrics in the slot's triangle
    tri_obary: np.ndarray,  # (S, 3, 3) slot vertex -> original-triangle barycentrics
    tri_face: np.ndarray,  # (S,) int64
    faces: np.ndarray,  # (F, 3) int64
    vertex_colors: np.ndarray,  # (V, 3) float32 linear, or (0, 3) for none
    uvs: np.ndarray,  # (V, 2) float32 glTF convention (v down), or (0, 2) for none
    face_material: np.ndarray,  # (F,) int32
    mat_factor: np.ndarray,  # (M, 3) float32 linear
    mat_tex_offset: np.ndarray,  # (M,) int64 offset into tex_buf (in texels)
    mat_tex_h: np.ndarray,  # (M,) int64, 0 for an untextured material
    mat_tex_w: np.ndarray,  # (M,) int64
    tex_buf: np.ndarray,  # (N, 3) float32 linear texels of all textures, row-major each
):
    """Linear unlit albedo for every covered sample (zeros elsewhere)."""
    height, width = tri_id.shape
    out = np.zeros((height, width, 3), np.float32)
    has_vc = vertex_colors.shape[0] > 0
    has_uv = uvs.shape[0] > 0
    for i in prange(height):
        for j in range(width):
            t = tri_id[i, j]
            if t < 0:
                continue
            f = tri_face[t]
            # Barycentrics with respect to the original (unclipped) triangle.
            B0 = 0.0
            B1 = 0.0
            B2 = 0.0
            for k in range(3):
                b = bary[i, j, k]
                B0 += b * tri_obary[t, k, 0]
                B1 += b * tri_obary[t, k, 1]
                B2 += b * tri_obary[t, k, 2]
            v0 = faces[f, 0]
            v1 = faces[f, 1]
            v2 = faces[f, 2]
            m = face_material[f]
            r = mat_factor[m, 0]
            g = mat_factor[m, 1]
            bl = mat_factor[m, 2]
            if has_vc:
                r *= B0 * vertex_colors[v0, 0] + B1 * vertex_colors[v1, 0] + B2 * vertex_colors[v2, 0]
                g *= B0 * vertex_colors[v0, 1] + B1 * vertex_colors[v1, 1] + B2 * vertex_colors[v2, 1]
                bl *= B0 * vertex_colors[v0, 2] + B1 * vertex_colors[v1, 2] + B2 * vertex_colors[v2, 2]
            th = mat_tex_h[m]
            tw = mat_tex_w[m]
            if has_uv and th > 0:
                u = B0 * uvs[v0, 0] + B1 * uvs[v1, 0] + B2 * uvs[v2, 0]
                v = B0 * uvs[v0, 1] + B1 * uvs[v1, 1] + B2 * uvs[v2, 1]
                if not (math.isfinite(u) and math.isfinite(v)):
                    u = 0.0
                    v = 0.0
                # Texel centres at (k + 0.5) / size, as in OpenGL/glTF.
                x = u * tw - 0.5
                y = v * th - 0.5
                xf = math.floor(x)
                yf = math.floor(y)
                ax = x - xf
                ay = y - yf
                xi0 = _wrap(np.int64(xf), tw)
                yi0 = _wrap(np.int64(yf), th)
                xi1 = _wrap(xi0 + 1, tw)
                yi1 = _wrap(yi0 + 1, th)
                base = mat_tex_offset[m]
                p00 = base + yi0 * tw + xi0
                p01 = base + yi0 * tw + xi1
                p10 = base + yi1 * tw + xi0
                p11 = base + yi1 * tw + xi1
                w00 = (1.0 - ax) * (1.0 - ay)
                w01 = ax * (1.0 - ay)
                w10 = (1.0 - ax) * ay
                w11 = ax * ay
                r *= w00 * tex_buf[p00, 0] + w01 * tex_buf[p01, 0] + w10 * tex_buf[p10, 0] + w11 * tex_buf[p11, 0]
                g *= w00 * tex_buf[p00, 1] + w01 * tex_buf[p01, 1] + w10 * tex_buf[p10, 1] + w11 * tex_buf[p11, 1]
                bl *= w00 * tex_buf[p00, 2] + w01 * tex_buf[p01, 2] + w10 * tex_buf[p10, 2] + w11 * tex_buf[p11, 2]
            out[i, j, 0] = r
            out[i, j, 1] = g
            out[i, j, 2] = bl
    return out


def render_view(
    cam_verts: np.ndarray,
    faces: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
    near: float,
    vertex_colors: np.ndarray,
    uvs: np.ndarray,
    face_material: np.ndarray,
    mat_factor: np.ndarray,
    mat_tex_offset: np.ndarray,
    mat_tex_h: np.ndarray,
    mat_tex_w: np.ndarray,
    tex_buf: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One camera: linear albedo (H, W, 3), coverage (H, W) bool and camera z (H, W) (inf where empty)."""
    tri_xy, tri_iz, tri_obary, tri_bbox, tri_face = setup_triangles(
        cam_verts,
        faces,
        float(K[0, 0]),
        float(K[1, 1]),
        float(K[0, 2]),
        float(K[1, 2]),
        float(K[0, 1]),
        float(near),
        int(width),
        int(height),
    )
    live = np.flatnonzero(tri_face >= 0).astype(np.int64)
    zbuf, tri_id, bary = rasterize(tri_xy, tri_iz, tri_bbox, live, int(width), int(height))
    rgb = shade(
        tri_id,
        bary,
        tri_obary,
        tri_face,
        faces,
        vertex_colors,
        uvs,
        face_material,
        mat_factor,
        mat_tex_offset,
        mat_tex_h,
        mat_tex_w,
        tex_buf,
    )
    return rgb, tri_id >= 0, zbuf
