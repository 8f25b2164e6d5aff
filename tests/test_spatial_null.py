"""Spatial Monte Carlo null of a cluster's contrast (hotspot.steps.spatial_null)."""
import numpy as np
import pytest
from scipy import ndimage, stats
from statsmodels.stats.multitest import multipletests

from hotspot.steps import spatial_null as sn

SIZE = 90
SPACING = 0.1          # km


def _field(seed, num_date=60, bowl=None, points=False):
    """Pixel noise (1 mm) + spatially correlated turbulence (~0.4 km) on a SIZE x SIZE grid;
    bowl = (row, col, radius px, rate mm/yr) adds a subsiding disk."""
    rng = np.random.default_rng(seed)
    years = np.arange(num_date) * 12 / 365.25
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    r, c = rows.ravel(), cols.ravel()
    atm = ndimage.gaussian_filter(rng.normal(size=(num_date, SIZE, SIZE)), (0, 4, 4)) * 15
    series = rng.normal(0, 1, (r.size, num_date)) + atm.reshape(num_date, -1).T
    if bowl is not None:
        r0, c0, rad, rate = bowl
        inside = (r - r0) ** 2 + (c - c0) ** 2 <= rad ** 2
        series[inside] += rate * years
    x, y = c * SPACING, r * SPACING
    if points:                       # scattered points: jittered, 70 % kept
        x = x + rng.uniform(-0.3, 0.3, x.size) * SPACING
        y = y + rng.uniform(-0.3, 0.3, y.size) * SPACING
    coef = sn.project(series, sn.temporal_basis(years)).astype(np.float32)
    if points:
        coef[rng.random(r.size) > 0.7] = np.nan
    return r, c, x, y, coef


def _disk(r, c, centre, radius):
    return (r - centre[0]) ** 2 + (c - centre[1]) ** 2 <= radius ** 2


def test_basis_is_smooth_orthonormal_and_blind_to_offsets():
    years = np.arange(120) * 12 / 365.25                  # 3.9 years
    basis = sn.temporal_basis(years)
    assert basis.shape == (120, 10)                       # periods >= 0.8 yr
    np.testing.assert_allclose(basis.T @ basis, np.eye(10), atol=1e-10)
    np.testing.assert_allclose(np.ones(120) @ basis, 0, atol=1e-10)
    # an annual term and a trend are (almost) all in the span; white noise is not
    annual = np.sin(2 * np.pi * years)
    assert np.sum((annual @ basis) ** 2) / np.sum((annual - annual.mean()) ** 2) > 0.9
    noise = np.random.default_rng(0).normal(size=(200, 120))
    assert np.mean(np.sum((noise @ basis) ** 2, axis=1) / np.sum(noise ** 2, axis=1)) < 0.15
    # NaN epochs are filled with the row's mean, all-NaN rows stay NaN
    series = np.vstack([years * 3, np.full(120, np.nan)])
    series[0, 5] = np.nan
    coef = sn.project(series, basis)
    assert np.all(np.isfinite(coef[0])) and np.all(np.isnan(coef[1]))


def test_projection_fed_in_any_blocks_is_its_own_read(tmp_path):
    """The dispersion pass feeds StackProjection in blocks of its own size, projected as they
    come: the coefficients are those of project_stack's read within float32 rounding (the
    float64 product may differ in the last bit with the rows multiplied at once)."""
    import h5py
    rng = np.random.default_rng(4)
    series = rng.normal(0, 0.01, (3500, 60)).astype(np.float32)
    series[rng.random(series.shape) < 0.02] = np.nan
    series[17] = np.nan                                   # an unmeasured pixel
    stack = tmp_path / "stack.h5"
    with h5py.File(stack, "w") as f:
        f["displacement"] = series
    basis = sn.temporal_basis(np.arange(60) * 12 / 365.25)
    own = sn.project_stack(stack, basis, 1e-6)            # 1000-row blocks
    assert own.dtype == np.float32 and np.all(np.isnan(own[17]))
    scale = np.nanmax(np.abs(own))
    for size in (1, 7, 999, 1000, 1301, 3500):
        proj = sn.StackProjection(3500, basis)
        for start in range(0, 3500, size):
            stop = min(start + size, 3500)
            proj(start, stop, series[start:stop])
        coef = proj.result()
        assert coef.dtype == np.float32 and np.all(np.isnan(coef[17])), size
        np.testing.assert_allclose(coef, own, rtol=1e-6, atol=1e-7 * scale, equal_nan=True,
                                   err_msg=f"blocks of {size}")
    proj = sn.StackProjection(3500, basis)
    proj(0, 1500, series[:1500])
    with pytest.raises(ValueError, match="out of order"):
        proj(2000, 2500, series[2000:2500])
    with pytest.raises(ValueError, match="never fed"):
        proj.result()


