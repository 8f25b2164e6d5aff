"""Step 2, covariogram: spatial correlation length of the displacement time series.

Estimator (eq. 3 of Tiwari & Shirzaei 2024, with each series' temporal mean removed):
    a_i(t)  = d_i(t) - mean_t d_i(t)
    c_ij    = (1/T) sum_t a_i(t) a_j(t)                  covariance of one pixel pair
    C(h_b)  = mean of c_ij over the pairs whose great-circle distance falls in bin b
Pixels with a NaN epoch are left out.

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

Correlation length: the distance at which the model covariance falls to 1/e of the sill
(above the offset).  That is L for the exponential and gaussian models and 0.4459 a for
the spherical model.  Its standard deviation is a spatial block jackknife: the scene is
cut into JACKKNIFE_SIDE^2 blocks (by anchor pixel), the model is refitted leaving out each
block in turn.  The formal standard deviation of the fit (from curve_fit's covariance
matrix) is far smaller because neighbouring bins share pixels and signal; it is kept as
CORRELATION_LENGTH_FORMAL_STD_KM.
"""
import math
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
# Candidate pairs per chunk: bounds the sampler's temporaries to ~100 MB.
PAIR_CHUNK = 1_000_000
MIN_PAIR_PER_BIN = 10
JACKKNIFE_SIDE = 4
# Cells of binSize / 2 up to this many get a dense lookup table (int32: 200 MB).
DENSE_CELL_LIMIT = 50_000_000
ESTIMATOR = ("mean over pixel pairs in each distance bin of the temporal covariance "
             "(1/T) sum_t (d_i(t) - mean_i)(d_j(t) - mean_j), each series' temporal mean "
             "removed; pairs drawn stratified in distance among a random pixel subset")
KEYS = {k: f"hotspot.covariogram.{k}" for k in ("numPair", "binSize", "maxDistance", "model")}


# ---------------------------------------------------------------- step interface
def inputs(ctx):
    return [ctx.path(STACK_FILE)]


def outputs(ctx):
    return [ctx.path(COV_FILE)]


def read_settings(config):
    """The step's template values, checked (HotspotError names the key)."""
    num_pair = config.get_int(KEYS["numPair"], min_value=1)
    bin_size = config.get_float(KEYS["binSize"])
    max_distance = config.get_float(KEYS["maxDistance"])
    model = config.get_choice(KEYS["model"], MODELS)
    if not bin_size > 0:
        raise HotspotError(f"{config.source}: {KEYS['binSize']} = {bin_size} is not valid; "
                           "expected a distance > 0 (km)")
    if not max_distance > bin_size:
        raise HotspotError(f"{config.source}: {KEYS['maxDistance']} = {max_distance} is not "
                           f"valid; expected a distance (km) larger than {KEYS['binSize']} "
                           f"= {bin_size}")
    if max_distance / bin_size > 100_000:
        raise HotspotError(f"{config.source}: {KEYS['maxDistance']} / {KEYS['binSize']} = "
                           f"{max_distance / bin_size:.0f} bins; expected at most 100000 bins")
    return num_pair, bin_size, max_distance, model


