"""Numba kernels of the tskm step: (soft-)DTW between millions of pixels and k centroids.

tslearn computes (soft-)DTW one pair at a time in float64 (about 550 soft-DTW pairs/s at
T = 247): 3 million pixels x 7 centroids would take ~11 h. Here one block of pixels is
processed at once, one pixel per SIMD lane (the lane loop is innermost, so numba/LLVM's
loop vectorizer turns it into AVX instructions), with an optional Sakoe-Chiba band.

Labels must still equal tslearn's ``TimeSeriesKMeans.predict``, so the assignment is tiered:

1. hard DTW (squared cost, i.e. DTW^2) in float32 for every pixel, centroids in the order
   of their Euclidean distance; a centroid is abandoned as soon as every lane's row minimum
   (a lower bound of the final cost) exceeds that lane's best value plus its tolerance.
2. soft-DTW only: softmin_gamma(a, b, c) lies in [min - gamma ln 3, min], hence
   soft-DTW in [DTW^2 - gamma ln3 (2T - 1), DTW^2]. A centroid can win only if its DTW^2
   minus that bracket is below the best DTW^2; pixels with two or more such centroids get
   float32 soft-DTW (polynomial exp/log, same lane kernel) for those centroids. With the
   paper's gamma = 0.01 on mm data the bracket is ~5 mm^2, so this tier is rare.
3. pixels whose best two float32 values lie within the float32 error bound are
   recomputed in float64 with tslearn's own recursion (its ``_njit_softmin3``), and the
   tie is resolved like numpy's argmin (first index).

All functions take series of equal length T; ``radius`` is the Sakoe-Chiba radius in
epochs (|i - j| <= radius, as tslearn's ``sakoe_chiba`` mask) or None for no band.
"""
import math

import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic
from tslearn.metrics.soft_dtw_fast import _njit_softmin3

METRICS = ("softdtw", "dtw", "euclidean")
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
        xt = np.empty((T, lanes), dtype=np.float32)
        amp = np.empty(lanes, dtype=np.float32)
        for ll in range(lanes):
            p = perm[min(s + ll, e - 1)]
            a = amp_c
            for t in range(T):
                xt[t, ll] = X[p, t]
                a = _fmax(a, abs(X[p, t]))
            amp[ll] = a
        score = np.zeros(k, dtype=np.float64)
        for ll in range(e - s):
            for c in range(k):
                score[c] += E[perm[s + ll], c]
        order = np.argsort(score)
        prev = np.empty((T + 1, lanes), dtype=np.float32)
        cur = np.empty((T + 1, lanes), dtype=np.float32)
        rmin = np.empty(lanes, dtype=np.float32)
        out = np.empty(lanes, dtype=np.float32)
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
        xt = np.empty((T, lanes), dtype=np.float32)
        amp = np.zeros(lanes, dtype=np.float32)
        for ll in range(lanes):
            p = pix[min(s + ll, e - 1)]
            a = amp_c
            for t in range(T):
                xt[t, ll] = X[p, t]
                a = _fmax(a, abs(X[p, t]))
            amp[ll] = a
        prev = np.empty((T + 1, lanes), dtype=np.float32)
        cur = np.empty((T + 1, lanes), dtype=np.float32)
        rmin = np.empty(lanes, dtype=np.float32)
        out = np.empty(lanes, dtype=np.float32)
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


