"""tskm step: configuration, estimator against tslearn, output file, dask path."""
import warnings

import h5py
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score
from tslearn.clustering import TimeSeriesKMeans
from tslearn.preprocessing import TimeSeriesScalerMeanVariance

from hotspot.steps import tskm, tskm_estimator, tskm_filter
from hotspot.utils.errors import HotspotError
from hotspot.utils.labels import read_pixel_label
from hotspot.utils.stack import (SMOOTH_DAYS, decimal_years, read_info, read_rows, smooth_window,
                                 write_stack)
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


CTX_DEFAULTS = {"hotspot.tskm.numSample": 300, "hotspot.tskm.numClusterRange": "2-5",
              "hotspot.tskm.maxIter": 10}


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
    assert s == {"metric": "softdtw", "gamma": 0.01, "band_radius": None, "normalize": "zscore",
                 "n_clusters": "auto", "k_range": (2, 10), "n_sample": 2000, "max_iter": 20,
                 "seed": 0}
    assert tskm.read_compute(config_from_dict()) == ("none", "4", None)


def test_missing_stack(tmp_path, make_ctx):
    with pytest.raises(HotspotError, match="hotspotStack.h5"):
        tskm.run(make_ctx(tmp_path))


# ---------------------------------------------------------------- estimator
def test_normalize_matches_tslearn_scaler():
    X = np.random.default_rng(0).normal(3, 2, (20, 30))
    X[0] = 5.0
    want = TimeSeriesScalerMeanVariance().fit_transform(X[..., None])[..., 0]
    np.testing.assert_allclose(tskm_estimator.normalize_series(X, "zscore"), want, atol=1e-12)
    np.testing.assert_allclose(tskm_estimator.normalize_series(X, "mean").mean(axis=1), 0, atol=1e-12)
    np.testing.assert_array_equal(tskm_estimator.normalize_series(X, "none"), X)


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
    got = tskm_estimator.make_kmeans(4, metric, 0.01, None, 5, 0, max_iter_barycenter=10, exact=True).fit(X)
    assert adjusted_rand_score(ref.labels_, got.labels_) == 1.0
    if metric != "softdtw":
        np.testing.assert_allclose(got.cluster_centers_, ref.cluster_centers_, atol=0.5)
        return
    # gamma = 0.01 makes the barycenter problem nearly non-smooth: L-BFGS paths differ, the
    # objective (sum of soft-DTW to the members) must not be worse
    from hotspot.steps.kernels import softdtw_value_and_grad
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
    # silhouette_ratio=1.0: the paper's rule (highest score) on clean, well-separated series
    est = tskm.TSKMeans(metric="softdtw", n_clusters="auto", k_range=(2, 6), max_iter=10,
                        silhouette_ratio=1.0, fit_length=40, silhouette_sample=200,
                        log=lambda m: None).fit(X)
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
                          silhouette_ratio=1.0, fit_length=40, silhouette_sample=200,
                        log=lambda m: None).fit(X)
    np.testing.assert_array_equal(again.centroids_, est.centroids_)


def test_silhouette_matrix_is_tslearns():
    from tslearn.clustering import silhouette_score
    rng = np.random.default_rng(3)
    C = patterns_mm(30)
    lab = rng.integers(0, 3, 60)
    X = C[lab] + rng.normal(0, 2, (60, 30))
    for metric, params in (("softdtw", {"gamma": 0.01}), ("dtw", {}), ("euclidean", {})):
        D = tskm_estimator.silhouette_matrix(X, metric, 0.01, None)
        want = silhouette_score(X[..., None], lab, metric=metric, metric_params=params or None)
        assert tskm_estimator.silhouette(D, lab) == pytest.approx(want, rel=1e-4)


