"""Spatial Monte Carlo null: is a cluster's contrast extreme for its own scene?

The F-test of the dispersion step compares a cluster's contrast with a noise model; that model
(white noise in time, a MAD scale) was calibrated on our simulator. Here the null is the scene
itself: the same contrast statistic computed on the cluster's footprint translated to many
random places of the same scene. Whatever the scene's noise is (turbulent or stratified
troposphere, residual orbits, seasonal background, a pixel density that varies), a placement
sees it at the footprint's size and shape, and a cluster is extreme only against it.

Statistic
  basis     Q (T x k): cosines cos(pi j (t - t0) / span), j = 1..k, orthonormalised against the
            constant (QR), with k = round(2 span / MIN_PERIOD_YR) clipped to [MIN_K, MAX_K]: every
            smooth signal of period >= MIN_PERIOD_YR (trend, acceleration, annual term, decays,
            pulses and steps of a few months) and no white-noise detail. k is 10 for 4 years.
            Projecting once per pixel (coef = series @ Q, N x k float32) makes a footprint's
            contrast a gather and a mean, so that thousands of placements cost no stack read:
            the projection is linear, so the projection of (mean - ring plane) is the mean of
            the projections minus the plane fitted to the ring's projections.
  contrast  v = mean of coef over the footprint - plane a + b x + c y fitted (least squares) to
            the coef of the ring around the footprint's centroid, evaluated at the centroid
            (the dispersion step's ring background, r_in = 2 S_d + spacing, r_out = r_in +
            max(correlation length, 3 spacings); here a square annulus, see "ring").
  distance  d = (v - m)' S^-1 (v - m), m and S the location and covariance of the null
            contrasts: the scene's own variability in each of the k directions (the trend of a
            footprint varies more than its annual term under a red troposphere), so no direction
            is weighted by a number fitted elsewhere. m and S are robust (robust_moments: draws
            beyond the 97.5 % chi2(k) ellipsoid dropped, three times, covariance corrected for
            the truncation): a placement that lands on another hotspot or an unwrapping-error
            patch must not widen the null of the others.
Null
  placements  the footprint (at most MAX_FOOTPRINT of its pixels, a seeded subsample) is moved
            by the vector from its anchor pixel (nearest its centroid) to a random measured
            pixel: exact pixel-to-pixel moves on a grid (row / col), the nearest measured point
            within 0.75 spacing for scattered points (the spacing of the points spread evenly
            over the area they cover where that is larger: scatterers crowd along buildings).
            A placement is kept when >= MIN_MEASURED of the footprint lands on measured pixels
            (its mean is then noisier than the cluster's: conservative), none of them a pixel
            of the cluster itself, and its ring has >= MIN_RING_PIXEL pixels; M = NUM_NULL
            (199) placements, MIN_MEASURED = 1/2.
  ring      a square annulus of half-widths r_in .. r_out on a raster of at most MAX_CELLS cells
            (summed-area tables of the plane-fit moments: a placement's ring costs four look-ups
            whatever its size), the footprint's own pixels taken out.
  p-value   pValueSpatial: the Gaussian tail of d, the prediction ellipse of a k-variate normal
            from M draws, d M (M - k) / ((M + 1)(M - 1) k) ~ F(k, M - k): the footprint's mean
            of many pixels is close to normal (central limit), its covariance is the scene's.
            pValueSpatialMC = (1 + #{d_null >= d}) / (1 + M) is kept for information: it
            cannot go below 1 / (M + 1) = 0.005, while Benjamini-Hochberg over hundreds of
            candidates needs p < 1e-4, and it counts the placements on other hotspots as noise
            (medium hard seed 0: the ten true hotspots at 0.002 - 0.024 with 999 placements,
            six discoveries among 508 candidates; docs/quality.md). Fewer than MIN_NULL kept
            placements (a footprint as large as the scene): p = NaN (untestable).
  FDR       q-values of Benjamini-Hochberg (scipy.stats.false_discovery_control) over the family
            of candidates; a candidate is a discovery when q <= the false-discovery rate.

Selection: the candidates are clusters of pixels that k-means found similar, which a random
footprint is not; noise selected that way looks more coherent than a random placement of the
same footprint, so the p-values of noise clusters are liberal (medium hard seed 0: 11 % of
the background candidates at p <= 0.05, 2.9 % at p <= 0.001); the amplitude peak gate of the
dispersion step stays for that reason (docs/quality.md).

Cost: no stack read of its own: the projection (StackProjection) is fed the blocks of the
dispersion step's first pass over the stack and projects each as it comes. In memory: the
N x k float32 coefficients (120 MB at 3 M pixels x k = 10) and, during that pass, the float64
temporaries of one of its blocks, freed before the pass makes its own (nothing beyond the
pass's maxMemory); the summed-area tables ((6 + 3k) x MAX_CELLS float64, 290 MB); per
candidate M gathers of its footprint (at most MAX_FOOTPRINT pixels): medium scene (76 k
pixels, 508 candidates) 25 s.
"""
import time

