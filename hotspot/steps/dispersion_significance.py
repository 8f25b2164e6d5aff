"""Dispersion's tests of one cluster: its compactness (standard distance, deviational ellipse) and
the significance of its signal (F-test, empirical null, unwrapping errors, peak gate); see the
module docstring of hotspot.steps.dispersion.
"""
import numpy as np
from scipy import stats

from hotspot.utils.geo import EARTH_RADIUS_KM

KM_PER_DEG = np.deg2rad(1.0) * EARTH_RADIUS_KM
MAD_TO_STD = 1.4826
# Peak amplitude z every hotspot needs: HOTSPOT_PEAK_SCALE sqrt(2 ln n) for a cluster of n
# pixels, the growth of the largest of n noise values (4.4 at 20 pixels, 6.0 at 270, 7.2 at
# 3,000). Without a gate, the clusters that pass the signal tests and match no true hotspot
# peak at z <= 4.2 on medium hard seeds 0-15 and the easy / small scenes (30-840 pixels), and
# at 6.8 with 3,221 pixels on the 55 m LA scene; true hotspots at >= 6.6 with 206-273 pixels
# (docs/quality.md). Cores are cut only at a peak of amplitude_core.PEAK_Z.
HOTSPOT_PEAK_SCALE = 1.8
# Share of a hotspot's pixels in its largest connected patch of high band-passed amplitude
# (amplitude_core.core_fraction): most of them, a majority rule.
MIN_CORE_FRACTION = 0.5
# Empirical null (module docstring): at least this many candidates, and a one-sided 1 %
# robust z of log(signal / noise) among them.
MIN_EMPIRICAL = 30
EMPIRICAL_Z = float(stats.norm.isf(0.01))


# ---------------------------------------------------------------------------- geometry
def standard_distance(x, y):
    """Standard distance (km) of points x, y (km): eq. 7 of Tiwari & Shirzaei (2024)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return float(np.sqrt(np.mean((x - x.mean()) ** 2) + np.mean((y - y.mean()) ** 2)))


def ellipse_from_covariance(sxx, syy, sxy):
    """(semi-major, semi-minor, angle deg CCW from east in (-90, 90]) of 1-sigma ellipses.

    Vectorised over clusters; the semi-axes are the square roots of the covariance
    eigenvalues.
    """
    sxx, syy, sxy = (np.asarray(a, dtype=np.float64) for a in (sxx, syy, sxy))
    half_trace = 0.5 * (sxx + syy)
    root = np.sqrt(np.maximum((0.5 * (sxx - syy)) ** 2 + sxy ** 2, 0.0))
    major = np.sqrt(np.maximum(half_trace + root, 0.0))
    minor = np.sqrt(np.maximum(half_trace - root, 0.0))
    angle = np.rad2deg(0.5 * np.arctan2(2.0 * sxy, sxx - syy))
    angle = np.where(angle <= -90.0, angle + 180.0, angle)
    return major, minor, angle


def deviational_ellipse(x, y):
    """(x_c, y_c, semi-major, semi-minor, angle) of points x, y (km): see module docstring."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    dx, dy = x - x.mean(), y - y.mean()
    major, minor, angle = ellipse_from_covariance(np.mean(dx * dx), np.mean(dy * dy),
                                                  np.mean(dx * dy))
    return float(x.mean()), float(y.mean()), float(major), float(minor), float(angle)


def cluster_geometry(index, lon, lat, num_cluster):
    """Per-cluster centroid, S_d and ellipse from lon/lat, each cluster in its own local
    projection about its centroid (lonlat_to_xy_km with lon0, lat0 = the cluster mean):
    exact for clusters anywhere in a large scene.

    index: cluster index 0..M-1 of each labelled pixel.
    """
    n = np.bincount(index, minlength=num_cluster).astype(np.float64)
    mlon = np.bincount(index, lon, num_cluster) / n
    mlat = np.bincount(index, lat, num_cluster) / n
    dlon = lon - mlon[index]
    dlat = lat - mlat[index]
    kx = KM_PER_DEG * np.cos(np.deg2rad(mlat))
    sxx = np.bincount(index, dlon * dlon, num_cluster) / n * kx ** 2
    syy = np.bincount(index, dlat * dlat, num_cluster) / n * KM_PER_DEG ** 2
    sxy = np.bincount(index, dlon * dlat, num_cluster) / n * kx * KM_PER_DEG
    major, minor, angle = ellipse_from_covariance(sxx, syy, sxy)
    return {"ellipseCenterLon": mlon, "ellipseCenterLat": mlat,
            "standardDistance": np.sqrt(sxx + syy),
            "ellipseSemiMajor": major, "ellipseSemiMinor": minor, "ellipseAngle": angle}


