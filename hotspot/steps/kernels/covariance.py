"""Numba kernel of the covariogram step: the temporal covariance of many pixel pairs."""
import numba
import numpy as np


@numba.njit(parallel=True, cache=True)
def pair_covariance_kernel(a, i, j, out):
    """out[k] = mean over epochs of a[i[k]] * a[j[k]], accumulated in float64."""
    t = a.shape[1]
    for k in numba.prange(i.size):
        x = a[i[k]]
        y = a[j[k]]
        s = 0.0
        for e in range(t):
            s += np.float64(x[e]) * np.float64(y[e])
        out[k] = s / t
    return out
