"""Step 7, dispersion: compact, significant clusters are hotspots; the rest is background.

For every cluster of the input label file (clusterLSTM.h5 or clusterDBSCAN.h5) the step
computes, on metric coordinates:
  standard distance   S_d = sqrt(sum((x - x_m)^2) / n + sum((y - y_m)^2) / n)   (paper, eq. 7)
  deviational ellipse centre, semi-axes sqrt(eigenvalues) of the coordinates' population
                      covariance (1 sigma, so S_d^2 = a^2 + b^2) and the major axis angle,
                      counter-clockwise from east; the paper's MATLAB draws axis-aligned
                      shapes, eq. 7 and Fig. 10 describe the rotated ellipse computed here
and the cluster's velocity statistics and mean / 10th / 90th percentile time series.

Rule: S_d <= maxStandardDistance and numPixel >= minPixel -> candidate; a candidate whose
signal is significant (or any candidate with dropInsignificant = no) -> hotspot.

Significance test (a method improvement over the paper, which keeps compact patches of
noise, ramp and seasonal background as hotspots and cannot tell a seasonal hotspot, whose
mean velocity is ~0, from noise):
  * contrast c(t) = mean time series of the cluster - background b(t) of its surroundings:
    the plane a + b x + c y fitted, per epoch, to the measured pixels of the ring
    2 S_d + spacing .. that + max(correlation length, 3 spacings) around the centroid (the
    cluster's own pixels excluded), evaluated at the centroid. Subtracting it removes what
    a hotspot does not own: ramps (exactly, even where the ring is cut by the scene edge),
    regional seasonal signal, atmosphere correlated over more than the ring distance.
    Non-candidates and clusters with < 10 ring pixels use c(t) = the cluster mean.
  * signal: least-squares fit of c(t) by 1, t, t^2, sin / cos(2 pi t) (trend, acceleration,
    annual term); signalRms = RMS of the fit minus its mean (rank - 1 = 4 dof).
  * noise: s = 1.4826 MAD(first differences of c) / sqrt(2), the noise of c itself, so the
    spatial correlation of the noise inside the cluster and between cluster and ring is
    accounted for without a model (N pixels of correlated noise are not N independent
    samples). Smooth deformation hardly changes first differences (an annual term of
    amplitude A sampled every 12 days adds < 0.15 A), so the signal does not hide itself.
    Assumes noise white in time: temporally filtered time series make the test liberal.
  * F = (sum((fit - mean(fit))^2) / dof) / s^2; pValue = F.sf(F, dof, nu) with
    nu = 0.37 (T - 2), the effective degrees of freedom of a MAD scale estimate
    (calibrated on pure noise in tests/test_dispersion.py).
  * isSignificant: pValue < alpha / (number of candidates tested), i.e. a family-wise level
    (Bonferroni): hundreds of candidates are tested in a scene, and at alpha = 0.05 per
    cluster ~5 % of the noise patches passed (docs/quality.md).
  * empirical null (scenes with >= MIN_EMPIRICAL candidates): the clusters come from
    k-means of the band-passed series, which picks the pixels where noise looks like a
    centroid's shape, so the F-test of the same data is liberal for them (medium hard
    scene: noise patches at p ~ 1e-5 among 600 candidates, ~100x the nominal rate).
    Most candidates are such noise patches, so their log(signalRms / noiseLevel) gives
    the null: a cluster is significant only when it is also an outlier of it, robust
    z = (x - median) / (1.4826 MAD) >= EMPIRICAL_Z (one-sided 1 %).
  * unwrapping errors (hotspot.unwrap_check, unwrapCheck = auto: on when the stack has
    WAVELENGTH): a candidate whose contrast is a jump of n lambda / 2 shared by >= 10 % of its
    pixels (unwrap_check.MIN_FRACTION) over one epoch interval, and not significant once that
    jump is removed, is isUnwrapError and never a hotspot (docs/quality.md).
  * amplitude cores (hotspot.amplitude_core, amplitudeCore = auto: on when tskm wrote
    hotspotFiltered.h5): after a first pass, each cluster's connected pixels of high
    band-passed amplitude (smoothed robust z >= 2 with a peak >= 7, >= minPixel pixels)
    become a cluster of their own (coreParent) and the table is recomputed: a weak hotspot
    inside a cluster of noise pixels that resemble its centroid is no longer diluted. A
    core is not tested against the empirical null (it was selected for its amplitude) and
    every hotspot needs peakAmplitudeZ >= 1.8 sqrt(2 ln numPixel) (hotspot_peak_gate:
    the largest of n noise values grows with n; docs/quality.md).
  * fragments: a hotspot and the clusters that touch it (pixels within TOUCH_SPACING
    spacings) - other hotspots, or compact candidates too weak to be hotspots alone - whose
    contrasts, smoothed over the tskm window, correlate at >= MERGE_CORRELATION are one
    feature that tskm split between temporal clusters; they are merged (numMerged,
    mergedCluster) and the table recomputed. A core never goes back into the rest of its
    parent, and a merge whose result is no hotspot (a weak fragment diluted it) keeps only
    its hotspots, or is undone when it has fewer than two.
  * kept for information: pValueVelocity, a two-sided z-test of the mean velocity against
    zero with standard error rms(velocityStd) / sqrt(n_eff), n_eff = clip(A / (2 pi L^2),
    1, n) the independent samples in a cluster of area A for an exponential covariance of
    correlation length L (the integral of exp(-r/L) over the plane is 2 pi L^2).
Memory: per-pixel vectors of the scene (positions, labels, a KD-tree; ~150 bytes a pixel)
stay in memory; the displacement is read once, in blocks bounded by maxMemory.
Randomness (ring and percentile subsamples, spacing sample) comes from hotspot.randomSeed.
"""
from pathlib import Path

import numpy as np
from scipy import sparse, stats
from scipy.spatial import cKDTree

from hotspot import amplitude_core, same_feature, spatial_null, unwrap_check
from hotspot.export import HOTSPOT_FILE, grid_georef
from hotspot.utils.errors import HotspotError
from hotspot.utils.geo import EARTH_RADIUS_KM, lonlat_to_xy_km, median_spacing
from hotspot.utils.h5io import open_h5, read_attrs, require_dataset, write_h5
from hotspot.utils.labels import NO_DATA, read_pixel_label, write_label_file
from hotspot.utils.stack import (STACK_FILE, block_size, decimal_years, iter_blocks, num_blocks,
                                 read_info, read_pixels, smooth_window)

