"""(Soft-)DTW lane kernels of the tiered assignment (see hotspot.steps.kernels.distances):
float32 SIMD building blocks, the one-centroid lane kernel, tiers 1-3 and the float64
recursion of tslearn.
"""
import math

import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic
from tslearn.metrics.soft_dtw_fast import _njit_softmin3

LANES = 128  # pixels per SIMD block; per-row loop overhead is amortized (measured best of 32-256)
CHECK_EVERY = 4  # rows between early-abandon checks
BIG = np.float32(1e30)  # "infinity" that stays finite under fastmath (no inf - inf = nan)
ZMAX = np.float32(18.0)  # exp(-18) = 1.5e-8 is below float32 resolution next to 1
LN3 = math.log(3.0)
EPS32 = float(np.finfo(np.float32).eps)
_FAST = dict(fastmath=True, error_model="numpy", boundscheck=False, cache=True)


# ---------------------------------------------------------------- float32 SIMD building blocks
@intrinsic
def _pow2i(typingctx, n):
    """2**n for an int32 n in [-126, 127], by writing the float32 exponent bits."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        bits = builder.shl(builder.add(args[0], ir.Constant(i32, 127)), ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())
    return sig, codegen


@njit(inline="always", **_FAST)
def _fmin(a, b):
    return a if a < b else b


@njit(inline="always", **_FAST)
def _fmax(a, b):
    return a if a > b else b


@njit(inline="always", **_FAST)
def _exp_neg(z):
    """exp(-z) for z in [0, ZMAX], relative error < 2e-7 (Cephes expf polynomial).

    libm's exp is not vectorized by LLVM without SVML; this one is.
    """
    x = -z
    n = np.floor(x * np.float32(1.44269504) + np.float32(0.5))
    r = x - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * r * r + r + np.float32(1.0)
    return p * _pow2i(np.int32(n))


@njit(inline="always", **_FAST)
def _log_1to3(s):
    """log(s) for s in [1, 3] (a soft-min sum), absolute error < 2e-7 (atanh series)."""
    big = s > np.float32(1.41421356)
    s2 = s * np.float32(0.5) if big else s
    k = np.float32(0.693147181) if big else np.float32(0.0)
    t = (s2 - np.float32(1.0)) / (s2 + np.float32(1.0))
    t2 = t * t
    p = np.float32(1.0 / 11)
    p = p * t2 + np.float32(1.0 / 9)
    p = p * t2 + np.float32(1.0 / 7)
    p = p * t2 + np.float32(1.0 / 5)
    p = p * t2 + np.float32(1.0 / 3)
    p = p * t2 + np.float32(1.0)
    return np.float32(2.0) * t * p + k


@njit(inline="always", **_FAST)
def _softmin_cell(up, left, diag, g, ig):
    """softmin_g(up, left, diag) = m - g log(1 + e^-(mid-m)/g + e^-(max-m)/g): two exps, not three."""
    m = _fmin(_fmin(up, left), diag)
    mx = _fmax(_fmax(up, left), diag)
    mid = _fmax(_fmin(up, left), _fmin(_fmax(up, left), diag))
    s = (np.float32(1.0) + _exp_neg(_fmin((mid - m) * ig, ZMAX))
         + _exp_neg(_fmin((mx - m) * ig, ZMAX)))
    return m - g * _log_1to3(s)


# ---------------------------------------------------------------- lane kernels (one centroid)
@njit(inline="always", **_FAST)
def _row_min_exceeds(cur, lo, hi, slack, bound, rmin):
    """True when every lane's minimum over row cells lo..hi, minus slack, exceeds its bound.

    A separate pass every CHECK_EVERY rows: tracking the minimum inside the DP loop
    (a load and a store per cell) made the kernel 4x slower.
    """
    L = rmin.shape[0]
    rmin[:] = BIG
    for j in range(lo, hi + 1):
        row = cur[j + 1]
        for ll in range(L):
            rmin[ll] = _fmin(rmin[ll], row[ll])
    for ll in range(L):
        if rmin[ll] - slack <= bound[ll]:
            return False
    return True


@njit(**_FAST)
def _dtw_lanes(xt, c, radius, soft, gamma, bound, prev, cur, rmin, out):
    """(soft-)DTW cost of L pixels (columns of xt, T x L) against centroid c, float32.

    bound: per-lane abandon threshold (BIG: never); once every lane's lower bound exceeds
    it the centroid is abandoned and out = BIG. prev/cur ((T+1) x L), rmin (L): scratch.
    The lane loop is innermost and branch-free so that LLVM vectorizes it.
    """
    T, L = xt.shape
    g = np.float32(gamma)
    ig = np.float32(1.0 / gamma) if soft else np.float32(0.0)
    prev[:, :] = BIG
    cur[:, :] = BIG
    prev[0, :] = 0
    check = False
    for ll in range(L):
        if bound[ll] < BIG:
            check = True
    for i in range(T):
        lo = max(0, i - radius)
        hi = min(T - 1, i + radius)
        cur[lo, :] = BIG
        xi = xt[i]
        if soft:
            for j in range(lo, hi + 1):
                cj = c[j]
                pu = prev[j + 1]
                pd = prev[j]
                cl = cur[j]
                co = cur[j + 1]
                for ll in range(L):
                    d = xi[ll] - cj
                    co[ll] = d * d + _softmin_cell(pu[ll], cl[ll], pd[ll], g, ig)
        else:
            for j in range(lo, hi + 1):
                cj = c[j]
                pu = prev[j + 1]
                pd = prev[j]
                cl = cur[j]
                co = cur[j + 1]
                for ll in range(L):
                    d = xi[ll] - cj
                    co[ll] = d * d + _fmin(_fmin(pu[ll], cl[ll]), pd[ll])
        if check and i % CHECK_EVERY == CHECK_EVERY - 1 and i < T - 1:
            # every later path crosses row i; a soft-min can lower it by <= g ln3 per step
            slack = np.float32(g * LN3 * 2 * (T - i)) if soft else np.float32(0.0)
            if _row_min_exceeds(cur, lo, hi, slack, bound, rmin):
                out[:] = BIG
                return
        prev, cur = cur, prev
    out[:] = prev[T]


@njit(inline="always", **_FAST)
def _margin(value, amp, c_rel, c_amp, c_abs):
    """Bound of the float32 error of a DTW^2 / soft-DTW value (see error_constants)."""
    a = abs(value)
    return c_rel * a + c_amp * amp * math.sqrt(a) + c_abs


def error_constants(num_date, gamma, soft):
    """Constants of the float32 error bound used to flag near-ties for the float64 tier.

    A DP value is a sum of <= 2T-1 cell costs: float32 rounding of the sums gives
    <= 2T eps |R| (c_rel); rounding the inputs to float32 (|dx| <= eps amp) changes each
    squared difference by <= 2 |d| eps amp, summed <= 2 eps amp sqrt(2T R) (c_amp); the
    polynomial exp/log add <= 1e-6 gamma per cell (c_abs). Each is doubled for safety.
    """
    t2 = 2.0 * num_date
    c_rel = 2.0 * t2 * EPS32
    c_amp = 2.0 * 2.0 * EPS32 * math.sqrt(t2) * 2.0
    c_abs = 2.0 * t2 * gamma * 1e-6 if soft else 0.0
    return np.float32(c_rel), np.float32(c_amp), np.float32(c_abs + 1e-30)


# ---------------------------------------------------------------- lane blocks
@njit(inline="always", **_FAST)
def _pack_lanes(X, rows, s, e, lanes, amp0):
    """(xt, amp): rows[s:e] of X transposed into a (T, lanes) block (the last row repeated in
    the unused lanes) and each lane's max |value|, at least amp0."""
    T = X.shape[1]
    xt = np.empty((T, lanes), dtype=np.float32)
    amp = np.empty(lanes, dtype=np.float32)
    for ll in range(lanes):
        p = rows[min(s + ll, e - 1)]
        a = amp0
        for t in range(T):
            xt[t, ll] = X[p, t]
            a = _fmax(a, abs(X[p, t]))
        amp[ll] = a
    return xt, amp