# ---------------------------------------------------------------- soft-DTW barycenter gradient
@njit(**_FAST)
def _sdtw_grad_lanes(z, xt, radius, gamma, R, e_next, e_cur, grad):
    """Soft-DTW(z, x_l) and its gradient with respect to z for L series (columns of xt).

    Same recursion as tslearn's barycenter objective (rows: barycenter z, columns: series;
    forward pass as soft_dtw, backward pass as _njit_soft_dtw_grad), float32, one series
    per lane. R ((T+2) x (T+2) x L) keeps the forward matrix, padded by one cell on both
    sides; e_next/e_cur ((T+2) x L) are two rows of the backward matrix E; grad (T x L).
    Returns nothing: the costs are in R[T, T], the gradients in grad.
    """
    T, L = xt.shape
    g = np.float32(gamma)
    ig = np.float32(1.0 / gamma)
    R[:, :, :] = BIG
    R[0, 0, :] = 0
    for i in range(1, T + 1):
        lo = max(1, i - radius)
        hi = min(T, i + radius)
        zi = np.float32(z[i - 1])
        for j in range(lo, hi + 1):
            pu = R[i - 1, j]
            pd = R[i - 1, j - 1]
            cl = R[i, j - 1]
            co = R[i, j]
            xj = xt[j - 1]
            for ll in range(L):
                d = zi - xj[ll]
                co[ll] = d * d + _softmin_cell(pu[ll], cl[ll], pd[ll], g, ig)
    # backward: E[p] = sum over successors q of E[q] exp((R[q] - R[p] - D[q]) / g)
    e_next[:, :] = 0
    for i in range(T, 0, -1):
        lo = max(1, i - radius)
        hi = min(T, i + radius)
        e_cur[:, :] = 0
        zi = np.float32(z[i - 1])
        zn = np.float32(z[min(i, T - 1)])
        gr = grad[i - 1]
        gr[:] = 0
        for j in range(hi, lo - 1, -1):
            if i == T and j == T:
                e_cur[j, :] = 1
            else:
                rp = R[i, j]
                r_dn = R[i + 1, j] if i < T else R[i, j]
                r_rt = R[i, j + 1]
                r_dg = R[i + 1, j + 1] if i < T else R[i, j]
                x_rt = xt[min(j, T - 1)]
                x_here = xt[j - 1]
                en = e_next[j]
                en1 = e_next[j + 1]
                ec1 = e_cur[j + 1]
                ec = e_cur[j]
                for ll in range(L):
                    d_dn = zn - x_here[ll]
                    d_rt = zi - x_rt[ll]
                    d_dg = zn - x_rt[ll]
                    a = _exp_neg(_fmin(_fmax((rp[ll] + d_dn * d_dn - r_dn[ll]) * ig, 0), ZMAX))
                    b = _exp_neg(_fmin(_fmax((rp[ll] + d_rt * d_rt - r_rt[ll]) * ig, 0), ZMAX))
                    c = _exp_neg(_fmin(_fmax((rp[ll] + d_dg * d_dg - r_dg[ll]) * ig, 0), ZMAX))
                    ec[ll] = en[ll] * a + ec1[ll] * b + en1[ll] * c
            ec = e_cur[j]
            x_here = xt[j - 1]
            for ll in range(L):
                gr[ll] += ec[ll] * np.float32(2.0) * (zi - x_here[ll])
        e_next, e_cur = e_cur, e_next


@njit(**_FAST)
def _sdtw_grad(z, X, weights, radius, gamma, lanes):
    # serial: one call per cluster per L-BFGS step is ~10 ms of work, where numba's thread
    # start-up and load imbalance cost more than they gain (10x slower on a busy machine)
    n, T = X.shape
    nb = (n + lanes - 1) // lanes
    objs = np.zeros(nb)
    grads = np.zeros((nb, T))
    for b in range(nb):
        s = b * lanes
        e = min(s + lanes, n)
        xt = np.empty((T, lanes), dtype=np.float32)
        w = np.zeros(lanes)
        for ll in range(lanes):
            p = min(s + ll, e - 1)
            for t in range(T):
                xt[t, ll] = X[p, t]
            if ll < e - s:
                w[ll] = weights[p]
        R = np.empty((T + 2, T + 2, lanes), dtype=np.float32)
        e_next = np.empty((T + 2, lanes), dtype=np.float32)
        e_cur = np.empty((T + 2, lanes), dtype=np.float32)
        grad = np.empty((T, lanes), dtype=np.float32)
        _sdtw_grad_lanes(z, xt, radius, gamma, R, e_next, e_cur, grad)
        for ll in range(e - s):
            objs[b] += w[ll] * R[T, T, ll]
            for t in range(T):
                grads[b, t] += w[ll] * grad[t, ll]
    # summed in block order, so the result does not depend on thread scheduling
    obj = 0.0
    tot = np.zeros(T)
    for b in range(nb):
        obj += objs[b]
        tot += grads[b]
    return obj, tot