def run(ctx):
    num_pair, bin_size, max_distance, model = read_settings(ctx.config)
    stack_file = ctx.path(STACK_FILE)
    info = read_info(stack_file)
    # Half of maxMemory for the kept subset; the other half for the read block.
    mem_pixels = int(ctx.config.max_memory * 0.5 * 1024 ** 3 // (4 * info.num_date))
    max_pixel = max(2, min(MAX_SAMPLE_PIXEL, mem_pixels))
    lon, lat, anomaly = read_sample(stack_file, max_pixel, ctx.config.seed,
                                    ctx.config.max_memory, log=ctx.log)
    result = covariogram(lon, lat, anomaly, num_pair, bin_size, max_distance, model,
                         seed=ctx.config.seed, log=ctx.log)
    out = write_covariogram(ctx.path(COV_FILE), result, ctx.step_attrs("covariogram"),
                            num_sample_pixel=lon.size, num_pixel=info.num_pixel)
    if result["status"] == "ok":
        ctx.log(f"correlation length ({model} model): {result['length']:.3f} "
                f"+/- {result['length_std']:.3f} km")
        if result["length"] > max_distance / 2:
            ctx.log(f"WARNING: the correlation length is over half of {KEYS['maxDistance']} "
                    f"= {max_distance} km; increase it to constrain the fit")
    else:
        ctx.log(f"WARNING: {result['status']}; set hotspot.dbscan.eps and "
                "hotspot.dispersion.maxStandardDistance explicitly")
    ctx.log(f"write {out}")


def read_correlation_length(workdir):
    """CORRELATION_LENGTH_KM of WORKDIR/covariogram.h5 (the `auto` eps / dispersion distance)."""
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
    if not (math.isfinite(value) and value > 0) or attrs.get("FIT_STATUS", "ok") != "ok":
        raise HotspotError(f"{path}: no valid correlation length ({attrs.get('FIT_STATUS', value)})"
                           f"; {hint}")
    return value


def write_covariogram(path, result, step_attrs, num_sample_pixel, num_pixel):
    attrs = dict(step_attrs)
    attrs.update({
        "FILE_TYPE": "covariogram",
        "CORRELATION_LENGTH_KM": float(result["length"]),
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
        "ESTIMATOR": ESTIMATOR,
        "NUM_PAIR": int(result["num_pair"]),
        "NUM_SAMPLE_PIXEL": int(num_sample_pixel),
        "NUM_PIXEL": int(num_pixel),
        "BIN_SIZE_KM": float(result["bin_size"]),
        "MAX_DISTANCE_KM": float(result["max_distance"]),
        "UNIT": "m^2",
    })
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
    from mintpy.utils import ptime
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
    bar = ptime.progressBar(maxValue=n)
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
    from mintpy.utils import ptime
    rng = np.random.default_rng(seed)
    sampler = PairSampler(lon, lat, bin_size, max_distance, rng)
    nb = sampler.num_bin
    block = _spatial_blocks(sampler.x, sampler.y, JACKKNIFE_SIDE)
    nblock = JACKKNIFE_SIDE ** 2
    sums = np.zeros((3, nblock * nb))
    done, tried = 0, 0
    log(f"covariance of {num_pair} pixel pairs within {max_distance} km "
        f"({nb} bins of {bin_size} km, {lon.size} sampled pixels)")
    bar = ptime.progressBar(maxValue=num_pair)
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


def jackknife_length_std(emp, model):
    """Spatial block jackknife standard deviation of the correlation length (NaN if < 3 blocks)."""
    sums = emp["block_sums"]
    blocks = np.nonzero(sums[2].sum(axis=1) > 0)[0]
    if blocks.size < 3:
        return np.nan
    lengths = []
    for k in blocks:
        total, total_sq, count = sums.sum(axis=1) - sums[:, k]
        mean, std = _bin_stats(total, total_sq, count)
        fit = fit_model(emp["distance"], mean, std, count, model)
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


def covariogram(lon, lat, anomaly, num_pair, bin_size, max_distance, model="exponential",
                seed=0, log=print):
    """Empirical covariogram + fitted model: the step's pure computation."""
    emp = empirical_covariogram(lon, lat, anomaly, num_pair, bin_size, max_distance,
                                seed=seed, log=log)
    fit = fit_model(emp["distance"], emp["covariance"], emp["covariance_std"], emp["count"],
                    model)
    emp.update(fit)
    emp["length_formal_std"] = fit["length_std"]
    emp["length_std_method"] = "formal (curve_fit covariance matrix)"
    if fit["status"] == "ok":
        jack = jackknife_length_std(emp, model)
        if np.isfinite(jack):
            emp["length_std"] = max(jack, fit["length_std"])
            emp["length_std_method"] = (f"spatial block jackknife ({JACKKNIFE_SIDE}x"
                                        f"{JACKKNIFE_SIDE} blocks of anchor pixels)")
    emp["model_covariance"] = model_covariance(emp["distance"], model, fit["params"])
    return emp
