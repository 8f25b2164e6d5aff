"""Step 3, tskm: time-series k-means of the displacement series (tslearn TimeSeriesKMeans).

Method (Tiwari & Shirzaei 2024): k-means under soft-DTW (gamma 0.01), k chosen by the
silhouette score over 2-10. What this step does and why:

Band-pass (method change, docs/quality.md). k-means of the raw series groups pixels by
what dominates them: ramps, atmosphere and pixel noise, not hotspots (medium hard scene:
k = 2, 0 of 10 hotspots). The step therefore clusters a filtered copy of the stack,
written to WORKDIR/hotspotFiltered.h5 (same layout, metres): a moving average over
~SMOOTH_DAYS (the atmosphere is white in time), then, per epoch on the pixel grid (points
snapped to cells of their spacing), a difference of Gaussians: sigma NOISE_SIGMA_CELL
cell (pixel noise) minus sigma BACKGROUND_SIGMA_KM (ramps, common mode, atmosphere and
regional signal longer than a hotspot). Each series' temporal mean is removed. The spatial
filter needs whole epochs: the stack is held once in memory (N x T float32).
Sample: half of it drawn among the strong series (RMS of the band-passed series above the
scene's median + STRONG_Z robust standard deviations; the top half-sample by RMS when fewer
are), half uniform among the others, so that hotspots (a few % of the pixels, 0.5 % at Los
Angeles scale) get their own centroids. A fixed-size pool of random pixels would hold
~100 hotspot pixels at 3 M pixels against ~500 on the 76 k-pixel scene.
normalize auto is zscore (a bowl's pixels share the shape of their
series, not its amplitude). numCluster auto: the largest k whose silhouette score is at
least SILHOUETTE_RATIO x the best; on noisy series the silhouette peaks at k = 2 (one
split of the scene) and is nearly flat beyond, and a surplus cluster costs little as
dbscan splits space anyway.

Units. The stack is in metres; the fit and the assignment see millimetres (x 1000), the
units of the paper, so that gamma = 0.01 (mm^2) smooths the soft-min as the paper meant.
In metres the same gamma is 10^6 times larger relative to the squared differences and
soft-DTW stops resembling DTW at all.

Normalisation (hotspot.tskm.normalize, default none). Hotspots are defined by how much
the ground moves; z-scoring each series would give a 1-mm noisy stable pixel the same
weight as a 100-mm subsidence bowl of the same shape and mix them in one cluster.
`mean` removes each series' temporal mean (robust to the reference epoch), `zscore`
also divides by its standard deviation (tslearn's TimeSeriesScalerMeanVariance).

Fit. On numSample random pixels (hotspot.randomSeed). tslearn's TimeSeriesKMeans is the
algorithm (k-means++ init, assignment / barycenter iterations, empty-cluster restarts);
`KernelKMeans` only swaps its distance computations for hotspot.kernels (the same values,
float32 SIMD) and its barycenters: soft-DTW uses tslearn's L-BFGS objective with the
kernel's gradient, DTW uses tslearn's DBA; both with BARYCENTER_ITER iterations per
k-means iteration, warm-started from the previous centroid. tslearn's soft-DTW barycenter
alone took ~160 s per k-means iteration at 2000 x 247, so for (soft-)DTW the fit runs on a
copy resampled to FIT_LENGTH epochs (tslearn's TimeSeriesResampler, linear); the
centroids are resampled back to T epochs and every pixel is assigned at full resolution.

numCluster = auto: every k of numClusterRange is fitted on a subset of SILHOUETTE_SAMPLE
sample series, and scored with sklearn's silhouette on one precomputed distance matrix
(the same for every k) of that subset: DTW for dtw, normalised soft-DTW for softdtw (as
tslearn.clustering.silhouette_score), Euclidean for euclidean. The best k is refitted on
the full sample. The scores are kept for the plot step.

Assignment. Every pixel, block by block within mintpy.compute.maxMemory, by
hotspot.kernels.assign: exactly tslearn's predict (tested); measured ~190x faster for
soft-DTW, 17x (no band) to 60x (band 10) for DTW. With
mintpy.compute.cluster = local / slurm / pbs / lsf the pixel range is split over
MintPy's DaskCluster workers; with none numba threads run in this process.

Cluster ids 1..k are ordered by the final value of the centroid (most negative first), so
the same input and seed always give the same ids. Pixels with a NaN epoch get -1.
"""
import math
import time

import numpy as np
from tslearn.barycenters import dtw_barycenter_averaging_petitjean
from tslearn.clustering import TimeSeriesKMeans
from tslearn.clustering.kmeans import _k_init_metric
from tslearn.preprocessing import TimeSeriesResampler