STEP = "dispersion"
DISPERSION_FILE = "dispersion.h5"
KEY = "hotspot.dispersion."
KM_PER_DEG = np.deg2rad(1.0) * EARTH_RADIUS_KM
MIN_RING_PIXEL = 10
MAX_RING_PIXEL = 5000          # a ring mean of 5000 pixels is noise-free enough; bounds memory
MAX_SAMPLE_PER_CLUSTER = 5000  # rows per cluster for the 10/90 % percentile time series
MAD_TO_STD = 1.4826
# Fragment merge (compute_dispersion): a hotspot and clusters with pixels closer than
# TOUCH_SPACING pixel spacings whose smoothed contrasts correlate at MERGE_CORRELATION.
# Medium hard scenes: fragment pairs correlated 0.86-0.98; the two fragments of seed 4's
# seasonal twin were 2.2 spacings apart (DBSCAN noise pixels between them), hence 2.5.
TOUCH_SPACING = 2.5
MERGE_CORRELATION = 0.8
# Peak amplitude z every hotspot needs: HOTSPOT_PEAK_SCALE sqrt(2 ln n) for a cluster of n
# pixels, the growth of the largest of n noise values (4.4 at 20 pixels, 6.0 at 270, 7.2 at
# 3,000). Without a gate, the clusters that pass the signal tests and match no true hotspot
# peak at z <= 4.2 on medium hard seeds 0-15 and the easy / small scenes (30-840 pixels), and
# at 6.8 with 3,221 pixels on the 55 m LA scene; true hotspots at >= 6.6 with 206-273 pixels
# (docs/quality.md). Cores are cut only at a peak of amplitude_core.PEAK_Z.
HOTSPOT_PEAK_SCALE = 1.8
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
        # the scene's own null (hotspot.spatial_null); an untestable cluster is no discovery
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
    unwrap = unwrap_error(table, compact, alpha / num_test, core)
    keep = compact & ~unwrap & (significant | (not drop_insignificant))
    hotspot_id = np.zeros(keep.size, dtype=np.int32)
    hotspot_id[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return {"isCandidate": compact, "isSignificant": significant, "isUnwrapError": unwrap,
            "isHotspot": keep, "hotspotId": hotspot_id}


# ---------------------------------------------------------------------------- spatial
def pixel_area_km2(attrs, lat, spacing_km):
    """Footprint area (km2) of each pixel: from the grid steps, else spacing^2 (points)."""
    geo = grid_georef(attrs)
    if geo is None:
        return np.full(np.shape(lat), spacing_km ** 2)
    if geo["geographic"]:
        return (abs(geo["x_step"] * geo["y_step"]) * KM_PER_DEG ** 2
                * np.cos(np.deg2rad(np.asarray(lat, dtype=np.float64))))
    return np.full(np.shape(lat), abs(geo["x_step"] * geo["y_step"]) / 1e6)


def ring_members(tree, centre_xy, r_in, r_out, owner, cluster, rng):
    """Indices of tree points in the ring r_in <= r < r_out around centre (km) whose owner
    is not `cluster`; at most MAX_RING_PIXEL of them (seeded) and the full count."""
    idx = np.asarray(tree.query_ball_point(centre_xy, r_out), dtype=np.int64)
    if idx.size:
        dist = np.hypot(*(tree.data[idx] - centre_xy).T)
        idx = idx[(dist >= r_in) & (owner[idx] != cluster)]
    total = idx.size
    if total > MAX_RING_PIXEL:
        idx = np.sort(rng.choice(idx, size=MAX_RING_PIXEL, replace=False))
    return idx, total


# ---------------------------------------------------------------------------- the step
def compute_dispersion(stack_file, pixel_label, *, max_sd, min_pixel, alpha, drop_insignificant,
                       corr_length, max_memory, seed, temporal_label=None,
                       half_wavelength=None, amplitude=None, merge=True, fdr=None, log=print):
    """Per-cluster table (dict of arrays, M rows) and the hotspot pixel label (N).

    Reads the stack's displacement once, in blocks of at most max_memory GB, and once more
    for each recomputation: after amplitude cores are split off, after fragments are merged,
    after a diluting merge is undone.
    half_wavelength (m): enables the unwrapping-error check (None: off). amplitude: per-pixel
    amplitude of the band-passed series (hotspot.amplitude_core; None: no split); every
    cluster but the unwrapping errors of the first pass gives up its amplitude cores as
    clusters of their own, and a hotspot needs a peak amplitude z >= hotspot_peak_gate.
    merge: a hotspot and the touching clusters that move alike (fragment_groups) are one
    deformation feature that tskm split between temporal clusters: they are merged (module
    docstring).
    fdr: false-discovery rate of the spatial-null decision (hotspot.spatial_null; None: the
    F-test, Bonferroni and empirical null decide).
    """
    kwargs = dict(max_sd=max_sd, min_pixel=min_pixel, alpha=alpha,
                  drop_insignificant=drop_insignificant, corr_length=corr_length,
                  max_memory=max_memory, seed=seed, temporal_label=temporal_label,
                  half_wavelength=half_wavelength, log=log,
                  spatial=_spatial_setup(stack_file, max_memory, fdr, log))
    labels = np.asarray(pixel_label, dtype=np.int64)
    table, hotspot_label, geo = _dispersion_pass(stack_file, labels, amplitude=amplitude,
                                                 **kwargs)
    core_parent = {}
    if amplitude is not None:
        # later passes keep the z of the first labels: a core's peak is the one it was cut at
        kwargs["amplitude_z"] = geo["amplitude_z"]
        split_ids = table["clusterId"][~table["isUnwrapError"]]
        labels, core_parent = amplitude_core.split_cores(labels, split_ids, geo["x"], geo["y"],
                                                         geo["amplitude_z"], geo["spacing"],
                                                         min_pixel)
        log(f"dispersion: {len(core_parent)} amplitude cores (band-passed amplitude z >= "
            f"{amplitude_core.LOW_Z:g}, peak >= {amplitude_core.PEAK_Z:g}, >= {min_pixel} "
            f"pixels) split off {len(set(core_parent.values()))} clusters"
            + ("; recomputing" if core_parent else ""))
        if core_parent:
            kwargs["core_parent"] = core_parent
            table, hotspot_label, geo = _dispersion_pass(stack_file, labels, **kwargs)
    merged = fragment_groups(table, labels, geo) if merge else {}
    if merged:
        log(f"dispersion: {len(merged)} clusters merged into touching hotspots that move "
            + ("alike (same shape against the scene's noise, hotspot.same_feature): "
               if geo.get("null") is not None else
               f"alike (smoothed contrast correlation >= {MERGE_CORRELATION}): ")
            + ", ".join(f"{a} -> {b}" for a, b in sorted(merged.items())) + "; recomputing")
        before = labels
        hot_before = set(table["clusterId"][table["isHotspot"]].tolist())
        while True:
            labels, kwargs = _merge_labels(before, merged, core_parent, kwargs)
            table, hotspot_label, geo = _dispersion_pass(stack_file, labels, **kwargs)
            if not merged:
                break
            # a merge that leaves no hotspot (a weak fragment diluted the signal) keeps only
            # its hotspots, then, if that fails too, is undone
            row = np.searchsorted(table["clusterId"], np.array(sorted(set(merged.values()))))
            lost = set(table["clusterId"][row[~table["isHotspot"][row]]].tolist())
            if not lost:
                break
            merged, kept = _shrink_merges(merged, lost, hot_before)
            log(f"dispersion: merges into {sorted(lost)} are no hotspot: "
                + (f"kept for the hotspots {kept} only" if kept else "undone")
                + "; recomputing")
    ids = table["clusterId"]
    into = np.searchsorted(ids, np.array(list(merged.values()), dtype=np.int64))
    table["numMerged"] = (1 + np.bincount(into, minlength=ids.size)).astype(np.int32)
    table["mergedCluster"] = np.array(sorted(merged.items()), dtype=np.int32).reshape(-1, 2)
    return table, hotspot_label


def _shrink_merges(merged, lost, hot_before):
    """merged without the groups whose root is in `lost`, except that a lost group made of
    hotspots (of the pass before merging) and weaker fragments is kept for its >= 2
    hotspots alone. Returns (merges, the hotspot groups kept as lists of ids)."""
    out = {c: r for c, r in merged.items() if r not in lost}
    kept = []
    for root in sorted(lost):
        members = [root] + sorted(c for c, r in merged.items() if r == root)
        hot = sorted(m for m in members if m in hot_before)
        if 2 <= len(hot) < len(members):
            out.update({m: hot[0] for m in hot[1:]})
            kept.append(hot)
    return out, kept


def _merge_labels(labels, merged, core_parent, kwargs):
    """labels with each merged cluster renamed to its group's id, and the pass keywords with
    the merged cores dropped from core_parent."""
    lut = np.arange(labels.max() + 1)
    lut[list(merged)] = list(merged.values())
    out = np.where(labels > 0, lut[np.maximum(labels, 0)], labels)
    kwargs = dict(kwargs)
    if core_parent:
        kwargs["core_parent"] = {c: p for c, p in core_parent.items() if c not in merged}
    return out, kwargs


def fragment_groups(table, labels, geo):
    """{cluster id: id it merges into} for a hotspot and the clusters that touch it (pixels
    within TOUCH_SPACING spacings) and whose contrast series, smoothed over the tskm window,
    correlate with its at >= MERGE_CORRELATION: other hotspots, and compact candidates
    (tested against a ring, not unwrapping errors) too weak to be hotspots alone; each group
    goes to its smallest cluster id. With the spatial null (geo["null"]: falseDiscoveryRate
    set) two touching hotspots merge when hotspot.same_feature finds them alike instead."""
    ids = table["clusterId"]
    hot = table["isHotspot"]
    partner = (table["isCandidate"] & ~hot & ~table["isUnwrapError"]
               & (np.asarray(table["ringPixel"]) > 0))
    if geo.get("null") is not None:
        # under the spatial-null decision only hotspots merge: the halo around a bowl carries
        # some of its signal (a discovery, same shape) but is no part of it (docs/quality.md)
        partner = np.zeros_like(hot)
    if not hot.any() or hot.sum() + partner.sum() < 2:
        return {}
    labels = np.asarray(labels, dtype=np.int64)
    pix = np.nonzero(np.isin(labels, ids[hot | partner]))[0]
    pts = np.c_[geo["x"][pix], geo["y"][pix]]
    pairs = cKDTree(pts).query_pairs(TOUCH_SPACING * geo["spacing"], output_type="ndarray")
    if not pairs.size:
        return {}
    row = np.searchsorted(ids, labels[pix])
    a, b = row[pairs[:, 0]], row[pairs[:, 1]]
    # a core never goes back into the rest of the cluster it was split from
    parent_of = np.asarray(table.get("coreParent", np.zeros(ids.size)), dtype=np.int64)
    keep = (a != b) & (hot[a] | hot[b]) & (parent_of[a] != ids[b]) & (parent_of[b] != ids[a])
    touch = np.unique(np.sort(np.c_[a, b][keep], axis=1), axis=0)
    if not touch.size:
        return {}
    from scipy.ndimage import uniform_filter1d
    smooth = uniform_filter1d(geo["contrast"], geo["window"], axis=1, mode="nearest")
    parent = {}

    def root(c):
        while parent.get(c, c) != c:
            c = parent[c]
        return c

    null = geo.get("null")
    for i, j in touch.tolist():
        if null is not None:
            # one feature by a test against the scene's noise (hotspot.same_feature)
            alike = same_feature.same_feature(null["contrast"][i], null["contrast"][j],
                                              null["cov"][i], null["cov"][j], null["level"])[0]
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                r = np.corrcoef(smooth[i], smooth[j])[0, 1]
            alike = np.isfinite(r) and r >= MERGE_CORRELATION
        if alike:
            ci, cj = root(int(ids[i])), root(int(ids[j]))
            if ci != cj:
                parent[max(ci, cj)] = min(ci, cj)
    return {c: root(c) for c in parent}


def _hotspot_label(labels, table):
    """Per pixel: hotspotId of its cluster, 0 for no hotspot, NO_DATA where unmeasured."""
    labels = np.asarray(labels, dtype=np.int64)
    out = np.where(labels >= 0, 0, NO_DATA).astype(np.int32)
    labelled = labels > 0
    out[labelled] = table["hotspotId"][np.searchsorted(table["clusterId"], labels[labelled])]
    return out


def _cluster_peak(labels, ids, values):
    """Largest finite value of each cluster (ids sorted), NaN where it has none."""
    labels = np.asarray(labels)
    labelled = (labels > 0) & np.isfinite(values)
    peak = np.full(ids.size, np.nan)
    np.fmax.at(peak, np.searchsorted(ids, labels[labelled]), values[labelled])
    return peak


def _dispersion_pass(stack_file, labels, *, max_sd, min_pixel, alpha, drop_insignificant,
                     corr_length, max_memory, seed, temporal_label, half_wavelength, log,
                     core_parent=None, amplitude_z=None, amplitude=None, spatial=None):
    """One computation of the table and hotspot label; also returns the metric positions
    (x, y km), the pixel spacing, the contrast series and the smoothing window that
    fragment_groups needs, and the amplitude z. core_parent: {cluster id: parent id} of the
    amplitude cores; amplitude_z: per-pixel z of hotspot.amplitude_core (peakAmplitudeZ
    column and gate), or amplitude: the per-pixel amplitude it is computed from with these
    labels."""
    info = read_info(stack_file)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (info.num_pixel,):
        raise HotspotError(f"label file: pixelLabel has {labels.size} values but {stack_file} "
                           f"has {info.num_pixel} pixels; re-run the clustering steps")
    rng = np.random.default_rng(seed)
    px = read_pixels(stack_file, ["longitude", "latitude", "velocity", "velocityStd", "coherence"]
                     + (["row", "col"] if spatial is not None else []))
    lon, lat = px["longitude"].astype(np.float64), px["latitude"].astype(np.float64)
    measured = labels >= 0
    if not np.all(np.isfinite(lon[measured]) & np.isfinite(lat[measured])):
        raise HotspotError(f"{stack_file}: longitude/latitude missing (NaN) for labelled pixels")

    ids = np.unique(labels[labels > 0])
    num_cluster = ids.size
    labelled = labels > 0
    index = np.searchsorted(ids, labels[labelled])
    num_pixel = np.bincount(index, minlength=num_cluster)
    table = {"clusterId": ids.astype(np.int32), "numPixel": num_pixel.astype(np.int32)}
    table.update(cluster_geometry(index, lon[labelled], lat[labelled], num_cluster))

    # scene-wide metric positions: ellipse centres on one map, ring queries
    lon0, lat0 = float(np.mean(lon[measured])), float(np.mean(lat[measured]))
    x, y = lonlat_to_xy_km(lon, lat, lon0, lat0)
    table["ellipseCenterX"], table["ellipseCenterY"] = lonlat_to_xy_km(
        table["ellipseCenterLon"], table["ellipseCenterLat"], lon0, lat0)
    measured_idx = np.nonzero(measured)[0]
    tree = cKDTree(np.c_[x[measured_idx], y[measured_idx]])
    spacing = median_spacing(tree, rng)
    area = pixel_area_km2(info.attrs, lat, spacing)
    table["areaKm2"] = np.bincount(index, area[labelled], num_cluster)
    table.update(_pixel_stats(index, num_cluster, px, labelled))
    table["parentTemporalCluster"] = _majority(index, num_cluster, temporal_label, labelled)
    parent = core_parent or {}
    table["coreParent"] = np.array([parent.get(int(c), 0) for c in ids], dtype=np.int32)
    if amplitude_z is None and amplitude is not None:
        amplitude_z = amplitude_core.amplitude_z(x, y, labels, amplitude, spacing)
    if amplitude_z is not None:
        table["peakAmplitudeZ"] = _cluster_peak(labels, ids, amplitude_z)

    candidate = (table["standardDistance"] <= max_sd) & (num_pixel >= min_pixel)
    log(f"{num_cluster} clusters, {int(candidate.sum())} with S_d <= {max_sd:.3g} km and "
        f">= {min_pixel} pixels; pixel spacing {spacing * 1000:.0f} m, "
        f"correlation length {corr_length:.3g} km")

    pixel_cluster = np.full(info.num_pixel, -1, dtype=np.int64)
    pixel_cluster[labelled] = index
    cand_idx = np.nonzero(candidate)[0]
    ring, ring_total = ring_matrix(tree, measured_idx, pixel_cluster, cand_idx, table, spacing,
                                   corr_length, rng)
    ts = _timeseries_pass(stack_file, info, pixel_cluster, num_cluster, ring, max_memory, rng)
    table.update({"meanTimeseries": ts["mean"], "p10Timeseries": ts["p10"],
                  "p90Timeseries": ts["p90"]})

    contrast, background, has_ring = ring_contrast(ts, cand_idx, ring_total)
    p, rms, noise, dof = signal_test(contrast, decimal_years(info.dates))
    n_eff = effective_count(table["areaKm2"], corr_length, num_pixel)
    table.update({"numPixelEffective": n_eff, "noiseLevel": noise, "signalRms": rms,
                  "pValue": p, "ringPixel": np.where(has_ring, ring_total, 0).astype(np.int32),
                  "ringTimeseries": background.astype(np.float32)})
    table.update(unwrap_columns(ts, contrast, background, has_ring, candidate, half_wavelength,
                                decimal_years(info.dates)))
    p_vel = velocity_test(table["meanVelocity"], table["rmsVelocityStd"], n_eff)
    table["pValueVelocity"] = p_vel
    table["isSignificantVelocity"] = np.where(np.isfinite(p_vel), p_vel < alpha, True)
    table.update(spatial_null.velocity_columns(ts["mean"], background,
                                               decimal_years(info.dates)))
    null = None
    if spatial is not None:
        null = _spatial_columns(spatial, table, labels, x, y, px, candidate & has_ring,
                                spacing, corr_length, rng, log)
    table.update(select_hotspots(table, max_sd, min_pixel, alpha, drop_insignificant,
                                 fdr=None if spatial is None else spatial["fdr"]))
    num_significant = int((candidate & table["isSignificant"]).sum())
    log((f"spatial null, Benjamini-Hochberg q <= {spatial['fdr']:g}" if spatial is not None else
         f"signal test (F, {dof} dof, family-wise alpha {alpha} over the candidates, "
         f"Bonferroni)") + f": {num_significant} of {int(candidate.sum())} "
        f"candidates significant; {int(table['isUnwrapError'].sum())} candidates are unwrapping "
        f"errors (a jump of n lambda/2 and no other signal"
        f"{'' if half_wavelength else ': check off'}) -> {int(table['isHotspot'].sum())} hotspots")

    hotspot_label = _hotspot_label(labels, table)
    table["date"] = np.array(info.dates, dtype="S8")
    table["xyOrigin"] = np.array([lon0, lat0])
    return table, hotspot_label, {"x": x, "y": y, "spacing": spacing, "contrast": contrast,
                                  "window": smooth_window(info.dates),
                                  "amplitude_z": amplitude_z, "null": null}


def _spatial_setup(stack_file, max_memory, fdr, log):
    """Smooth temporal basis and per-pixel coefficients of the spatial null (one stack read),
    or None when the decision is not by false-discovery rate."""
    if fdr is None:
        return None
    import time
    info = read_info(stack_file)
    basis = spatial_null.temporal_basis(decimal_years(info.dates))
    t0 = time.time()
    coef = spatial_null.project_stack(stack_file, basis, max_memory)
    log(f"dispersion: spatial null: {basis.shape[1]} smooth temporal components (periods >= "
        f"{spatial_null.MIN_PERIOD_YR:g} yr) of {coef.shape[0]} series in {time.time() - t0:.1f} s")
    return {"fdr": fdr, "coef": coef}


def _spatial_columns(spatial, table, labels, x, y, px, tested, spacing, corr_length, rng, log):
    """pValueSpatial / qValue ... columns of the clusters `tested` (hotspot.spatial_null) and
    the null statistics the fragment test needs."""
    import time
    t0 = time.time()
    if "index" not in spatial:
        # the measured pixels and their positions are the same in every pass: built once
        spatial["coef"][labels < 0] = np.nan
        spatial["index"] = spatial_null.scene_index(x, y, spatial["coef"], spacing,
                                                    row=px.get("row"), col=px.get("col"))
    coef, index = spatial["coef"], spatial["index"]
    r_in = 2.0 * table["standardDistance"] + spacing
    r_out = r_in + max(corr_length, 3.0 * spacing)
    rows = np.nonzero(tested)[0]
    res = spatial_null.candidate_pvalues(index, coef, labels, table["clusterId"], rows, r_in,
                                         r_out, rng, cache=spatial.setdefault("cache", {}))
    q = spatial_null.fdr_qvalues(res["p"])
    table.update({"pValueSpatial": res["p"], "pValueSpatialMC": res["p_mc"], "qValue": q,
                  "contrastDistance": res["distance"], "numNullPlacement": res["num_null"]})
    res["level"] = spatial["fdr"]
    log(f"dispersion: spatial null of {rows.size} candidates ({int(res['num_null'].sum())} "
        f"placements, {time.time() - t0:.1f} s): {int(np.sum(q <= spatial['fdr']))} with "
        f"q <= {spatial['fdr']:g} (Benjamini-Hochberg)")
    return res


def ring_matrix(tree, measured_idx, pixel_cluster, cand_idx, table, spacing, corr_length, rng):
    """Sparse (6 x candidate) x pixel matrix of the plane-fit moments 1, x, y, xx, xy, yy
    of each candidate's ring (x, y relative to its centroid), and each cluster's ring size
    (0: fewer than MIN_RING_PIXEL)."""
    rows, cols, vals = [], [], []
    ring_total = np.zeros(table["numPixel"].size, dtype=np.int64)
    owner = pixel_cluster[measured_idx]
    for j, c in enumerate(cand_idx):
        r_in = 2.0 * table["standardDistance"][c] + spacing
        r_out = r_in + max(corr_length, 3.0 * spacing)
        centre = np.array([table["ellipseCenterX"][c], table["ellipseCenterY"][c]])
        members, ring_total[c] = ring_members(tree, centre, r_in, r_out, owner, c, rng)
        if ring_total[c] < MIN_RING_PIXEL:
            ring_total[c] = 0
            continue
        xr, yr = tree.data[members, 0] - centre[0], tree.data[members, 1] - centre[1]
        for k, v in enumerate((np.ones_like(xr), xr, yr, xr * xr, xr * yr, yr * yr)):
            rows.append(np.full(members.size, 6 * j + k))
            cols.append(measured_idx[members])
            vals.append(v)
    empty = [np.zeros(0)]
    ring = sparse.csc_matrix((np.concatenate(vals or empty),
                              (np.concatenate(rows or empty).astype(np.int64),
                               np.concatenate(cols or empty).astype(np.int64))),
                             shape=(6 * cand_idx.size, pixel_cluster.size))
    return ring, ring_total


def ring_contrast(ts, cand_idx, ring_total):
    """(contrast M x T, background M x T (NaN without ring), has_ring M): module docstring."""
    contrast = ts["mean"].astype(np.float64)
    background = np.full(contrast.shape, np.nan)
    fitted = ring_background(ts["ring_moment"], ts["ring_gram"])
    for j, c in enumerate(cand_idx):
        if ring_total[c] and np.all(np.isfinite(fitted[j])):
            background[c] = fitted[j]
    has_ring = np.all(np.isfinite(background), axis=1)
    contrast[has_ring] -= background[has_ring]
    return contrast, background, has_ring


def _pixel_stats(index, num_cluster, px, labelled):
    """Velocity (m/yr), velocityStd and coherence statistics per cluster, NaN-aware."""
    out = {}
    v = px["velocity"][labelled].astype(np.float64)
    ok = np.isfinite(v)
    n = np.bincount(index[ok], minlength=num_cluster).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(index[ok], v[ok], num_cluster) / n
        dev = v[ok] - mean[index[ok]]
        out["meanVelocity"] = mean
        out["stdVelocity"] = np.sqrt(np.bincount(index[ok], dev * dev, num_cluster) / n)
        order = np.argsort(index, kind="stable")
        starts = np.searchsorted(index[order], np.arange(num_cluster))
        if num_cluster:
            out["minVelocity"] = np.fmin.reduceat(v[order], starts)
            out["maxVelocity"] = np.fmax.reduceat(v[order], starts)
        else:
            out["minVelocity"] = out["maxVelocity"] = np.zeros(0)
        vs = px["velocityStd"][labelled].astype(np.float64)
        ok = np.isfinite(vs)
        out["rmsVelocityStd"] = np.sqrt(np.bincount(index[ok], vs[ok] ** 2, num_cluster)
                                        / np.bincount(index[ok], minlength=num_cluster))
        coh = px["coherence"][labelled].astype(np.float64)
        ok = np.isfinite(coh)
        out["meanCoherence"] = (np.bincount(index[ok], coh[ok], num_cluster)
                                / np.bincount(index[ok], minlength=num_cluster))
    return out


def _majority(index, num_cluster, temporal_label, labelled):
    """Most frequent temporal (tskm) cluster of each cluster, -1 when unknown."""
    out = np.full(num_cluster, -1, dtype=np.int32)
    if temporal_label is None or temporal_label.shape != labelled.shape or not num_cluster:
        return out
    t = np.asarray(temporal_label, dtype=np.int64)[labelled]
    ok = t > 0
    if not ok.any():
        return out
    tid, tinv = np.unique(t[ok], return_inverse=True)
    counts = sparse.coo_matrix((np.ones(tinv.size), (index[ok], tinv)),
                               shape=(num_cluster, tid.size)).toarray()
    has = counts.sum(axis=1) > 0
    out[has] = tid[np.argmax(counts[has], axis=1)]
    return out


def _timeseries_pass(stack_file, info, pixel_cluster, num_cluster, ring, max_memory, rng):
    """One blockwise pass: cluster and ring sums, percentile samples."""
    from mintpy.utils import ptime
    n, t = info.num_pixel, info.num_date
    labelled = pixel_cluster >= 0
    # seeded subsample of each cluster's rows for the percentiles, bounded by memory
    cap = int(min(MAX_SAMPLE_PER_CLUSTER,
                  max(100, 0.25 * max_memory * 1024 ** 3 / (8 * t) / max(num_cluster, 1))))
    sample_pos = np.full(n, -1, dtype=np.int64)
    picked = []
    for c, members in enumerate(_group(pixel_cluster, num_cluster)):
        if members.size > cap:
            members = np.sort(rng.choice(members, size=cap, replace=False))
        picked.append(members)
    picked_all = np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)
    sample_pos[picked_all] = np.arange(picked_all.size)
    samples = np.empty((picked_all.size, t), dtype=np.float32)

    sums = np.zeros((num_cluster, t))
    counts = np.zeros((num_cluster, t))
    num_ring = ring.shape[0] // 6
    first = ring[0::6]                  # the "1" rows: ring membership
    moment = np.zeros((3 * num_ring, t))
    gram = np.zeros((6 * num_ring, t))
    in_ring = np.asarray(first.sum(axis=0)).ravel() > 0
    size = block_size(t, max_memory, bytes_per_value=8, copies=4)
    bar = ptime.progressBar(maxValue=num_blocks(n, size), prefix="dispersion: ")
    with open_h5(stack_file) as f:
        dset = require_dataset(f, "displacement", stack_file)
        for i, (start, stop) in enumerate(iter_blocks(n, size)):
            bar.update(i + 1, suffix=f"{start}-{stop}")
            use = labelled[start:stop] | in_ring[start:stop]
            if not use.any():
                continue
            disp = dset[start:stop]
            nan = np.isnan(disp)
            valid = (~nan).astype(np.float64)
            # float64 sums: results must not depend on the block size
            disp = np.where(nan, 0.0, disp.astype(np.float64))
            pc = pixel_cluster[start:stop]
            rows = np.nonzero(pc >= 0)[0]
            onehot = sparse.csr_matrix((np.ones(rows.size), (pc[rows], rows)),
                                       shape=(num_cluster, stop - start))
            sums += onehot @ disp
            counts += onehot @ valid
            if num_ring:
                block_ring = ring[:, start:stop]
                # sum(d), sum(x d), sum(y d) of each ring and epoch
                moment += (block_ring[_moment_rows(num_ring)] @ disp)
                if nan.any():
                    gram += block_ring @ valid
                else:
                    gram += np.asarray(block_ring.sum(axis=1))
            pos = sample_pos[start:stop]
            keep = pos >= 0
            samples[pos[keep]] = np.where(nan[keep], np.nan, disp[keep])
    bar.close()

    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts
    out = {"mean": mean.astype(np.float32), "ring_moment": moment.reshape(num_ring, 3, t),
           "ring_gram": gram.reshape(num_ring, 6, t)}
    p10 = np.full((num_cluster, t), np.nan, dtype=np.float32)
    p90 = np.full((num_cluster, t), np.nan, dtype=np.float32)
    offset = 0
    for c, members in enumerate(picked):
        rows = samples[offset:offset + members.size]
        offset += members.size
        if rows.size:
            # nanpercentile loops in Python over epochs: only where NaNs need it
            pct = np.nanpercentile if np.isnan(rows).any() else np.percentile
            p10[c], p90[c] = pct(rows, [10, 90], axis=0)
    offsets = np.concatenate([[0], np.cumsum([m.size for m in picked])]).astype(np.int64)
    out.update({"p10": p10, "p90": p90, "samples": samples, "sample_offsets": offsets})
    return out