# ---------------------------------------------------------------- the step
def make_hotspot_stack(path, seed=0, size=40, nan_pixels=5):
    """A grid stack in metres: noise, a per-epoch ramp and three compact patches (discs of
    radius 5 pixels) of patterns 0, 2 and 3 (distinct shapes: zscore ignores amplitude);
    zone = 0 background, 1..3 the discs."""
    rng = np.random.default_rng(seed)
    row, col = (a.ravel() for a in np.mgrid[:size, :size])
    centres = [(10, 10), (10, 30), (30, 20)]
    zone = np.zeros(row.size, dtype=int)
    for k, (r0, c0) in enumerate(centres, 1):
        zone[(row - r0) ** 2 + (col - c0) ** 2 <= 25] = k
    pattern = np.vstack([np.zeros(T), patterns_mm()[[0, 2, 3]]])
    ramp = rng.normal(0, 5, T)[None] * (col[:, None] / size - 0.5)
    disp = (pattern[zone] + ramp + rng.normal(0, 2, (row.size, T))) / 1000.0
    disp[:, 0] = 0
    disp[rng.choice(row.size, nan_pixels, replace=False), 3] = np.nan
    attrs = {"GRID": "yes", "LENGTH": size, "WIDTH": size, "X_FIRST": -118.0, "Y_FIRST": 34.0,
             "X_STEP": 0.001, "Y_STEP": -0.001, "X_UNIT": "degrees", "Y_UNIT": "degrees"}
    dates = [f"{2016 + k // 12}{k % 12 + 1:02d}15" for k in range(T)]
    write_stack(path, disp, dates, 34 - row * 0.001, -118 + col * 0.001, attrs=attrs, row=row,
                col=col)
    return zone, np.isfinite(disp).all(axis=1)


def test_run_writes_label_file(tmp_path, make_ctx):
    zone, valid = make_hotspot_stack(tmp_path / "hotspotStack.h5")
    workdir = tmp_path
    ctx = make_ctx(workdir)
    assert tskm.inputs(ctx) == [workdir / "hotspotStack.h5"]
    assert tskm.outputs(ctx) == [workdir / "clusterTSKM.h5", workdir / "hotspotFiltered.h5"]
    tskm.run(ctx)
    out = workdir / "clusterTSKM.h5"
    labels = read_pixel_label(out)
    assert np.all(labels[~valid] == -1)
    # each compact patch is one temporal cluster, a different one for each pattern
    majority = []
    for k in (1, 2, 3):
        members = labels[(zone == k) & valid]
        values, counts = np.unique(members, return_counts=True)
        majority.append(values[np.argmax(counts)])
        assert counts.max() >= 0.9 * members.size, (k, values, counts)
    assert len(set(majority)) == 3
    with h5py.File(out, "r") as f:
        attrs = dict(f.attrs)
        assert f["label"].shape == (40, 40)
        np.testing.assert_array_equal(f["label"][:].ravel(), labels)
        k = int(attrs["NUM_CLUSTER"])
        assert set(np.unique(labels[valid])) == set(range(1, k + 1))
        assert f["centroid"].shape == (k, T) and attrs["CENTROID_UNIT"] == "1"
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
        assert attrs["hotspot.tskm.numSample"] == "300" and attrs["NORMALIZE"] == "zscore"
    # same input + same seed = same labels
    first = labels.copy()
    tskm.run(ctx)
    np.testing.assert_array_equal(read_pixel_label(out), first)


def test_bandpass_removes_ramp_and_noise_keeps_patch():
    rng = np.random.default_rng(4)
    size, t = 60, 40
    row, col = (a.ravel() for a in np.mgrid[:size, :size])
    patch = ((row - 30) ** 2 + (col - 30) ** 2 <= 16).astype(float)
    years = np.linspace(0, 3, t)
    ramp = rng.normal(0, 20, t)[None] * (col[:, None] / size - 0.5)   # mm, white in time
    signal = -10 * patch[:, None] * years[None]
    noise = rng.normal(0, 3, (row.size, t))
    out = tskm_filter.bandpass(ramp + signal + noise, row, col, (size, size), 0.1, window=5)
    inside, outside = out[patch > 0], out[patch == 0]
    assert np.sqrt(np.mean(outside ** 2)) < 0.2 * np.sqrt(np.mean(inside ** 2))
    # the patch keeps its shape: strongly correlated with the true history
    assert np.corrcoef(inside.mean(0), years)[0, 1] < -0.99
    # NaN rows stay NaN and do not spread
    data = ramp + signal + noise
    data[5, 3] = np.nan
    out2 = tskm_filter.bandpass(data, row, col, (size, size), 0.1, window=5)
    assert np.isnan(out2[5]).all() and np.isfinite(np.delete(out2, 5, axis=0)).all()


