"""Step 2, covariogram: spatial correlation length of the displacement time series.

Estimator (eq. 3 of Tiwari & Shirzaei 2024, with each series' temporal mean removed):
    a_i(t)  = d_i(t) - mean_t d_i(t)
    c_ij    = (1/T) sum_t a_i(t) a_j(t)                  covariance of one pixel pair
    C(h_b)  = mean of c_ij over the pairs whose great-circle distance falls in bin b
Pixels with a NaN epoch are left out.

Deramp (deramp = yes; auto: no): before the pair products, the plane a(t) + b(t) x + c(t) y
fitted by least squares to the sampled anomalies of each epoch is removed (MintPy's `deramp =
linear` on the sample), so that the covariogram is that of what the dispersion step's ring
background (a plane around every cluster) leaves. Left in, ramps dominate the covariance: on
the family scenes of issue 12 (ramps of 0-6 mm, a 10 km seasonal background, stratified
troposphere) it falls almost linearly over the 30 km range and the fitted correlation length is
12-32 km; with the plane removed, 3.9-5.8 km. It is not the default because the detection it
feeds was measured worse: the correlation length sets maxStandardDistance and the dispersion
ring, and with the short length the tuning scenes had 4.5 false hotspots per scene and 4.7 per
null scene instead of 1.8 and 0.7, for the same detections (docs/quality.md). On a scene only
a few correlation lengths wide the plane also takes part of the field's own long-range
variance, so the length comes out shorter (tests: a 0.4 km field on a 3 km scene gives
0.29 km, 0.5 km gives 0.34 km; 5 km on a 50 km scene stays within 20 %), which is again the
scale left once a plane is removed.

Sampling (why it is fast): random row reads from a 3 GB HDF5 stack are slow, so the
stack is read once, block by block, keeping a random subset of at most MAX_SAMPLE_PIXEL
pixels (fewer if mintpy.compute.maxMemory is small).  Pairs are drawn among that subset
stratified in distance: an anchor pixel, a distance uniform in each bin and a random
direction give a target point, and the partner is a random subset pixel in the small
grid cell (binSize / 2) holding that target.  Every pair therefore lies within
maxDistance and every bin gets about numPair / number-of-bins pairs, whereas uniformly
random pairs over a large scene leave the short-distance bins, which set the
correlation length, nearly empty.  Pairs are streamed in chunks (memory does not grow
with numPair); the pair products run in a numba kernel (tested against numpy).

Model (scipy.optimize.curve_fit, weights = standard error of each bin):
    C(h) = offset + sill * rho(h)
    exponential  rho = exp(-h / L)
    gaussian     rho = exp(-(h / L)^2)
    spherical    rho = 1 - 1.5 h/a + 0.5 (h/a)^3 for h < a, 0 beyond (range a)
The offset absorbs signal common to the whole scene (a regional trend shared by all
pixels), which otherwise inflates the correlation length.

Distance bins, range and numPair (auto) come from the scene's extent and pixel spacing
(covariogram_scene.py): 0.5 km bins over 30 km on scenes of 60 km and more.

A correlation length is resolved when the fit succeeds, at least two bins lie within it,
it is below the scene's diagonal and its jackknife standard deviation (below) is smaller
than it (a length between maxDistance and the diagonal is kept, with a WARNING).
When the fit to all bins resolves none, the first bin is left out as a nugget and the model
is refitted from the second bin on (FIT_FIRST_BIN, FIT_NOTE): on EGMS point data the
scatterers of one building move together, a steep drop within the first ~40 m on top of a
~0.5 km decay that one exponential cannot fit together.

Correlation length: the distance at which the model covariance falls to 1/e of the sill
(above the offset).  That is L for the exponential and gaussian models and 0.4459 a for
the spherical model.  Its standard deviation is a spatial block jackknife: the scene is
cut into JACKKNIFE_SIDE^2 blocks (by anchor pixel), the model is refitted leaving out each
block in turn.  The formal standard deviation of the fit (from curve_fit's covariance
matrix) is far smaller because neighbouring bins share pixels and signal; it is kept as
CORRELATION_LENGTH_FORMAL_STD_KM.

Fallback: when the covariogram resolves no correlation length (flat covariance, no decay,
a length beyond the scene or not significant), the step goes on with the fallback of
covariogram_scene.py, a WARNING and CORRELATION_LENGTH_SOURCE = 'fallback: <reason>'.
"""
import math
import time
from pathlib import Path