@pytest.mark.parametrize("points", [False, True])
def test_no_signal_gives_uniform_p_values(points):
    r, c, x, y, coef = _field(1, points=points)
    index = sn.scene_index(x, y, coef, SPACING, row=None if points else r,
                           col=None if points else c)
    rng = np.random.default_rng(2)
    p = []
    for _ in range(120):
        centre = rng.integers(0, SIZE, 2)
        labels = _disk(r, c, centre, 3).astype(np.int64)
        res = sn.cluster_pvalue(index, coef, np.nonzero(labels)[0], 0.7, 2.0, labels, 1, rng)
        p.append(res["p"])
    p = np.array(p)
    assert np.all(np.isfinite(p))
    assert stats.kstest(p, "uniform").pvalue > 0.01
    assert 0.02 <= np.mean(p <= 0.1) <= 0.2


def test_large_footprints_are_not_liberal():
    """Disks of 450 pixels in a 8,100-pixel scene: their placements overlap, ~18 of the 199
    are independent. With M = 199 in the prediction ellipse 12 % had p <= 0.05 and the
    smallest p was 1e-3 (family null seed 2: 3,000-6,700-pixel background clusters at
    p ~ 1e-20, Monte Carlo p 0.06); with the effective number they are not liberal."""
    p = []
    for seed in range(4):
        r, c, x, y, coef = _field(10 + seed)
        index = sn.scene_index(x, y, coef, SPACING, row=r, col=c)
        rng = np.random.default_rng(seed)
        for _ in range(15):
            labels = _disk(r, c, rng.integers(12, SIZE - 12, 2), 12).astype(np.int64)
            res = sn.cluster_pvalue(index, coef, np.nonzero(labels)[0], 2.5, 4.0, labels, 1, rng)
            assert res["num_effective"] == r.size // labels.sum()
            p.append(res["p"])
    p = np.array(p)
    assert np.all(np.isfinite(p))
    assert np.mean(p <= 0.05) <= 0.08 and p.min() > 2e-3


def test_planted_bowl_is_beyond_every_placement():
    r, c, x, y, coef = _field(3, bowl=(45, 45, 4, -10.0))
    index = sn.scene_index(x, y, coef, SPACING, row=r, col=c)
    labels = _disk(r, c, (45, 45), 4).astype(np.int64)
    res = sn.cluster_pvalue(index, coef, np.nonzero(labels)[0], 0.9, 2.2, labels, 1,
                            np.random.default_rng(0))
    # no placement reaches it: the Monte Carlo floor 1 / (M + 1), and far below in the tail
    assert res["num_null"] == sn.NUM_NULL
    assert res["p_mc"] == pytest.approx(1.0 / (sn.NUM_NULL + 1))
    assert res["p"] < 1e-10
    # its contrast is the bowl's trend: velocity -10 mm/yr minus a ring at ~0
    assert np.linalg.norm(res["contrast"]) > 10 * np.sqrt(np.trace(res["cov"]))


def test_placements_miss_the_cluster_and_a_scene_sized_footprint_is_untestable():
    r, c, x, y, coef = _field(4)
    index = sn.scene_index(x, y, coef, SPACING, row=r, col=c)
    rng = np.random.default_rng(0)
    labels = _disk(r, c, (45, 45), 3).astype(np.int64)
    foot = sn._footprint(index, np.nonzero(labels)[0], rng)
    targets = index["measured_idx"][rng.integers(0, r.size, 500)]
    moved = sn._moves(index, foot, targets)
    # pixel-to-pixel moves of the same shape
    ok = np.all(moved >= 0, axis=1)
    assert ok.sum() > 300
    assert np.all(r[moved[ok]] - r[moved[ok]][:, :1] == (r[foot] - r[foot][0])[None])
    assert np.all(c[moved[ok]] - c[moved[ok]][:, :1] == (c[foot] - c[foot][0])[None])
    draws = sn.null_draws(index, coef, foot, 0.7, 2.0, labels, 1, 50, rng)
    assert draws.shape == (50, coef.shape[1])
    big = (r < 80).astype(np.int64)           # 89 % of the scene
    res = sn.cluster_pvalue(index, coef, np.nonzero(big)[0], 5.0, 6.0, big, 1, rng)
    assert np.isnan(res["p"]) and res["num_null"] < sn.MIN_NULL


def test_null_pvalue_calibrated_on_gaussian_draws_and_robust_to_contaminated_draws():
    rng = np.random.default_rng(0)
    p = np.array([sn.null_pvalue(d[0], d[1:])[0] for d in rng.normal(size=(300, 200, 5))])
    assert stats.kstest(p, "uniform").pvalue > 0.01
    # 5 % of the placements land on other hotspots (contrast 30 sigma): the null is that of
    # the other 95 %, so a 6-sigma cluster stays extreme
    draws = rng.normal(size=(199, 5))
    draws[:10] += 30.0
    mean, cov = sn.robust_moments(draws)
    np.testing.assert_allclose(mean, 0, atol=0.3)
    np.testing.assert_allclose(np.diag(cov), 1, atol=0.35)
    p, p_mc, _, exceed = sn.null_pvalue(np.full(5, 6.0), draws)
    assert exceed == 10 and p_mc == pytest.approx(11 / 200) and p < 1e-10