from hotspot import kernels
from hotspot.utils.errors import HotspotError
from hotspot.utils.labels import NO_DATA, write_label_file
from hotspot.utils.stack import (SMOOTH_DAYS, STACK_FILE, block_size, iter_blocks,  # noqa: F401
                                 read_info, read_rows, smooth_window)

OUT_FILE = "clusterTSKM.h5"
METRICS = ("softdtw", "dtw", "euclidean")
NORMALIZE = ("none", "zscore", "mean")
CLUSTERS = ("none", "local", "slurm", "pbs", "lsf")
UNIT_SCALE = 1000.0          # stack metres -> millimetres for the fit (the paper's units)
FIT_LENGTH = 64              # epochs of the (soft-)DTW fit copy; ~30x less DP work at T = 247
SILHOUETTE_SAMPLE = 1000     # series scored per k (a 1000 x 1000 distance matrix)
BARYCENTER_ITER = 10         # L-BFGS / DBA iterations per k-means iteration (warm start)
BLOCK_CAP = 500_000          # pixels per assignment block: progress output and dask tasks
KEY = "hotspot.tskm."
FILTER_FILE = "hotspotFiltered.h5"
NOISE_SIGMA_CELL = 1.0       # spatial low-pass (Gaussian sigma, grid cells): pixel noise
BACKGROUND_SIGMA_KM = 2.0    # spatial high-pass (Gaussian sigma, km): ramps, atmosphere
MAD_TO_STD = 1.4826
STRONG_Z = 3.0               # stratified sample: 'strong' = RMS above median + STRONG_Z sigma
SILHOUETTE_RATIO = 0.7       # numCluster auto: largest k scoring >= this x the best score


# ---------------------------------------------------------------- configuration
def read_settings(config):
    """The step's template values, checked (HotspotError names the key)."""
    gamma = config.get_float(KEY + "gamma")
    if not gamma > 0:
        raise HotspotError(f"{config.source}: {KEY}gamma = {gamma} is not valid; "
                           "expected a value > 0")
    if config.is_auto(KEY + "numCluster"):
        num_cluster = "auto"
    else:
        num_cluster = config.get_int(KEY + "numCluster", min_value=2)
    k_range = config.get_range(KEY + "numClusterRange")
    settings = {
        "metric": config.get_choice(KEY + "metric", METRICS),
        "gamma": gamma,
        "band_radius": config.get_int(KEY + "bandRadius", min_value=0, allow_none=True),
        "normalize": config.get_choice(KEY + "normalize", NORMALIZE),
        "n_clusters": num_cluster,
        "k_range": k_range,
        "n_sample": config.get_int(KEY + "numSample", min_value=2),
        "max_iter": config.get_int(KEY + "maxIter", min_value=1),
        "seed": config.seed,
    }
    kmax = num_cluster if num_cluster != "auto" else k_range[1]
    if settings["n_sample"] <= kmax:
        raise HotspotError(f"{config.source}: {KEY}numSample = {settings['n_sample']} must be "
                           f"larger than the largest number of clusters ({kmax})")
    return settings


def read_compute(config):
    """MintPy's compute keys: (cluster type, number of workers, dask config name)."""
    cluster = config.get_choice("mintpy.compute.cluster", CLUSTERS)
    workers = config.get_str("mintpy.compute.numWorker")
    if workers != "all":
        workers = str(config.get_int("mintpy.compute.numWorker", min_value=1))
    name = config.get_str("mintpy.compute.config")
    return cluster, workers, (None if name.lower() in ("none", "auto", "") else name)


# ---------------------------------------------------------------- preprocessing
def normalize_series(X, mode):
    """Per-series normalisation (float64); see the module docstring for the choice."""
    X = np.asarray(X, dtype=np.float64)
    if mode == "none":
        return X
    mean = X.mean(axis=1, keepdims=True)
    if mode == "mean":
        return X - mean
    std = X.std(axis=1, keepdims=True)
    # a constant series stays constant, as in tslearn's TimeSeriesScalerMeanVariance
    std[std == 0] = 1.0
    return (X - mean) / std


def resample(X, size):
    """(n, T) -> (n, size) with tslearn's TimeSeriesResampler (linear interpolation)."""
    X = np.asarray(X, dtype=np.float64)
    if X.shape[1] == size:
        return X.copy()
    return TimeSeriesResampler(sz=size).fit_transform(X[..., None])[..., 0]


def fit_radius(radius, num_date, fit_length):
    """Sakoe-Chiba radius on the resampled time axis (rounded up: never narrower)."""
    if radius is None:
        return None
    return int(math.ceil(radius * fit_length / num_date))