def cluster_rows(ts, c):
    """The sampled rows (at most MAX_SAMPLE_PER_CLUSTER) of cluster index c, m."""
    return ts["samples"][ts["sample_offsets"][c]:ts["sample_offsets"][c + 1]]


def unwrap_columns(ts, contrast, background, has_ring, candidate, half_wavelength, years):
    """Unwrapping-error signature of every candidate with a ring (hotspot.unwrap_check) and
    the signal test of its contrast with the quantised jump removed; table columns."""
    m, t = contrast.shape
    cols = {"unwrapStart": np.zeros(m, np.int32), "unwrapStop": np.zeros(m, np.int32),
            "unwrapJump": np.zeros(m), "unwrapFraction": np.zeros(m),
            "unwrapResidual": np.full(m, np.nan), "isQuantisedJump": np.zeros(m, bool),
            "pValueUnwrapCorrected": np.full(m, np.nan),
            "signalRmsUnwrapCorrected": np.full(m, np.nan),
            "noiseLevelUnwrapCorrected": np.full(m, np.nan)}
    if not (half_wavelength and half_wavelength > 0):
        return cols
    corrected, which = [], []
    for c in np.nonzero(candidate & has_ring)[0]:
        sig = unwrap_check.signature(cluster_rows(ts, c) - background[c], contrast[c],
                                     half_wavelength)
        cols["unwrapStart"][c], cols["unwrapStop"][c] = sig["start"], sig["stop"]
        cols["unwrapJump"][c], cols["unwrapFraction"][c] = sig["jump"], sig["fraction"]
        cols["unwrapResidual"][c] = sig["residual"]
        cols["isQuantisedJump"][c] = sig["is_quantised"]
        if sig["is_quantised"]:
            corrected.append(sig["corrected"])
            which.append(c)
    if which:
        p, rms, noise, _ = signal_test(np.array(corrected), years)
        cols["pValueUnwrapCorrected"][which] = p
        cols["signalRmsUnwrapCorrected"][which] = rms
        cols["noiseLevelUnwrapCorrected"][which] = noise
    return cols


