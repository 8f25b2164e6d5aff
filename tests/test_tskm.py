"""tskm step: configuration, estimator against tslearn, output file, dask path."""
import warnings

import h5py
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score
from tslearn.clustering import TimeSeriesKMeans
from tslearn.preprocessing import TimeSeriesScalerMeanVariance

from hotspot import tskm
from hotspot.hotspotApp import StepContext
from hotspot.utils.errors import HotspotError
from hotspot.utils.labels import read_pixel_label
from hotspot.utils.stack import write_stack
from hotspot.utils.template import config_from_dict

NY, NX, T = 30, 40, 48


def patterns_mm(num_date=T):
    """Four displacement histories (mm) with distinct final values."""
    t = np.linspace(0, 4, num_date)
    return np.array([-25 * t, -8 * t + 3 * np.sin(2 * np.pi * t),
                     2 * np.sin(2 * np.pi * t), 10 * t])


def make_stack(path, seed=0, nan_pixels=5):
    """A grid stack in metres: four quadrant-like zones of the patterns, plus noise."""
    rng = np.random.default_rng(seed)
    row, col = np.mgrid[:NY, :NX]
    zone = (row.ravel() >= NY // 2) * 2 + (col.ravel() >= NX // 2)
    disp = (patterns_mm()[zone] + rng.normal(0, 2, (NY * NX, T))) / 1000.0
    disp[:, 0] = 0
    disp[rng.choice(NY * NX, nan_pixels, replace=False), 3] = np.nan
    lat = 34 - row.ravel() * 0.001
    lon = -118 + col.ravel() * 0.001
    attrs = {"GRID": "yes", "LENGTH": NY, "WIDTH": NX, "X_FIRST": -118.0, "Y_FIRST": 34.0,
             "X_STEP": 0.001, "Y_STEP": -0.001, "X_UNIT": "degrees", "Y_UNIT": "degrees"}
    dates = [f"{2016 + k // 12}{k % 12 + 1:02d}15" for k in range(T)]
    write_stack(path, disp, dates, lat, lon, attrs=attrs, row=row.ravel(), col=col.ravel())
    return zone, np.isfinite(disp).all(axis=1)


def context(workdir, **overrides):
    values = {"hotspot.tskm.numSample": 300, "hotspot.tskm.numClusterRange": "2-5",
              "hotspot.tskm.maxIter": 10}
    values.update(overrides)
    return StepContext(workdir=workdir, config=config_from_dict(values))


@pytest.fixture(scope="module")
def stack_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tskm")
    zone, valid = make_stack(d / "hotspotStack.h5")
    return d, zone, valid


# ---------------------------------------------------------------- configuration
@pytest.mark.parametrize("key,value,match", [
    ("hotspot.tskm.gamma", "0", "gamma"),
    ("hotspot.tskm.metric", "cosine", "metric"),
    ("hotspot.tskm.normalize", "minmax", "normalize"),
    ("hotspot.tskm.numSample", "5", "numSample"),
    ("hotspot.tskm.numClusterRange", "1-4", "numClusterRange"),
    ("hotspot.tskm.bandRadius", "-1", "bandRadius"),
    ("hotspot.tskm.numCluster", "1", "numCluster"),
])
def test_bad_template_values_name_the_key(key, value, match):
    with pytest.raises(HotspotError, match=match):
        tskm.read_settings(config_from_dict({key: value}))


def test_default_settings():
    s = tskm.read_settings(config_from_dict())
    assert s == {"metric": "softdtw", "gamma": 0.01, "band_radius": None, "normalize": "none",
                 "n_clusters": "auto", "k_range": (2, 10), "n_sample": 2000, "max_iter": 20,
                 "seed": 0}
    assert tskm.read_compute(config_from_dict()) == ("none", "4", None)


def test_missing_stack(tmp_path):
    with pytest.raises(HotspotError, match="hotspotStack.h5"):
        tskm.run(context(tmp_path))


# ---------------------------------------------------------------- estimator
def test_normalize_matches_tslearn_scaler():
    X = np.random.default_rng(0).normal(3, 2, (20, 30))
    X[0] = 5.0
    want = TimeSeriesScalerMeanVariance().fit_transform(X[..., None])[..., 0]
    np.testing.assert_allclose(tskm.normalize_series(X, "zscore"), want, atol=1e-12)
    np.testing.assert_allclose(tskm.normalize_series(X, "mean").mean(axis=1), 0, atol=1e-12)
    np.testing.assert_array_equal(tskm.normalize_series(X, "none"), X)


@pytest.mark.parametrize("metric", ["euclidean", "dtw", "softdtw"])
def test_kernel_kmeans_fits_like_tslearn(metric):
    """Exact kernels: same k-means++ seeds and iterations as tslearn -> same clustering."""
    rng = np.random.default_rng(1)
    C = patterns_mm(30)
    lab = rng.integers(0, 4, 80)
    X = (C[lab] + rng.normal(0, 2, (80, 30)))[..., None]
    params = {"gamma": 0.01} if metric == "softdtw" else {}
    ref = TimeSeriesKMeans(4, metric=metric, metric_params=params, max_iter=5,
                           max_iter_barycenter=10, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref.fit(X)
    got = tskm.make_kmeans(4, metric, 0.01, None, 5, 0, max_iter_barycenter=10, exact=True).fit(X)
    assert adjusted_rand_score(ref.labels_, got.labels_) == 1.0
    if metric != "softdtw":
        np.testing.assert_allclose(got.cluster_centers_, ref.cluster_centers_, atol=0.5)
        return
    # gamma = 0.01 makes the barycenter problem nearly non-smooth: L-BFGS paths differ, the
    # objective (sum of soft-DTW to the members) must not be worse
    from hotspot.kernels import softdtw_value_and_grad
    assert np.abs(got.cluster_centers_ - ref.cluster_centers_).mean() < 0.25
    for k in range(4):
        members = X[got.labels_ == k, :, 0]
        f_got = softdtw_value_and_grad(got.cluster_centers_[k, :, 0], members, gamma=0.01)[0]
        f_ref = softdtw_value_and_grad(ref.cluster_centers_[k, :, 0], members, gamma=0.01)[0]
        assert f_got <= f_ref * 1.01


def test_estimator_picks_k_and_orders_clusters():
    rng = np.random.default_rng(2)
    C = patterns_mm(120)
    lab = rng.integers(0, 4, 400)
    X = C[lab] + rng.normal(0, 2, (400, 120))
    est = tskm.TSKMeans(metric="softdtw", n_clusters="auto", k_range=(2, 6), max_iter=10,
                        fit_length=40, silhouette_sample=200, log=lambda m: None).fit(X)
    assert est.n_clusters_ == 4
    assert est.fit_length_ == 40
    np.testing.assert_array_equal(est.silhouette_k_, [2, 3, 4, 5, 6])
    assert np.nanargmax(est.silhouette_score_) == 2
    assert est.centroids_.shape == (4, 120)
    # ids ordered by the centroid's final value: the -25 mm/yr pattern is cluster 1
    assert np.all(np.diff(est.centroids_[:, -1]) > 0)
    labels, dist = est.predict(X)
    assert adjusted_rand_score(lab, labels) == 1.0
    np.testing.assert_array_equal(labels, np.argsort(np.argsort(C[:, -1]))[lab] + 1)
    assert np.all(dist > 0)
    # same seed, same result
    again = tskm.TSKMeans(metric="softdtw", n_clusters="auto", k_range=(2, 6), max_iter=10,
                          fit_length=40, silhouette_sample=200, log=lambda m: None).fit(X)
    np.testing.assert_array_equal(again.centroids_, est.centroids_)


def test_silhouette_matrix_is_tslearns():
    from tslearn.clustering import silhouette_score
    rng = np.random.default_rng(3)
    C = patterns_mm(30)
    lab = rng.integers(0, 3, 60)
    X = C[lab] + rng.normal(0, 2, (60, 30))
    for metric, params in (("softdtw", {"gamma": 0.01}), ("dtw", {}), ("euclidean", {})):
        D = tskm.silhouette_matrix(X, metric, 0.01, None)
        want = silhouette_score(X[..., None], lab, metric=metric, metric_params=params or None)
        assert tskm.silhouette(D, lab) == pytest.approx(want, rel=1e-4)


# ---------------------------------------------------------------- the step
def test_run_writes_label_file(stack_dir):
    workdir, zone, valid = stack_dir
    ctx = context(workdir)
    assert tskm.inputs(ctx) == [workdir / "hotspotStack.h5"]
    assert tskm.outputs(ctx) == [workdir / "clusterTSKM.h5"]
    tskm.run(ctx)
    out = workdir / "clusterTSKM.h5"
    labels = read_pixel_label(out)
    assert np.all(labels[~valid] == -1)
    assert adjusted_rand_score(zone[valid], labels[valid]) == 1.0
    with h5py.File(out, "r") as f:
        attrs = dict(f.attrs)
        assert f["label"].shape == (NY, NX)
        np.testing.assert_array_equal(f["label"][:].ravel(), labels)
        k = int(attrs["NUM_CLUSTER"])
        assert k == 4 and set(np.unique(labels[valid])) == {1, 2, 3, 4}
        centroid = f["centroid"][:]
        assert centroid.shape == (4, T)
        # metres, ordered by final value, close to the true patterns
        np.testing.assert_allclose(centroid[:, -1], np.sort(patterns_mm()[:, -1]) / 1000,
                                   atol=0.002)
        assert f["date"].shape == (T,)
        np.testing.assert_array_equal(f["silhouetteK"][:], [2, 3, 4, 5])
        assert f["silhouetteScore"].shape == (4,)
        idx = f["sampleIndex"][:]
        assert idx.size == 300 and np.unique(idx).size == 300 and valid[idx].all()
        dist = f["pixelDistance"][:]
        assert np.isnan(dist[~valid]).all() and (dist[valid] > 0).all()
        assert f["clusterSize"][:].sum() == valid.sum()
        assert attrs["METRIC"] == "softdtw" and attrs["SEED"] == 0
        assert float(attrs["GAMMA"]) == 0.01 and attrs["FIT_UNIT"] == "mm"
        assert attrs["hotspot.tskm.numSample"] == "300"
    # same input + same seed = same labels
    first = labels.copy()
    tskm.run(ctx)
    np.testing.assert_array_equal(read_pixel_label(out), first)


def test_run_fixed_k_euclidean_zscore(stack_dir):
    workdir, zone, valid = stack_dir
    ctx = context(workdir, **{"hotspot.tskm.metric": "euclidean", "hotspot.tskm.numCluster": 3,
                              "hotspot.tskm.normalize": "zscore", "hotspot.randomSeed": 7})
    tskm.run(ctx)
    with h5py.File(workdir / "clusterTSKM.h5", "r") as f:
        assert int(f.attrs["NUM_CLUSTER"]) == 3
        np.testing.assert_array_equal(f["silhouetteK"][:], [3])
        assert f.attrs["CENTROID_UNIT"] == "1" and int(f.attrs["SEED"]) == 7


def test_assign_stack_blocks_equal_one_block(stack_dir):
    workdir, _, _ = stack_dir
    stack = workdir / "hotspotStack.h5"
    idx, rows = tskm.draw_sample(stack, 200, seed=0)
    est = tskm.TSKMeans(metric="dtw", n_clusters=4, max_iter=5, log=lambda m: None)
    est.fit(rows.astype(np.float64) * 1000)
    whole = tskm.assign_stack(stack, est.params(), max_memory=4)
    # 1000-pixel blocks (the minimum block size)
    small = tskm.assign_stack(stack, est.params(), max_memory=1e-6)
    np.testing.assert_array_equal(whole[0], small[0])
    np.testing.assert_array_equal(whole[1], small[1])


def test_dask_local_cluster_same_labels(stack_dir):
    pytest.importorskip("distributed")
    workdir, _, _ = stack_dir
    stack = workdir / "hotspotStack.h5"
    idx, rows = tskm.draw_sample(stack, 200, seed=0)
    est = tskm.TSKMeans(metric="softdtw", n_clusters=4, max_iter=5, log=lambda m: None)
    est.fit(rows.astype(np.float64) * 1000)
    serial = tskm.assign_stack(stack, est.params(), max_memory=4)
    parallel = tskm.assign_stack(stack, est.params(), max_memory=4, cluster="local",
                                 num_worker="2")
    np.testing.assert_array_equal(parallel[0], serial[0])
    np.testing.assert_array_equal(parallel[1], serial[1])