# ---------------------------------------------------------------- tslearn with fast kernels
class KernelKMeans(TimeSeriesKMeans):
    """tslearn's TimeSeriesKMeans with hotspot.kernels distances and barycenters.

    band_radius: Sakoe-Chiba radius (None: no band); exact: float64 kernels (tests).
    _transform returns, for softdtw, soft-DTW where a centroid can be the nearest and
    DTW^2 (an upper bound, never the minimum) elsewhere: the assignments, the inertia
    and the k-means++ weights of the nearest centres are those of soft-DTW.
    """

    def __init__(self, n_clusters=3, max_iter=50, tol=1e-6, n_init=1, metric="softdtw",
                 max_iter_barycenter=BARYCENTER_ITER, metric_params=None, n_jobs=None,
                 dtw_inertia=False, verbose=0, random_state=None, init="k-means++",
                 band_radius=None, exact=False):
        super().__init__(n_clusters=n_clusters, max_iter=max_iter, tol=tol, n_init=n_init,
                         metric=metric, max_iter_barycenter=max_iter_barycenter,
                         metric_params=metric_params, n_jobs=n_jobs, dtw_inertia=dtw_inertia,
                         verbose=verbose, random_state=random_state, init=init)
        self.band_radius = band_radius
        self.exact = exact

    @property
    def _gamma(self):
        return float((self.metric_params or {}).get("gamma", 1.0))

    def _cdist(self, X, Y):
        return kernels.cdist(X, Y, self.metric, self._gamma, self.band_radius, exact=self.exact)

    def _transform(self, X):
        if self.metric == "softdtw" and not self.exact:
            return kernels.cdist_argmin_exact(X, self.cluster_centers_, self._gamma,
                                              self.band_radius)
        return self._cdist(X, self.cluster_centers_)

    def _assign(self, X, update_class_attributes=True):
        prev_labels = self.labels_ if update_class_attributes else None
        prev_inertia = self.inertia_
        labels = super()._assign(X, update_class_attributes)
        if prev_labels is not None and np.array_equal(prev_labels, labels):
            # no series changed cluster: converged. tslearn only stops when the inertia
            # changes by < tol, which warm-started barycenters never reach
            self.inertia_ = prev_inertia
        return labels

    def _fit_one_init(self, X, x_squared_norms, rs):
        self.labels_ = None
        if self.metric == "euclidean" or not (isinstance(self.init, str)
                                              and self.init == "k-means++"):
            return super()._fit_one_init(X, x_squared_norms, rs)
        # tslearn's own k-means++ seeding, with the kernel distances
        centers = _k_init_metric(X, self.n_clusters, cdist_metric=self._cdist, random_state=rs)
        saved = self.init
        self.init = centers
        try:
            return super()._fit_one_init(X, x_squared_norms, rs)
        finally:
            self.init = saved

    def _update_centroids(self, X):
        if self.metric == "euclidean":
            return super()._update_centroids(X)
        params = {}
        if self.band_radius is not None:
            params = {"global_constraint": "sakoe_chiba", "sakoe_chiba_radius": self.band_radius}
        for k in range(self.n_clusters):
            members = X[self.labels_ == k]
            if self.metric == "softdtw":
                self.cluster_centers_[k, :, 0] = kernels.softdtw_barycenter(
                    members[..., 0], gamma=self._gamma, radius=self.band_radius,
                    init=self.cluster_centers_[k, :, 0], max_iter=self.max_iter_barycenter)
            else:
                self.cluster_centers_[k] = dtw_barycenter_averaging_petitjean(
                    members, barycenter_size=None, init_barycenter=self.cluster_centers_[k],
                    max_iter=self.max_iter_barycenter, metric_params=params)


def make_kmeans(n_clusters, metric, gamma, band_radius, max_iter, seed,
                max_iter_barycenter=BARYCENTER_ITER, exact=False):
    """A KernelKMeans configured like the paper's tslearn model."""
    params = {"gamma": gamma} if metric == "softdtw" else {}
    if band_radius is not None and metric != "euclidean":
        params.update(global_constraint="sakoe_chiba", sakoe_chiba_radius=band_radius)
    return KernelKMeans(n_clusters=n_clusters, metric=metric, metric_params=params,
                        max_iter=max_iter, max_iter_barycenter=max_iter_barycenter,
                        random_state=seed, band_radius=band_radius, exact=exact)


def silhouette_matrix(X, metric, gamma, band_radius):
    """The precomputed distances tslearn.clustering.silhouette_score would use."""
    if metric == "euclidean":
        return kernels.cdist(X, X, "euclidean")
    D = kernels.pdist(X, metric, gamma, band_radius)
    if metric == "softdtw":
        # normalised soft-DTW, as tslearn's silhouette_score(metric="softdtw")
        d = np.diag(D).copy()
        D = D - 0.5 * (d[:, None] + d[None, :])
    return D


