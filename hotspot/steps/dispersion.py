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
  * unwrapping errors (hotspot.steps.unwrap_check, unwrapCheck = auto: on when the stack has
    WAVELENGTH): a candidate whose contrast is a jump of n lambda / 2 shared by >= 10 % of its
    pixels (unwrap_check.MIN_FRACTION) over one epoch interval, and not significant once that
    jump is removed, is isUnwrapError and never a hotspot (docs/quality.md). With the spatial
    null deciding, "significant" is its own test of the contrast with the jump removed
    (pValueSpatialUnwrapCorrected, the p-value its qValue uses), not the F-test.
  * amplitude cores (hotspot.steps.amplitude_core, amplitudeCore = auto: on when tskm wrote
    hotspotFiltered.h5): after a first pass, each cluster's connected pixels of high
    band-passed amplitude (smoothed robust z >= 2 with a peak >= 7, >= minPixel pixels)
    become a cluster of their own (coreParent) and the table is recomputed: a weak hotspot
    inside a cluster of noise pixels that resemble its centroid is no longer diluted. A
    core is not tested against the empirical null (it was selected for its amplitude) and
    every hotspot needs peakAmplitudeZ >= 1.8 sqrt(2 ln numPixel) (hotspot_peak_gate:
    the largest of n noise values grows with n; docs/quality.md), and most of its pixels
    (coreFraction >= 1/2) in one connected patch of band-passed amplitude z >= 2
    (amplitude_core.core_fraction): a large background cluster whose loud pixels are
    scattered (single pixels unwrapped wrong, turbulence) is not a hotspot.
  * fragments: a hotspot and the clusters that touch it (pixels within TOUCH_SPACING
    spacings) - other hotspots, or compact candidates too weak to be hotspots alone - whose
    contrasts, smoothed over the tskm window, correlate at >= MERGE_CORRELATION are one
    feature that tskm split between temporal clusters; they are merged (numMerged,
    mergedCluster) and the table recomputed. A core never goes back into the rest of its
    parent, and a merge whose result is no hotspot (a weak fragment diluted it) keeps only
    its hotspots, or is undone when it has fewer than two.
  * halos (with the spatial null deciding): a hotspot touching a stronger one, alike in shape
    against the scene's noise but moving less than half as much, is its tail, not a hotspot
    of its own (haloOf = the cluster id of the stronger; hotspot.steps.same_feature.halo).
  * spatial null (hotspot.steps.spatial_null; p- and q-values always written, deciding when
    falseDiscoveryRate is a rate, auto: 0.05; = no keeps the F-test above): the contrast's
    smooth temporal components are compared with the same statistic on the cluster's
    footprint moved to 199 random places of the same scene (pValueSpatial, pValueSpatialMC);
    Benjamini-Hochberg over the candidates gives qValue, and isSignificant = qValue <= the
    rate replaces the F-test, Bonferroni and the empirical null (which decide with
    falseDiscoveryRate = no). The peak gate, the amplitude cores and the unwrapping-error
    check apply in both modes; fragments then merge only hotspot with hotspot, when
    hotspot.steps.same_feature finds them alike against the same null (not by
    MERGE_CORRELATION). clusterVelocity, ringVelocity and velocityContrast: linear rates of
    the mean series, of the ring background and of their difference (m/yr), what the cluster
    does that its surroundings do not.
  * kept for information: pValueVelocity, a two-sided z-test of the mean velocity against
    zero with standard error rms(velocityStd) / sqrt(n_eff), n_eff = clip(A / (2 pi L^2),
    1, n) the independent samples in a cluster of area A for an exponential covariance of
    correlation length L (the integral of exp(-r/L) over the plane is 2 pi L^2).
