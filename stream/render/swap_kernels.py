"""Numba kernels of the face swap's per-face work (``stream.render.swap``), each one pass over the face's box with no
full-box temporaries: the face's mask, the contour's alpha ramp, the light planes' least-squares sums, the tone and
light transfer in Lab, and the final blend of the pyramid's result.

Shapes: the face's box is (h, w); ``attr`` (h, w, C) float32 the rasterizer's interpolated attributes whose last two
channels are the region weight and the UV distance from the mesh's boundary; Lab images are float32 with L 0..100
(OpenCV's float Lab) unless said 8-bit (L * 255/100, a + 128, b + 128).
"""
from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True)
def face_mask(keep, ids, attr, id0, id1):
    """``keep[1 + i, 1 + j] = 1`` (uint8, (h + 2, w + 2), a zero border for the distance transform) where the pixel
    belongs to triangles [id0, id1) and its region weight is over 0.5; returns the number of such pixels."""
    h, w = ids.shape
    c = attr.shape[2] - 2
    n = 0
    for i in range(h):
        for j in range(w):
            t = ids[i, j]
            if t >= id0 and t < id1 and attr[i, j, c] > 0.5:
                keep[i + 1, j + 1] = 1
                n += 1
    return n


@nb.njit(cache=True, nogil=True)
def texel_map(attr, out):
    """The texel coordinates (u, v) of every pixel of the box, ``attr[..., :2]``, into ``out`` (h, w, 2) float32 (the
    contiguous map ``cv2.remap`` needs; numpy's copy of a two-channel slice of the frame-sized buffer costs ten
    times this loop)."""
    h, w = out.shape[:2]
    for i in range(h):
        for j in range(w):
            out[i, j, 0] = attr[i, j, 0]
            out[i, j, 1] = attr[i, j, 1]


@nb.njit(cache=True, nogil=True)
def contour_alpha(out, dist, keep, attr, offset, inv_feather, inv_edge):
    """The contour's alpha (h, w) float32 into ``out``: smoothstep(min(clip((dist - offset) * inv_feather),
    clip(edge * inv_edge))) where ``keep`` (both padded by one pixel, as :func:`face_mask`), else 0. ``inv_edge``
    0: no edge ramp (``attr`` has no edge distance)."""
    h, w = out.shape
    c = attr.shape[2] - 1
    for i in range(h):
        for j in range(w):
            if keep[i + 1, j + 1] == 0:
                out[i, j] = 0.0
                continue
            a = min(max((dist[i + 1, j + 1] - offset) * inv_feather, 0.0), 1.0)
            if inv_edge > 0.0:
                a = min(a, min(max(attr[i, j, c] * inv_edge, 0.0), 1.0))
            out[i, j] = a * a * (3.0 - 2.0 * a)


@nb.njit(cache=True, nogil=True)
def light_sums(tgt8, src_lab, contour, skin, step, cx, cy, sc, off, gain, base, keep):
    """Normal equations of two planes in x, y fitted on every ``step``-th pixel of ``skin`` (h, w) uint8: the
    target's L (from 8-bit Lab ``tgt8``) and the source's L after the tone transfer (:func:`tone_light`'s, with
    channel 0 of off, gain, base, keep (3,)). Returns (A^T A (3, 3), A^T v (3, 2), the sums of v (2,),
    count), rows of A = (1, (x - cx) sc, (y - cy) sc)."""
    ata = np.zeros((3, 3))
    atv = np.zeros((3, 2))
    sv = np.zeros(2)
    n = 0
    h, w = skin.shape
    for i in range(0, h, step):
        gy = (i - cy) * sc
        for j in range(0, w, step):
            if skin[i, j] == 0:
                continue
            gx = (j - cx) * sc
            lt = tgt8[i, j, 0] * (100.0 / 255.0)
            c = contour[i, j]
            ls = (src_lab[i, j, 0] - off[0]) * gain[0] + base[0] - c * c * keep[0]
            r = (1.0, gx, gy)
            for a in range(3):
                for b in range(3):
                    ata[a, b] += r[a] * r[b]
                atv[a, 0] += r[a] * lt
                atv[a, 1] += r[a] * ls
            sv[0] += lt
            sv[1] += ls
            n += 1
    return ata, atv, sv, n


