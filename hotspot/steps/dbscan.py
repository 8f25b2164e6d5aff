"""Step 4, dbscan: split each temporal cluster into spatially connected clusters.

For each temporal cluster k of WORKDIR/clusterTSKM.h5, scikit-learn's DBSCAN runs on the
positions (km, hotspot.utils.geo.lonlat_to_xy_km) of its pixels.  The resulting
spatio-temporal clusters are numbered 1..M, by parent temporal cluster, then by size
(largest first), then by their first pixel in stack order; DBSCAN noise -> 0, pixels
without a temporal cluster keep 0 / -1.

eps (km): `auto` = min(the correlation length of covariogram.h5, max(EPS_SPACING x the
median nearest-neighbour pixel spacing, EPS_MIN_KM)), or one value per temporal cluster (a single value
applies to all). The correlation length is the scale of the atmosphere (km); tskm labels
the band-passed series, so a hotspot is a connected patch of one temporal cluster and eps
must be a few pixels for a patch of tens of pixels to be a core region (docs/quality.md).

minSamples `auto` rule (scales with pixel density, so that dense scenes do not merge into
one cluster): with E = the expected number of measured pixels (any temporal cluster)
within eps of a typical measured pixel,
    minSamples = max(MIN_SAMPLES_FLOOR, round(CORE_FRACTION * E))
i.e. a pixel is a core point when its own temporal cluster holds at least half of the
pixels expected within eps.  E = pi * sum(n_c^2) / sum(n_c) over square cells of side
eps holding n_c measured pixels (the density seen by a pixel, not the scene average, so
empty areas such as water do not dilute it).

Memory: exact DBSCAN stores every neighbour list (8 bytes per neighbour; 1 M clustered
points at eps 2.2 km need > 20 GB).  It is used only when the cluster has at most
EXACT_MAX_POINT pixels and its estimated neighbour lists fit in half of
mintpy.compute.maxMemory.  Otherwise the points are snapped to square cells of side
eps * CELL_FRACTION (coarser if the cells' neighbour lists would not fit) and DBSCAN runs
on the cells' mean positions with sample_weight = number of points per cell; every point
takes its cell's label.  This reproduces exact DBSCAN closely (tests: ARI > 0.95) in
seconds at 3 million points.
"""
import numpy as np

from hotspot import products
from hotspot.utils.errors import HotspotError
from hotspot.utils.geo import lonlat_to_xy_km, pixel_spacing
from hotspot.utils.h5io import read_attrs
from hotspot.utils.labels import NO_DATA, read_pixel_label, write_label_file
from hotspot.utils.stack import STACK_FILE, read_info, read_pixels

DBSCAN_FILE = products.DBSCAN
TSKM_FILE = products.TSKM
EPS_KEY = "hotspot.dbscan.eps"
MIN_SAMPLES_KEY = "hotspot.dbscan.minSamples"
EXACT_MAX_POINT = 200_000
CELL_FRACTION = 0.1
MAX_CELL_FRACTION = 0.5
CORE_FRACTION = 0.5
MIN_SAMPLES_FLOOR = 5
# eps auto is at most this many pixel spacings: tskm labels pixels by their band-passed
# series, so a hotspot is a connected patch of one temporal cluster among scattered noise
# pixels; a neighbourhood of ~35 pixels lets a patch of a few tens of pixels be core
# (minSamples rule) while scattered pixels (one in k of the noise) cannot. The
# correlation length (several km) is the size of the atmosphere, not of a hotspot.
EPS_SPACING = 3.5
# ... but not below this (km): on a dense grid (55 m at Los Angeles scale) 3.5 spacings is
# 0.19 km, smaller than the residual atmosphere's patches, and the background of each
# temporal cluster shattered into thousands of clusters (5531 at 3 M pixels, measured),
# more than a classifier can learn. 0.5 km is the medium scene's 3.5 spacings (where the
# rule was tuned) and the smallest hotspot radius the simulator draws.
EPS_MIN_KM = 0.5
# Bytes per neighbour entry, with room for the copies sklearn makes while building lists.
NEIGHBOUR_BYTES = 16
MIN_SAMPLES_RULE = (f"max({MIN_SAMPLES_FLOOR}, round({CORE_FRACTION} * E)), E = expected "
                    "number of measured pixels within eps of a measured pixel")