Memory: per-pixel vectors of the scene (positions, labels, a KD-tree; ~150 bytes a pixel)
stay in memory; the displacement is read in blocks bounded by maxMemory, once per computation
of the table (compute_dispersion). The spatial null reads no stack of its own: the first read
also feeds its per-pixel projection (N x k float32, hotspot.steps.spatial_null: Cost).
Randomness (ring and percentile subsamples, spacing sample) comes from hotspot.randomSeed.
"""
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from hotspot import products
from hotspot.steps import amplitude_core, spatial_null
from hotspot.steps.dispersion_merge import (MERGE_CORRELATION, _cluster_peak, _hotspot_label,
                                            _merge_labels, _shrink_merges, fragment_groups,
                                            halo_hotspots)
from hotspot.steps.dispersion_ring import (_majority, _pixel_stats, _timeseries_pass,
                                           pixel_area_km2, ring_contrast, ring_matrix,
                                           unwrap_columns)
from hotspot.steps.dispersion_significance import (MIN_CORE_FRACTION, cluster_geometry,
                                                   effective_count, hotspot_ids, scattered,
                                                   select_hotspots, signal_test, velocity_test)
from hotspot.steps.export import HOTSPOT_FILE
from hotspot.utils.errors import HotspotError
from hotspot.utils.geo import lonlat_to_xy_km, median_spacing
from hotspot.utils.h5io import read_attrs, write_h5
from hotspot.utils.labels import NO_DATA, read_pixel_label, write_label_file
from hotspot.utils.stack import STACK_FILE, decimal_years, read_info, read_pixels, smooth_window

STEP = "dispersion"
DISPERSION_FILE = products.DISPERSION
KEY = "hotspot.dispersion."


# ---------------------------------------------------------------------------- the step
def compute_dispersion(stack_file, pixel_label, *, max_sd, min_pixel, alpha, drop_insignificant,
                       corr_length, max_memory, seed, temporal_label=None,
                       half_wavelength=None, amplitude=None, merge=True, fdr=None,
                       null_columns=False, log=print):
    """Per-cluster table (dict of arrays, M rows) and the hotspot pixel label (N).

    Reads the stack's displacement once, in blocks of at most max_memory GB (a read the
    spatial null's projection shares), and once more for each recomputation: after amplitude
    cores are split off, after fragments are merged, after a diluting merge is undone.
    half_wavelength (m): enables the unwrapping-error check (None: off). amplitude: per-pixel
    amplitude of the band-passed series (hotspot.steps.amplitude_core; None: no split); every
    cluster but the unwrapping errors of the first pass gives up its amplitude cores as
    clusters of their own, and a hotspot needs a peak amplitude z >= hotspot_peak_gate.
    merge: a hotspot and the touching clusters that move alike (fragment_groups) are one
    deformation feature that tskm split between temporal clusters: they are merged (module
    docstring).
    fdr: false-discovery rate of the spatial-null decision (hotspot.steps.spatial_null; None:
    the F-test, Bonferroni and empirical null decide). null_columns: compute the spatial null's
    p- and q-values also when they do not decide (fdr None).
    """
    kwargs = dict(max_sd=max_sd, min_pixel=min_pixel, alpha=alpha,
                  drop_insignificant=drop_insignificant, corr_length=corr_length,
                  max_memory=max_memory, seed=seed, temporal_label=temporal_label,
                  half_wavelength=half_wavelength, log=log,
                  spatial=spatial_null.setup(stack_file, fdr, seed,
                                             on=null_columns or fdr is not None))
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
            + ("alike (same shape against the scene's noise, hotspot.steps.same_feature): "
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
    halos = halo_hotspots(table, labels, geo) if merge else {}
    table["haloOf"] = np.zeros(ids.size, dtype=np.int32)
    if halos:
        table["haloOf"][np.searchsorted(ids, list(halos))] = list(halos.values())
        log(f"dispersion: {len(halos)} hotspots are the halo of a touching, stronger hotspot "
            "(same shape against the scene's noise, less than half its amplitude; "
            "hotspot.steps.same_feature) and are not reported on their own: "
            + ", ".join(f"{a} -> {b}" for a, b in sorted(halos.items())))
        table["isHotspot"] = table["isHotspot"] & (table["haloOf"] == 0)
        table["hotspotId"] = hotspot_ids(table["isHotspot"])
        hotspot_label = _hotspot_label(labels, table)
    if fdr is not None and "qValue" in table:
        diffuse = table["isCandidate"] & (np.asarray(table["qValue"]) <= fdr) & scattered(table)
        if diffuse.any():
            log(f"dispersion: {int(diffuse.sum())} candidates with q <= {fdr:g} are no hotspot: "
                f"fewer than {MIN_CORE_FRACTION:g} of their pixels in one patch of high "
                "band-passed amplitude (coreFraction): clusters "
                + ", ".join(str(int(c)) for c in ids[diffuse]))
    into = np.searchsorted(ids, np.array(list(merged.values()), dtype=np.int64))
    table["numMerged"] = (1 + np.bincount(into, minlength=ids.size)).astype(np.int32)
    table["mergedCluster"] = np.array(sorted(merged.items()), dtype=np.int32).reshape(-1, 2)
    return table, hotspot_label


def _dispersion_pass(stack_file, labels, *, max_sd, min_pixel, alpha, drop_insignificant,
                     corr_length, max_memory, seed, temporal_label, half_wavelength, log,
                     core_parent=None, amplitude_z=None, amplitude=None, spatial=None):
    """One computation of the table and hotspot label; also returns the metric positions
    (x, y km), the pixel spacing, the contrast series and the smoothing window that
    fragment_groups needs, and the amplitude z. core_parent: {cluster id: parent id} of the
    amplitude cores; amplitude_z: per-pixel z of hotspot.steps.amplitude_core (peakAmplitudeZ
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
        table["coreFraction"] = amplitude_core.core_fraction(x, y, labels, ids, amplitude_z,
                                                             spacing)

    candidate = (table["standardDistance"] <= max_sd) & (num_pixel >= min_pixel)
    log(f"{num_cluster} clusters, {int(candidate.sum())} with S_d <= {max_sd:.3g} km and "
        f">= {min_pixel} pixels; pixel spacing {spacing * 1000:.0f} m, "
        f"correlation length {corr_length:.3g} km")

    pixel_cluster = np.full(info.num_pixel, -1, dtype=np.int64)
    pixel_cluster[labelled] = index
    cand_idx = np.nonzero(candidate)[0]
    ring, ring_total = ring_matrix(tree, measured_idx, pixel_cluster, cand_idx, table, spacing,
                                   corr_length, rng)
    ts = _timeseries_pass(stack_file, info, pixel_cluster, num_cluster, ring, max_memory, rng,
                          consumers=spatial_null.stack_consumers(spatial))
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
    unwrap_removed = table.pop("unwrapRemoved")
    p_vel = velocity_test(table["meanVelocity"], table["rmsVelocityStd"], n_eff)
    table["pValueVelocity"] = p_vel
    table["isSignificantVelocity"] = np.where(np.isfinite(p_vel), p_vel < alpha, True)
    table.update(spatial_null.velocity_columns(ts["mean"], background,
                                               decimal_years(info.dates)))
    null = None
    if spatial is not None:
        null = spatial_null.table_columns(spatial, table, labels, x, y, px,
                                          candidate & has_ring, spacing, corr_length, log,
                                          unwrap_removed=unwrap_removed)
    fdr = None if spatial is None else spatial["fdr"]
    table.update(select_hotspots(table, max_sd, min_pixel, alpha, drop_insignificant, fdr=fdr))
    num_significant = int((candidate & table["isSignificant"]).sum())
    log((f"spatial null, Benjamini-Hochberg q <= {fdr:g}" if fdr is not None else
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
                                  "amplitude_z": amplitude_z,
                                  "null": null if fdr is not None else None}


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
    for name in products.DISPERSION_INPUTS:
        if ctx.path(name).is_file():
            return ctx.path(name)
    if must_exist:
        raise HotspotError(f"{KEY}input = auto: none of clusterLSTMP.h5, clusterLSTM.h5, "
                           f"clusterDBSCAN.h5 in "
                           f"{ctx.workdir}; run the dbscan (and predict) steps first or set "
                           f"{KEY}input to a label file")
    return ctx.path(products.DBSCAN)


def correlation_length(workdir):
    """CORRELATION_LENGTH_KM of WORKDIR/covariogram.h5, or None when there is no such file."""
    path = Path(workdir) / products.COVARIOGRAM
    if not path.is_file():
        return None
    try:
        from hotspot.steps.covariogram import read_correlation_length
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
                               f"{ctx.path(products.COVARIOGRAM)}, which does not exist; run the "
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
    return ctx.path(products.FILTERED)


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
    path = ctx.path(products.TSKM)
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
        null_columns=True, log=ctx.log)
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
    if ctx.path(products.COVARIOGRAM).is_file():
        files.append(ctx.path(products.COVARIOGRAM))
    if _switched_on(ctx.config, "amplitudeCore") and filtered_file(ctx).is_file():
        files.append(filtered_file(ctx))
    return files


def outputs(ctx):
    return [ctx.path(DISPERSION_FILE), ctx.path(HOTSPOT_FILE)]