def silhouette(D, labels):
    """sklearn's silhouette score on a precomputed matrix; NaN for a single cluster."""
    from sklearn.metrics import silhouette_score
    if len(np.unique(labels)) < 2 or len(np.unique(labels)) >= len(labels):
        return float("nan")
    return float(silhouette_score(D, labels, metric="precomputed"))


# ---------------------------------------------------------------- the estimator
class TSKMeans:
    """Time-series k-means of the paper, fitted on a sample, applied to any number of series.

    fit(X): X (n, T) sample series in fit units (mm). predict(X): labels 1..k (ordered by
    the centroid's final value) and distances to the centroid.
    Attributes after fit: centroids_ (k, T, normalised fit units), n_clusters_,
    silhouette_k_, silhouette_score_, fit_length_, inertia_, n_iter_.
    """

    def __init__(self, metric="softdtw", gamma=0.01, band_radius=None, normalize="none",
                 n_clusters="auto", k_range=(2, 10), max_iter=20, seed=0,
                 fit_length=FIT_LENGTH, silhouette_sample=SILHOUETTE_SAMPLE,
                 max_iter_barycenter=BARYCENTER_ITER, silhouette_ratio=SILHOUETTE_RATIO,
                 log=print):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}")
        if normalize not in NORMALIZE:
            raise ValueError(f"normalize must be one of {NORMALIZE}")
        self.metric = metric
        self.gamma = float(gamma)
        self.band_radius = band_radius
        self.normalize = normalize
        self.n_clusters = n_clusters
        self.k_range = tuple(k_range)
        self.max_iter = int(max_iter)
        self.seed = int(seed)
        self.fit_length = int(fit_length)
        self.silhouette_sample = int(silhouette_sample)
        self.max_iter_barycenter = int(max_iter_barycenter)
        self.silhouette_ratio = float(silhouette_ratio)
        self.log = log

    def _fit_space(self, X):
        """Normalised, and resampled to fit_length for (soft-)DTW when longer."""
        Xn = normalize_series(X, self.normalize)
        T = Xn.shape[1]
        if self.metric == "euclidean" or T <= self.fit_length:
            return Xn, T, self.band_radius
        return (resample(Xn, self.fit_length), self.fit_length,
                fit_radius(self.band_radius, T, self.fit_length))

    def _fit_k(self, X, k, radius):
        """A fitted KernelKMeans, or None when every attempt ended with an empty cluster."""
        model = make_kmeans(k, self.metric, self.gamma, radius, self.max_iter, self.seed,
                            self.max_iter_barycenter)
        model.fit(X[..., None])
        return model if getattr(model, "cluster_centers_", None) is not None else None

    def fit(self, X):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or not np.isfinite(X).all():
            raise ValueError("fit expects an (n, T) array of finite values")
        n, T = X.shape
        Xf, tf, radius = self._fit_space(X)
        self.fit_length_ = tf
        if self.n_clusters == "auto":
            ks = [k for k in range(self.k_range[0], self.k_range[1] + 1) if k < n]
        else:
            ks = [int(self.n_clusters)]
        if not ks or ks[0] >= n:
            raise ValueError(f"{n} series cannot form {ks or self.k_range} clusters")
        # silhouette subset: the first series of the (already random) sample
        ns = min(n, self.silhouette_sample)
        t0 = time.time()
        D = silhouette_matrix(Xf[:ns], self.metric, self.gamma, radius)
        self.log(f"tskm: {self.metric} distance matrix of {ns} series x {tf} epochs for the "
                 f"silhouette score in {time.time() - t0:.1f} s")
        scores, models = [], {}
        for k in ks:
            t0 = time.time()
            if len(ks) > 1 and ns < n:
                model = self._fit_k(Xf[:ns], k, radius)
            else:
                model = models[k] = self._fit_k(Xf, k, radius)
            if model is None:
                scores.append(float("nan"))
                self.log(f"tskm: k = {k:2d}  no fit without an empty cluster")
                continue
            scores.append(silhouette(D, model.labels_[:ns]))
            self.log(f"tskm: k = {k:2d}  silhouette = {scores[-1]:.3f}  "
                     f"({model.n_iter_} iterations, {time.time() - t0:.1f} s)")
        self.silhouette_k_ = np.array(ks, dtype=np.int32)
        self.silhouette_score_ = np.array(scores, dtype=np.float64)
        if len(ks) > 1:
            finite = np.where(np.isfinite(self.silhouette_score_), self.silhouette_score_, -np.inf)
            # On noisy series the silhouette is flat beyond k = 2 (differences of a few
            # 0.01) and its maximum merges distinct hotspot behaviours; a surplus cluster
            # costs little (dbscan splits space anyway), a missing one loses hotspots.
            top = finite.max()
            close = np.nonzero(finite >= (self.silhouette_ratio * top if top > 0 else top))[0]
            best = ks[int(close.max())]
            self.log(f"tskm: numCluster = auto -> {best} (largest k with a silhouette score "
                     f">= {self.silhouette_ratio} x the highest)")
        else:
            best = ks[0]
        if models.get(best) is None:
            t0 = time.time()
            models[best] = self._fit_k(Xf, best, radius)
            self.log(f"tskm: k = {best} fitted on {n} series in {time.time() - t0:.1f} s")
        model = models[best]
        if model is None:
            raise HotspotError(f"tskm: k-means with {best} clusters ended with an empty cluster "
                               f"in every attempt; lower {KEY}numCluster or raise {KEY}numSample")
        self.model_ = model
        self.inertia_ = float(model.inertia_)
        self.n_iter_ = int(model.n_iter_)
        centers = model.cluster_centers_[..., 0]
        if tf != T:
            centers = resample(centers, T)
        # ids 1..k by the centroid's final value: deterministic for a given fit
        order = np.argsort(centers[:, -1], kind="stable")
        self.centroids_ = centers[order]
        self.n_clusters_ = int(best)
        self.sample_labels_ = np.argsort(order)[model.labels_] + 1
        return self

    def predict(self, X, return_stats=False):
        """Labels (int32, 1..k) and DTW / Euclidean distance (float32) of every series."""
        Xn = normalize_series(X, self.normalize)
        labels, dist, stats = kernels.assign(Xn, self.centroids_, self.metric, self.gamma,
                                             self.band_radius, return_stats=True)
        labels = labels + 1
        return (labels, dist, stats) if return_stats else (labels, dist)

    def params(self):
        """Everything predict needs (picklable for dask workers)."""
        return {"centroids": self.centroids_, "metric": self.metric, "gamma": self.gamma,
                "band_radius": self.band_radius, "normalize": self.normalize}