# ---------------------------------------------------------------------------- statistics
def effective_count(area_km2, corr_length_km, num_pixel):
    """Independent samples in an area of a field with exponential covariance (see docstring)."""
    n_eff = np.asarray(area_km2, dtype=np.float64) / (2.0 * np.pi * float(corr_length_km) ** 2)
    return np.clip(n_eff, 1.0, np.maximum(np.asarray(num_pixel, dtype=np.float64), 1.0))


def noise_std(series):
    """White-noise std of each row (same unit) from the MAD of its first differences."""
    diff = np.diff(np.atleast_2d(np.asarray(series, dtype=np.float64)), axis=1)
    centre = np.median(diff, axis=1, keepdims=True)
    return MAD_TO_STD * np.median(np.abs(diff - centre), axis=1) / np.sqrt(2.0)


def signal_basis(years):
    """Design matrix 1, t, t^2, sin, cos(2 pi t) of the signal test (t centred, in years)."""
    t = np.asarray(years, dtype=np.float64)
    tc = t - t.mean()
    cols = [np.ones_like(t), tc, tc ** 2, np.sin(2 * np.pi * t), np.cos(2 * np.pi * t)]
    # fewer epochs than terms: keep the leading ones so that residuals remain
    return np.stack(cols[:max(2, min(len(cols), t.size - 2))], axis=1)