def _moment_rows(num_ring):
    """Rows 1, x, y of each ring in the (6 x ring) moment matrix."""
    return (6 * np.arange(num_ring)[:, None] + np.arange(3)[None, :]).ravel()


def ring_background(moment, gram):
    """Plane fitted to each ring and epoch, evaluated at the centroid (the intercept).

    moment: (R, 3, T) sums of d, x d, y d; gram: (R, 6, T) sums of 1, x, y, xx, xy, yy.
    Falls back to the ring mean where the plane is ill-determined (collinear ring pixels).
    """
    num_ring, _, t = moment.shape
    out = np.full((num_ring, t), np.nan)
    if not num_ring:
        return out
    g = np.moveaxis(gram, 1, -1)                                     # (R, T, 6)
    mat = g[..., [0, 1, 2, 1, 3, 4, 2, 4, 5]].reshape(num_ring, t, 3, 3)
    rhs = np.moveaxis(moment, 1, -1)                                 # (R, T, 3)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = rhs[..., 0] / g[..., 0]
        cond = np.linalg.cond(mat)
        ok = np.isfinite(cond) & (cond < 1e8) & (g[..., 0] >= MIN_RING_PIXEL)
        if ok.any():
            out[ok] = np.linalg.solve(mat[ok], rhs[ok][..., None])[:, 0, 0]
        out[~ok] = mean[~ok]
    return out