def assign_rows(X_m, params):
    """Labels / distances of stack rows (metres, float32) with fitted `params`.

    Rows with a non-finite value get NO_DATA and a NaN distance.
    """
    X_m = np.asarray(X_m)
    labels = np.full(X_m.shape[0], NO_DATA, dtype=np.int32)
    dist = np.full(X_m.shape[0], np.nan, dtype=np.float32)
    ok = np.isfinite(X_m).all(axis=1)
    if ok.any():
        Xn = normalize_series(X_m[ok].astype(np.float64) * UNIT_SCALE, params["normalize"])
        lab, d = kernels.assign(Xn, params["centroids"], params["metric"], params["gamma"],
                                params["band_radius"])
        labels[ok] = lab + 1
        dist[ok] = d
    return labels, dist


# ---------------------------------------------------------------- signal band-pass
def pixel_grid(stack_file, info, seed=0):
    """(row, col, shape, cell km) of every pixel on a regular grid.

    Gridded stacks use their raster; point stacks are snapped to square cells of the
    median nearest-neighbour spacing, or half the spacing of the points spread evenly over
    their bounding box when that is larger (several points in a cell share its value).
    """
    from hotspot.utils.geo import lonlat_to_xy_km, pixel_spacing
    from hotspot.utils.stack import read_pixels
    px = read_pixels(stack_file, ["longitude", "latitude", "row", "col"])
    ok = np.isfinite(px["longitude"]) & np.isfinite(px["latitude"])
    x = np.zeros(info.num_pixel)
    y = np.zeros(info.num_pixel)
    x[ok], y[ok] = lonlat_to_xy_km(px["longitude"][ok], px["latitude"][ok])
    cell = pixel_spacing(x[ok], y[ok], seed)
    row, col = px["row"].astype(np.int64), px["col"].astype(np.int64)
    if not (info.is_grid and (row >= 0).all() and (col >= 0).all()):
        # persistent scatterers crowd along buildings: on the EGMS Ustica burst (11,759
        # points) the median spacing is 3 m, a 1063 x 1348 grid whose 2 km Gaussian ran for
        # hours; half the spacing of the same points spread evenly bounds the grid to ~4 N cells
        area = max(float(np.ptp(x[ok]) * np.ptp(y[ok])), 0.0)
        cell = max(cell, 0.5 * np.sqrt(area / max(int(ok.sum()), 1)))
        row = np.floor((y.max() - y) / cell).astype(np.int64)
        col = np.floor((x - x.min()) / cell).astype(np.int64)
    shape = (int(row.max()) + 1, int(col.max()) + 1)
    return row, col, shape, cell