@nb.njit(cache=True, nogil=True)
def tone_light(lab, contour, off, gain, base, keep, planes, cx, cy, sc, lo, rmin, rmax):
    """In place on the source's Lab (h, w, 3): per channel ``(v - off) gain + base - contour^2 keep`` (the tone
    transfer: ``base`` the target's mean, ``keep`` the share of the source's own tone kept inside the face, none at
    the contour), then L times the target's light over the source's: the planes (3, 2) (columns target, source,
    each over its mean) at ((x - cx) sc, (y - cy) sc), each at least ``lo``, their ratio clipped to [rmin, rmax]
    (``planes`` None-like: a (0, 2) array, no relighting)."""
    h, w = contour.shape
    relight = planes.shape[0] == 3
    for i in range(h):
        gy = (i - cy) * sc
        for j in range(w):
            c = contour[i, j]
            c2 = c * c
            for k in range(3):
                lab[i, j, k] = (lab[i, j, k] - off[k]) * gain[k] + base[k] - c2 * keep[k]
            if relight:
                gx = (j - cx) * sc
                pt = max(planes[0, 0] + planes[1, 0] * gx + planes[2, 0] * gy, lo)
                ps = max(planes[0, 1] + planes[1, 1] * gx + planes[2, 1] * gy, lo)
                lab[i, j, 0] *= min(max(pt / ps, rmin), rmax)


@nb.njit(cache=True, nogil=True)
def add_laplacian(out, level, up, weight):
    """One level of a Laplacian-pyramid blend, in place: ``out += (level - up) * weight`` (out, level, up (h, w, 3)
    float32, weight (h, w) float32): the level's Laplacian (the level less the next coarser one brought up) under
    the blend's weight, without numpy's broadcast temporaries (the same float32 operations, the same values)."""
    h, w = weight.shape
    for i in range(h):
        for j in range(w):
            m = weight[i, j]
            for k in range(3):
                out[i, j, k] += (level[i, j, k] - up[i, j, k]) * m


@nb.njit(cache=True, nogil=True)
def add_masked_smooth(out, base, delta, alpha, y0, x0):
    """``out[y0 + i, x0 + j] = base + delta * smoothstep(alpha)`` (uint8, rounded) where alpha > 0; elsewhere out is
    untouched. base (h, w, 3) uint8 (the frame's box), delta (h, w, 3) float32, alpha (h, w) float32."""
    for i in range(alpha.shape[0]):
        for j in range(alpha.shape[1]):
            a = alpha[i, j]
            if a <= 0.0:
                continue
            s = a * a * (3.0 - 2.0 * a)
            for c in range(3):
                v = base[i, j, c] + delta[i, j, c] * s
                out[y0 + i, x0 + j, c] = 0 if v <= 0.0 else (255 if v >= 255.0 else int(v + 0.5))


@nb.njit(cache=True, nogil=True)
def add_offsets(out, index, weight, d, r, scale):
    """``out[index[k]] += weight[k] * scale * (r @ d[k])`` for vertices (V, 3) float32: model-space offsets d (K, 3)
    rotated by r (3, 3) and scaled per axis by ``scale`` (3,) (``swap_shape.ShapeSwap.apply``)."""
    for k in range(index.shape[0]):
        x = d[k, 0]
        y = d[k, 1]
        z = d[k, 2]
        wk = weight[k]
        j = index[k]
        for c in range(3):
            out[j, c] += (r[c, 0] * x + r[c, 1] * y + r[c, 2] * z) * scale[c] * wk


@nb.njit(cache=True, nogil=True)
def forehead_sums(fade, num, den, src_lab, tgt8, attr, skin, inv_tone, row_scale, r0, r1):
    """The forehead's local tone (``swap._forehead_tone``), first pass: per pixel the weight ``fade`` (h, w) float32
    (1 at the mesh's top edge, a smoothstep to 0 at 1 / ``inv_tone`` UV units inside it, times a smoothstep over the
    texture rows r1 -> r0: ``attr`` channel 1 times ``row_scale`` is the row 0..1, its last channel the UV distance
    from the mesh's boundary); and over the ``skin`` (h, w) uint8, per 4x4 block, the sums of fade x (target -
    source) Lab into ``num`` (ceil(h / 4), ceil(w / 4), 3) and of fade into ``den`` (both zeroed by the caller).
    ``tgt8`` is 8-bit Lab, ``src_lab`` float Lab. Returns whether any weight is over 0."""
    h, w = fade.shape
    c = attr.shape[2] - 1
    inv_rows = 1.0 / (r1 - r0)
    found = False
    for i in range(h):
        for j in range(w):
            t = min(max((r1 - attr[i, j, 1] * row_scale) * inv_rows, 0.0), 1.0)
            a = min(max(attr[i, j, c] * inv_tone, 0.0), 1.0)
            f = (1.0 - a * a * (3.0 - 2.0 * a)) * (t * t * (3.0 - 2.0 * t))
            fade[i, j] = f
            if f > 0.0:
                found = True
                if skin[i, j] != 0:
                    bi, bj = i // 4, j // 4
                    num[bi, bj, 0] += f * (tgt8[i, j, 0] * (100.0 / 255.0) - src_lab[i, j, 0])
                    num[bi, bj, 1] += f * (tgt8[i, j, 1] - 128.0 - src_lab[i, j, 1])
                    num[bi, bj, 2] += f * (tgt8[i, j, 2] - 128.0 - src_lab[i, j, 2])
                    den[bi, bj] += f
    return found