def _group(pixel_cluster, num_cluster):
    """Pixel indices of each cluster 0..M-1 (sorted)."""
    order = np.argsort(pixel_cluster, kind="stable")
    bounds = np.searchsorted(pixel_cluster[order], np.arange(num_cluster + 1))
    return [order[bounds[c]:bounds[c + 1]] for c in range(num_cluster)]


# ---------------------------------------------------------------------------- I/O
def input_file(ctx, must_exist=True):
    """The label file to read: the template value or clusterLSTMP.h5 / clusterLSTM.h5 /
    clusterDBSCAN.h5, the first that exists."""
    path = ctx.config.get_path(KEY + "input", ctx.workdir)
    if path is not None:
        if must_exist and not path.is_file():
            raise HotspotError(f"{KEY}input = {path}: label file not found")
        return path
    # LSTM + perceptron first: it sees position and temporal cluster, and reproduces the
    # DBSCAN labels best (README, trainLSTM.h5)
    for name in ("clusterLSTMP.h5", "clusterLSTM.h5", "clusterDBSCAN.h5"):
        if ctx.path(name).is_file():
            return ctx.path(name)
    if must_exist:
        raise HotspotError(f"{KEY}input = auto: none of clusterLSTMP.h5, clusterLSTM.h5, "
                           f"clusterDBSCAN.h5 in "
                           f"{ctx.workdir}; run the dbscan (and predict) steps first or set "
                           f"{KEY}input to a label file")
    return ctx.path("clusterDBSCAN.h5")