def bandpass(series_mm, row, col, shape, cell_km, window, overwrite=False):
    """Temporal moving average, then a spatial difference of Gaussians, of (n, T) series.

    The hotspot scale (hundreds of metres to a few km) passes; pixel noise (spatially
    white), atmosphere and ramps (spatially long, temporally white) are suppressed.
    Each series' temporal mean is removed. NaN rows stay NaN; they do not enter the
    spatial averages (normalised convolution). overwrite=True filters a float32 array in
    place (no copy of the stack).
    """
    from scipy.ndimage import gaussian_filter, uniform_filter1d
    X = np.asarray(series_mm, dtype=np.float32)
    if not overwrite and X is series_mm:
        X = X.copy()
    ok = np.isfinite(X).all(axis=1)
    X[~ok] = 0.0
    if window > 1:
        uniform_filter1d(X, window, axis=1, mode="nearest", output=X)
    X -= X.mean(axis=1, keepdims=True)
    r, c = row[ok], col[ok]
    flat = r * shape[1] + c
    size = shape[0] * shape[1]
    weight = np.bincount(flat, minlength=size).astype(np.float32).reshape(shape)
    s2 = BACKGROUND_SIGMA_KM / cell_km
    w1 = np.maximum(gaussian_filter(weight, NOISE_SIGMA_CELL)[r, c], 1e-6)
    w2 = np.maximum(gaussian_filter(weight, s2)[r, c], 1e-6)
    for t in range(X.shape[1]):
        grid = np.bincount(flat, weights=X[ok, t], minlength=size).astype(np.float32)
        grid = grid.reshape(shape)
        X[ok, t] = (gaussian_filter(grid, NOISE_SIGMA_CELL)[r, c] / w1
                    - gaussian_filter(grid, s2)[r, c] / w2)
    X[~ok] = np.nan
    return X


def filter_stack(stack_file, out_file, max_memory, seed=0, log=print):
    """Write the band-passed stack (metres, same layout as hotspotStack.h5) to out_file;
    returns (out_file, RMS of each band-passed series in metres, NaN where incomplete).

    The spatial filter needs whole epochs: the series are held in memory once
    (N x T float32) and the rasters are filtered one epoch at a time.
    """
    from hotspot.utils.stack import StackWriter, read_pixels
    info = read_info(stack_file)
    row, col, shape, cell = pixel_grid(stack_file, info, seed)
    window = smooth_window(info.dates)
    need = info.num_pixel * info.num_date * 4 / 1024 ** 3
    log(f"tskm: band-pass of the series: {window}-epoch moving average, difference of "
        f"Gaussians {NOISE_SIGMA_CELL * cell * 1000:.0f} m - {BACKGROUND_SIGMA_KM} km on a "
        f"{shape[0]} x {shape[1]} grid of {cell * 1000:.0f} m ({need:.2f} GB in memory"
        + (f", above maxMemory {max_memory} GB" if need > max_memory else "") + ")")
    t0 = time.time()
    data = np.empty((info.num_pixel, info.num_date), dtype=np.float32)
    size = block_size(info.num_date, max_memory, copies=4, cap=BLOCK_CAP)
    for s, e in iter_blocks(info.num_pixel, size):
        data[s:e] = _read_block(stack_file, s, e)
    data *= np.float32(UNIT_SCALE)
    bandpass(data, row, col, shape, cell, window, overwrite=True)
    data /= np.float32(UNIT_SCALE)
    rms = np.empty(info.num_pixel)
    pos = read_pixels(stack_file, ["longitude", "latitude"])
    attrs = {"FILTER": f"moving average {window} epochs; difference of Gaussians "
                       f"sigma {NOISE_SIGMA_CELL} cell - {BACKGROUND_SIGMA_KM} km",
             "SOURCE_FILE": str(stack_file)}
    with StackWriter(out_file, info.num_pixel, info.dates, attrs) as w:
        for s, e in iter_blocks(info.num_pixel, size):
            w.write_block(s, displacement=data[s:e], latitude=pos["latitude"][s:e],
                          longitude=pos["longitude"][s:e])
            rms[s:e] = np.sqrt(np.mean(np.square(data[s:e], dtype=np.float64), axis=1))
    log(f"tskm: filtered {info.num_pixel} series in {time.time() - t0:.1f} s -> {out_file}")
    return out_file, rms