def test_smooth_window_and_point_grid(tmp_path):
    assert smooth_window(["20200101", "20200201"]) == 1      # too short to smooth
    days = [f"2020{m:02d}{d:02d}" for m in range(1, 13) for d in (1, 13, 25)]
    w = smooth_window(days)
    step = np.median(np.diff(decimal_years(days))) * 365.25
    assert w % 2 == 1 and abs(w * step - SMOOTH_DAYS) <= 2 * step
    # points (no raster) are snapped to cells of their spacing: one point per cell here
    rng = np.random.default_rng(0)
    r, c = (a.ravel() for a in np.mgrid[:20, :25])
    lat, lon = 34 - r * 0.001, -118 + c * 0.001
    write_stack(tmp_path / "p.h5", rng.normal(size=(r.size, 6)) * 1e-3,
                [f"2020010{d}" for d in range(1, 7)], lat, lon)
    row, col, shape, cell = tskm_filter.pixel_grid(tmp_path / "p.h5", read_info(tmp_path / "p.h5"))
    assert cell == pytest.approx(0.0925, rel=0.05)
    assert np.unique(row * shape[1] + col).size == r.size
    # scatterers crowded 10 to a building (~3 m apart) over 5 km: the grid follows their
    # even spread, not the 3 m spacing (which gave a 1063 x 1348 grid for 11,759 points)
    centre_lat = 34 + rng.uniform(0, 0.045, 50)
    centre_lon = -118 + rng.uniform(0, 0.054, 50)
    lat = np.repeat(centre_lat, 10) + rng.normal(0, 3e-5, 500)
    lon = np.repeat(centre_lon, 10) + rng.normal(0, 3e-5, 500)
    write_stack(tmp_path / "ps.h5", rng.normal(size=(500, 6)) * 1e-3,
                [f"2020010{d}" for d in range(1, 7)], lat, lon)
    row, col, shape, cell = tskm_filter.pixel_grid(tmp_path / "ps.h5", read_info(tmp_path / "ps.h5"))
    assert cell > 0.05 and shape[0] * shape[1] <= 5 * 500


def test_stratified_sample_prefers_signal(stack_dir):
    workdir, zone, valid = stack_dir
    stack = workdir / "hotspotStack.h5"
    disp = read_rows(stack, np.arange(zone.size)).astype(np.float64)
    rms = np.sqrt(np.mean(disp ** 2, axis=1))        # NaN for incomplete series
    idx, rows = tskm.draw_stratified_sample(stack, 100, seed=0, rms=rms)
    assert idx.size == 100 and np.unique(idx).size == 100 and valid[idx].all()
    # zone 0 (-25 mm/yr) has the largest RMS: half the sample is the strongest series
    assert np.mean(zone[idx] == 0) > 0.5
    again = tskm.draw_stratified_sample(stack, 100, seed=0, rms=rms)[0]
    np.testing.assert_array_equal(idx, again)