# ---------------------------------------------------------------- step interface
def inputs(ctx):
    files = [ctx.path(STACK_FILE), ctx.path(TSKM_FILE)]
    if ctx.config.is_auto(EPS_KEY):
        from hotspot.steps.covariogram import COV_FILE
        files.append(ctx.path(COV_FILE))
    return files


def outputs(ctx):
    return [ctx.path(DBSCAN_FILE)]


def read_temporal_labels(tskm_file, num_pixel, stack_file):
    """pixelLabel of clusterTSKM.h5 and the number of temporal clusters, checked."""
    if not tskm_file.is_file():
        raise HotspotError(f"{tskm_file}: not found; run the tskm step first "
                           "(hotspotApp.py TEMPLATE --dostep tskm)")
    labels = read_pixel_label(tskm_file)
    if labels.shape != (num_pixel,):
        raise HotspotError(f"{tskm_file}: pixelLabel has {labels.size} values but {stack_file} "
                           f"has {num_pixel} pixels; re-run the tskm step on this stack")
    max_label = int(labels.max(initial=0))
    try:
        num_cluster = int(read_attrs(tskm_file).get("NUM_CLUSTER", max_label))
    except (TypeError, ValueError):
        num_cluster = max_label
    if max_label > num_cluster or labels.min(initial=0) < NO_DATA:
        raise HotspotError(f"{tskm_file}: pixelLabel holds values outside -1..NUM_CLUSTER "
                           f"({num_cluster}); re-run the tskm step")
    return labels, num_cluster


def _per_cluster(values, num_cluster, key, source, unit):
    if len(values) == 1:
        return list(values) * num_cluster
    if len(values) != num_cluster:
        raise HotspotError(f"{source}: {key} has {len(values)} values but there are "
                           f"{num_cluster} temporal clusters (clusterTSKM.h5); expected 1 or "
                           f"{num_cluster} comma-separated values{unit}, or auto")
    return list(values)


def read_settings(config, num_cluster, workdir):
    """(eps list km, eps source, minSamples list or None = auto), one per temporal cluster."""
    if config.is_auto(EPS_KEY):
        from hotspot.steps.covariogram import COV_FILE, read_correlation_length
        length = read_correlation_length(workdir)
        eps = [length] * num_cluster
        eps_source = (f"auto: min(CORRELATION_LENGTH_KM of {COV_FILE}, max({EPS_SPACING} x "
                      f"the median pixel spacing, {EPS_MIN_KM} km))")
    else:
        values = config.get_list(EPS_KEY, float)
        if not all(np.isfinite(v) and v > 0 for v in values):
            raise HotspotError(f"{config.source}: {EPS_KEY} = {config.get_str(EPS_KEY)!r} is not "
                               "valid; expected distances > 0 (km)")
        eps = _per_cluster(values, num_cluster, EPS_KEY, config.source, " (km)")
        eps_source = "template"
    min_samples = None
    if not config.is_auto(MIN_SAMPLES_KEY):
        values = config.get_list(MIN_SAMPLES_KEY, float)
        if not all(float(v).is_integer() and v >= 1 for v in values):
            raise HotspotError(f"{config.source}: {MIN_SAMPLES_KEY} = "
                               f"{config.get_str(MIN_SAMPLES_KEY)!r} is not valid; expected "
                               "integers >= 1")
        min_samples = [int(v) for v in _per_cluster(values, num_cluster, MIN_SAMPLES_KEY,
                                                    config.source, "")]
    return eps, eps_source, min_samples


