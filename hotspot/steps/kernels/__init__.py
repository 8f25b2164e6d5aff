"""Every numba kernel of the package, by the step that uses it.

  distances.py   tskm: assign / cdist / pdist / cdist_argmin_exact, (soft-)DTW of many pixels
                 against k centroids (the public API; its docstring explains the tiers)
  dtw.py         tskm: the float32 SIMD lane kernels and tiers 1-3 behind distances.py
  barycenter.py  tskm: soft-DTW value, gradient and barycenter
  covariance.py  covariogram: the temporal covariance of pixel pairs

Compiled code is cached (numba cache=True) in hotspot/steps/kernels/__pycache__.
"""
from hotspot.steps.kernels.barycenter import softdtw_barycenter, softdtw_value_and_grad
from hotspot.steps.kernels.covariance import pair_covariance_kernel
from hotspot.steps.kernels.distances import METRICS, assign, cdist, cdist_argmin_exact, pdist
from hotspot.steps.kernels.dtw import LANES, ZMAX, error_constants, exact_cost

__all__ = ["LANES", "METRICS", "ZMAX", "assign", "cdist", "cdist_argmin_exact", "error_constants",
           "exact_cost", "pair_covariance_kernel", "pdist", "softdtw_barycenter",
           "softdtw_value_and_grad"]
