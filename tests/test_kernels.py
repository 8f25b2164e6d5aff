"""hotspot.steps.kernels against tslearn: same labels as TimeSeriesKMeans.predict, same distances."""
import warnings

import numpy as np
import pytest
from tslearn.barycenters import softdtw_barycenter as ts_softdtw_barycenter
from tslearn.barycenters.softdtw import _acc_softdtw_func
from tslearn.clustering import TimeSeriesKMeans
from tslearn.metrics import cdist_dtw, cdist_soft_dtw, dtw, soft_dtw

from hotspot.steps import kernels
from hotspot.steps.kernels import dtw as lanes

T = 40
GAMMA = 0.01


def patterns(k, num_date=T):
    """k displacement patterns in mm: trends, seasonal terms and a step."""
    t = np.linspace(0, 4, num_date)
    base = [-30 * t, -10 * t + 4 * np.sin(2 * np.pi * t), 2 * np.sin(2 * np.pi * t),
            8 * t, -20 * (t > 2) - 3 * t, 15 * t - 5 * np.cos(2 * np.pi * t)]
    return np.array(base[:k])


def series(num, k=4, noise=3.0, seed=0, num_date=T):
    rng = np.random.default_rng(seed)
    c = patterns(k, num_date)
    lab = rng.integers(0, k, num)
    return c[lab] + rng.normal(0, noise, (num, num_date)), lab


def metric_params(metric, radius, gamma=GAMMA):
    params = {"gamma": gamma} if metric == "softdtw" else {}
    if radius is not None:
        params.update(global_constraint="sakoe_chiba", sakoe_chiba_radius=radius)
    return params