def test_benjamini_hochberg_is_scipys_and_statsmodels():
    p = np.random.default_rng(0).uniform(size=50) ** 3
    p[[3, 7]] = np.nan
    q = sn.fdr_qvalues(p)
    ok = np.isfinite(p)
    np.testing.assert_allclose(q[ok], multipletests(p[ok], method="fdr_bh")[1])
    assert np.all(np.isnan(q[~ok]))


def test_velocity_columns_recover_cluster_ring_and_difference():
    years = np.arange(50) * 0.1
    mean = np.vstack([-0.02 * years + 0.003, 0.001 * years])
    ring = np.vstack([-0.005 * years, np.full(50, np.nan)])
    out = sn.velocity_columns(mean, ring, years)
    np.testing.assert_allclose(out["clusterVelocity"], [-0.02, 0.001])
    np.testing.assert_allclose(out["ringVelocity"][0], -0.005)
    np.testing.assert_allclose(out["velocityContrast"][0], -0.015)
    assert np.isnan(out["ringVelocity"][1]) and np.isnan(out["velocityContrast"][1])


def test_same_feature_merges_pieces_of_one_bowl_not_noise_or_other_signals():
    from hotspot.steps.same_feature import same_feature
    rng = np.random.default_rng(0)
    cov = np.eye(6)
    trend = np.array([8.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    seasonal = np.array([0.2, 0.1, 0.3, 6.0, 0.2, 0.1])
    merged = [same_feature(trend + rng.normal(size=6), 0.8 * trend + rng.normal(size=6),
                           cov, cov, 0.05)[0] for _ in range(200)]
    assert np.mean(merged) > 0.85                     # a piece of the same bowl: merged
    halo = [same_feature(trend + rng.normal(size=6), 0.3 * trend + rng.normal(size=6),
                         cov, cov, 0.05)[0] for _ in range(200)]
    assert np.mean(halo) < 0.1                        # its halo, alike but weaker: not
    noise = [same_feature(trend + rng.normal(size=6), rng.normal(size=6), cov, cov, 0.05)[0]
             for _ in range(200)]
    assert np.mean(noise) < 0.1                       # a patch of noise beside it: not
    other = [same_feature(trend + rng.normal(size=6), seasonal + rng.normal(size=6), cov,
                          cov, 0.05)[0] for _ in range(200)]
    assert np.mean(other) < 0.05                      # a seasonal hotspot beside it: not
    assert not same_feature(trend, -trend, cov, cov, 0.05)[0]   # uplift beside subsidence
    assert not same_feature(trend, np.full(6, np.nan), cov, cov, 0.05)[0]


def test_halo_is_the_weaker_alike_piece_only():
    from hotspot.steps.same_feature import halo
    rng = np.random.default_rng(1)
    cov = np.eye(6)
    trend = np.array([8.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    seasonal = np.array([0.2, 0.1, 0.3, 6.0, 0.2, 0.1])

    def rate(weak, order="ab"):
        calls = [(2 * trend + rng.normal(size=6), weak + rng.normal(size=6))
                 for _ in range(200)]
        if order == "ab":
            return np.mean([halo(a, b, cov, cov, 0.05) == 2 for a, b in calls])
        return np.mean([halo(b, a, cov, cov, 0.05) == 1 for a, b in calls])
    assert rate(0.6 * trend) > 0.8                    # alike, 0.3 as strong: halo of a
    assert rate(0.6 * trend, order="ba") > 0.8        # same, arguments swapped
    assert rate(1.6 * trend) < 0.1                    # 0.8 as strong: a piece to merge
    assert rate(np.zeros(6)) < 0.1                    # noise beside it: no halo
    assert rate(seasonal) < 0.05                      # another signal beside it: no halo
    assert halo(trend, np.full(6, np.nan), cov, cov, 0.05) == 0


def test_same_feature_groups_join_by_complete_linkage(monkeypatch):
    """rows 0 core, 1 piece of the same bowl, 2 halo alike with the piece but not the core,
    3 a second hotspot alike with nothing; ids 10..13."""
    from hotspot.steps import dispersion_merge, same_feature
    alike = {(0, 1): (True, 6.0), (1, 2): (True, 3.0), (0, 2): (False, 1.0),
             (2, 3): (False, 0.5)}

    def fake(v_a, v_b, cov_a, cov_b, level):
        ok, z = alike.get((int(v_a[0]), int(v_b[0])), alike.get((int(v_b[0]), int(v_a[0]))))
        return ok, 1.0, z, 0.5

    monkeypatch.setattr(same_feature, "same_feature", fake)
    null = {"contrast": np.arange(4.0)[:, None], "cov": np.ones((4, 1, 1)), "level": 0.05}
    ids = np.array([10, 11, 12, 13])
    touch = np.array([[0, 1], [1, 2], [0, 2], [2, 3]])
    assert dispersion_merge.same_feature_groups(touch, ids, null) == {11: 10}
    # without the core-halo contact the chain is allowed
    assert dispersion_merge.same_feature_groups(touch[[0, 1, 3]], ids, null) == {11: 10, 12: 10}
