"""Do two touching clusters belong to one deformation feature? A test against the scene's noise.

tskm / DBSCAN cut one bowl into a core and rings, or into fragments of different temporal
clusters. The pieces move alike in shape (the rim subsides like the centre, less), not in
amplitude. With the contrast coefficients v_a, v_b of two clusters (hotspot.steps.spatial_null: the
smooth temporal components of mean - ring) and the covariances S_a, S_b of the same statistic
on their footprints moved across the scene (the noise each one carries, measured on the scene):

  strong, weak  the cluster farther from its null (Mahalanobis distance) is the strong one, s;
  beta          weak = beta strong + noise: beta = v_s' W v_w / v_s' W v_s, W = S_w^-1,
                standard error 1 / sqrt(v_s' W v_s) (the weak piece's noise; the strong one's
                is smaller by construction);
  along         z = beta / se >= z(level): the weak piece carries the strong one's signal
                (one-sided; a patch of noise touching a hotspot has beta ~ 0 and is not
                merged);
  half maximum  beta >= HALF_MAXIMUM (1/2): the weak piece moves at least half as much as the
                strong one. A bowl's extent is where it moves at least half its peak (the
                full width at half maximum, the usual convention); the touching clusters that
                move alike but less are its halo (band-pass and clustering spread a bowl's
                tail into them), not part of the hotspot. Medium hard seeds 0 and 2: the
                fragments the correlation rule merged (and that their hotspots need) at beta
                0.58-1.0, z 5.3-7.7; the halo clusters alike in shape at beta 0.19-0.48
                (z 1.7-3.7), one at 0.62 kept out by the complete linkage (docs/quality.md);
  shape         r = v_w - beta v_s, d = r' (S_w + beta^2 S_s)^-1 r ~ chi2(k - 1) under one
                shape: merged when its p-value >= level (no significant difference in shape;
                a seasonal hotspot next to a subsiding one differs).

halo          the same test with beta < HALF_MAXIMUM: the weak piece is the strong one's
                tail (halo()); with the spatial null deciding, a hotspot that is the halo of
                a touching, stronger hotspot is not reported on its own (haloOf in
                dispersion.h5): family tuning seeds 0-4, most false hotspots under the
                false-discovery rate were such pieces of true hotspots (docs/quality.md).

level is the dispersion step's false-discovery rate (hotspot.dispersion.falseDiscoveryRate):
no number fitted on a simulator. Replaces the correlation >= 0.8 of the smoothed contrasts
(docs/quality.md).
"""
import numpy as np
from scipy import stats

HALF_MAXIMUM = 0.5


def compare(v_a, v_b, cov_a, cov_b):
    """(a_is_strong, beta, z, p_shape) of two clusters' contrast coefficients and null
    covariances (module docstring); beta, z, p_shape are NaN when an input is not finite."""
    v_a, v_b = np.asarray(v_a, dtype=np.float64), np.asarray(v_b, dtype=np.float64)
    cov_a, cov_b = np.asarray(cov_a, dtype=np.float64), np.asarray(cov_b, dtype=np.float64)
    if not all(np.all(np.isfinite(a)) for a in (v_a, v_b, cov_a, cov_b)):
        return True, np.nan, np.nan, np.nan
    k = v_a.size
    ridge = 1e-12 * max(np.trace(cov_a) + np.trace(cov_b), 1e-30) * np.eye(k)
    dist_a = v_a @ np.linalg.solve(cov_a + ridge, v_a)
    dist_b = v_b @ np.linalg.solve(cov_b + ridge, v_b)
    a_strong = bool(dist_a >= dist_b)
    (v_s, cov_s), (v_w, cov_w) = (((v_a, cov_a), (v_b, cov_b)) if a_strong
                                  else ((v_b, cov_b), (v_a, cov_a)))
    w_vs = np.linalg.solve(cov_w + ridge, v_s)
    info = float(v_s @ w_vs)
    if not info > 0:
        return a_strong, np.nan, np.nan, np.nan
    beta = float(w_vs @ v_w) / info
    z = beta * np.sqrt(info)
    r = v_w - beta * v_s
    d = float(r @ np.linalg.solve(cov_w + beta ** 2 * cov_s + ridge, r))
    return a_strong, beta, float(z), float(stats.chi2.sf(d, max(k - 1, 1)))


def same_feature(v_a, v_b, cov_a, cov_b, level):
    """(merge, beta, z, p_shape) for two clusters' contrast coefficients and null covariances
    (module docstring); merge is False when any input is not finite."""
    _, beta, z, p_shape = compare(v_a, v_b, cov_a, cov_b)
    if not np.isfinite(beta):
        return False, beta, z, p_shape
    merge = bool(z >= stats.norm.isf(level) and beta >= HALF_MAXIMUM and p_shape >= level)
    return merge, beta, z, p_shape


def halo(v_a, v_b, cov_a, cov_b, level):
    """0 (no halo), 1 (a is the halo of b) or 2 (b is the halo of a): the weaker of two
    touching clusters carries the stronger's signal (z >= z(level)) in the same shape
    (p_shape >= level) but moves less than HALF_MAXIMUM as much: the tail of the same
    feature outside its half-maximum extent, not a hotspot of its own."""
    a_strong, beta, z, p_shape = compare(v_a, v_b, cov_a, cov_b)
    if not (np.isfinite(beta) and z >= stats.norm.isf(level) and p_shape >= level
            and beta < HALF_MAXIMUM):
        return 0
    return 2 if a_strong else 1