import numpy as np

from hotspot import products
from hotspot.utils.errors import HotspotError
from hotspot.utils.geo import haversine_km, lonlat_to_xy_km
from hotspot.utils.h5io import open_h5, read_attrs, write_h5
from hotspot.utils.stack import STACK_FILE, block_size, iter_blocks, read_info, read_pixels

COV_FILE = products.COVARIOGRAM
MODELS = ("exponential", "gaussian", "spherical")
# Enough pixels for ~10^7 distinct pairs at every distance; more only costs memory and cache.
MAX_SAMPLE_PIXEL = 300_000
# rows per chunk of deramp_plane's float64 sums (a few MB at 247 epochs)
DERAMP_CHUNK = 4096
# Candidate pairs per chunk: bounds the sampler's temporaries to ~100 MB.
PAIR_CHUNK = 1_000_000
MIN_PAIR_PER_BIN = 10
# numPair's documented upper bound: 100 x the paper's 10^7, ~2 h at the measured ~10^5 pairs/s
# per chunk on one core; beyond, the bins' standard errors no longer shrink usefully.
MAX_NUM_PAIR = 1_000_000_000
JACKKNIFE_SIDE = 4
# A correlation length is resolved when at least this many bins lie within it.
MIN_BIN_PER_LENGTH = 2
# Cells of binSize / 2 up to this many get a dense lookup table (int32: 200 MB).
DENSE_CELL_LIMIT = 50_000_000
ESTIMATOR = ("mean over pixel pairs in each distance bin of the temporal covariance "
             "(1/T) sum_t (d_i(t) - mean_i)(d_j(t) - mean_j), each series' temporal mean "
             "removed; pairs drawn stratified in distance among a random pixel subset")
from hotspot.steps.covariogram_scene import (FALLBACK_RULE, KEYS, NUM_PAIR_RULE, auto_num_pair,
                                             auto_range, check_range, resolve_length,
                                             scene_geometry)


# ---------------------------------------------------------------- step interface
def inputs(ctx):
    return [ctx.path(STACK_FILE)]


def outputs(ctx):
    return [ctx.path(COV_FILE)]


def read_settings(config):
    """The step's template values, checked (HotspotError names the key); None = auto."""
    def number(name, getter, **kw):
        return None if config.is_auto(KEYS[name]) else getter(KEYS[name], **kw)
    num_pair = number("numPair", config.get_int, min_value=1, max_value=MAX_NUM_PAIR)
    bin_size = number("binSize", config.get_float)
    max_distance = number("maxDistance", config.get_float)
    model = config.get_choice(KEYS["model"], MODELS)
    for name, value in (("binSize", bin_size), ("maxDistance", max_distance)):
        if value is not None and not value > 0:
            raise HotspotError(f"{config.source}: {KEYS[name]} = {value} is not valid; "
                               "expected a distance > 0 (km)")
    if bin_size is not None and max_distance is not None:
        check_range(bin_size, max_distance, config.source)
    deramp = config.get_bool(KEYS["deramp"])
    return num_pair, bin_size, max_distance, model, deramp


def deramp_plane(lon, lat, anomaly, chunk=DERAMP_CHUNK):
    """A float32 copy of anomaly minus the least-squares plane a + b x + c y of each epoch;
    x, y km about the sample's mean position.

    The normal equations are summed in float64 over chunks of `chunk` rows and the plane is
    subtracted chunk by chunk, so the memory is the float32 copy plus one chunk: the sample is
    sized to half of maxMemory, and a float64 least-squares on the whole of it took ~3x that."""
    x, y = lonlat_to_xy_km(lon, lat, float(np.mean(lon)), float(np.mean(lat)))
    design = np.c_[np.ones_like(x), x, y]
    rhs = np.zeros((3, anomaly.shape[1]))
    for start in range(0, anomaly.shape[0], chunk):
        rows = slice(start, start + chunk)
        rhs += design[rows].T @ anomaly[rows].astype(np.float64)
    coef = np.linalg.solve(design.T @ design, rhs)
    out = np.array(anomaly, dtype=np.float32)
    for start in range(0, anomaly.shape[0], chunk):
        rows = slice(start, start + chunk)
        out[rows] -= (design[rows] @ coef).astype(np.float32)
    return out


