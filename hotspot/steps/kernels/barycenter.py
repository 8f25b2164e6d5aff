"""Soft-DTW barycenter of the tskm step: value and gradient of the soft-DTW sum over a block of
series (one series per SIMD lane) and the L-BFGS barycenter built on it.
"""
import numpy as np
from numba import njit

from hotspot.steps.kernels.dtw import (BIG, ZMAX, _FAST, _check, _exp_neg, _fmax, _fmin, _radius,
                                       _softmin_cell)


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