def correlation_length(workdir):
    """CORRELATION_LENGTH_KM of WORKDIR/covariogram.h5, or None when there is no such file."""
    path = Path(workdir) / "covariogram.h5"
    if not path.is_file():
        return None
    try:
        from hotspot.covariogram import read_correlation_length
    except ImportError:
        read_correlation_length = None
    if read_correlation_length is not None:
        return float(read_correlation_length(workdir))
    value = read_attrs(path).get("CORRELATION_LENGTH_KM")
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = float("nan")
    if not np.isfinite(value) or value <= 0:
        raise HotspotError(f"{path}: root attribute CORRELATION_LENGTH_KM missing or not a "
                           "positive number; re-run the covariogram step")
    return value


def read_options(ctx):
    """Validated template values of the step (max_sd and corr_length in km)."""
    cfg = ctx.config
    key = KEY + "maxStandardDistance"
    if cfg.is_auto(key):
        corr = correlation_length(ctx.workdir)
        if corr is None:
            raise HotspotError(f"{key} = auto needs the correlation length from "
                               f"{ctx.path('covariogram.h5')}, which does not exist; run the "
                               f"covariogram step or set {key} (km, paper: 5)")
        max_sd = corr
    else:
        max_sd = cfg.get_float(key)
        if not max_sd > 0:
            raise HotspotError(f"{cfg.source}: {key} = {max_sd} is not valid; expected a "
                               "distance in km > 0")
        try:
            corr = correlation_length(ctx.workdir)
        except HotspotError as exc:
            # only the ring width and n_eff need it here: the set distance stands in
            ctx.log(f"dispersion: {exc}; using {key} = {max_sd} km as correlation length")
            corr = None
    return {"max_sd": max_sd,
            "corr_length": corr if corr is not None else max_sd,
            "min_pixel": cfg.get_int(KEY + "minPixel", min_value=1),
            "alpha": cfg.get_float(KEY + "significance", min_value=0.0, max_value=1.0),
            "drop_insignificant": cfg.get_bool(KEY + "dropInsignificant"),
            "fdr": cfg.get_float(KEY + "falseDiscoveryRate", min_value=0.0, max_value=1.0,
                                 allow_none=True),
            "unwrap_check": _switched_on(cfg, "unwrapCheck"),
            "amplitude_core": _switched_on(cfg, "amplitudeCore")}