import numpy as np
from scipy import stats
from scipy.spatial import cKDTree

from hotspot.utils.h5io import open_h5, require_dataset
from hotspot.utils.stack import block_size, decimal_years, iter_blocks, read_info

MIN_PERIOD_YR = 0.8
MIN_K = 3
MAX_K = 16
NUM_NULL = 199
TRIM_QUANTILE = 0.975
MIN_NULL = 19
MIN_MEASURED = 0.5
MIN_RING_PIXEL = 10
MAX_FOOTPRINT = 2000
MAX_CELLS = 1_000_000
POINT_MATCH_SPACING = 0.75
MAX_ATTEMPT_FACTOR = 20


# ---------------------------------------------------------------------------- basis
def temporal_basis(years, min_period=MIN_PERIOD_YR, min_k=MIN_K, max_k=MAX_K):
    """Orthonormal T x k smooth basis without the constant (module docstring)."""
    t = np.asarray(years, dtype=np.float64)
    span = float(t.max() - t.min()) if t.size else 0.0
    k = int(np.clip(round(2.0 * span / min_period), min_k, max_k))
    k = max(1, min(k, t.size - 2))
    phase = (t - t.min()) / span if span > 0 else np.linspace(0.0, 1.0, t.size)
    cols = [np.ones_like(t)] + [np.cos(np.pi * j * phase) for j in range(1, k + 1)]
    q, r = np.linalg.qr(np.stack(cols, axis=1))
    keep = np.abs(np.diag(r)) > 1e-8 * np.abs(r[0, 0])
    keep[0] = False                       # the constant: a reference offset, no signal
    return q[:, keep]


def project(series, basis):
    """Coefficients (N x k float64) of each row on the basis; NaN epochs filled with the row's
    mean (orthogonal to the basis), all-NaN rows give NaN. Temporaries: one float64 copy of
    the rows and their NaN mask (the caller's rows are not modified)."""
    series = np.atleast_2d(np.asarray(series))
    nan = np.isnan(series)
    if not nan.any():
        return series.astype(np.float64, copy=False) @ basis
    filled = series.astype(np.float64)
    # filled in place: np.nanmean and np.where would each make another float64 copy
    np.copyto(filled, 0.0, where=nan)
    count = series.shape[1] - nan.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        fill = filled.sum(axis=1) / count
    np.copyto(filled, fill[:, None], where=nan)
    out = filled @ basis
    out[count == 0] = np.nan
    return out


class StackProjection:
    """Per-pixel coefficients (N x k float32) of a stack fed block by block: a consumer of the
    dispersion step's pass over the stack (hotspot.steps.dispersion_ring._timeseries_pass), so
    that the projection costs no read of its own.

    Each block is projected as it arrives (project, float64, stored as float32): no buffer, no
    memory beyond coef and the temporaries of one of the reader's blocks. The float64 product
    of a row with the basis may differ in the last bit with the number of rows multiplied at
    once (OpenBLAS takes other kernels for small matrices), so the coefficients depend on the
    reader's block size within float32 rounding (one unit in the last place of a few)."""

    def __init__(self, num_pixel, basis):
        self.basis = basis
        self.num_pixel = int(num_pixel)
        self.coef = np.empty((self.num_pixel, basis.shape[1]), dtype=np.float32)
        self.seconds = 0.0
        self._next = 0          # first row of the next block expected

    def __call__(self, start, stop, block):
        if start != self._next or not start <= stop <= self.num_pixel:
            raise ValueError(f"spatial-null projection: block {start}-{stop} out of order; "
                             f"expected rows from {self._next} of {self.num_pixel}")
        t0 = time.perf_counter()
        self.coef[start:stop] = project(block, self.basis)
        self._next = stop
        self.seconds += time.perf_counter() - t0

    def result(self):
        """The coefficients, once every row was fed."""
        if self._next != self.num_pixel:
            raise ValueError(f"spatial-null projection: rows {self._next}.. of "
                             f"{self.num_pixel} were never fed")
        return self.coef