def signal_test(series, years):
    """(pValue, signal RMS, noise std, dof) of each row of series (K x T): module docstring.

    Rows with NaN, fewer than 4 epochs or zero noise give pValue NaN.
    """
    series = np.atleast_2d(np.asarray(series, dtype=np.float64))
    num_date = series.shape[1]
    q, r = np.linalg.qr(signal_basis(years))
    # rank from R's diagonal: with < 1 yr of data sin/cos are nearly t and t^2
    keep = np.abs(np.diag(r)) > 1e-8 * np.abs(r[0, 0])
    q = q[:, keep]
    dof = int(keep.sum()) - 1
    fit = np.nan_to_num(series) @ q @ q.T
    fit -= fit.mean(axis=1, keepdims=True)
    rms = np.sqrt(np.mean(fit ** 2, axis=1))
    noise = noise_std(series)
    nu = 0.37 * (num_date - 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.sum(fit ** 2, axis=1) / max(dof, 1) / noise ** 2
    p = stats.f.sf(ratio, max(dof, 1), max(nu, 1.0))
    bad = (~np.isfinite(ratio) | ~np.all(np.isfinite(series), axis=1)
           | (noise <= 0) | (dof < 1) | (num_date < 4))
    return np.where(bad, np.nan, p), rms, noise, dof


def velocity_test(mean_velocity, rms_velocity_std, n_eff):
    """Two-sided p-value of mean velocity = 0 with standard error rms(velocityStd)/sqrt(n_eff)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(mean_velocity) / (rms_velocity_std / np.sqrt(n_eff))
    return np.where(np.isfinite(z), 2.0 * stats.norm.sf(z), np.nan)


def _log_ratio(rms, noise):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(np.asarray(rms, dtype=np.float64) / np.asarray(noise, dtype=np.float64))


def empirical_null(table, compact):
    """(median, robust scale) of the candidates' log(signalRms / noiseLevel), or None when
    fewer than MIN_EMPIRICAL candidates have a finite ratio (module docstring)."""
    if "signalRms" not in table or "noiseLevel" not in table:
        return None
    ratio = _log_ratio(table["signalRms"], table["noiseLevel"])
    use = compact & np.isfinite(ratio)
    if use.sum() < MIN_EMPIRICAL:
        return None
    centre = np.median(ratio[use])
    scale = MAD_TO_STD * np.median(np.abs(ratio[use] - centre))
    return (centre, scale) if scale > 0 else None


def _outlier(rms, noise, null):
    """True where log(rms / noise) is an outlier of the null (True without a null)."""
    if null is None:
        return np.ones(np.shape(rms), dtype=bool)
    z = (_log_ratio(rms, noise) - null[0]) / null[1]
    return np.where(np.isfinite(z), z >= EMPIRICAL_Z, True)


def empirical_outlier(table, compact):
    """Per cluster: True unless its log(signalRms / noiseLevel) is within the bulk of the
    candidates' (compact; robust z < EMPIRICAL_Z; module docstring). True for every cluster
    when fewer than MIN_EMPIRICAL candidates have a finite ratio."""
    if "signalRms" not in table or "noiseLevel" not in table:
        return np.ones(compact.size, dtype=bool)
    return _outlier(table["signalRms"], table["noiseLevel"], empirical_null(table, compact))


def unwrap_error(table, compact, level, core=None):
    """Clusters whose signal is a quantised (n lambda / 2) jump and nothing else: the
    signature holds and the contrast with that jump removed is not significant (F-test at
    the family-wise level, or inside the bulk of the empirical null of the clusters that are
    not amplitude cores, `core`)."""
    if "isQuantisedJump" not in table:
        return np.zeros(compact.size, dtype=bool)
    core = np.zeros(compact.size, dtype=bool) if core is None else core
    p = np.asarray(table["pValueUnwrapCorrected"], dtype=np.float64)
    still = (np.isfinite(p) & (p < level)
             & _outlier(table["signalRmsUnwrapCorrected"], table["noiseLevelUnwrapCorrected"],
                        empirical_null(table, compact & ~core)))
    return np.asarray(table["isQuantisedJump"], dtype=bool) & compact & ~still


def hotspot_peak_gate(num_pixel):
    """Peak amplitude z a cluster of num_pixel pixels needs to be a hotspot (HOTSPOT_PEAK_SCALE)."""
    n = np.maximum(np.asarray(num_pixel, dtype=np.float64), 2.0)
    return HOTSPOT_PEAK_SCALE * np.sqrt(2.0 * np.log(n))


def select_hotspots(table, max_sd, min_pixel, alpha, drop_insignificant, fdr=None):
    """isHotspot, isSignificant, isUnwrapError and hotspotId (1..H in cluster-id order).
    fdr: decide by the q-values of the spatial null (qValue <= fdr) instead of the F-test."""
    compact = (table["standardDistance"] <= max_sd) & (table["numPixel"] >= min_pixel)
    p = table["pValue"]
    # Family-wise level (Bonferroni) over the candidates tested: a scene yields hundreds
    # of compact candidates, and at a per-cluster alpha of 0.05 one in twenty patches of
    # pure noise would pass (measured: docs/quality.md).
    num_test = max(1, int(np.sum(compact & np.isfinite(p))))
    core = np.asarray(table.get("coreParent", np.zeros(compact.size)), dtype=np.int64) > 0
    if fdr is not None and "qValue" in table:
        # the scene's own null (hotspot.steps.spatial_null); an untestable cluster is no
        # discovery
        q = np.asarray(table["qValue"], dtype=np.float64)
        significant = np.isfinite(q) & (q <= fdr)
    else:
        # an untestable cluster (NaN p: too few epochs, no noise estimate) is not rejected
        significant = np.where(np.isfinite(p), p < alpha / num_test, True)
        # amplitude cores were selected for their amplitude, which the null of whole
        # clusters does not describe: their peak amplitude is their gate (amplitude_core)
        significant &= empirical_outlier(table, compact & ~core) | core
    if "peakAmplitudeZ" in table:
        # a significant contrast without a peak of high band-passed amplitude is k-means'
        # selection of noise that matches a centroid (hotspot_peak_gate)
        peak = np.asarray(table["peakAmplitudeZ"], dtype=np.float64)
        significant &= np.where(np.isfinite(peak), peak >= hotspot_peak_gate(table["numPixel"]),
                                True)
    significant &= ~scattered(table)
    if fdr is not None and "pValueSpatialUnwrapCorrected" in table:
        # the spatial null tested what is left once the quantised jump is removed (qValue):
        # not significant -> the cluster's signal was the unwrapping error
        unwrap = np.asarray(table["isQuantisedJump"], dtype=bool) & compact & ~significant
    else:
        unwrap = unwrap_error(table, compact, alpha / num_test, core)
    keep = compact & ~unwrap & (significant | (not drop_insignificant))
    return {"isCandidate": compact, "isSignificant": significant, "isUnwrapError": unwrap,
            "isHotspot": keep, "hotspotId": hotspot_ids(keep)}


def scattered(table):
    """Clusters whose coreFraction is below MIN_CORE_FRACTION: most of a hotspot is one
    connected patch of high amplitude, and a large cluster whose loud pixels are scattered is
    background (amplitude_core.core_fraction). False where the fraction is unknown or absent."""
    share = np.asarray(table.get("coreFraction", np.full(table["numPixel"].size, np.nan)),
                       dtype=np.float64)
    return np.isfinite(share) & (share < MIN_CORE_FRACTION)


def hotspot_ids(is_hotspot):
    """hotspotId per cluster: 1..H for the hotspots in cluster-id order, 0 for the rest."""
    is_hotspot = np.asarray(is_hotspot, dtype=bool)
    out = np.zeros(is_hotspot.size, dtype=np.int32)
    out[is_hotspot] = np.arange(1, int(is_hotspot.sum()) + 1, dtype=np.int32)
    return out