def draw_stratified_sample(stack_file, n_sample, seed, rms):
    """Half the sample among the strong series, half uniform among the others.

    rms (N, NaN = incomplete series): 'strong' = above median + STRONG_Z x 1.4826 MAD of
    the scene (at least the n_sample // 2 largest).
    """
    rms = np.asarray(rms, dtype=np.float64)
    valid = np.nonzero(np.isfinite(rms))[0]
    rng = np.random.default_rng(seed)
    if valid.size <= n_sample:
        pick = valid
    else:
        r = rms[valid]
        med = np.median(r)
        threshold = med + STRONG_Z * MAD_TO_STD * np.median(np.abs(r - med))
        n_top = n_sample // 2
        strong = valid[r > threshold]
        if strong.size < n_top:
            strong = valid[np.argsort(-r, kind="stable")[:n_top]]
        top = rng.choice(strong, size=n_top, replace=False)
        rest = np.setdiff1d(valid, top, assume_unique=True)
        pick = rng.permutation(np.r_[top, rng.choice(rest, size=n_sample - n_top,
                                                     replace=False)])
    return pick.astype(np.int64), read_rows(stack_file, pick)


# ---------------------------------------------------------------- I/O around the estimator
def draw_sample(stack_file, n_sample, seed, chunk=None):
    """Random pixels with a complete time series: (indices in draw order, series in m).

    The permutation comes from numpy's default_rng(seed), so the sample is a function of
    the stack and the seed only.
    """
    info = read_info(stack_file)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(info.num_pixel)
    chunk = chunk or max(n_sample, 1000)
    keep_idx, keep_rows = [], []
    have = 0
    for s in range(0, perm.size, chunk):
        idx = perm[s:s + chunk]
        rows = read_rows(stack_file, idx)
        ok = np.isfinite(rows).all(axis=1)
        keep_idx.append(idx[ok])
        keep_rows.append(rows[ok])
        have += int(ok.sum())
        if have >= n_sample:
            break
    idx = np.concatenate(keep_idx)[:n_sample]
    rows = np.concatenate(keep_rows)[:n_sample]
    return idx.astype(np.int64), rows


def _assign_box(box, stack_file, params, block):
    """DaskCluster task: pixels box[0]:box[2] of the stack (box = [x0, 0, x1, 1]).

    Returns (labels (1, n), distances (1, n), box) as MintPy's DaskCluster expects.
    """
    import numba
    import os
    # the workers share the cores: numba threads per worker = cores / workers
    numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS,
                                     (os.cpu_count() or 1) // max(1, params.get("workers", 1)))))
    x0, x1 = int(box[0]), int(box[2])
    labels = np.empty(x1 - x0, dtype=np.int32)
    dist = np.empty(x1 - x0, dtype=np.float32)
    for s, e in iter_blocks(x1 - x0, block):
        rows = _read_block(stack_file, x0 + s, x0 + e)
        labels[s:e], dist[s:e] = assign_rows(rows, params)
    return labels[None], dist[None], box


def _read_block(stack_file, start, stop):
    from hotspot.utils.stack import read_pixels
    return read_pixels(stack_file, ["displacement"], start, stop)["displacement"]


def assign_stack(stack_file, params, max_memory, cluster="none", num_worker="4",
                 config_name=None, log=print):
    """Labels and distances of every pixel of the stack, block by block or with dask."""
    from hotspot.utils.progress import progress_bar
    info = read_info(stack_file)
    n = info.num_pixel
    # float32 read + float64 mm copy + float32 copy + (pixel x k) tables: ~6 values per epoch
    block = block_size(info.num_date, max_memory, bytes_per_value=4, copies=6, cap=BLOCK_CAP)
    where = "numba threads" if cluster == "none" else f"dask cluster '{cluster}'"
    log(f"tskm: assigning {n} pixels in blocks of <= {block} ({where})")
    if cluster != "none":
        from mintpy.objects.cluster import DaskCluster
        if cluster != "local":
            try:
                import dask_jobqueue  # noqa: F401  (DaskCluster imports it only in open())
            except ImportError:
                raise HotspotError(f"mintpy.compute.cluster = {cluster} needs the dask-jobqueue "
                                   "package; install it or use local / none") from None
        dask_cluster = DaskCluster(cluster, num_worker, config_name=config_name)
        params = dict(params, workers=dask_cluster.num_worker)
        results = [np.zeros((1, n), dtype=np.int32), np.zeros((1, n), dtype=np.float32)]
        dask_cluster.open()
        try:
            labels, dist = dask_cluster.run(
                func=_assign_box,
                func_data={"box": [0, 0, n, 1], "stack_file": str(stack_file),
                           "params": params, "block": block},
                results=results)
        finally:
            dask_cluster.close()
        return labels[0], dist[0]
    labels = np.empty(n, dtype=np.int32)
    dist = np.empty(n, dtype=np.float32)
    bar = progress_bar(maxValue=n)
    for s, e in iter_blocks(n, block):
        labels[s:e], dist[s:e] = assign_rows(_read_block(stack_file, s, e), params)
        bar.update(e, suffix=f"{e}/{n} pixels assigned")
    bar.close()
    return labels, dist