def _switched_on(cfg, name):
    """yes or auto (auto: on when the step finds what it needs, checked where it is used)."""
    return cfg.is_auto(KEY + name) or cfg.get_bool(KEY + name)


def filtered_file(ctx):
    """hotspotFiltered.h5 of the tskm step."""
    from hotspot.tskm import FILTER_FILE
    return ctx.path(FILTER_FILE)


def pixel_amplitude(ctx, on, num_pixel):
    """Per-pixel amplitude of the band-passed series for the amplitude-core split, or None
    when off. amplitudeCore = auto splits when tskm's hotspotFiltered.h5 exists; yes
    without it is an error that names the file."""
    path = filtered_file(ctx)
    if not on:
        return None
    if not path.is_file():
        if ctx.config.is_auto(KEY + "amplitudeCore"):
            ctx.log(f"dispersion: {path.name} not found (written by tskm): amplitude-core "
                    "split off")
            return None
        raise HotspotError(f"{ctx.config.source}: {KEY}amplitudeCore = yes needs the band-passed "
                           f"series {path}, which does not exist; run the tskm step or set "
                           f"{KEY}amplitudeCore = no")
    return amplitude_core.pixel_amplitude(path, num_pixel, ctx.config.max_memory)


def half_wavelength(ctx, attrs, check, source):
    """WAVELENGTH / 2 (m) of the stack for the unwrapping-error check, or None when off.

    unwrapCheck = auto runs it when the stack knows its wavelength (MintPy inputs); yes
    without a wavelength is an error that names the attribute.
    """
    key = KEY + "unwrapCheck"
    try:
        value = float(attrs.get("WAVELENGTH", "nan"))
    except (TypeError, ValueError):
        value = float("nan")
    if not check:
        return None
    if np.isfinite(value) and value > 0:
        return value / 2.0
    if ctx.config.is_auto(key):
        ctx.log(f"dispersion: {source} has no WAVELENGTH attribute: unwrapping-error check off")
        return None
    raise HotspotError(f"{ctx.config.source}: {key} = yes needs the radar wavelength, but "
                       f"{source} has no WAVELENGTH attribute (m); set {key} = no")


