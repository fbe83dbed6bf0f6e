"""CPU tile rasteriser for projected Gaussians: numba kernels with a hand-written backward.

Numbers follow gsplat's ``rasterize_to_pixels`` (classic 3DGS) kernels; the loop order does not. gsplat runs one
thread per pixel over a tile's depth-sorted list. Here one CPU thread owns a whole tile and walks the list once,
Gaussian by Gaussian. For each Gaussian it visits only the rows of its box (gsplat's opacity-aware radius) and,
on each row, only the pixel span where sigma <= log(255 opacity), i.e. where alpha can reach 1/255 (solved from
the conic's quadratic); everything outside is skipped without changing the result. Every pixel still sees its
Gaussians front to back (back to front in the backward), so the per-pixel arithmetic is gsplat's.

The backward writes one gradient record per (tile, Gaussian) intersection, which no other thread touches, and a
second pass reduces the records per camera: no atomics and no races.

Kernels are dtype-generic (float32 for training, float64 for gradient checks): constants come in through a
``consts`` array of the working dtype so float32 arithmetic is not promoted to float64 by Python literals.
``exp`` is an inline polynomial (see ``_exp_neg``) shared by both passes.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
import torch
from numba import prange
from torch import Tensor
from torch.autograd.function import once_differentiable

from pla4d.render.gaussian_types import ALPHA_THRESHOLD, TILE_SIZE, ProjectedGaussians

# consts[]: 0.5, 1, max alpha, min alpha, min transmittance, 0
_CONSTS = (0.5, 1.0, 0.999, ALPHA_THRESHOLD, 1e-4, 0.0)
# Per-intersection gradient record: d/d means2d (2), conics (3), rgb (3), depth (1), opacity (1).
_NREC = 10


@numba.njit(cache=True, parallel=True)
def _bin_tiles(means2d, radii, depths, tiles_x, tiles_y, tile_size):  # pragma: no cover - numba
    """Per-tile depth-sorted Gaussian lists in CSR form: ``ids[offsets[t]:offsets[t + 1]]`` for tile ``t``.

    Tiles are numbered ``(c * tiles_y + ty) * tiles_x + tx``. Sorting all depths once per camera (stable, so
    ties keep index order like gsplat's radix sort) and filling the lists in that order leaves every list sorted.
    """
    n_cams, n = depths.shape
    n_tiles = tiles_x * tiles_y
    rects = np.zeros((n_cams, n, 4), np.int32)
    counts = np.zeros((n_cams, n_tiles), np.int64)
    for c in prange(n_cams):
        for g in range(n):
            rx = radii[c, g, 0]
            ry = radii[c, g, 1]
            if rx <= 0 or ry <= 0:
                continue
            tmx = means2d[c, g, 0] / tile_size
            tmy = means2d[c, g, 1] / tile_size
            trx = rx / tile_size
            try_ = ry / tile_size
            tx0 = min(max(0, int(math.floor(tmx - trx))), tiles_x)
            tx1 = min(max(0, int(math.ceil(tmx + trx))), tiles_x)
            ty0 = min(max(0, int(math.floor(tmy - try_))), tiles_y)
            ty1 = min(max(0, int(math.ceil(tmy + try_))), tiles_y)
            rects[c, g, 0] = tx0
            rects[c, g, 1] = tx1
            rects[c, g, 2] = ty0
            rects[c, g, 3] = ty1
            for ty in range(ty0, ty1):
                for tx in range(tx0, tx1):
                    counts[c, ty * tiles_x + tx] += 1
    offsets = np.empty(n_cams * n_tiles + 1, np.int64)
    total = 0
    for c in range(n_cams):
        for t in range(n_tiles):
            offsets[c * n_tiles + t] = total
            total += counts[c, t]
    offsets[n_cams * n_tiles] = total
    ids = np.empty(total, np.int32)
    for c in prange(n_cams):
        order = np.argsort(depths[c], kind="mergesort")
        cursor = offsets[c * n_tiles : (c + 1) * n_tiles].copy()
        for i in range(n):
            g = order[i]
            tx0 = rects[c, g, 0]
            tx1 = rects[c, g, 1]
            for ty in range(rects[c, g, 2], rects[c, g, 3]):
                for tx in range(tx0, tx1):
                    t = ty * tiles_x + tx
                    ids[cursor[t]] = g
                    cursor[t] += 1
    return offsets, ids


# 2^-m for the exponent part of _exp; global arrays are frozen into the compiled code as constants.
_POW2_NEG = np.ldexp(1.0, -np.arange(160)).astype(np.float64)
_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453
# Contraction into FMAs (and no signed-zero care): a few ulp of difference from the plain evaluation order.
_FASTMATH = {"contract", "nsz"}


@numba.njit(cache=True, inline="always", fastmath=_FASTMATH)
def _exp_neg(sigma):  # pragma: no cover - numba
    """exp(-sigma) for sigma >= 0, inline (relative error ~1e-12; 0-ish beyond sigma = 100).

    A libm call inside the pixel loop makes LLVM spill every live register around it, which cost more than the
    exp itself; this stays in registers. Computed in float64 (as fast as float32 for scalar code) and used by
    both passes, so forward and backward see identical alphas.
    """
    t = -min(float(sigma), 100.0) * _LOG2E
    n = math.floor(t + 0.5)
    g = (t - n) * _LN2  # |g| <= ln(2) / 2
    # Taylor series of e^g to degree 9, evaluated by Estrin's scheme (short dependency chains).
    g2 = g * g
    g4 = g2 * g2
    p01 = 1.0 + g
    p23 = 0.5 + g * 0.16666666666666666
    p45 = 0.041666666666666664 + g * 0.008333333333333333
    p67 = 0.001388888888888889 + g * 0.0001984126984126984
    p89 = 2.48015873015873e-05 + g * 2.7557319223985893e-06
    p = (p01 + g2 * p23) + g4 * ((p45 + g2 * p67) + g4 * p89)
    return p * _POW2_NEG[int(-n)]


@numba.njit(cache=True, inline="always")
def _tile_rect(job, n_tiles, tiles_x, tile_size, width, height):  # pragma: no cover - numba
    c = job // n_tiles
    t = job - c * n_tiles
    ty = t // tiles_x
    tx = t - ty * tiles_x
    x0 = tx * tile_size
    y0 = ty * tile_size
    return c, x0, min(x0 + tile_size, width), y0, min(y0 + tile_size, height)


@numba.njit(cache=True, inline="always")
def _row_range(py0, py1, my, ry):  # pragma: no cover - numba
    """Rows of [py0, py1) whose pixel centres lie within the Gaussian's box [my - ry, my + ry]."""
    return max(py0, int(math.ceil(my - ry - 0.5))), min(py1, int(math.floor(my + ry - 0.5)) + 1)


@numba.njit(cache=True, inline="always")
def _col_span(px0, px1, mx, dy, ca, cb, cc, s_cut):  # pragma: no cover - numba
    """Columns of [px0, px1) whose centres can have sigma <= s_cut on the row at offset ``dy``.

    sigma(dx) = a/2 dx^2 + b dy dx + c/2 dy^2 is a parabola in dx (a > 0 for a valid conic), so the pixels that
    can pass the alpha threshold form one interval per row; solving for it skips the box corners and the thin
    diagonal ellipses' empty parts. Computed in float64 with a margin: pixels inside still get the exact test.
    """
    a = float(ca)
    if a <= 0.0:
        return px0, px1
    q = float(cb) * float(dy)
    r = 0.5 * float(cc) * float(dy) * float(dy) - float(s_cut)
    disc = q * q - 2.0 * a * r
    if disc < 0.0:
        return px0, px0
    sq = math.sqrt(disc)
    # pixel centre p = mean - dx, pixel index j = p - 0.5
    lo = float(mx) - (-q + sq) / a - 0.5
    hi = float(mx) - (-q - sq) / a - 0.5
    return max(px0, int(math.ceil(lo - 1e-3))), min(px1, int(math.floor(hi + 1e-3)) + 1)


@numba.njit(cache=True, parallel=True, fastmath=_FASTMATH)
def _raster_fwd(
    means2d, conics, colors, opacities, depths, radii, background, offsets, ids, width, height, tiles_x, tiles_y,
    tile_size, consts, pix_x, pix_y, job_order, n_slots,
):  # pragma: no cover - numba  # fmt: skip
    n_cams = means2d.shape[0]
    shared_colors = colors.shape[0] == 1
    half = consts[0]
    one = consts[1]
    alpha_max = consts[2]
    alpha_min = consts[3]
    t_min = consts[4]
    zero = consts[5]
    dt = consts.dtype
    n_tiles = tiles_x * tiles_y
    n_jobs = n_cams * n_tiles
    out_rgb = np.empty((n_cams, height, width, 3), dt)
    out_alpha = np.empty((n_cams, height, width), dt)
    out_depth = np.empty((n_cams, height, width), dt)
    out_last = np.empty((n_cams, height, width), np.int64)
    log_alpha_min = math.log(alpha_min)
    tile_px = tile_size * tile_size
    # One slot per thread (numba schedules statically); tiles come sorted by decreasing list length and are
    # dealt round-robin, which balances object against background tiles.
    for slot in prange(n_slots):
        trans = np.empty(tile_px, dt)  # transmittance; < 0 marks a finished pixel, storing -(T + 1)
        acc_r = np.empty(tile_px, dt)
        acc_g = np.empty(tile_px, dt)
        acc_b = np.empty(tile_px, dt)
        acc_z = np.empty(tile_px, dt)
        last = np.empty(tile_px, np.int64)
        for i in range(slot, n_jobs, n_slots):
            job = job_order[i]
            c, x0, x1, y0, y1 = _tile_rect(job, n_tiles, tiles_x, tile_size, width, height)
            tw = x1 - x0
            n_pix = tw * (y1 - y0)
            start = offsets[job]
            end = offsets[job + 1]
            for li in range(n_pix):
                trans[li] = one
                acc_r[li] = zero
                acc_g[li] = zero
                acc_b[li] = zero
                acc_z[li] = zero
                last[li] = start - 1
            cc = 0 if shared_colors else c
            n_done = 0
            for k in range(start, end):
                g = ids[k]
                mx = means2d[c, g, 0]
                my = means2d[c, g, 1]
                jy0, jy1 = _row_range(y0, y1, my, radii[c, g, 1])
                ca = conics[c, g, 0]
                cb = conics[c, g, 1]
                ccn = conics[c, g, 2]
                op = opacities[g]
                # alpha >= 1/255 needs sigma <= log(255 opacity); the margin covers rounding.
                s_cut = math.log(op) - log_alpha_min + 1e-4
                cr = colors[cc, g, 0]
                cg = colors[cc, g, 1]
                cbl = colors[cc, g, 2]
                z = depths[c, g]
                for py in range(jy0, jy1):
                    dy = my - pix_y[py]
                    jx0, jx1 = _col_span(x0, x1, mx, dy, ca, cb, ccn, s_cut)
                    base = (py - y0) * tw - x0
                    for px in range(jx0, jx1):
                        li = base + px
                        tp = trans[li]
                        if tp < zero:
                            continue
                        dx = mx - pix_x[px]
                        sigma = half * (ca * dx * dx + ccn * dy * dy) + cb * dx * dy
                        if sigma < zero:
                            continue
                        alpha = min(alpha_max, op * dt.type(_exp_neg(sigma)))
                        if alpha < alpha_min:
                            continue
                        next_t = tp * (one - alpha)
                        if next_t <= t_min:
                            trans[li] = -tp - one
                            n_done += 1
                            continue
                        vis = alpha * tp
                        acc_r[li] += cr * vis
                        acc_g[li] += cg * vis
                        acc_b[li] += cbl * vis
                        acc_z[li] += z * vis
                        last[li] = k
                        trans[li] = next_t
                if n_done == n_pix:
                    break
            for py in range(y0, y1):
                for px in range(x0, x1):
                    li = (py - y0) * tw + (px - x0)
                    tp = trans[li]
                    if tp < zero:
                        tp = -tp - one
                    out_alpha[c, py, px] = one - tp
                    out_rgb[c, py, px, 0] = acc_r[li] + tp * background[c, 0]
                    out_rgb[c, py, px, 1] = acc_g[li] + tp * background[c, 1]
                    out_rgb[c, py, px, 2] = acc_b[li] + tp * background[c, 2]
                    out_depth[c, py, px] = acc_z[li]
                    out_last[c, py, px] = last[li]
    return out_rgb, out_alpha, out_depth, out_last


@numba.njit(cache=True, parallel=True, fastmath=_FASTMATH)
def _raster_bwd(
    means2d, conics, colors, opacities, depths, radii, background, offsets, ids, width, height, tiles_x, tiles_y,
    tile_size, consts, pix_x, pix_y, job_order, n_slots, out_alpha, out_last, v_rgb, v_alpha, v_depth,
):  # pragma: no cover - numba  # fmt: skip
    """Per-intersection gradient records, back to front from each pixel's last contributor (gsplat's scheme:
    T is recovered by dividing the final transmittance by (1 - alpha), colour behind is carried in ``buf``)."""
    n_cams = means2d.shape[0]
    shared_colors = colors.shape[0] == 1
    half = consts[0]
    one = consts[1]
    alpha_max = consts[2]
    alpha_min = consts[3]
    zero = consts[5]
    dt = consts.dtype
    n_tiles = tiles_x * tiles_y
    n_jobs = n_cams * n_tiles
    rec = np.empty((ids.shape[0], _NREC), dt)
    log_alpha_min = math.log(alpha_min)
    tile_px = tile_size * tile_size
    for slot in prange(n_slots):
        trans = np.empty(tile_px, dt)
        t_final_w = np.empty(tile_px, dt)  # T_final * (dL/dalpha_out - background . dL/drgb)
        buf_r = np.empty(tile_px, dt)  # colour (and z) composited behind the current Gaussian
        buf_g = np.empty(tile_px, dt)
        buf_b = np.empty(tile_px, dt)
        buf_z = np.empty(tile_px, dt)
        vr_r = np.empty(tile_px, dt)
        vr_g = np.empty(tile_px, dt)
        vr_b = np.empty(tile_px, dt)
        vr_z = np.empty(tile_px, dt)
        last = np.empty(tile_px, np.int64)
        for i in range(slot, n_jobs, n_slots):
            job = job_order[i]
            start = offsets[job]
            end = offsets[job + 1]
            for k in range(start, end):
                for j in range(_NREC):
                    rec[k, j] = zero
            if end == start:
                continue
            c, x0, x1, y0, y1 = _tile_rect(job, n_tiles, tiles_x, tile_size, width, height)
            tw = x1 - x0
            k_max = start - 1
            for py in range(y0, y1):
                for px in range(x0, x1):
                    li = (py - y0) * tw + (px - x0)
                    tf = one - out_alpha[c, py, px]
                    trans[li] = tf
                    g0 = v_rgb[c, py, px, 0]
                    g1 = v_rgb[c, py, px, 1]
                    g2 = v_rgb[c, py, px, 2]
                    vr_r[li] = g0
                    vr_g[li] = g1
                    vr_b[li] = g2
                    vr_z[li] = v_depth[c, py, px]
                    buf_r[li] = zero
                    buf_g[li] = zero
                    buf_b[li] = zero
                    buf_z[li] = zero
                    bg_dot = background[c, 0] * g0 + background[c, 1] * g1 + background[c, 2] * g2
                    t_final_w[li] = tf * (v_alpha[c, py, px] - bg_dot)
                    lk = out_last[c, py, px]
                    last[li] = lk
                    k_max = max(k_max, lk)
            cc = 0 if shared_colors else c
            for k in range(k_max, start - 1, -1):
                g = ids[k]
                mx = means2d[c, g, 0]
                my = means2d[c, g, 1]
                jy0, jy1 = _row_range(y0, y1, my, radii[c, g, 1])
                ca = conics[c, g, 0]
                cb = conics[c, g, 1]
                ccn = conics[c, g, 2]
                op = opacities[g]
                s_cut = math.log(op) - log_alpha_min + 1e-4
                cr = colors[cc, g, 0]
                cg = colors[cc, g, 1]
                cbl = colors[cc, g, 2]
                z = depths[c, g]
                v_mx = zero
                v_my = zero
                v_ca = zero
                v_cb = zero
                v_cc = zero
                v_r = zero
                v_g = zero
                v_b = zero
                v_z = zero
                v_op = zero
                for py in range(jy0, jy1):
                    dy = my - pix_y[py]
                    jx0, jx1 = _col_span(x0, x1, mx, dy, ca, cb, ccn, s_cut)
                    base = (py - y0) * tw - x0
                    for px in range(jx0, jx1):
                        li = base + px
                        if k > last[li]:
                            continue
                        dx = mx - pix_x[px]
                        sigma = half * (ca * dx * dx + ccn * dy * dy) + cb * dx * dy
                        if sigma < zero:
                            continue
                        vis = dt.type(_exp_neg(sigma))
                        alpha = min(alpha_max, op * vis)
                        if alpha < alpha_min:
                            continue
                        ra = one / (one - alpha)
                        tp = trans[li] * ra
                        trans[li] = tp
                        fac = alpha * tp
                        g0 = vr_r[li]
                        g1 = vr_g[li]
                        g2 = vr_b[li]
                        g3 = vr_z[li]
                        v_r += fac * g0
                        v_g += fac * g1
                        v_b += fac * g2
                        v_z += fac * g3
                        v_a = (
                            (cr * tp - buf_r[li] * ra) * g0
                            + (cg * tp - buf_g[li] * ra) * g1
                            + (cbl * tp - buf_b[li] * ra) * g2
                            + (z * tp - buf_z[li] * ra) * g3
                            + t_final_w[li] * ra
                        )
                        if op * vis <= alpha_max:
                            v_sigma = -op * vis * v_a
                            v_ca += half * v_sigma * dx * dx
                            v_cb += v_sigma * dx * dy
                            v_cc += half * v_sigma * dy * dy
                            v_mx += v_sigma * (ca * dx + cb * dy)
                            v_my += v_sigma * (cb * dx + ccn * dy)
                            v_op += vis * v_a
                        buf_r[li] += cr * fac
                        buf_g[li] += cg * fac
                        buf_b[li] += cbl * fac
                        buf_z[li] += z * fac
                rec[k, 0] = v_mx
                rec[k, 1] = v_my
                rec[k, 2] = v_ca
                rec[k, 3] = v_cb
                rec[k, 4] = v_cc
                rec[k, 5] = v_r
                rec[k, 6] = v_g
                rec[k, 7] = v_b
                rec[k, 8] = v_z
                rec[k, 9] = v_op
    return rec


@numba.njit(cache=True, parallel=True)
def _reduce_records(rec, ids, offsets, n_cams, n, n_tiles):  # pragma: no cover - numba
    """Sum the intersection records of each (camera, Gaussian); cameras are independent, so no races."""
    out = np.zeros((n_cams, n, _NREC), rec.dtype)
    for c in prange(n_cams):
        for k in range(offsets[c * n_tiles], offsets[(c + 1) * n_tiles]):
            g = ids[k]
            for j in range(_NREC):
                out[c, g, j] += rec[k, j]
    return out


def _np(t: Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


class _RasterizeCPU(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        means2d: Tensor,
        conics: Tensor,
        colors: Tensor,
        opacities: Tensor,
        depths: Tensor,
        background: Tensor,
        radii: Tensor,
        width: int,
        height: int,
        offsets: np.ndarray,
        ids: np.ndarray,
    ) -> tuple[Tensor, Tensor, Tensor]:
        dtype = means2d.dtype
        npdt = np.float32 if dtype == torch.float32 else np.float64
        tiles_x = -(-width // TILE_SIZE)
        tiles_y = -(-height // TILE_SIZE)
        args = (
            _np(means2d),
            _np(conics),
            _np(colors),
            _np(opacities),
            _np(depths),
            _np(radii),
            _np(background),
        )
        consts = np.array(_CONSTS, npdt)
        pix_x = np.arange(width, dtype=npdt) + npdt(0.5)
        pix_y = np.arange(height, dtype=npdt) + npdt(0.5)
        job_order = np.argsort(-np.diff(offsets), kind="stable")
        grid = (width, height, tiles_x, tiles_y, TILE_SIZE, consts, pix_x, pix_y, job_order, numba.get_num_threads())
        rgb, alpha, acc_depth, last = _raster_fwd(*args, offsets, ids, *grid)
        ctx.saved = (args, offsets, ids, grid, alpha, last)
        # The numpy views in ``args`` share memory with these tensors; saving them through autograd makes an
        # in-place change between forward and backward (say an optimizer step) an error, not wrong gradients.
        ctx.save_for_backward(means2d, conics, colors, opacities, depths, background)
        alpha_t = torch.from_numpy(alpha)
        return torch.from_numpy(rgb), alpha_t[..., None], torch.from_numpy(acc_depth)[..., None]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, v_rgb: Tensor, v_alpha: Tensor, v_depth: Tensor) -> tuple[Tensor | None, ...]:
        ctx.saved_tensors  # noqa: B018 - raises if a saved input was modified in place
        args, offsets, ids, grid, alpha, last = ctx.saved
        n_cams, n = args[4].shape
        dtype = torch.float32 if args[0].dtype == np.float32 else torch.float64
        v_rgb_np = v_rgb.to(dtype).contiguous().numpy()
        v_alpha_np = v_alpha.to(dtype).contiguous().numpy()[..., 0]
        v_depth_np = v_depth.to(dtype).contiguous().numpy()[..., 0]
        rec = _raster_bwd(*args, offsets, ids, *grid, alpha, last, v_rgb_np, v_alpha_np, v_depth_np)
        tiles = grid[2] * grid[3]
        red = torch.from_numpy(_reduce_records(rec, ids, offsets, n_cams, n, tiles))
        v_means2d = red[..., 0:2]
        v_conics = red[..., 2:5]
        v_colors = red[..., 5:8]
        if args[2].shape[0] == 1:
            v_colors = v_colors.sum(0, keepdim=True)
        v_depths = red[..., 8]
        v_opac = red[..., 9].sum(0)
        v_bg = None
        if ctx.needs_input_grad[5]:
            t_final = torch.from_numpy(1.0 - alpha)[..., None]
            v_bg = (t_final * v_rgb.to(dtype)).sum((1, 2))
        return v_means2d, v_conics, v_colors, v_opac, v_depths, v_bg, None, None, None, None, None


def rasterize_projected_cpu(
    proj: ProjectedGaussians,
    colors: Tensor,
    opacities: Tensor,
    background: Tensor | None,
    width: int,
    height: int,
) -> tuple[Tensor, Tensor, Tensor, dict[str, Any]]:
    """Composite projected Gaussians: (rgb (C,H,W,3) over background, alpha (C,H,W,1), accumulated z (C,H,W,1)).

    ``colors`` is (1, N, 3) (shared by all views) or (C, N, 3); ``background`` (C, 3) or None (black).
    """
    n_cams = proj.means2d.shape[0]
    dtype = proj.means2d.dtype
    if background is None:
        background = torch.zeros(n_cams, 3, dtype=dtype)
    tiles_x = -(-width // TILE_SIZE)
    tiles_y = -(-height // TILE_SIZE)
    offsets, ids = _bin_tiles(_np(proj.means2d), _np(proj.radii), _np(proj.depths), tiles_x, tiles_y, TILE_SIZE)
    rgb, alpha, acc_depth = _RasterizeCPU.apply(
        proj.means2d, proj.conics, colors, opacities, proj.depths, background, proj.radii, width, height, offsets, ids
    )
    return rgb, alpha, acc_depth, {"n_isects": int(ids.shape[0])}