def run(ctx):
    stack_file = ctx.path(STACK_FILE)
    info = read_info(stack_file)
    tskm_file = ctx.path(TSKM_FILE)
    temporal, num_cluster = read_temporal_labels(tskm_file, info.num_pixel, stack_file)
    eps, eps_source, min_samples = read_settings(ctx.config, num_cluster, ctx.workdir)
    pos = read_pixels(stack_file, ["longitude", "latitude"])
    lon, lat = pos["longitude"], pos["latitude"]
    no_position = (temporal >= 0) & ~(np.isfinite(lon) & np.isfinite(lat))
    if no_position.any():
        ctx.log(f"{int(no_position.sum())} pixels without a position cannot be clustered (label 0)")
        temporal = np.where(no_position, 0, temporal)
    ok = np.isfinite(lon) & np.isfinite(lat)
    x = np.full(lon.size, np.nan)
    y = np.full(lon.size, np.nan)
    if ok.any():
        x[ok], y[ok] = lonlat_to_xy_km(lon[ok], lat[ok])
    if ctx.config.is_auto(EPS_KEY):
        spacing = pixel_spacing(x[ok], y[ok], ctx.config.seed)
        eps = [min(e, max(EPS_SPACING * spacing, EPS_MIN_KM)) for e in eps]
        ctx.log(f"median pixel spacing {spacing * 1000:.0f} m -> eps {eps[0]:.3g} km "
                f"(correlation length, at most max({EPS_SPACING} spacings, {EPS_MIN_KM} km))")
    ctx.log(f"DBSCAN of {num_cluster} temporal clusters, eps from {eps_source}, minSamples "
            f"{'auto: ' + MIN_SAMPLES_RULE if min_samples is None else 'from the template'}")
    labels, table = spatial_clusters(x, y, temporal, eps, min_samples,
                                     max_memory=ctx.config.max_memory, log=ctx.log)
    attrs = dict(ctx.step_attrs("dbscan"))
    attrs.update({
        "EPS_SOURCE": eps_source,
        "MIN_SAMPLES_SOURCE": "auto" if min_samples is None else "template",
        "MIN_SAMPLES_RULE": MIN_SAMPLES_RULE,
        "NUM_TEMPORAL_CLUSTER": num_cluster,
        "TEMPORAL_CLUSTER_FILE": TSKM_FILE,
        "LABEL_ORDER": "by parent temporal cluster, then size (largest first)",
    })
    out = write_label_file(ctx.path(DBSCAN_FILE), labels, stack_file, datasets=table,
                           attrs=attrs)
    ctx.log(f"{table['parentCluster'].size} spatio-temporal clusters; write {out}")


# ---------------------------------------------------------------- pure computation
def _cell_index(x, y, size):
    """Integer key of the square cell of side `size` holding each point."""
    cx = np.floor((x - x.min()) / size).astype(np.int64)
    cy = np.floor((y - y.min()) / size).astype(np.int64)
    return cx * (int(cy.max()) + 1) + cy


def expected_neighbours(x, y, eps):
    """Expected number of points within eps of a typical point (from cells of side eps)."""
    if x.size == 0:
        return 0.0
    _, counts = np.unique(_cell_index(x, y, eps), return_counts=True)
    counts = counts.astype(np.float64)
    return float(np.pi * np.sum(counts ** 2) / np.sum(counts))


def auto_min_samples(x, y, eps):
    """minSamples of the auto rule (module docstring) for positions x, y of all measured pixels."""
    return max(MIN_SAMPLES_FLOOR, int(round(CORE_FRACTION * expected_neighbours(x, y, eps))))


def _renumber(cluster_labels, first_id):
    """Map DBSCAN labels (-1 noise) to first_id.. by size descending, ties by first point."""
    found = cluster_labels >= 0
    if not found.any():
        return np.zeros(cluster_labels.size, dtype=np.int32), np.zeros(0, dtype=np.int64)
    ids, first, sizes = np.unique(cluster_labels[found], return_index=True, return_counts=True)
    # first index within the found subset still orders by stack position
    order = np.lexsort((first, -sizes))
    mapping = np.zeros(int(ids.max()) + 1, dtype=np.int32)
    mapping[ids[order]] = first_id + np.arange(order.size, dtype=np.int32)
    out = np.zeros(cluster_labels.size, dtype=np.int32)
    out[found] = mapping[cluster_labels[found]]
    return out, sizes[order]