def project_stack(stack_file, basis, max_memory, name="displacement"):
    """Per-pixel coefficients (N x k float32) of the stack's displacement, StackProjection fed
    by a read of its own (blocks of maxMemory with three float64 copies)."""
    with open_h5(stack_file) as f:
        dset = require_dataset(f, name, stack_file)
        n, t = dset.shape
        proj = StackProjection(n, basis)
        for start, stop in iter_blocks(n, block_size(t, max_memory, bytes_per_value=8,
                                                     copies=3)):
            proj(start, stop, dset[start:stop])
    return proj.result()


# ---------------------------------------------------------------------------- scene index
def scene_index(x, y, coef, spacing, row=None, col=None, max_cells=MAX_CELLS):
    """What placements need, built once per scene (module docstring): the measured pixels'
    positions, a (row, col) lookup or a KD-tree for the moves, and summed-area tables of the
    ring-plane moments on a raster of cells. coef: N x k, NaN rows for unmeasured pixels."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.all(np.isfinite(coef), axis=1) & np.isfinite(x) & np.isfinite(y)
    midx = np.nonzero(ok)[0]
    index = {"x": x, "y": y, "measured_idx": midx, "measured": ok, "spacing": float(spacing)}
    if row is not None and col is not None and midx.size:
        row = np.asarray(row, dtype=np.int64)
        col = np.asarray(col, dtype=np.int64)
        if row[midx].min() >= 0 and col[midx].min() >= 0:
            lookup = np.full((row[midx].max() + 1, col[midx].max() + 1), -1, dtype=np.int64)
            lookup[row[midx], col[midx]] = midx
            index.update(row=row, col=col, lookup=lookup)
    if "lookup" not in index and midx.size:
        index["tree"] = cKDTree(np.c_[x[midx], y[midx]])
        index["match_radius"] = POINT_MATCH_SPACING * max(float(spacing),
                                                          _even_spacing(x[midx], y[midx]))
    if not midx.size:
        return index
    x0, y0 = x[midx].min(), y[midx].min()
    extent = max(x[midx].max() - x0, y[midx].max() - y0, spacing)
    cell = max(float(spacing), extent / np.sqrt(max_cells))
    shape = (int((y[midx].max() - y0) // cell) + 1, int((x[midx].max() - x0) // cell) + 1)
    ci = ((y[midx] - y0) // cell).astype(np.int64)
    cj = ((x[midx] - x0) // cell).astype(np.int64)
    flat = ci * shape[1] + cj
    xm, ym = x[midx], y[midx]
    k = coef.shape[1]
    sat = np.zeros((6 + 3 * k, shape[0] + 1, shape[1] + 1))
    # channel by channel (_channels' order): no N x (6 + 3k) array in memory
    base = [None, xm, ym, xm * xm, xm * ym, ym * ym]
    for ch in range(6 + 3 * k):
        if ch < 6:
            weight = base[ch]
        else:
            v = coef[midx, (ch - 6) % k].astype(np.float64)
            weight = v if ch < 6 + k else (xm * v if ch < 6 + 2 * k else ym * v)
        grid = np.bincount(flat, weight, shape[0] * shape[1]).reshape(shape)
        np.cumsum(grid, axis=0, out=grid)
        np.cumsum(grid, axis=1, out=sat[ch, 1:, 1:])
    index.update(origin=(x0, y0), cell=cell, shape=shape, sat=sat)
    return index


def _even_spacing(x, y):
    """Spacing of the points spread evenly over the area they cover (occupied cells of 4x the
    bounding box's even spacing): persistent scatterers crowd along buildings (3 m median
    spacing on the EGMS burst), and a footprint moved off them must still find its points."""
    n = x.size
    box = max(float(np.ptp(x)) * float(np.ptp(y)), 1e-12)
    cell = 4.0 * np.sqrt(box / n)
    occupied = np.unique(np.c_[np.floor(x / cell), np.floor(y / cell)], axis=0).shape[0]
    return float(np.sqrt(occupied * cell * cell / n))


def _channels(x, y, values):
    """Per-pixel moments 1, x, y, xx, xy, yy, v, x v, y v (v: k columns) of the ring plane."""
    values = np.asarray(values, dtype=np.float64)
    return np.concatenate([np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=1),
                           values, x[:, None] * values, y[:, None] * values], axis=1)


def _cell_of(index, x, y):
    x0, y0 = index["origin"]
    return (np.floor((y - y0) / index["cell"]).astype(np.int64),
            np.floor((x - x0) / index["cell"]).astype(np.int64))


def _box_bounds(index, cx, cy, half):
    """Cell bounds [i0, i1) x [j0, j1) of the square of half-width `half` about each centre."""
    ci0, cj0 = _cell_of(index, cx - half, cy - half)
    ci1, cj1 = _cell_of(index, cx + half, cy + half)
    ni, nj = index["shape"]
    return (np.clip(ci0, 0, ni), np.clip(ci1 + 1, 0, ni),
            np.clip(cj0, 0, nj), np.clip(cj1 + 1, 0, nj))


def _box_sum(sat, bounds):
    i0, i1, j0, j1 = bounds
    return (sat[:, i1, j1] - sat[:, i0, j1] - sat[:, i1, j0] + sat[:, i0, j0]).T


def _ring_planes(index, coef, cx, cy, r_in, r_out, moved, valid):
    """Ring plane at each centre (B x k; NaN rows: ring too thin). The ring is the square
    annulus of half-widths r_in .. r_out on the cell raster; the footprint's own pixels in it
    (moved[valid]) are taken out."""
    outer = _box_bounds(index, cx, cy, r_out)
    inner = _box_bounds(index, cx, cy, r_in)
    mom = _box_sum(index["sat"], outer) - _box_sum(index["sat"], inner)
    # footprint pixels whose cell is in the annulus leave the ring
    ci, cj = _cell_of(index, index["x"][moved], index["y"][moved])
    rows = np.arange(moved.shape[0])[:, None]
    in_outer = ((ci >= outer[0][rows]) & (ci < outer[1][rows]) & (cj >= outer[2][rows])
                & (cj < outer[3][rows]))
    in_inner = ((ci >= inner[0][rows]) & (ci < inner[1][rows]) & (cj >= inner[2][rows])
                & (cj < inner[3][rows]))
    b, f = np.nonzero(valid & in_outer & ~in_inner)
    if b.size:
        pix = moved[b, f]
        np.subtract.at(mom, b, _channels(index["x"][pix], index["y"][pix], coef[pix]))
    k = coef.shape[1]
    n, sx, sy, sxx, sxy, syy = mom[:, :6].T
    sv, sxv, syv = mom[:, 6:6 + k], mom[:, 6 + k:6 + 2 * k], mom[:, 6 + 2 * k:]
    # moments about the centre
    dx = sx - cx * n
    dy = sy - cy * n
    gram = np.empty((cx.size, 3, 3))
    gram[:, 0, 0] = n
    gram[:, 0, 1] = gram[:, 1, 0] = dx
    gram[:, 0, 2] = gram[:, 2, 0] = dy
    gram[:, 1, 1] = sxx - 2 * cx * sx + cx * cx * n
    gram[:, 1, 2] = gram[:, 2, 1] = sxy - cx * sy - cy * sx + cx * cy * n
    gram[:, 2, 2] = syy - 2 * cy * sy + cy * cy * n
    rhs = np.stack([sv, sxv - cx[:, None] * sv, syv - cy[:, None] * sv], axis=1)
    out = np.full((cx.size, k), np.nan)
    enough = n >= MIN_RING_PIXEL - 0.5
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sv / n[:, None]
        cond = np.full(cx.size, np.inf)
        if enough.any():
            cond[enough] = np.linalg.cond(gram[enough])
    plane = enough & (cond < 1e8)
    if plane.any():
        out[plane] = np.linalg.solve(gram[plane], rhs[plane])[:, 0]
    flat = enough & ~plane
    out[flat] = mean[flat]
    return out


def _moves(index, foot, targets):
    """Pixel indices (len(targets) x len(foot), -1 where unmeasured) of the footprint `foot`
    moved so that its anchor (first pixel) lands on each target pixel."""
    if "lookup" in index:
        dr = index["row"][targets] - index["row"][foot[0]]
        dc = index["col"][targets] - index["col"][foot[0]]
        r = index["row"][foot][None, :] + dr[:, None]
        c = index["col"][foot][None, :] + dc[:, None]
        shape = index["lookup"].shape
        inside = (r >= 0) & (r < shape[0]) & (c >= 0) & (c < shape[1])
        out = np.full(r.shape, -1, dtype=np.int64)
        out[inside] = index["lookup"][r[inside], c[inside]]
        return out
    x, y = index["x"], index["y"]
    dx = x[targets] - x[foot[0]]
    dy = y[targets] - y[foot[0]]
    pts = np.stack([x[foot][None, :] + dx[:, None], y[foot][None, :] + dy[:, None]], axis=-1)
    dist, near = index["tree"].query(pts.reshape(-1, 2),
                                     distance_upper_bound=index["match_radius"])
    out = np.where(np.isfinite(dist), index["measured_idx"][np.minimum(
        near, index["measured_idx"].size - 1)], -1)
    return out.reshape(targets.size, foot.size)


def placement_contrasts(index, coef, moved, valid, r_in, r_out):
    """Contrast coefficients (B x k) of footprints `moved` (B x n pixel indices, valid mask):
    mean over the valid pixels minus the ring plane at their centroid; NaN rows without ring."""
    w = valid.astype(np.float64)
    num = w.sum(axis=1)
    safe = np.where(valid, moved, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (w * index["x"][safe]).sum(axis=1) / num
        cy = (w * index["y"][safe]).sum(axis=1) / num
        # invalid entries point at pixel 0, which may be unmeasured (NaN): zeroed, not weighted
        values = np.where(valid[..., None], coef[safe], 0.0)
        mean = np.einsum("bn,bnk->bk", w, values) / num[:, None]
    return mean - _ring_planes(index, coef, cx, cy, r_in, r_out, safe, valid)


def footprint_contrast(index, coef, pixels, r_in, r_out):
    """Contrast coefficients (k,) of one footprint, NaN without a ring (module docstring)."""
    pixels = np.asarray(pixels, dtype=np.int64)[None, :]
    return placement_contrasts(index, coef, pixels, index["measured"][pixels], r_in, r_out)[0]


# ---------------------------------------------------------------------------- p-values
def robust_moments(draws, keep=TRIM_QUANTILE, iterations=3):
    """Location and covariance of the draws (M x k) without outliers: draws beyond the keep
    quantile of chi2(k) are dropped and the moments recomputed (three times), the covariance
    corrected for the truncation of a normal at that ellipsoid (x q / F_chi2(k+2)(c_q)).
    A placement that lands on another hotspot or an unwrapping-error patch is such an outlier:
    it must not widen the null of the others."""
    draws = np.asarray(draws, dtype=np.float64)
    m, k = draws.shape
    cut = stats.chi2.ppf(keep, k)
    factor = keep / stats.chi2.cdf(cut, k + 2)
    use = np.ones(m, dtype=bool)
    for _ in range(iterations):
        mean = draws[use].mean(axis=0)
        dev = draws[use] - mean
        cov = dev.T @ dev / max(use.sum() - 1, 1)
        if use.sum() < m:
            cov = cov * factor
        prec = np.linalg.pinv(cov)
        diff = draws - mean
        dist = np.einsum("ij,jk,ik->i", diff, prec, diff)
        new = dist <= cut
        if new.sum() <= k + 1 or np.array_equal(new, use):
            break
        use = new
    return mean, cov


def null_pvalue(observed, draws, num_effective=None, moments=None):
    """(p, p_mc, distance, exceedances) of the observed contrast (k,) against null draws
    (M x k): robust location and covariance of the draws (robust_moments), the observation's
    Mahalanobis distance to them, its Gaussian tail (the prediction ellipse, F(k, m - k) with
    m = min(M, num_effective), the independent draws) and, for information, the Monte Carlo
    p-value against the draws' own distances (module docstring). moments: (mean, cov) of
    robust_moments(draws) when the caller has them already."""
    draws = np.asarray(draws, dtype=np.float64)
    observed = np.asarray(observed, dtype=np.float64)
    num_draw, k = draws.shape
    m = num_draw if num_effective is None else max(1, min(num_draw, int(num_effective)))
    mean, cov = robust_moments(draws) if moments is None else moments
    prec = np.linalg.pinv(cov)
    p, dist = prediction_pvalue(observed, mean, cov, m, prec)
    null = np.einsum("ij,jk,ik->i", draws - mean, prec, draws - mean)
    exceed = int(np.sum(null >= dist))
    p_mc = (1.0 + exceed) / (1.0 + num_draw)
    return p, p_mc, dist, exceed


def prediction_pvalue(observed, mean, cov, m, prec=None):
    """(p, distance): Mahalanobis distance of observed (k,) to the null's robust location and
    covariance and its Gaussian tail, the prediction ellipse F(k, m - k) of m independent
    draws (NaN when m <= k)."""
    k = np.size(observed)
    prec = np.linalg.pinv(cov) if prec is None else prec
    diff = np.asarray(observed, dtype=np.float64) - mean
    dist = float(diff @ prec @ diff)
    f = dist * m * (m - k) / ((m + 1.0) * (m - 1.0) * k)
    p = float(stats.f.sf(f, k, m - k)) if m > k else np.nan
    return p, dist


def _footprint(index, pixels, rng):
    """The footprint: at most MAX_FOOTPRINT measured pixels (seeded subsample), its anchor
    (the pixel nearest its centroid) first."""
    pixels = np.asarray(pixels, dtype=np.int64)
    pixels = pixels[index["measured"][pixels]]
    if pixels.size > MAX_FOOTPRINT:
        pixels = np.sort(rng.choice(pixels, MAX_FOOTPRINT, replace=False))
    if not pixels.size:
        return pixels
    x, y = index["x"][pixels], index["y"][pixels]
    anchor = int(np.argmin(np.hypot(x - x.mean(), y - y.mean())))
    return np.r_[pixels[anchor], np.delete(pixels, anchor)]


def null_draws(index, coef, foot, r_in, r_out, labels, own_id, num, rng):
    """Contrast coefficients (<= num x k) of the footprint `foot` (anchor first) at random
    places: module docstring. A placement must miss the pixels labelled own_id."""
    need = int(np.ceil(MIN_MEASURED * foot.size))
    out = []
    midx = index["measured_idx"]
    batch = int(max(8, min(2 * num, 1e6 // max(foot.size, 1))))
    attempts, total = 0, 0
    while total < num and attempts < MAX_ATTEMPT_FACTOR * num:
        targets = midx[rng.integers(0, midx.size, size=batch)]
        attempts += batch
        moved = _moves(index, foot, targets)
        valid = moved >= 0
        hit_own = np.any(valid & (labels[np.maximum(moved, 0)] == own_id), axis=1)
        ok = np.nonzero((valid.sum(axis=1) >= need) & ~hit_own)[0]
        if not ok.size:
            continue
        v = placement_contrasts(index, coef, moved[ok], valid[ok], r_in, r_out)
        v = v[np.all(np.isfinite(v), axis=1)][:num - total]
        out.append(v)
        total += v.shape[0]
    return np.concatenate(out) if out else np.zeros((0, coef.shape[1]))


def cluster_pvalue(index, coef, pixels, r_in, r_out, labels, own_id, rng, num_null=NUM_NULL):
    """dict(p, p_mc, distance, num_null, mean, cov, contrast) of one cluster (its pixel
    indices, labelled own_id in labels) against its spatial null, M adaptive (module
    docstring); p NaN when untestable."""
    k = coef.shape[1]
    res = {"p": np.nan, "p_mc": np.nan, "distance": np.nan, "num_null": 0, "num_effective": 0,
           "mean": np.full(k, np.nan), "cov": np.full((k, k), np.nan),
           "contrast": np.full(k, np.nan)}
    foot = _footprint(index, pixels, rng)
    if not foot.size:
        return res
    res["contrast"] = obs = footprint_contrast(index, coef, foot, r_in, r_out)
    if not np.all(np.isfinite(obs)):
        return res
    draws = null_draws(index, coef, foot, r_in, r_out, labels, own_id, num_null, rng)
    res["num_null"] = draws.shape[0]
    if draws.shape[0] < max(MIN_NULL, k + 2):
        return res
    # placements of a large footprint overlap: about (measured pixels / footprint pixels)
    # of them are independent, and a k x k covariance from fewer than k + 2 is no null
    num_effective = index["measured_idx"].size // max(np.asarray(pixels).size, 1)
    res["num_effective"] = min(num_effective, draws.shape[0])
    if num_effective < k + 2:
        return res
    mean, cov = robust_moments(draws)
    p, p_mc, dist, _ = null_pvalue(obs, draws, num_effective, moments=(mean, cov))
    res.update(p=p, p_mc=p_mc, distance=dist, num_null=draws.shape[0], mean=mean, cov=cov)
    return res


def fdr_qvalues(p):
    """Benjamini-Hochberg q-values (scipy) of the finite entries of p; NaN elsewhere."""
    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = stats.false_discovery_control(p[ok], method="bh")
    return q


def candidate_pvalues(index, coef, labels, ids, rows, r_in, r_out, rng, cache=None):
    """Spatial-null test of the clusters ids[rows] (labels: per-pixel cluster id; r_in, r_out:
    ring half-widths per cluster, km). Returns per-cluster arrays (len(ids); NaN / 0 where not
    tested): p, p_mc, distance, num_null, num_effective, and contrast / null mean (len x k)
    and null covariance (len x k x k) for the fragment test. cache: a dict kept between calls on the
    same scene; a cluster with the same pixels and ring is not tested again (the dispersion
    step recomputes its table after splits and merges that change a few clusters)."""
    m, k = len(ids), coef.shape[1]
    out = {"p": np.full(m, np.nan), "p_mc": np.full(m, np.nan), "distance": np.full(m, np.nan),
           "num_null": np.zeros(m, dtype=np.int32), "num_effective": np.zeros(m, dtype=np.int32),
           "contrast": np.full((m, k), np.nan), "mean": np.full((m, k), np.nan),
           "cov": np.full((m, k, k), np.nan)}
    labels = np.asarray(labels)
    rows = np.asarray(rows, dtype=np.int64)
    if not rows.size or "sat" not in index:
        return out
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    for c in rows:
        lo, hi = np.searchsorted(sorted_labels, [ids[c], ids[c] + 1])
        pixels = np.sort(order[lo:hi])
        key = (hash(pixels.tobytes()), pixels.size, round(float(r_in[c]), 9),
               round(float(r_out[c]), 9))
        res = None if cache is None else cache.get(key)
        if res is None:
            res = cluster_pvalue(index, coef, pixels, float(r_in[c]), float(r_out[c]), labels,
                                 ids[c], rng)
            if cache is not None:
                cache[key] = res
        for key in out:
            out[key][c] = res[key]
    return out


def unwrap_corrected_pvalues(res, table, removed, basis):
    """pValueSpatial of the clusters with a quantised jump (isQuantisedJump), their observed
    contrast coefficients less the projection of the removed boxes (unwrapRemoved, M x T) on
    the same smooth basis, against the same null (robust location, covariance and effective
    placements); NaN for the other clusters and the untestable ones."""
    m = res["p"].size
    out = np.full(m, np.nan)
    quantised = np.asarray(table.get("isQuantisedJump", np.zeros(m, bool)), dtype=bool)
    if removed is None or basis is None or not quantised.any():
        return out
    for c in np.nonzero(quantised & np.isfinite(res["p"]))[0]:
        observed = res["contrast"][c] - np.asarray(removed[c], dtype=np.float64) @ basis
        out[c] = prediction_pvalue(observed, res["mean"][c], res["cov"][c],
                                   int(res["num_effective"][c]))[0]
    return out


def velocity_columns(mean_series, ring_series, years):
    """Least-squares linear velocity (unit / yr) of each cluster's mean series, of its ring
    background and of their difference (what the hotspot does that its surroundings do not);
    NaN without a ring."""
    t = np.asarray(years, dtype=np.float64)
    a = np.c_[np.ones_like(t), t - t.mean()]
    pinv = np.linalg.pinv(a)[1]

    def slope(series):
        series = np.atleast_2d(np.asarray(series, dtype=np.float64))
        ok = np.all(np.isfinite(series), axis=1)
        out = np.full(series.shape[0], np.nan)
        out[ok] = series[ok] @ pinv
        return out

    cluster = slope(mean_series)
    ring = slope(ring_series)
    return {"clusterVelocity": cluster, "ringVelocity": ring, "velocityContrast": cluster - ring}


# ---------------------------------------------------------------------------- dispersion step
def setup(stack_file, fdr, seed, on=True):
    """What the dispersion step's spatial null needs, or None when the decision is not by
    false-discovery rate and its p- and q-values are not wanted either (on False): the
    projection of every pixel's series (a StackProjection, fed by the step's first pass over
    the stack: stack_consumers) and the placements' own random generator (seeded: the
    placements do not depend on what else draws random numbers, e.g. the block size)."""
    if not on:
        return None
    info = read_info(stack_file)
    basis = temporal_basis(decimal_years(info.dates))
    return {"fdr": fdr, "rng": np.random.default_rng([int(seed), 12]), "basis": basis,
            "projection": StackProjection(info.num_pixel, basis)}


def stack_consumers(spatial):
    """The block consumers that still need the stack's displacement: the projection until a
    pass over the stack has fed it, then none."""
    if spatial is None or "projection" not in spatial:
        return []
    return [spatial["projection"]]


def _coefficients(spatial, log):
    """The per-pixel coefficients, taken from the fed projection on first use."""
    if "coef" not in spatial:
        proj = spatial.pop("projection")
        spatial["coef"] = proj.result()
        log(f"dispersion: spatial null: {proj.basis.shape[1]} smooth temporal components "
            f"(periods >= {MIN_PERIOD_YR:g} yr) of {proj.num_pixel} series in "
            f"{proj.seconds:.1f} s (during the pass over the stack)")
    return spatial["coef"]


def table_columns(spatial, table, labels, x, y, px, tested, spacing, corr_length, log,
                  unwrap_removed=None):
    """Adds pValueSpatial, pValueSpatialMC, qValue, contrastDistance and numNullPlacement of
    the clusters `tested` to the dispersion table (ring radii as the step's ring: r_in =
    2 S_d + spacing, r_out = r_in + max(correlation length, 3 spacings)); returns the null
    statistics that hotspot.steps.same_feature needs, with the rate as "level"."""
    t0 = time.time()
    if "index" not in spatial:
        # the measured pixels and their positions are the same in every pass: built once
        _coefficients(spatial, log)[np.asarray(labels) < 0] = np.nan
        spatial["index"] = scene_index(x, y, spatial["coef"], spacing, row=px.get("row"),
                                       col=px.get("col"))
    coef, index = spatial["coef"], spatial["index"]
    r_in = 2.0 * table["standardDistance"] + spacing
    r_out = r_in + max(corr_length, 3.0 * spacing)
    rows = np.nonzero(tested)[0]
    res = candidate_pvalues(index, coef, labels, table["clusterId"], rows, r_in, r_out,
                            spatial["rng"], cache=spatial.setdefault("cache", {}))
    p_corrected = unwrap_corrected_pvalues(res, table, unwrap_removed,
                                           spatial.get("basis"))
    # a cluster whose contrast is a quantised (unwrapping-error) jump is tested on what is
    # left once the jump is removed: that is its evidence of deformation
    q = fdr_qvalues(np.where(np.isfinite(p_corrected), p_corrected, res["p"]))
    table.update({"pValueSpatial": res["p"], "pValueSpatialMC": res["p_mc"], "qValue": q,
                  "pValueSpatialUnwrapCorrected": p_corrected,
                  "contrastDistance": res["distance"], "numNullPlacement": res["num_null"],
                  "numNullEffective": res["num_effective"]})
    res["level"] = spatial["fdr"]
    rate = spatial["fdr"] if spatial["fdr"] is not None else 0.05
    log(f"dispersion: spatial null of {rows.size} candidates ({int(res['num_null'].sum())} "
        f"placements, {time.time() - t0:.1f} s): {int(np.sum(q <= rate))} with "
        f"q <= {rate:g} (Benjamini-Hochberg)"
        + ("" if spatial["fdr"] is not None else "; for information, the F-test decides"))
    return res
