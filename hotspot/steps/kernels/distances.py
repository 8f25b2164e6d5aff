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
import numpy as np
from numba import njit, prange

from hotspot.steps.kernels.dtw import (BIG, LANES, LN3, _FAST, _check, _dtw_lanes, _lane_buffers,
                                       _pack_lanes, _radius, _tier1,
                                       _tier2, _tier3, error_constants, exact_cost)

METRICS = ("softdtw", "dtw", "euclidean")


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
    n = X.shape[0]
    out = np.empty((n, n), dtype=np.float32)
    nb = (n + lanes - 1) // lanes
    rows = np.arange(n)
    for q in prange(nb * n):
        b = q // n
        c = q % n
        s = b * lanes
        if c < s:
            continue
        e = min(s + lanes, n)
        res = _lane_block(X, rows, s, e, X[c], radius, soft, gamma, lanes)
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
    n = X.shape[0]
    m = Y.shape[0]
    out = np.empty((n, m), dtype=np.float32)
    nb = (n + lanes - 1) // lanes
    rows = np.arange(n)
    for q in prange(nb * m):
        b = q // m
        c = q % m
        s = b * lanes
        e = min(s + lanes, n)
        res = _lane_block(X, rows, s, e, Y[c], radius, soft, gamma, lanes)
        for ll in range(e - s):
            out[s + ll, c] = res[ll]
    return out


@njit(inline="always", **_FAST)
def _lane_block(X, rows, s, e, y, radius, soft, gamma, lanes):
    """(Soft-)DTW of rows[s:e] of X (one lane block) to the series y, never abandoned."""
    xt, _ = _pack_lanes(X, rows, s, e, lanes, np.float32(0.0))
    prev, cur, rmin, res = _lane_buffers(X.shape[1], lanes)
    bound = np.full(lanes, BIG, dtype=np.float32)
    _dtw_lanes(xt, y, radius, soft, gamma, bound, prev, cur, rmin, res)
    return res


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