def _temporal_label(ctx, num_pixel):
    path = ctx.path("clusterTSKM.h5")
    if not path.is_file():
        return None
    try:
        label = read_pixel_label(path)
    except HotspotError:
        return None
    return label if label.shape == (num_pixel,) else None


def run(ctx):
    stack = ctx.path(STACK_FILE)
    info = read_info(stack)
    label_path = input_file(ctx)
    opts = read_options(ctx)
    ctx.log(f"dispersion: input {label_path.name}, maxStandardDistance {opts['max_sd']:.3g} km, "
            f"minPixel {opts['min_pixel']}")
    labels = read_pixel_label(label_path)
    if labels.size and labels.min() < NO_DATA:
        raise HotspotError(f"{label_path}: pixelLabel has values below -1; expected cluster ids "
                           ">= 1, 0 for no cluster and -1 for no data")
    table, hotspot_label = compute_dispersion(
        stack, labels, max_sd=opts["max_sd"], min_pixel=opts["min_pixel"], alpha=opts["alpha"],
        drop_insignificant=opts["drop_insignificant"], corr_length=opts["corr_length"],
        max_memory=ctx.config.max_memory, seed=ctx.config.seed,
        temporal_label=_temporal_label(ctx, info.num_pixel),
        half_wavelength=half_wavelength(ctx, info.attrs, opts["unwrap_check"], stack),
        amplitude=pixel_amplitude(ctx, opts["amplitude_core"], info.num_pixel), fdr=opts["fdr"],
        log=ctx.log)
    write_outputs(ctx, table, hotspot_label, label_path, opts)


def write_outputs(ctx, table, hotspot_label, label_path, opts):
    """dispersion.h5 (all clusters) and hotspot.h5 (label map + table of the hotspots)."""
    attrs = {"MAX_STANDARD_DISTANCE_KM": opts["max_sd"], "MIN_PIXEL": opts["min_pixel"],
             "INPUT_FILE": str(label_path), "CORRELATION_LENGTH_KM": opts["corr_length"],
             "SIGNIFICANCE": opts["alpha"], "DROP_INSIGNIFICANT": opts["drop_insignificant"],
             "FALSE_DISCOVERY_RATE": "no" if opts["fdr"] is None else opts["fdr"],
             "UNWRAP_CHECK": opts["unwrap_check"],
             "NUM_UNWRAP_ERROR": int(table["isUnwrapError"].sum()),
             "AMPLITUDE_CORE": "peakAmplitudeZ" in table,
             "NUM_AMPLITUDE_CORE": int(np.count_nonzero(table["coreParent"])),
             "XY_ORIGIN_LON": float(table["xyOrigin"][0]),
             "XY_ORIGIN_LAT": float(table["xyOrigin"][1]),
             "NUM_CLUSTER": int(table["clusterId"].size),
             "NUM_HOTSPOT": int(table["isHotspot"].sum()),
             **ctx.step_attrs(STEP)}
    data = {k: v for k, v in table.items() if k != "xyOrigin"}
    write_h5(ctx.path(DISPERSION_FILE), data, {"FILE_TYPE": "dispersion", **attrs})

    keep = table["isHotspot"]
    hot = {k: v[keep] for k, v in data.items() if k not in ("date", "mergedCluster")}
    hot["parentCluster"] = hot.pop("clusterId")
    hot["date"] = table["date"]
    hot_attrs = {k: v for k, v in attrs.items() if k != "NUM_CLUSTER"}
    write_label_file(ctx.path(HOTSPOT_FILE), hotspot_label, ctx.path(STACK_FILE), name="hotspot",
                     datasets=hot, attrs=hot_attrs)
    ctx.log(f"write {DISPERSION_FILE} and {HOTSPOT_FILE}: {int(keep.sum())} hotspots")


def inputs(ctx):
    files = [ctx.path(STACK_FILE), input_file(ctx, must_exist=False)]
    if ctx.path("covariogram.h5").is_file():
        files.append(ctx.path("covariogram.h5"))
    if _switched_on(ctx.config, "amplitudeCore") and filtered_file(ctx).is_file():
        files.append(filtered_file(ctx))
    return files


def outputs(ctx):
    return [ctx.path(DISPERSION_FILE), ctx.path(HOTSPOT_FILE)]