def inputs(ctx):
    return [ctx.path(STACK_FILE)]


def outputs(ctx):
    return [ctx.path(OUT_FILE), ctx.path(FILTER_FILE)]


def run(ctx):
    settings = read_settings(ctx.config)
    cluster, num_worker, config_name = read_compute(ctx.config)
    stack_file = ctx.path(STACK_FILE)
    info = read_info(stack_file)
    if info.num_pixel <= 2:
        raise HotspotError(f"{stack_file}: {info.num_pixel} pixels, too few to cluster")
    # the clustering sees the band-passed series (module docstring); labels are per pixel
    # of the stack, in the same order
    source_file = stack_file
    stack_file, rms = filter_stack(source_file, ctx.path(FILTER_FILE), ctx.config.max_memory,
                                   seed=ctx.config.seed, log=ctx.log)
    t0 = time.time()
    sample_idx, sample_m = draw_stratified_sample(stack_file, settings["n_sample"],
                                                  settings["seed"], rms=rms)
    kmax = settings["n_clusters"] if settings["n_clusters"] != "auto" else settings["k_range"][0]
    if sample_idx.size <= kmax:
        raise HotspotError(f"{stack_file}: only {sample_idx.size} pixels with a complete time "
                           f"series; {KEY}numCluster / numClusterRange need more than {kmax}")
    ctx.log(f"tskm: {sample_idx.size} sample pixels read in {time.time() - t0:.1f} s; "
            f"fit in mm, metric {settings['metric']}, gamma {settings['gamma']}, "
            f"normalize {settings['normalize']}")
    est = TSKMeans(metric=settings["metric"], gamma=settings["gamma"],
                   band_radius=settings["band_radius"], normalize=settings["normalize"],
                   n_clusters=settings["n_clusters"], k_range=settings["k_range"],
                   max_iter=settings["max_iter"], seed=settings["seed"], log=ctx.log)
    est.fit(sample_m.astype(np.float64) * UNIT_SCALE)
    t0 = time.time()
    labels, dist = assign_stack(stack_file, est.params(), ctx.config.max_memory, cluster,
                                num_worker, config_name, log=ctx.log)
    ctx.log(f"tskm: {info.num_pixel} pixels assigned to {est.n_clusters_} clusters in "
            f"{time.time() - t0:.1f} s")
    write_output(ctx.path(OUT_FILE), source_file, info, est, labels, dist, sample_idx,
                 settings, ctx.step_attrs("tskm"))
    ctx.log(f"tskm: wrote {ctx.path(OUT_FILE)}")


def write_output(path, stack_file, info, est, labels, dist, sample_idx, settings, step_attrs):
    k = est.n_clusters_
    scale = 1.0 if settings["normalize"] == "zscore" else 1.0 / UNIT_SCALE
    sizes = np.bincount(labels[labels > 0], minlength=k + 1)[1:]
    datasets = {
        "centroid": (est.centroids_ * scale).astype(np.float32),
        "date": np.array(info.dates, dtype="S8"),
        "silhouetteK": est.silhouette_k_,
        "silhouetteScore": est.silhouette_score_,
        "sampleIndex": sample_idx,
        "pixelDistance": dist,
        "clusterSize": sizes.astype(np.int64),
    }
    attrs = {
        "NUM_CLUSTER": k,
        "METRIC": settings["metric"],
        "GAMMA": settings["gamma"],
        "BAND_RADIUS": "none" if settings["band_radius"] is None else settings["band_radius"],
        "NORMALIZE": settings["normalize"],
        "SEED": settings["seed"],
        "FIT_UNIT": "mm",
        "FIT_LENGTH": est.fit_length_,
        "NUM_SAMPLE": int(sample_idx.size),
        "SILHOUETTE_SAMPLE": min(int(sample_idx.size), est.silhouette_sample),
        "CENTROID_UNIT": "1" if settings["normalize"] == "zscore" else "m",
        "DISTANCE_UNIT": "1" if settings["normalize"] == "zscore" else "mm",
        "DISTANCE": ("Euclidean distance" if settings["metric"] == "euclidean"
                     else "DTW distance") + " to the assigned centroid",
        "CLUSTER_ORDER": "ascending final centroid value",
        "INERTIA": est.inertia_,
        "NUM_ITERATION": est.n_iter_,
    }
    attrs.update(step_attrs)
    return write_label_file(path, labels, stack_file, name="label", datasets=datasets,
                            attrs=attrs, units={"centroid": attrs["CENTROID_UNIT"],
                                                "pixelDistance": attrs["DISTANCE_UNIT"]})