@njit(inline="always", **_FAST)
def _lane_buffers(T, lanes):
    """Work arrays of _dtw_lanes: (prev, cur, rmin, out)."""
    return (np.empty((T + 1, lanes), dtype=np.float32), np.empty((T + 1, lanes), dtype=np.float32),
            np.empty(lanes, dtype=np.float32), np.empty(lanes, dtype=np.float32))


# ---------------------------------------------------------------- tier 1: hard DTW, all pixels
@njit(parallel=True, **_FAST)
def _tier1(X, C, perm, E, radius, bracket, c_rel, c_amp, c_abs, lanes):
    """DTW^2 (float32) of every pixel to every centroid, BIG where abandoned.

    perm: pixel order (sorted by Euclidean-nearest centroid so that a lane block shares
    its likely winner); E: squared Euclidean distances, used only to order centroids.
    A centroid is kept (not abandoned) while it may be within bracket + 2 margins of the
    best, so every possible winner of tiers 2 and 3 has its full value.
    """
    n, T = X.shape
    k = C.shape[0]
    H = np.empty((n, k), dtype=np.float32)
    amp_c = np.float32(0.0)
    for c in range(k):
        for t in range(T):
            amp_c = _fmax(amp_c, abs(C[c, t]))
    nb = (n + lanes - 1) // lanes
    for b in prange(nb):
        s = b * lanes
        e = min(s + lanes, n)
        xt, amp = _pack_lanes(X, perm, s, e, lanes, amp_c)
        score = np.zeros(k, dtype=np.float64)
        for ll in range(e - s):
            for c in range(k):
                score[c] += E[perm[s + ll], c]
        order = np.argsort(score)
        prev, cur, rmin, out = _lane_buffers(T, lanes)
        best = np.full(lanes, BIG, dtype=np.float32)
        bound = np.empty(lanes, dtype=np.float32)
        for oc in order:
            for ll in range(lanes):
                if best[ll] < BIG:
                    bound[ll] = (best[ll] + bracket
                                 + 2 * _margin(best[ll], amp[ll], c_rel, c_amp, c_abs))
                else:
                    bound[ll] = BIG
            _dtw_lanes(xt, C[oc], radius, False, 1.0, bound, prev, cur, rmin, out)
            for ll in range(lanes):
                if ll < e - s:
                    H[perm[s + ll], oc] = out[ll]
                best[ll] = _fmin(best[ll], out[ll])
    return H