def run(ctx):
    num_pair, bin_size, max_distance, model, deramp = read_settings(ctx.config)
    stack_file = ctx.path(STACK_FILE)
    info = read_info(stack_file)
    # Half of maxMemory for the kept subset; the other half for the read block.
    mem_pixels = int(ctx.config.max_memory * 0.5 * 1024 ** 3 // (4 * info.num_date))
    max_pixel = max(2, min(MAX_SAMPLE_PIXEL, mem_pixels))
    lon, lat, anomaly = read_sample(stack_file, max_pixel, ctx.config.seed,
                                    ctx.config.max_memory, log=ctx.log)
    if deramp:
        anomaly = deramp_plane(lon, lat, anomaly)
        ctx.log(f"{KEYS['deramp']} = yes: a plane a + b x + c y removed from each epoch of the "
                f"{lon.size} sampled pixels (what the ring background of the dispersion step "
                "removes)")
    pos = read_pixels(stack_file, ["longitude", "latitude"])
    geometry = scene_geometry(pos["longitude"], pos["latitude"], ctx.config.seed)
    bin_size, max_distance, how = auto_range(geometry, bin_size, max_distance,
                                             ctx.config.source)
    how["numPair"] = "template"
    if num_pair is None:
        num_pair, how["numPair"] = auto_num_pair(lon.size), f"auto: {NUM_PAIR_RULE}"
    ctx.log(f"scene {geometry['width_km']:.3g} x {geometry['height_km']:.3g} km, median pixel "
            f"spacing {geometry['spacing_km'] * 1000:.3g} m: {KEYS['maxDistance']} = "
            f"{max_distance:.4g} km ({how['maxDistance']}), {KEYS['binSize']} = "
            f"{bin_size:.4g} km ({how['binSize']})")
    result = covariogram(lon, lat, anomaly, num_pair, bin_size, max_distance, model,
                         seed=ctx.config.seed, log=ctx.log)
    resolve_length(result, geometry)
    if result["length_source"].startswith("fit"):
        ctx.log(f"correlation length ({model} model): {result['length']:.3f} "
                f"+/- {result['length_std']:.3f} km")
        if result["length"] > max_distance / 2:
            ctx.log(f"WARNING: the correlation length is over half of {KEYS['maxDistance']} "
                    f"= {max_distance:g} km; increase it to constrain the fit")
    else:
        ctx.log(f"WARNING: the covariogram resolves no correlation length "
                f"({result['length_source'][len('fallback: '):]}); "
                f"using the fallback {FALLBACK_RULE} = {result['length']:.3f} km. Set "
                "hotspot.dbscan.eps, hotspot.dispersion.maxStandardDistance and "
                "hotspot.train_lstm.blockSize to override it")
    out = write_covariogram(ctx.path(COV_FILE), result,
                            {"DERAMP": "plane per epoch" if deramp else "no",
                             **ctx.step_attrs("covariogram")},
                            num_sample_pixel=lon.size, num_pixel=info.num_pixel,
                            geometry=geometry, how=how)
    ctx.log(f"write {out}")


def read_correlation_length(workdir):
    """CORRELATION_LENGTH_KM of WORKDIR/covariogram.h5 (the `auto` eps / dispersion distance):
    the fit or, when the covariogram resolved none, the fallback (CORRELATION_LENGTH_SOURCE)."""
    path = Path(workdir) / COV_FILE
    hint = ("run the covariogram step (hotspotApp.py TEMPLATE --dostep covariogram) or set "
            "the key that needs it explicitly (hotspot.dbscan.eps, "
            "hotspot.dispersion.maxStandardDistance, hotspot.train_lstm.blockSize)")
    if not path.is_file():
        raise HotspotError(f"{path}: not found; the correlation length comes from it: {hint}")
    attrs = read_attrs(path)
    try:
        value = float(attrs["CORRELATION_LENGTH_KM"])
    except (KeyError, TypeError, ValueError):
        raise HotspotError(f"{path}: attribute CORRELATION_LENGTH_KM missing or not a number; "
                           f"{hint}") from None
    # Files written before the fallback have no source: only a successful fit counts there.
    usable = "CORRELATION_LENGTH_SOURCE" in attrs or attrs.get("FIT_STATUS", "ok") == "ok"
    if not (math.isfinite(value) and value > 0) or not usable:
        raise HotspotError(f"{path}: no valid correlation length ({attrs.get('FIT_STATUS', value)})"
                           f"; {hint}")
    return value


def correlation_length_source(workdir):
    """CORRELATION_LENGTH_SOURCE of WORKDIR/covariogram.h5 ('fit', 'fallback: ...')."""
    path = Path(workdir) / COV_FILE
    if not path.is_file():
        return "none"
    return str(read_attrs(path).get("CORRELATION_LENGTH_SOURCE", "fit"))


def write_covariogram(path, result, step_attrs, num_sample_pixel, num_pixel, geometry=None,
                      how=None):
    attrs = dict(step_attrs)
    attrs.update({
        "FILE_TYPE": "covariogram",
        "CORRELATION_LENGTH_KM": float(result["length"]),
        "CORRELATION_LENGTH_SOURCE": result.get("length_source",
                                                 "fit" if result["status"] == "ok" else "none"),
        "CORRELATION_LENGTH_FIT_KM": float(result.get("length_fit", result["length"])),
        "CORRELATION_LENGTH_FALLBACK_RULE": FALLBACK_RULE,
        "CORRELATION_LENGTH_STD_KM": float(result["length_std"]),
        "CORRELATION_LENGTH_STD_METHOD": result["length_std_method"],
        "CORRELATION_LENGTH_FORMAL_STD_KM": float(result["length_formal_std"]),
        "CORRELATION_LENGTH_DEFINITION": "distance where the model covariance falls to 1/e "
                                         "of SILL above OFFSET",
        "MODEL": result["model"],
        "MODEL_FORMULA": MODEL_FORMULA[result["model"]],
        "MODEL_PARAMETERS": ", ".join(f"{v:.6g}" for v in result["params"]),
        "SILL": float(result["sill"]),
        "OFFSET": float(result["offset"]),
        "FIT_STATUS": result["status"],
        "FIT_FIRST_BIN": int(result.get("fit_first_bin", 0)),
        "FIT_NOTE": result.get("fit_note", ""),
        "ESTIMATOR": ESTIMATOR,
        "NUM_PAIR": int(result["num_pair"]),
        "NUM_SAMPLE_PIXEL": int(num_sample_pixel),
        "NUM_PIXEL": int(num_pixel),
        "BIN_SIZE_KM": float(result["bin_size"]),
        "MAX_DISTANCE_KM": float(result["max_distance"]),
        "UNIT": "m^2",
    })
    names = {"numPair": "NUM_PAIR_SOURCE", "binSize": "BIN_SIZE_SOURCE",
             "maxDistance": "MAX_DISTANCE_SOURCE"}
    attrs.update({names[key]: value for key, value in (how or {}).items()})
    if geometry is not None:
        attrs.update({"SCENE_WIDTH_KM": geometry["width_km"],
                      "SCENE_HEIGHT_KM": geometry["height_km"],
                      "SCENE_DIAGONAL_KM": geometry["diagonal_km"],
                      "PIXEL_SPACING_KM": geometry["spacing_km"]})
    datasets = {
        "distance": result["distance"],
        "covariance": result["covariance"],
        "covarianceStd": result["covariance_std"],
        "pairCount": result["count"],
        "modelCovariance": result["model_covariance"],
    }
    return write_h5(path, datasets, attrs)


# ---------------------------------------------------------------- reading
def read_sample(stack_file, max_pixel, seed, max_memory, log=print):
    """(lon, lat, anomaly) of a random pixel subset, reading the stack once block by block.

    anomaly: float32 (M, T), each series minus its temporal mean; pixels with a NaN
    epoch or position are dropped.
    """
    from hotspot.utils.progress import progress_bar
    info = read_info(stack_file)
    n, t = info.num_pixel, info.num_date
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n, size=min(n, max_pixel), replace=False))
    pos = read_pixels(stack_file, ["longitude", "latitude"])
    lon, lat = pos["longitude"][pick], pos["latitude"][pick]
    anomaly = np.empty((pick.size, t), dtype=np.float32)
    # The other half of max_memory holds the subset (see run).
    size = block_size(t, 0.5 * max_memory, copies=4, cap=250_000)
    log(f"read {pick.size} of {n} pixels x {t} epochs from {stack_file} "
        f"in blocks of {size} pixels")
    bar = progress_bar(maxValue=n)
    with open_h5(stack_file) as f:
        dset = f["displacement"]
        for start, stop in iter_blocks(n, size):
            lo, hi = np.searchsorted(pick, [start, stop])
            if hi > lo:
                block = dset[start:stop][pick[lo:hi] - start]
                mean = block.mean(axis=1, dtype=np.float64, keepdims=True)
                anomaly[lo:hi] = block - mean.astype(np.float32)
            bar.update(stop, every=1, suffix=f"{stop}/{n}")
    bar.close()
    ok = np.isfinite(anomaly).all(axis=1) & np.isfinite(lon) & np.isfinite(lat)
    if not ok.all():
        log(f"skip {int((~ok).sum())} sampled pixels with NaN displacement or position")
        anomaly, lon, lat = anomaly[ok], lon[ok], lat[ok]
    if lon.size < 2:
        raise HotspotError(f"{stack_file}: fewer than 2 pixels with a complete time series "
                           "and a position; cannot compute a covariogram")
    return lon, lat, anomaly