def dbscan_points(x, y, eps, min_samples, max_memory=4.0, method="auto"):
    """DBSCAN labels (-1 noise, 0..) of points (km); returns (labels, description of method).

    method: 'exact', 'cell' (cell-snapped weighted DBSCAN) or 'auto' (module docstring).
    """
    from sklearn.cluster import DBSCAN
    n = x.size
    budget = 0.5 * float(max_memory) * 1024 ** 3
    if n == 0:
        return np.zeros(0, dtype=np.int64), "empty"
    if method == "auto":
        pairs = expected_neighbours(x, y, eps) * n
        method = "exact" if n <= EXACT_MAX_POINT and pairs * NEIGHBOUR_BYTES <= budget else "cell"
    if method == "exact":
        model = DBSCAN(eps=eps, min_samples=int(min_samples), algorithm="kd_tree")
        return model.fit(np.column_stack([x, y])).labels_, "exact"
    if method != "cell":
        raise ValueError(f"unknown DBSCAN method {method!r}")
    fraction = CELL_FRACTION
    while True:
        keys, inverse, counts = np.unique(_cell_index(x, y, eps * fraction), return_inverse=True,
                                          return_counts=True)
        neighbours = np.pi * (1.0 / fraction + 1.0) ** 2
        if keys.size * neighbours * NEIGHBOUR_BYTES <= budget or fraction >= MAX_CELL_FRACTION:
            break
        fraction = min(MAX_CELL_FRACTION, fraction * 1.25)
    inverse = inverse.ravel()
    centres = np.column_stack([np.bincount(inverse, weights=x) / counts,
                               np.bincount(inverse, weights=y) / counts])
    model = DBSCAN(eps=eps, min_samples=int(min_samples), algorithm="kd_tree")
    cell_labels = model.fit(centres, sample_weight=counts).labels_
    return cell_labels[inverse], f"cell ({keys.size} cells of {eps * fraction:.3g} km)"


def spatial_clusters(x, y, temporal, eps, min_samples=None, max_memory=4.0, log=print,
                     method="auto"):
    """Spatio-temporal labels of every pixel and the per-cluster table.

    x, y: km (NaN where unknown); temporal: -1 no data, 0 no cluster, 1..K;
    eps: K values (km); min_samples: K ints or None (auto rule).
    Returns (labels int32: -1 / 0 / 1..M, dict of datasets for write_label_file).
    """
    num_cluster = len(eps)
    temporal = np.asarray(temporal)
    labels = np.where(temporal < 0, NO_DATA, 0).astype(np.int32)
    measured = (temporal >= 0) & np.isfinite(x) & np.isfinite(y)
    auto_cache = {}
    rows = {"parentCluster": [], "eps": [], "minSamples": [], "clusterSize": []}
    per_temporal = {"temporalEps": [], "temporalMinSamples": [], "temporalNumCluster": [],
                    "temporalMethod": []}
    next_id = 1
    for k in range(1, num_cluster + 1):
        eps_k = float(eps[k - 1])
        if min_samples is None:
            if eps_k not in auto_cache:
                auto_cache[eps_k] = auto_min_samples(x[measured], y[measured], eps_k)
            ms = auto_cache[eps_k]
        else:
            ms = int(min_samples[k - 1])
        idx = np.nonzero(measured & (temporal == k))[0]
        sub, how = dbscan_points(x[idx], y[idx], eps_k, ms, max_memory, method)
        new, sizes = _renumber(np.asarray(sub), next_id)
        labels[idx] = new
        noise = int(np.sum(new == 0))
        log(f"temporal cluster {k}: {idx.size} pixels, eps {eps_k:.3g} km, minSamples {ms}, "
            f"{how} -> {sizes.size} clusters, {noise} noise pixels")
        rows["parentCluster"] += [k] * sizes.size
        rows["eps"] += [eps_k] * sizes.size
        rows["minSamples"] += [ms] * sizes.size
        rows["clusterSize"] += sizes.tolist()
        per_temporal["temporalEps"].append(eps_k)
        per_temporal["temporalMinSamples"].append(ms)
        per_temporal["temporalNumCluster"].append(sizes.size)
        per_temporal["temporalMethod"].append(how)
        next_id += sizes.size
    table = {
        "parentCluster": np.asarray(rows["parentCluster"], dtype=np.int32),
        "eps": np.asarray(rows["eps"], dtype=np.float64),
        "minSamples": np.asarray(rows["minSamples"], dtype=np.int32),
        "clusterSize": np.asarray(rows["clusterSize"], dtype=np.int64),
        "temporalEps": np.asarray(per_temporal["temporalEps"], dtype=np.float64),
        "temporalMinSamples": np.asarray(per_temporal["temporalMinSamples"], dtype=np.int32),
        "temporalNumCluster": np.asarray(per_temporal["temporalNumCluster"], dtype=np.int32),
        "temporalMethod": np.asarray(per_temporal["temporalMethod"] or [""],
                                     dtype="S")[:num_cluster],
    }
    return labels, table