# ---------------------------------------------------------------- tier 2: soft-DTW where needed
@njit(parallel=True, **_FAST)
def _tier2(X, C, pix, cand, radius, gamma, c_rel, c_amp, c_abs, lanes):
    """float32 soft-DTW of pixels `pix` to their candidate centroids (cand: len(pix) x k bool).

    Pixels are packed into lane blocks by the caller (sorted by candidate set); each block
    runs the union of its candidates, abandoning those that cannot be within 2 margins.
    """
    n = pix.shape[0]
    T = X.shape[1]
    k = C.shape[0]
    S = np.full((n, k), BIG, dtype=np.float32)
    amp_c = np.float32(0.0)
    for c in range(k):
        for t in range(T):
            amp_c = _fmax(amp_c, abs(C[c, t]))
    nb = (n + lanes - 1) // lanes
    for b in prange(nb):
        s = b * lanes
        e = min(s + lanes, n)
        xt, amp = _pack_lanes(X, pix, s, e, lanes, amp_c)
        prev, cur, rmin, out = _lane_buffers(T, lanes)
        best = np.full(lanes, BIG, dtype=np.float32)
        bound = np.empty(lanes, dtype=np.float32)
        for c in range(k):
            use = False
            for ll in range(e - s):
                if cand[s + ll, c]:
                    use = True
            if not use:
                continue
            for ll in range(lanes):
                if ll >= e - s or not cand[s + ll, c]:
                    bound[ll] = -BIG    # a lane without this candidate never holds it up
                elif best[ll] < BIG:
                    bound[ll] = best[ll] + 2 * _margin(best[ll], amp[ll], c_rel, c_amp, c_abs)
                else:
                    bound[ll] = BIG
            _dtw_lanes(xt, C[c], radius, True, gamma, bound, prev, cur, rmin, out)
            for ll in range(e - s):
                if cand[s + ll, c]:
                    S[s + ll, c] = out[ll]
                    best[ll] = _fmin(best[ll], out[ll])
    return S


# ---------------------------------------------------------------- tier 3: float64, as tslearn
@njit(cache=True)
def exact_cost(x, c, radius, soft, gamma):
    """Final DP value in float64 with tslearn's recursion: DTW^2 (soft=False) or soft-DTW.

    Same operations in the same order as tslearn's _njit_accumulated_matrix (dtw and
    soft-DTW), with rows instead of the full matrix.
    """
    T = x.shape[0]
    prev = np.full(T + 1, np.inf)
    cur = np.full(T + 1, np.inf)
    prev[0] = 0.0
    for i in range(T):
        lo = max(0, i - radius)
        hi = min(T - 1, i + radius)
        cur[:] = np.inf
        for j in range(lo, hi + 1):
            diff = x[i] - c[j]
            dist = 0.0
            dist += diff * diff
            if soft:
                cur[j + 1] = dist + _njit_softmin3(prev[j + 1], cur[j], prev[j], gamma)
            else:
                cur[j + 1] = dist + min(prev[j + 1], cur[j], prev[j])
        prev, cur = cur, prev
    return prev[T]


@njit(parallel=True, cache=True)
def _tier3(X64, C64, pix, cand, radius, soft, gamma):
    """Exact float64 costs of pixels `pix` to their candidate centroids (inf elsewhere)."""
    n = pix.shape[0]
    k = C64.shape[0]
    out = np.full((n, k), np.inf)
    for q in prange(n * k):
        i = q // k
        c = q % k
        if cand[i, c]:
            out[i, c] = exact_cost(X64[pix[i]], C64[c], radius, soft, gamma)
    return out


# ---------------------------------------------------------------- public API
def _radius(radius, num_date):
    """tslearn's convention: None = no band; a band wider than the series is no band."""
    if radius is None:
        return num_date
    return int(min(max(int(radius), 0), num_date))


def _check(X, C):
    X = np.asarray(X)
    C = np.asarray(C)
    if X.ndim == 3:
        X = X[..., 0]
    if C.ndim == 3:
        C = C[..., 0]
    if X.ndim != 2 or C.ndim != 2 or X.shape[1] != C.shape[1]:
        raise ValueError(f"series of equal length expected, got {X.shape} and {C.shape}")
    return X, C