@nb.njit(cache=True, nogil=True)
def add_field(lab, fade, low):
    """The forehead's local tone, second pass: ``lab += low * fade`` where fade (h, w) > 0, ``low`` (ceil(h / 4),
    ceil(w / 4), 3) sampled bilinearly at the pixel's centre (block centres at 4 k + 1.5)."""
    h, w = fade.shape
    hs, ws = low.shape[0], low.shape[1]
    for i in range(h):
        y = min(max((i - 1.5) * 0.25, 0.0), hs - 1.0)
        y0 = min(int(y), hs - 1)
        y1 = min(y0 + 1, hs - 1)
        fy = y - y0
        for j in range(w):
            f = fade[i, j]
            if f <= 0.0:
                continue
            x = min(max((j - 1.5) * 0.25, 0.0), ws - 1.0)
            x0 = min(int(x), ws - 1)
            x1 = min(x0 + 1, ws - 1)
            fx = x - x0
            for k in range(3):
                v = (low[y0, x0, k] * (1 - fx) + low[y0, x1, k] * fx) * (1 - fy) + \
                    (low[y1, x0, k] * (1 - fx) + low[y1, x1, k] * fx) * fy
                lab[i, j, k] += v * f


@nb.njit(cache=True, nogil=True)
def lay_eye(out, frame, y0, y1, x0, x1, ox, oy, a, d, n, centre, half, back, full, reach):
    """Carry a target's eye into a shown eye, in place: for each pixel (x, y) of ``out[y0:y1, x0:x1]`` (uint8 BGR)
    whose distance past the shown eye's opening is under ``reach`` px, the ``frame``'s pixel (uint8 BGR, whole,
    bilinear, edges replicated) at ``back`` (2, 3) @ (x - ox, y - oy, 1) + (ox, oy), mixed in with a smoothstep
    weight of 1 within ``full`` px of the opening falling to 0 at ``reach``. The shown eye's band: corner a (2,),
    axis d (2,), normal n (2,), centre and half height (13,) of the opening at s = 0..1 (``texture._eye_band``); the
    distance past it is max(e, -s, s - 1) x its width (``texture.eye_coordinates``). ``out``'s pixel (x, y) is at
    (x - ox, y - oy) in the coordinates of ``a`` and ``back``'s input."""
    width = np.sqrt(max(d[0] * d[0] + d[1] * d[1], 1e-9))
    inv_w2 = 1.0 / (width * width)
    g = centre.shape[0] - 1
    fh = frame.shape[0]
    fw = frame.shape[1]
    span = max(reach - full, 1e-6)
    for y in range(y0, y1):
        for x in range(x0, x1):
            px = x - ox - a[0]
            py = y - oy - a[1]
            s = (px * d[0] + py * d[1]) * inv_w2
            u = min(max(s, 0.0), 1.0) * g
            i = min(int(u), g - 1)
            f = u - i
            c = centre[i] * (1.0 - f) + centre[i + 1] * f
            hh = max(half[i] * (1.0 - f) + half[i + 1] * f, 1e-3 * width)
            t = (px * n[0] + py * n[1] - c) / hh
            e = max(abs(t) - 1.0, 0.0) * hh / width
            past = max(max(e, -s), s - 1.0) * width
            if past >= reach:
                continue
            r = min(max((reach - past) / span, 0.0), 1.0)
            wgt = r * r * (3.0 - 2.0 * r)
            lx = x - ox
            ly = y - oy
            sx = back[0, 0] * lx + back[0, 1] * ly + back[0, 2] + ox
            sy = back[1, 0] * lx + back[1, 1] * ly + back[1, 2] + oy
            sx = min(max(sx, 0.0), fw - 1.0)
            sy = min(max(sy, 0.0), fh - 1.0)
            ix = min(int(sx), fw - 2) if fw > 1 else 0
            iy = min(int(sy), fh - 2) if fh > 1 else 0
            fx = sx - ix
            fy = sy - iy
            ix1 = min(ix + 1, fw - 1)
            iy1 = min(iy + 1, fh - 1)
            for k in range(3):
                v = ((frame[iy, ix, k] * (1.0 - fx) + frame[iy, ix1, k] * fx) * (1.0 - fy)
                     + (frame[iy1, ix, k] * (1.0 - fx) + frame[iy1, ix1, k] * fx) * fy)
                m = wgt * v + (1.0 - wgt) * out[y, x, k]
                out[y, x, k] = np.uint8(min(max(m + 0.5, 0.0), 255.0))