def tslearn_model(metric, radius, X, k=4, gamma=GAMMA):
    """A plain tslearn model fitted (briefly) on X: the reference for predict."""
    model = TimeSeriesKMeans(k, metric=metric, metric_params=metric_params(metric, radius, gamma),
                             max_iter=2, max_iter_barycenter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(X[..., None])


def hard_cases(C, num, seed):
    """Series half-way between two centroids (near-ties) and copies of centroids."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, len(C), num)
    b = (a + 1 + rng.integers(0, len(C) - 1, num)) % len(C)
    w = rng.uniform(0.45, 0.55, (num, 1))
    mid = w * C[a] + (1 - w) * C[b] + rng.normal(0, 0.3, (num, C.shape[1]))
    return np.vstack([mid, C])


@pytest.mark.parametrize("metric", ["euclidean", "dtw", "softdtw"])
@pytest.mark.parametrize("radius", [None, 3])
def test_assign_equals_tslearn_predict(metric, radius):
    if metric == "euclidean" and radius is not None:
        pytest.skip("no band for euclidean")
    X, _ = series(300, seed=1)
    model = tslearn_model(metric, radius, X[:80])
    C = model.cluster_centers_[..., 0]
    X = np.vstack([X, hard_cases(C, 200, seed=2)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = model.predict(X[..., None])
    labels, dist = kernels.assign(X, C, metric, GAMMA, radius)
    np.testing.assert_array_equal(labels, ref)
    # distance to the assigned centroid: Euclidean or DTW (also for softdtw)
    sub = slice(0, 30)
    if metric == "euclidean":
        want = np.sqrt(((X[sub] - C[ref[sub]]) ** 2).sum(axis=1))
    else:
        want = [dtw(x, C[r], **metric_params("dtw", radius)) for x, r in zip(X[sub], ref[sub])]
    np.testing.assert_allclose(dist[sub], want, rtol=1e-5)


def test_soft_tiers_are_used_and_exact_with_large_gamma():
    """gamma = 100 makes the soft-DTW bracket wide: many series need tier 2."""
    X, _ = series(150, seed=3)
    model = tslearn_model("softdtw", None, X[:60], gamma=100.0)
    C = model.cluster_centers_[..., 0]
    X = np.vstack([X, hard_cases(C, 60, seed=4)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = model.predict(X[..., None])
    labels, _, stats = kernels.assign(X, C, "softdtw", 100.0, None, return_stats=True)
    assert stats["num_tier2"] > 20
    np.testing.assert_array_equal(labels, ref)


@pytest.mark.parametrize("metric", ["dtw", "softdtw"])
def test_float32_near_ties_resolved_in_float64(metric):
    """A centroid copied with a 1e-9 relative offset: float32 cannot separate the two."""
    X, _ = series(200, seed=5)
    C = patterns(4)
    C = np.vstack([C, C[1] * (1 + 1e-9) + 1e-9])
    labels, _, stats = kernels.assign(X, C, metric, GAMMA, None, return_stats=True)
    assert stats["num_tier3"] > 0
    ref = np.argmin(kernels.cdist(X, C, metric, GAMMA, None, exact=True), axis=1)
    np.testing.assert_array_equal(labels, ref)


def test_exact_ties_go_to_the_first_centroid():
    X, _ = series(100, seed=6)
    C = patterns(3)
    C = np.vstack([C, C[0]])          # centroid 3 == centroid 0
    for metric in ("dtw", "softdtw", "euclidean"):
        labels, _ = kernels.assign(X, C, metric, GAMMA, None)
        assert not np.any(labels == 3)
        assert np.any(labels == 0)


@pytest.mark.parametrize("radius", [None, 0, 4])
def test_exact_cost_is_tslearn(radius):
    X, _ = series(6, seed=7)
    C = patterns(3)
    params = {} if radius is None else {"global_constraint": "sakoe_chiba",
                                        "sakoe_chiba_radius": radius}
    r = lanes._radius(radius, T)
    for x in X:
        for c in C:
            assert kernels.exact_cost(x, c, r, False, GAMMA) == pytest.approx(
                dtw(x, c, **params) ** 2, rel=1e-12)
            assert kernels.exact_cost(x, c, r, True, GAMMA) == pytest.approx(
                soft_dtw(x, c, gamma=GAMMA, **params), rel=1e-12)


@pytest.mark.parametrize("radius", [None, 5])
def test_fast_cdist_close_to_tslearn(radius):
    X, _ = series(70, seed=8)
    C = patterns(5)
    params = {} if radius is None else {"global_constraint": "sakoe_chiba",
                                        "sakoe_chiba_radius": radius}
    for gamma in (GAMMA, 1.0):
        ref = cdist_soft_dtw(X, C, gamma=gamma, **params)
        got = kernels.cdist(X, C, "softdtw", gamma, radius)
        np.testing.assert_allclose(got, ref, rtol=2e-5)
    np.testing.assert_allclose(kernels.cdist(X, C, "dtw", radius=radius),
                               cdist_dtw(X, C, **params), rtol=1e-5)
    # fewer rows than columns takes the transposed path
    np.testing.assert_allclose(kernels.cdist(C, X, "dtw", radius=radius),
                               cdist_dtw(C, X, **params), rtol=1e-5)
    np.testing.assert_allclose(kernels.cdist(X, C, "dtw", radius=radius, exact=True),
                               cdist_dtw(X, C, **params), rtol=1e-12)


def test_pdist_is_symmetric_cdist():
    X, _ = series(150, seed=9)
    for metric in ("dtw", "softdtw", "euclidean"):
        D = kernels.pdist(X, metric, GAMMA)
        np.testing.assert_allclose(D, D.T)
        np.testing.assert_allclose(D, kernels.cdist(X, X, metric, GAMMA), rtol=1e-5, atol=1e-4)


def test_cdist_argmin_exact():
    """Row minima/argmins are soft-DTW's; other entries are upper bounds above the minimum."""
    X, _ = series(120, seed=10)
    C = patterns(5)
    for gamma in (GAMMA, 30.0):
        ref = kernels.cdist(X, C, "softdtw", gamma, exact=True)
        got = kernels.cdist_argmin_exact(X, C, gamma)
        np.testing.assert_array_equal(np.argmin(got, axis=1), np.argmin(ref, axis=1))
        np.testing.assert_allclose(got.min(axis=1), ref.min(axis=1), rtol=1e-5)
        assert np.all(got >= ref - 1e-4 * np.abs(ref))


def test_polynomial_exp_and_log():
    z = np.linspace(0, float(kernels.ZMAX), 100_001).astype(np.float32)
    got = np.array([lanes._exp_neg(v) for v in z[::97]])
    np.testing.assert_allclose(got, np.exp(-z[::97].astype(np.float64)), rtol=3e-7)
    s = np.linspace(1, 3, 20_001).astype(np.float32)
    got = np.array([lanes._log_1to3(v) for v in s[::37]])
    np.testing.assert_allclose(got, np.log(s[::37].astype(np.float64)), atol=3e-7)


@pytest.mark.parametrize("gamma,radius", [(GAMMA, None), (1.0, None), (GAMMA, 4)])
def test_softdtw_gradient_is_tslearn(gamma, radius):
    X, _ = series(45, seed=11)
    z = X.mean(axis=0) + np.random.default_rng(0).normal(0, 1, T)
    params = {} if radius is None else {"global_constraint": 2, "sakoe_chiba_radius": radius}
    f_ref, g_ref = _acc_softdtw_func(z[:, None], [x[:, None] for x in X], np.ones(len(X)),
                                     gamma, **params)
    f, g = kernels.softdtw_value_and_grad(z, X, None, gamma, radius)
    assert f == pytest.approx(f_ref, rel=1e-6)
    np.testing.assert_allclose(g, g_ref, atol=1e-3 * np.abs(g_ref).max())


def test_softdtw_barycenter_as_good_as_tslearn():
    X, _ = series(60, k=1, seed=12)
    ref = ts_softdtw_barycenter(X[..., None], gamma=1.0, max_iter=30)[:, 0]
    got = kernels.softdtw_barycenter(X, gamma=1.0, max_iter=30)
    f_ref = kernels.softdtw_value_and_grad(ref, X, gamma=1.0)[0]
    f_got = kernels.softdtw_value_and_grad(got, X, gamma=1.0)[0]
    assert f_got <= f_ref * (1 + 2e-3)
    assert np.abs(got - ref).max() < 0.05 * np.ptp(ref)


def test_bad_input():
    with pytest.raises(ValueError, match="metric"):
        kernels.assign(np.zeros((3, 5)), np.zeros((2, 5)), "manhattan")
    with pytest.raises(ValueError, match="equal length"):
        kernels.assign(np.zeros((3, 5)), np.zeros((2, 6)), "dtw")
    labels, dist = kernels.assign(np.zeros((0, 5)), np.zeros((2, 5)), "dtw")
    assert labels.size == 0 and dist.size == 0
