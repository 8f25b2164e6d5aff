"""The tskm estimator: time-series k-means under (soft-)DTW with the numba kernels, its
silhouette choice of k, and the normalisation of the series (see hotspot.steps.tskm).
"""
import math
import time

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from tslearn.barycenters import dtw_barycenter_averaging_petitjean
from tslearn.clustering import TimeSeriesKMeans
from tslearn.clustering.kmeans import _k_init_metric
from tslearn.preprocessing import TimeSeriesResampler

from hotspot.steps import kernels
from hotspot.utils.errors import HotspotError
from hotspot.utils.labels import NO_DATA

METRICS = ("softdtw", "dtw", "euclidean")
NORMALIZE = ("none", "zscore", "mean")
UNIT_SCALE = 1000.0          # stack metres -> millimetres for the fit (the paper's units)
FIT_LENGTH = 64              # epochs of the (soft-)DTW fit copy; ~30x less DP work at T = 247
SILHOUETTE_SAMPLE = 1000     # series scored per k (a 1000 x 1000 distance matrix)
BARYCENTER_ITER = 10         # L-BFGS / DBA iterations per k-means iteration (warm start)
KEY = "hotspot.tskm."
SILHOUETTE_RATIO = 0.7       # numCluster auto: largest k scoring >= this x the best score


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
    """tslearn's TimeSeriesKMeans with hotspot.steps.kernels distances and barycenters.

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
class TSKMeans(ClusterMixin, BaseEstimator):
    """Time-series k-means of the paper, fitted on a sample, applied to any number of series.

    A scikit-learn estimator: the constructor only stores its parameters (get_params /
    set_params / clone work), they are checked in fit; random_state (int) seeds tslearn's
    k-means++ initialisation.
    fit(X): X (n, T) sample series in fit units (mm). predict(X): labels 1..k (ordered by
    the centroid's final value) and distances to the centroid.
    Attributes after fit: centroids_ (k, T, normalised fit units), n_clusters_, labels_
    (= sample_labels_, the labels of the fitted sample, 1..k), silhouette_k_,
    silhouette_score_, fit_length_, inertia_, n_iter_, model_.
    """

    def __init__(self, metric="softdtw", gamma=0.01, band_radius=None, normalize="none",
                 n_clusters="auto", k_range=(2, 10), max_iter=20, random_state=0,
                 fit_length=FIT_LENGTH, silhouette_sample=SILHOUETTE_SAMPLE,
                 max_iter_barycenter=BARYCENTER_ITER, silhouette_ratio=SILHOUETTE_RATIO,
                 log=print):
        self.metric = metric
        self.gamma = gamma
        self.band_radius = band_radius
        self.normalize = normalize
        self.n_clusters = n_clusters
        self.k_range = k_range
        self.max_iter = max_iter
        self.random_state = random_state
        self.fit_length = fit_length
        self.silhouette_sample = silhouette_sample
        self.max_iter_barycenter = max_iter_barycenter
        self.silhouette_ratio = silhouette_ratio
        self.log = log

    def _check_params(self):
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}")
        if self.normalize not in NORMALIZE:
            raise ValueError(f"normalize must be one of {NORMALIZE}")

    def _fit_space(self, X):
        """Normalised, and resampled to fit_length for (soft-)DTW when longer."""
        Xn = normalize_series(X, self.normalize)
        T = Xn.shape[1]
        fit_length = int(self.fit_length)
        if self.metric == "euclidean" or T <= fit_length:
            return Xn, T, self.band_radius
        return (resample(Xn, fit_length), fit_length,
                fit_radius(self.band_radius, T, fit_length))

    def _fit_k(self, X, k, radius):
        """A fitted KernelKMeans, or None when every attempt ended with an empty cluster."""
        model = make_kmeans(k, self.metric, float(self.gamma), radius, int(self.max_iter),
                            int(self.random_state), int(self.max_iter_barycenter))
        model.fit(X[..., None])
        return model if getattr(model, "cluster_centers_", None) is not None else None

    def fit(self, X, y=None):
        self._check_params()
        k_range = tuple(self.k_range)
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or not np.isfinite(X).all():
            raise ValueError("fit expects an (n, T) array of finite values")
        n, T = X.shape
        Xf, tf, radius = self._fit_space(X)
        self.fit_length_ = tf
        if self.n_clusters == "auto":
            ks = [k for k in range(k_range[0], k_range[1] + 1) if k < n]
        else:
            ks = [int(self.n_clusters)]
        if not ks or ks[0] >= n:
            raise ValueError(f"{n} series cannot form {ks or k_range} clusters")
        # silhouette subset: the first series of the (already random) sample
        ns = min(n, int(self.silhouette_sample))
        t0 = time.time()
        D = silhouette_matrix(Xf[:ns], self.metric, float(self.gamma), radius)
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
            ratio = float(self.silhouette_ratio)
            close = np.nonzero(finite >= (ratio * top if top > 0 else top))[0]
            best = ks[int(close.max())]
            self.log(f"tskm: numCluster = auto -> {best} (largest k with a silhouette score "
                     f">= {ratio} x the highest)")
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
        self.labels_ = self.sample_labels_
        return self

    def predict(self, X, return_stats=False):
        """Labels (int32, 1..k) and DTW / Euclidean distance (float32) of every series."""
        Xn = normalize_series(X, self.normalize)
        labels, dist, stats = kernels.assign(Xn, self.centroids_, self.metric, float(self.gamma),
                                             self.band_radius, return_stats=True)
        labels = labels + 1
        return (labels, dist, stats) if return_stats else (labels, dist)

    def params(self):
        """Everything predict needs (picklable for dask workers)."""
        return {"centroids": self.centroids_, "metric": self.metric, "gamma": float(self.gamma),
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