@nb.njit(cache=True, nogil=True)
def _polygon_ramp(r, poly, y0, x0, feather):
    """One polygon's ramp into ``r`` (h, w) float64, the box whose pixel (0, 0) is (x0, y0): 0 inside the closed
    polygon (K, 2) px (even-odd rule, pixel centres at integer x, y), min(distance / feather, 1) outside it. The
    distance is splatted segment by segment over each one's box grown by ``feather`` (beyond it the ramp is 1), so
    a pixel costs the segments near it, not all of them."""
    h, w = r.shape
    k = poly.shape[0]
    cap = (feather * 1.001) ** 2  # capped squared distance: a pixel no segment reaches has ramp 1
    for i in range(h):
        for j in range(w):
            r[i, j] = cap
    for s in range(k):
        ax = poly[s, 0]
        ay = poly[s, 1]
        bx = poly[(s + 1) % k, 0] - ax
        by = poly[(s + 1) % k, 1] - ay
        ll = bx * bx + by * by
        inv = 1.0 / ll if ll > 1e-12 else 0.0
        i0 = max(int(np.floor(min(ay, ay + by) - feather)) - y0, 0)
        i1 = min(int(np.ceil(max(ay, ay + by) + feather)) + 1 - y0, h)
        j0 = max(int(np.floor(min(ax, ax + bx) - feather)) - x0, 0)
        j1 = min(int(np.ceil(max(ax, ax + bx) + feather)) + 1 - x0, w)
        for i in range(i0, i1):
            py = i + y0 - ay
            for j in range(j0, j1):
                px = j + x0 - ax
                t = min(max((px * bx + py * by) * inv, 0.0), 1.0)
                dx = px - t * bx
                dy = py - t * by
                d = dx * dx + dy * dy
                if d < r[i, j]:
                    r[i, j] = d
    inv_f = 1.0 / feather
    xs = np.empty(k)
    for i in range(h):
        y = i + y0
        m = 0
        for s in range(k):  # where the row crosses the polygon's edges
            ay = poly[s, 1]
            by = poly[(s + 1) % k, 1] - ay
            if (ay > y) != (ay + by > y):
                xs[m] = poly[s, 0] + (y - ay) * ((poly[(s + 1) % k, 0] - poly[s, 0]) / by)
                m += 1
        xs[:m].sort()
        c = 0  # crossings at or left of x: inside where those right of it are odd
        for j in range(w):
            x = j + x0
            while c < m and xs[c] <= x:
                c += 1
            if (m - c) % 2 == 1:
                r[i, j] = 0.0
            else:
                r[i, j] = min(np.sqrt(r[i, j]) * inv_f, 1.0)


@nb.njit(cache=True, nogil=True)
def hole_ramp(alpha, poly, clip, feather):
    """``alpha`` (h, w) float32 ``*=`` a hole's ramp, in place: a smoothstep of the distance from the polygon (K, 2)
    px over ``feather`` px, 0 inside it (the target shows exactly), 1 from ``feather`` on; with a ``clip`` polygon
    (M, 2) (M >= 3; else (0, 2)) the hole is where both overlap: the larger of the two ramps. Only the polygon's box
    grown by the feather and a pixel is touched."""
    h, w = alpha.shape
    if poly.shape[0] < 3:
        return
    y0 = max(int(np.floor(poly[:, 1].min() - feather - 1.0)), 0)
    y1 = min(int(np.ceil(poly[:, 1].max() + feather + 1.0)) + 1, h)
    x0 = max(int(np.floor(poly[:, 0].min() - feather - 1.0)), 0)
    x1 = min(int(np.ceil(poly[:, 0].max() + feather + 1.0)) + 1, w)
    if y0 >= y1 or x0 >= x1:
        return
    r = np.empty((y1 - y0, x1 - x0))
    _polygon_ramp(r, poly, y0, x0, feather)
    if clip.shape[0] >= 3:
        rc = np.empty((y1 - y0, x1 - x0))
        _polygon_ramp(rc, clip, y0, x0, feather)
        for i in range(y1 - y0):
            for j in range(x1 - x0):
                r[i, j] = max(r[i, j], rc[i, j])
    for i in range(y1 - y0):
        for j in range(x1 - x0):
            v = r[i, j]
            alpha[y0 + i, x0 + j] *= v * v * (3.0 - 2.0 * v)