# ---------------------------------------------------------------- pair sampling / products
def pair_covariance(anomaly, i, j):
    """c_ij = mean over epochs of anomaly[i] * anomaly[j], float64, for each pair."""
    # imported here: numba compiles (or loads from cache) only when a covariogram is computed
    from hotspot.steps.kernels.covariance import pair_covariance_kernel

    out = np.empty(len(i), dtype=np.float64)
    if out.size:
        pair_covariance_kernel(anomaly, np.asarray(i, np.int64), np.asarray(j, np.int64), out)
    return out


def pair_covariance_numpy(anomaly, i, j, chunk=20_000):
    """Reference implementation of pair_covariance (chunked numpy)."""
    out = np.empty(len(i), dtype=np.float64)
    for s in range(0, len(i), chunk):
        a, b = anomaly[i[s:s + chunk]], anomaly[j[s:s + chunk]]
        out[s:s + chunk] = np.einsum("ij,ij->i", a, b, dtype=np.float64) / anomaly.shape[1]
    return out


class PairSampler:
    """Random pixel pairs stratified in distance (see the module docstring)."""

    def __init__(self, lon, lat, bin_size, max_distance, rng):
        self.lon, self.lat = lon, lat
        self.x, self.y = lonlat_to_xy_km(lon, lat)
        self.bin_size, self.max_distance = bin_size, max_distance
        self.num_bin = int(math.ceil(max_distance / bin_size))
        self.rng = rng
        self.cell = bin_size / 2
        self.x0, self.y0 = self.x.min(), self.y.min()
        self.ny = int((self.y.max() - self.y0) // self.cell) + 1
        self.nx = int((self.x.max() - self.x0) // self.cell) + 1
        key = self._key(self.x, self.y)
        self.order = np.argsort(key, kind="stable")
        keys, self.start, self.count = np.unique(key[self.order], return_index=True,
                                                 return_counts=True)
        # A dense cell -> slot table is 4x faster than searchsorted; fall back for huge extents.
        self.keys = keys
        self.table = None
        if self.nx * self.ny <= DENSE_CELL_LIMIT:
            self.table = np.full(self.nx * self.ny, -1, dtype=np.int32)
            self.table[keys] = np.arange(keys.size, dtype=np.int32)

    def _key(self, x, y):
        cx = np.floor((x - self.x0) / self.cell).astype(np.int64)
        cy = np.floor((y - self.y0) / self.cell).astype(np.int64)
        key = cx * self.ny + cy
        key[(cx < 0) | (cy < 0) | (cx >= self.nx) | (cy >= self.ny)] = -1
        return key

    def _slot(self, key):
        """Index into keys/start/count of each cell key, -1 for empty cells."""
        if self.table is not None:
            return np.where(key >= 0, self.table[np.maximum(key, 0)], -1)
        slot = np.minimum(np.searchsorted(self.keys, key), self.keys.size - 1)
        return np.where(self.keys[slot] == key, slot, -1)

    def draw(self, num_candidate):
        """(i, j, distance_km) of the accepted pairs among num_candidate tries."""
        rng = self.rng
        num_anchor = max(1, num_candidate // self.num_bin)
        anchor = np.sort(rng.integers(0, self.x.size, num_anchor))
        i = np.repeat(anchor, self.num_bin)
        dist = (np.tile(np.arange(self.num_bin), num_anchor) + rng.random(i.size)) * self.bin_size
        angle = rng.random(i.size) * (2 * np.pi)
        slot = self._slot(self._key(self.x[i] + dist * np.cos(angle),
                                    self.y[i] + dist * np.sin(angle)))
        found = slot >= 0
        i, slot = i[found], slot[found]
        j = self.order[self.start[slot] + (rng.random(i.size) * self.count[slot]).astype(np.int64)]
        keep = i != j
        i, j = i[keep], j[keep]
        d = haversine_km(self.lon[i], self.lat[i], self.lon[j], self.lat[j])
        keep = d < self.max_distance
        return i[keep], j[keep], d[keep]


def _spatial_blocks(x, y, side):
    """Block id (0 .. side^2 - 1) of each pixel on a side x side grid over the scene."""
    def index(v):
        span = v.max() - v.min()
        if span <= 0:
            return np.zeros(v.size, dtype=np.int64)
        return np.minimum(((v - v.min()) / span * side).astype(np.int64), side - 1)
    return index(x) * side + index(y)


def _bin_stats(total, total_sq, count):
    """Mean and standard deviation of the pair covariances of each bin."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        var = np.maximum(total_sq / count - mean * mean, 0.0) * count / np.maximum(count - 1, 1)
    return mean, np.sqrt(var)


def empirical_covariogram(lon, lat, anomaly, num_pair, bin_size, max_distance, seed=0,
                          log=print):
    """Bin the covariance of numPair random pixel pairs by great-circle distance.

    Returns dict(distance (bin centres), covariance, covariance_std, count, num_pair,
    block_sums (3, B, nbin): per spatial block of the anchor pixel, the sum, sum of
    squares and number of the pair covariances, for the jackknife).
    """
    from hotspot.utils.progress import progress_bar
    rng = np.random.default_rng(seed)
    sampler = PairSampler(lon, lat, bin_size, max_distance, rng)
    nb = sampler.num_bin
    block = _spatial_blocks(sampler.x, sampler.y, JACKKNIFE_SIDE)
    nblock = JACKKNIFE_SIDE ** 2
    sums = np.zeros((3, nblock * nb))
    done, tried = 0, 0
    log(f"covariance of {num_pair} pixel pairs within {max_distance} km "
        f"({nb} bins of {bin_size} km, {lon.size} sampled pixels)")
    bar = progress_bar(maxValue=num_pair)
    t0, first_chunk = time.time(), True
    while done < num_pair:
        accept = done / tried if tried else 1.0
        want = num_pair - done
        num_candidate = int(min(PAIR_CHUNK, max(nb, want / max(accept, 0.01) * 1.1)))
        i, j, d = sampler.draw(num_candidate)
        tried += num_candidate
        i, j, d = i[:want], j[:want], d[:want]
        cov = pair_covariance(anomaly, i, j)
        b = block[i] * nb + np.minimum((d / bin_size).astype(np.int64), nb - 1)
        sums[0] += np.bincount(b, weights=cov, minlength=sums.shape[1])
        sums[1] += np.bincount(b, weights=cov * cov, minlength=sums.shape[1])
        sums[2] += np.bincount(b, minlength=sums.shape[1])
        done += i.size
        if first_chunk and done < num_pair:
            rate = done / max(time.time() - t0, 1e-6)
            log(f"\n{done} pairs in {time.time() - t0:.1f} s: about "
                f"{num_pair / rate / 60:.1f} min for the {num_pair} pairs of {KEYS['numPair']}")
        first_chunk = False
        bar.update(done, every=1, suffix=f"{done}/{num_pair} pairs")
        # Sparse scenes (islands of pixels, coarse subset) accept few targets: keep what we have.
        if tried > 50 * num_pair + 10 * PAIR_CHUNK:
            log(f"\nWARNING: only {done} of {num_pair} pairs found within {max_distance} km "
                f"after {tried} tries; using them")
            break
    bar.close()
    if done == 0:
        raise HotspotError(f"no pixel pair closer than {KEYS['maxDistance']} = {max_distance} "
                           "km was found; increase it")
    sums = sums.reshape(3, nblock, nb)
    total, total_sq, count = sums.sum(axis=1)
    mean, std = _bin_stats(total, total_sq, count)
    return {"distance": (np.arange(nb) + 0.5) * bin_size, "covariance": mean,
            "covariance_std": std, "count": count.astype(np.int64), "num_pair": int(done),
            "bin_size": bin_size, "max_distance": max_distance, "block_sums": sums}


def jackknife_length_std(emp, model, first=0):
    """Spatial block jackknife standard deviation of the correlation length (NaN if < 3 blocks),
    fitting the bins from `first` on."""
    sums = emp["block_sums"]
    blocks = np.nonzero(sums[2].sum(axis=1) > 0)[0]
    if blocks.size < 3:
        return np.nan
    lengths = []
    for k in blocks:
        total, total_sq, count = sums.sum(axis=1) - sums[:, k]
        mean, std = _bin_stats(total, total_sq, count)
        fit = fit_model(emp["distance"][first:], mean[first:], std[first:], count[first:],
                        model)
        lengths.append(fit["length"] if fit["status"] == "ok" else np.nan)
    lengths = np.asarray(lengths)
    if not np.isfinite(lengths).all():
        return np.nan
    n = lengths.size
    return float(np.sqrt((n - 1) / n * np.sum((lengths - lengths.mean()) ** 2)))


# ---------------------------------------------------------------- model fit
def _rho_exponential(h, length):
    return np.exp(-h / length)


def _rho_gaussian(h, length):
    return np.exp(-(h / length) ** 2)


def _rho_spherical(h, a):
    x = np.minimum(h / a, 1.0)
    return 1.0 - 1.5 * x + 0.5 * x ** 3


RHO = {"exponential": _rho_exponential, "gaussian": _rho_gaussian, "spherical": _rho_spherical}
MODEL_FORMULA = {
    "exponential": "C(h) = OFFSET + SILL * exp(-h / L)",
    "gaussian": "C(h) = OFFSET + SILL * exp(-(h / L)^2)",
    "spherical": "C(h) = OFFSET + SILL * (1 - 1.5 h/a + 0.5 (h/a)^3) for h < a, OFFSET beyond",
}


def _spherical_efold():
    from scipy.optimize import brentq
    return brentq(lambda x: 1 - 1.5 * x + 0.5 * x ** 3 - math.exp(-1), 0.0, 1.0)


# correlation length / model length parameter
LENGTH_FACTOR = {"exponential": 1.0, "gaussian": 1.0, "spherical": _spherical_efold()}


def model_covariance(h, model, params):
    """Covariance of the fitted model (params = sill, length parameter, offset)."""
    sill, length, offset = params
    return offset + sill * RHO[model](np.asarray(h, dtype=np.float64), length)


def fit_model(distance, covariance, covariance_std, count, model):
    """Weighted least-squares fit of `model`; returns dict(length, length_std, sill, ...).

    status is 'ok' or a message saying why no correlation length could be derived.
    """
    from scipy.optimize import curve_fit
    use = (count >= MIN_PAIR_PER_BIN) & np.isfinite(covariance)
    nan = {"length": np.nan, "length_std": np.nan, "sill": np.nan, "offset": np.nan,
           "params": (np.nan, np.nan, np.nan), "model": model}
    if use.sum() < 4:
        return dict(nan, status=f"fit failed: only {int(use.sum())} distance bins with at "
                                f"least {MIN_PAIR_PER_BIN} pairs")
    h, c = distance[use], covariance[use]
    sigma = covariance_std[use] / np.sqrt(count[use])
    sigma = np.where(sigma > 0, sigma, max(np.nanmax(sigma), 1e-30))
    scale = max(np.abs(c).max(), 1e-30)
    hmax = distance[-1] + (distance[1] - distance[0]) / 2
    factor = LENGTH_FACTOR[model]
    # Start the length where the covariance first drops below 1/e of its range.
    drop = np.nonzero(c - c[-1] < (c[0] - c[-1]) / math.e)[0]
    p0_len = (h[drop[0]] if drop.size else hmax / 3) / factor
    lower = [0.0, (h[0] / 10) / factor, -np.inf]
    upper = [np.inf, 10 * hmax / factor, np.inf]
    p0 = [max(c[0] - c[-1], 1e-3 * scale) / scale, min(max(p0_len, lower[1] * 2), upper[1] / 2),
          c[-1] / scale]

    def func(x, s, length, off):
        return off + s * RHO[model](x, length)

    try:
        params, pcov = curve_fit(func, h, c / scale, p0=p0, sigma=sigma / scale,
                                 bounds=(lower, upper), maxfev=20000)
    except (RuntimeError, ValueError) as exc:
        return dict(nan, status=f"fit failed: {exc}")
    sill, length, offset = params[0] * scale, params[1], params[2] * scale
    errors = np.sqrt(np.where(np.isfinite(np.diag(pcov)), np.diag(pcov), np.inf))
    sill_std, length_std = errors[0] * scale, errors[1]
    status = "ok"
    if length >= 0.99 * upper[1] or length <= 1.01 * lower[1]:
        status = (f"fit failed: no decay of the covariance within {hmax:g} km "
                  f"(length parameter {length:.3g} km at its bound)")
    elif not (sill > 2 * sill_std and length_std < length):
        # A flat covariogram (no spatial correlation, or all of it beyond maxDistance)
        # fits any length with a tiny sill: report no correlation length rather than noise.
        status = (f"fit failed: no significant decay of the covariance within {hmax:g} km "
                  f"(sill {sill:.3g} +/- {sill_std:.2g} m^2, length {length:.3g} +/- "
                  f"{length_std:.2g} km)")
    if status != "ok":
        # Keep the parameters (modelCovariance shows the attempt) but no usable length.
        return dict(nan, sill=sill, offset=offset, params=(sill, length, offset), status=status)
    return {"length": length * factor, "length_std": length_std * factor, "sill": sill,
            "offset": offset, "params": (sill, length, offset), "model": model,
            "status": status}


def _fit_from(emp, model, first):
    """fit_model on the bins from `first` on, with the jackknife standard deviation."""
    fit = fit_model(emp["distance"][first:], emp["covariance"][first:],
                    emp["covariance_std"][first:], emp["count"][first:], model)
    fit["length_formal_std"] = fit["length_std"]
    fit["length_std_method"] = "formal (curve_fit covariance matrix)"
    if fit["status"] == "ok":
        jack = jackknife_length_std(dict(emp, **fit), model, first)
        if np.isfinite(jack):
            fit["length_std"] = max(jack, fit["length_std"])
            fit["length_std_method"] = (f"spatial block jackknife ({JACKKNIFE_SIDE}x"
                                        f"{JACKKNIFE_SIDE} blocks of anchor pixels)")
    return fit


def unresolved(fit, bin_size, scene_size):
    """Why `fit` resolves no correlation length, or None when it does (scene_size: the
    diagonal of the pixels' bounding box, km)."""
    if fit["status"] != "ok":
        return fit["status"]
    length, std = fit["length"], fit["length_std"]
    if length < MIN_BIN_PER_LENGTH * bin_size:
        return (f"length {length:.3g} km below {MIN_BIN_PER_LENGTH} bins of {bin_size:.3g} km "
                "(a decay the bins cannot resolve)")
    if length > scene_size:
        return (f"length {length:.3g} km beyond the scene's {scene_size:.3g} km diagonal (the "
                "scene is smaller than its correlation length)")
    if not std < length:
        return (f"length {length:.3g} +/- {std:.3g} km, not significant "
                f"({fit['length_std_method']})")
    return None


def covariogram(lon, lat, anomaly, num_pair, bin_size, max_distance, model="exponential",
                seed=0, log=print):
    """Empirical covariogram + fitted model: the step's pure computation.

    A correlation length is resolved when the fit succeeds, at least MIN_BIN_PER_LENGTH (2)
    bins lie within it, it is below the scene's diagonal and its (jackknife) standard
    deviation is below it.  When the fit to all bins resolves none, the first bin is left out as a nugget
    (a drop within it: on point data, scatterers of one building move together) and the
    model is refitted from the second bin on (FIT_FIRST_BIN = 1).  When neither resolves
    one, status says why (and the step falls back, resolve_length).
    """
    emp = empirical_covariogram(lon, lat, anomaly, num_pair, bin_size, max_distance,
                                seed=seed, log=log)
    x, y = lonlat_to_xy_km(lon, lat)
    scene_size = math.hypot(np.ptp(x), np.ptp(y))
    first, note = 0, ""
    fit = _fit_from(emp, model, 0)
    why = unresolved(fit, bin_size, scene_size)
    if why is not None:
        refit = _fit_from(emp, model, 1)
        why_refit = unresolved(refit, bin_size, scene_size)
        if why_refit is None:
            note = (f"all bins: {why}; the first bin is left out as a nugget, fitted from the "
                    "second bin on")
            first, fit, why = 1, refit, None
        else:
            why = f"all bins: {why}; from the second bin on: {why_refit}"
    if note:
        log(f"covariogram: {note}")
    emp.update(fit)
    emp["fit_first_bin"], emp["fit_note"] = first, note
    emp["length_fit"] = float(fit["length"]) if fit["status"] == "ok" else np.nan
    if why is not None:
        emp.update(length=np.nan, length_std=np.nan, status=f"not resolved: {why}")
    emp["model_covariance"] = model_covariance(emp["distance"], model, fit["params"])
    return emp