def test_stratified_sample_from_scene_rms(stack_dir):
    # with the per-pixel RMS of the whole scene, half the sample comes from its outliers
    # however rare they are (here: 20 pixels)
    workdir, zone, valid = stack_dir
    stack = workdir / "hotspotStack.h5"
    rng = np.random.default_rng(1)
    rms = np.where(valid, rng.uniform(0.95, 1.05, valid.size), np.nan)
    strong = rng.choice(np.nonzero(valid)[0], size=20, replace=False)
    rms[strong] = 5.0
    idx, rows = tskm.draw_stratified_sample(stack, 40, seed=0, rms=rms)
    assert idx.size == 40 and np.unique(idx).size == 40 and valid[idx].all()
    assert set(strong) <= set(idx)
    np.testing.assert_array_equal(rows, read_rows(stack, idx))
    np.testing.assert_array_equal(idx, tskm.draw_stratified_sample(stack, 40, 0, rms=rms)[0])


def test_auto_k_takes_largest_k_near_best_silhouette(stack_dir):
    workdir, zone, valid = stack_dir
    _, rows = tskm_filter.draw_sample(workdir / "hotspotStack.h5", 300, seed=0)
    est = tskm.TSKMeans(metric="euclidean", k_range=(2, 6), silhouette_ratio=1.0,
                        log=lambda m: None).fit(rows * 1000)
    scores = est.silhouette_score_
    assert est.n_clusters_ == est.silhouette_k_[int(np.nanargmax(scores))]
    wide = tskm.TSKMeans(metric="euclidean", k_range=(2, 6), silhouette_ratio=0.0,
                         log=lambda m: None).fit(rows * 1000)
    assert wide.n_clusters_ == 6


def test_run_fixed_k_euclidean_zscore(stack_dir, make_ctx):
    workdir, zone, valid = stack_dir
    ctx = make_ctx(workdir, **{"hotspot.tskm.metric": "euclidean", "hotspot.tskm.numCluster": 3,
                              "hotspot.tskm.normalize": "zscore", "hotspot.randomSeed": 7})
    tskm.run(ctx)
    with h5py.File(workdir / "clusterTSKM.h5", "r") as f:
        assert int(f.attrs["NUM_CLUSTER"]) == 3
        np.testing.assert_array_equal(f["silhouetteK"][:], [3])
        assert f.attrs["CENTROID_UNIT"] == "1" and int(f.attrs["SEED"]) == 7


def test_assign_stack_blocks_equal_one_block(stack_dir):
    workdir, _, _ = stack_dir
    stack = workdir / "hotspotStack.h5"
    idx, rows = tskm_filter.draw_sample(stack, 200, seed=0)
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
    idx, rows = tskm_filter.draw_sample(stack, 200, seed=0)
    est = tskm.TSKMeans(metric="softdtw", n_clusters=4, max_iter=5, log=lambda m: None)
    est.fit(rows.astype(np.float64) * 1000)
    serial = tskm.assign_stack(stack, est.params(), max_memory=4)
    parallel = tskm.assign_stack(stack, est.params(), max_memory=4, cluster="local",
                                 num_worker="2")
    np.testing.assert_array_equal(parallel[0], serial[0])
    np.testing.assert_array_equal(parallel[1], serial[1])


def test_tskmeans_is_a_scikit_learn_estimator():
    from sklearn.base import clone

    est = tskm.TSKMeans(metric="euclidean", n_clusters=3, random_state=4, log=lambda m: None)
    params = est.get_params()
    assert params["random_state"] == 4 and params["n_clusters"] == 3 and "seed" not in params
    est.set_params(random_state=5, max_iter=7)
    assert (est.random_state, est.max_iter) == (5, 7)
    assert clone(est).get_params()["random_state"] == 5
    # the constructor stores, fit validates
    bad = tskm.TSKMeans(metric="nope")
    with pytest.raises(ValueError, match="metric"):
        bad.fit(np.zeros((10, 5)))
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(m, 0.1, (20, 12)) for m in (0.0, 5.0, 10.0)])
    labels = est.fit_predict(X)
    assert np.array_equal(labels, est.sample_labels_) and sorted(set(labels)) == [1, 2, 3]
    again = clone(est).fit(X)
    assert np.array_equal(again.labels_, labels)       # same random_state -> same labels