def softdtw_value_and_grad(z, X, weights=None, gamma=0.01, radius=None, lanes=32):
    """sum_i w_i soft-DTW(z, X_i) and its gradient in z: tslearn's barycenter objective.

    float32 lane kernel; the sums are float64. Used by softdtw_barycenter.
    """
    X = np.ascontiguousarray(_check(X, np.asarray(z)[None])[0], dtype=np.float32)
    z = np.ascontiguousarray(z, dtype=np.float64).ravel()
    w = np.ones(X.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    return _sdtw_grad(z, X, w, _radius(radius, X.shape[1]), float(gamma), lanes)


def softdtw_barycenter(X, gamma=0.01, radius=None, init=None, max_iter=50, tol=1e-3,
                       weights=None):
    """Soft-DTW barycenter: tslearn.barycenters.softdtw_barycenter's L-BFGS-B scheme
    (same objective, start, tol and max_iter) with the float32 lane kernel for the
    objective and gradient. Returns a (T,) float64 array.
    """
    from scipy.optimize import minimize

    X, _ = _check(X, np.asarray(X)[:1])
    X = np.ascontiguousarray(X, dtype=np.float32)
    w = np.ones(X.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    z0 = (np.average(X.astype(np.float64), axis=0, weights=w) if init is None
          else np.asarray(init, dtype=np.float64).ravel())
    if max_iter <= 0:
        return z0
    r = _radius(radius, X.shape[1])

    def fun(z):
        return _sdtw_grad(np.ascontiguousarray(z), X, w, r, float(gamma), 32)

    res = minimize(fun, z0, method="L-BFGS-B", jac=True, tol=tol, options={"maxiter": max_iter})
    return res.x


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


def assign(X, C, metric="softdtw", gamma=0.01, radius=None, lanes=LANES, return_stats=False):
    """Nearest centroid of every series, exactly as tslearn's TimeSeriesKMeans.predict.

    X: (n, T) series; C: (k, T) centroids, both in the units the model was fitted in
    (float64 here is the reference precision; the fast tiers round to float32).
    Returns labels (int32, 0..k-1) and the distance to the assigned centroid (float32): the
    DTW distance sqrt(DTW^2) for dtw and softdtw (soft-DTW itself can be negative and is
    within gamma ln3 (2T-1) of DTW^2), the Euclidean distance for euclidean.
    With return_stats, also a dict with the number of pixels that needed tiers 2 and 3.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    X, C = _check(X, C)
    X64 = np.ascontiguousarray(X, dtype=np.float64)
    C64 = np.ascontiguousarray(C, dtype=np.float64)
    n, T = X64.shape
    k = C64.shape[0]
    stats = {"num_pixel": n, "num_tier2": 0, "num_tier3": 0}
    if n == 0:
        out = (np.zeros(0, np.int32), np.zeros(0, np.float32))
        return out + (stats,) if return_stats else out
    if metric == "euclidean":
        # as scipy's cdist: sqrt of the float64 sum of squares; cheap enough to do exactly
        d2 = _sq_euclidean64(X64, C64)
        labels = np.argmin(d2, axis=1).astype(np.int32)
        dist = np.sqrt(d2[np.arange(n), labels]).astype(np.float32)
        return (labels, dist, stats) if return_stats else (labels, dist)

    soft = metric == "softdtw"
    r = _radius(radius, T)
    X32 = X64.astype(np.float32)
    C32 = C64.astype(np.float32)
    c_rel, c_amp, c_abs = error_constants(T, gamma, soft)
    bracket = np.float32(gamma * LN3 * (2 * T - 1)) if soft else np.float32(0.0)
    E = _sq_euclidean32(X32, C32)
    perm = np.argsort(np.argmin(E, axis=1), kind="stable")
    H = _tier1(X32, C32, perm, E, r, bracket, c_rel, c_amp, c_abs, lanes)
    amp = _amplitude(X32, C32)
    hbest = H.min(axis=1)
    labels = np.argmin(H, axis=1).astype(np.int32)
    tol = 2 * (c_rel * np.abs(hbest) + c_amp * amp * np.sqrt(np.abs(hbest)) + c_abs)
    cand = H <= (hbest + bracket + tol)[:, None]
    multi = np.count_nonzero(cand, axis=1) > 1
    if soft:
        # tier 2: only pixels with two or more possible winners get soft-DTW
        pix = np.nonzero(multi)[0]
        multi[:] = False
        if pix.size:
            S = _soft_candidates(X32, C32, pix, cand[pix], r, gamma, (c_rel, c_amp, c_abs), lanes)
            stats["num_tier2"] = int(pix.size)
            sbest = S.min(axis=1)
            labels[pix] = np.argmin(S, axis=1)
            stol = 2 * (c_rel * np.abs(sbest) + c_amp * amp[pix] * np.sqrt(np.abs(sbest)) + c_abs)
            cand2 = S <= (sbest + stol)[:, None]
            cand[pix] = cand2
            multi[pix] = np.count_nonzero(cand2, axis=1) > 1
    exact_val = None
    if multi.any():
        # tier 3: near-ties at float32 precision, recomputed as tslearn does
        pix3 = np.nonzero(multi)[0]
        exact = _tier3(X64, C64, pix3, cand[pix3], r, soft, float(gamma))
        labels[pix3] = np.argmin(exact, axis=1)
        stats["num_tier3"] = int(pix3.size)
        exact_val = (pix3, exact[np.arange(pix3.size), labels[pix3]])
    dist = H[np.arange(n), labels].astype(np.float64)
    if exact_val is not None and not soft:
        dist[exact_val[0]] = exact_val[1]
    dist = np.sqrt(np.maximum(dist, 0)).astype(np.float32)
    return (labels, dist, stats) if return_stats else (labels, dist)


def _soft_candidates(X32, C32, pix, cand, radius, gamma, consts, lanes):
    """float32 soft-DTW of pixels pix to their candidates (rows of cand), BIG elsewhere.

    Pixels with the same candidate set are packed into the same lane blocks.
    """
    key = np.packbits(cand, axis=1, bitorder="little")
    order = np.lexsort(key.T[::-1])
    S = np.empty(cand.shape, dtype=np.float32)
    S[order] = _tier2(X32, C32, np.ascontiguousarray(pix[order]), np.ascontiguousarray(cand[order]),
                      radius, gamma, consts[0], consts[1], consts[2], lanes)
    return S


def cdist_argmin_exact(X, C, gamma=0.01, radius=None, lanes=LANES):
    """(n, k) soft-DTW matrix whose row minima and argmins are soft-DTW's (tiers 1-2).

    Entries of centroids that cannot be the nearest hold DTW^2 instead: an upper bound of
    their soft-DTW, above the row minimum. Enough for k-means (assignment, inertia) at a
    fraction of the cost of soft-DTW for every pair.
    """
    X, C = _check(X, C)
    X32 = np.ascontiguousarray(X, dtype=np.float32)
    C32 = np.ascontiguousarray(C, dtype=np.float32)
    n, T = X32.shape
    r = _radius(radius, T)
    consts = error_constants(T, gamma, True)
    bracket = np.float32(gamma * LN3 * (2 * T - 1))
    H = _pairs_fast(X32, C32, r, False, 1.0, lanes)
    amp = _amplitude(X32, C32)
    hbest = H.min(axis=1)
    tol = 2 * (consts[0] * np.abs(hbest) + consts[1] * amp * np.sqrt(np.abs(hbest)) + consts[2])
    cand = H <= (hbest + bracket + tol)[:, None]
    S = _soft_candidates(X32, C32, np.arange(n), cand, r, gamma, consts, lanes)
    return np.where(cand & (S < BIG), S, H).astype(np.float64)


def pdist(X, metric="softdtw", gamma=0.01, radius=None, lanes=LANES):
    """Symmetric (n, n) matrix of cdist(X, X) computing each pair once (float32 kernels)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    X, _ = _check(X, np.asarray(X)[:1])
    if metric == "euclidean":
        return cdist(X, X, "euclidean")
    X32 = np.ascontiguousarray(X, dtype=np.float32)
    soft = metric == "softdtw"
    out = _pairs_fast_sym(X32, _radius(radius, X32.shape[1]), soft, float(gamma),
                          lanes).astype(np.float64)
    return out if soft else np.sqrt(np.maximum(out, 0))


@njit(parallel=True, **_FAST)
def _pairs_fast_sym(X, radius, soft, gamma, lanes):
    n, T = X.shape
    out = np.empty((n, n), dtype=np.float32)
    nb = (n + lanes - 1) // lanes
    for q in prange(nb * n):
        b = q // n
        c = q % n
        s = b * lanes
        if c < s:
            continue
        e = min(s + lanes, n)
        xt = np.empty((T, lanes), dtype=np.float32)
        for ll in range(lanes):
            for t in range(T):
                xt[t, ll] = X[min(s + ll, e - 1), t]
        prev = np.empty((T + 1, lanes), dtype=np.float32)
        cur = np.empty((T + 1, lanes), dtype=np.float32)
        rmin = np.empty(lanes, dtype=np.float32)
        res = np.empty(lanes, dtype=np.float32)
        bound = np.full(lanes, BIG, dtype=np.float32)
        _dtw_lanes(xt, X[c], radius, soft, gamma, bound, prev, cur, rmin, res)
        for ll in range(e - s):
            out[s + ll, c] = res[ll]
    for i in range(n):
        for j in range(i):
            out[i, j] = out[j, i]
    return out


def cdist(X, Y, metric="softdtw", gamma=0.01, radius=None, exact=False, lanes=LANES):
    """(n, m) distance matrix in tslearn's convention (dtw: DTW, softdtw: soft-DTW value,
    euclidean: Euclidean distance), float64.

    exact=False: float32 lane kernels (relative error ~1e-6); exact=True: tslearn's float64
    recursion (slow; tests and small problems).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    X, Y = _check(X, Y)
    X64 = np.ascontiguousarray(X, dtype=np.float64)
    Y64 = np.ascontiguousarray(Y, dtype=np.float64)
    if metric == "euclidean":
        return np.sqrt(_sq_euclidean64(X64, Y64))
    soft = metric == "softdtw"
    T = X64.shape[1]
    r = _radius(radius, T)
    if exact:
        out = _pairs_exact(X64, Y64, r, soft, float(gamma))
    elif X64.shape[0] >= Y64.shape[0]:
        out = _pairs_fast(X64.astype(np.float32), Y64.astype(np.float32), r, soft,
                          float(gamma), lanes).astype(np.float64)
    else:
        # (soft-)DTW is symmetric: put the larger set on the SIMD lanes
        out = _pairs_fast(Y64.astype(np.float32), X64.astype(np.float32), r, soft,
                          float(gamma), lanes).T.astype(np.float64)
    return out if soft else np.sqrt(np.maximum(out, 0))


@njit(parallel=True, cache=True)
def _pairs_exact(X, Y, radius, soft, gamma):
    n, m = X.shape[0], Y.shape[0]
    out = np.empty((n, m))
    for q in prange(n * m):
        out[q // m, q % m] = exact_cost(X[q // m], Y[q % m], radius, soft, gamma)
    return out


@njit(parallel=True, **_FAST)
def _pairs_fast(X, Y, radius, soft, gamma, lanes):
    n, T = X.shape
    m = Y.shape[0]
    out = np.empty((n, m), dtype=np.float32)
    nb = (n + lanes - 1) // lanes
    for q in prange(nb * m):
        b = q // m
        c = q % m
        s = b * lanes
        e = min(s + lanes, n)
        xt = np.empty((T, lanes), dtype=np.float32)
        for ll in range(lanes):
            for t in range(T):
                xt[t, ll] = X[min(s + ll, e - 1), t]
        prev = np.empty((T + 1, lanes), dtype=np.float32)
        cur = np.empty((T + 1, lanes), dtype=np.float32)
        rmin = np.empty(lanes, dtype=np.float32)
        res = np.empty(lanes, dtype=np.float32)
        bound = np.full(lanes, BIG, dtype=np.float32)
        _dtw_lanes(xt, Y[c], radius, soft, gamma, bound, prev, cur, rmin, res)
        for ll in range(e - s):
            out[s + ll, c] = res[ll]
    return out


def _sq_euclidean64(X, C):
    """Squared Euclidean distances summed in order, as scipy's cdist (no |x|^2 - 2xc + |c|^2)."""
    return _sqe64(X, C)


@njit(parallel=True, cache=True)
def _sqe64(X, C):
    n, T = X.shape
    k = C.shape[0]
    out = np.empty((n, k))
    for i in prange(n):
        for c in range(k):
            s = 0.0
            for t in range(T):
                d = X[i, t] - C[c, t]
                s += d * d
            out[i, c] = s
    return out


def _sq_euclidean32(X, C):
    """Squared Euclidean distances via BLAS (only used to order centroids)."""
    xx = np.einsum("ij,ij->i", X, X)
    cc = np.einsum("ij,ij->i", C, C)
    return np.maximum(xx[:, None] - 2 * (X @ C.T) + cc[None, :], 0)


def _amplitude(X, C):
    """max |value| of each series and of all centroids (the input-rounding error scale),
    without an |X|-sized temporary."""
    return np.maximum(np.maximum(X.max(axis=1), -X.min(axis=1)), np.abs(C).max())
