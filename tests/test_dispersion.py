"""Dispersion step: S_d and ellipse, the significance test, hotspot.h5 and dispersion.h5."""
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from hotspot.steps import dispersion as disp
from hotspot.steps import dispersion_merge as frag
from hotspot.steps import dispersion_significance as sig
from hotspot.utils.errors import HotspotError
from hotspot.utils.geo import EARTH_RADIUS_KM, lonlat_to_xy_km
from hotspot.utils.h5io import write_h5
from hotspot.utils.labels import write_label_file
from hotspot.utils.stack import decimal_years, write_stack

KM_PER_DEG = np.deg2rad(1.0) * EARTH_RADIUS_KM
LENGTH = WIDTH = 80
STEP_DEG = 0.001                      # ~92 m east-west at 34 N, 111 m north-south
CENTRES = {1: (20, 20), 2: (20, 60), 3: (60, 40), 4: (60, 12)}   # row, col of the patches


def _dates(num=60, days=12):
    start = np.datetime64("2020-01-01")
    return [str(start + np.timedelta64(i * days, "D")).replace("-", "") for i in range(num)]


def make_scene(workdir, seed=0, noise_mm=3.0, points=False):
    """A geocoded 80 x 80 scene, labels crafted per signal:

    1 linear hotspot (-30 mm/yr bowl), 2 seasonal hotspot (10 mm annual, no trend),
    3 compact patch of a scene-wide ramp (0..20 mm/yr west-east), 4 compact patch of noise,
    5 a long strip (background by S_d); top-right corner unmeasured (-1).
    """
    rng = np.random.default_rng(seed)
    dates = _dates()
    years = decimal_years(dates) - decimal_years(dates)[0]
    rows, cols = np.mgrid[0:LENGTH, 0:WIDTH]
    valid = ~((rows < 10) & (cols > 70))
    r, c = rows[valid], cols[valid]
    lon = 118.0 + (c + 0.5) * STEP_DEG
    lat = 34.0 - (r + 0.5) * STEP_DEG
    n = r.size

    def bowl(centre, sigma_px=5.0):
        return np.exp(-((r - centre[0]) ** 2 + (c - centre[1]) ** 2) / (2 * sigma_px ** 2))

    ramp_rate = 0.020 * c / WIDTH
    rate = -0.030 * bowl(CENTRES[1]) + ramp_rate
    seasonal = 0.010 * bowl(CENTRES[2])
    ts = (rate[:, None] * years[None, :]
          + seasonal[:, None] * np.sin(2 * np.pi * years)[None, :]
          + rng.normal(0, noise_mm / 1000, (n, years.size)))
    ts -= ts[:, :1]
    label = np.zeros(n, dtype=np.int32)
    for cid, (r0, c0) in CENTRES.items():
        label[(r - r0) ** 2 + (c - c0) ** 2 <= 36] = cid
    label[(r >= 74) & (r <= 76)] = 5
    attrs = {"GRID": "yes", "LENGTH": LENGTH, "WIDTH": WIDTH, "X_FIRST": 118.0, "Y_FIRST": 34.0,
             "X_STEP": STEP_DEG, "Y_STEP": -STEP_DEG, "X_UNIT": "degrees", "Y_UNIT": "degrees",
             "PROCESSOR": "mintpy"}
    if points:                       # scattered points (PS / EGMS): no grid, 70 % kept
        keep = rng.random(n) < 0.7
        ts, lat, lon, rate, label = ts[keep], lat[keep], lon[keep], rate[keep], label[keep]
        r = c = np.full(lat.size, -1)
        n = lat.size
        attrs = {"GRID": "no", "PROCESSOR": "egms"}
    stack = workdir / "hotspotStack.h5"
    write_stack(stack, ts, dates, lat, lon, attrs=attrs, row=r, col=c,
                velocity=rate, velocityStd=np.full(n, 0.002),
                coherence=np.full(n, 0.9))
    write_label_file(workdir / "clusterDBSCAN.h5", label, stack, name="label")
    return stack, label, ts


CTX_DEFAULTS = {"hotspot.dispersion.maxStandardDistance": "1.0"}


# ---------------------------------------------------------------------------- geometry
def test_standard_distance_and_ellipse_hand_computed():
    # (+-1, 0), (0, +-2): var_x = 0.5, var_y = 2, cov 0 -> S_d = sqrt(2.5), a = sqrt(2), b = sqrt(.5)
    x = np.array([1.0, -1.0, 0.0, 0.0])
    y = np.array([0.0, 0.0, 2.0, -2.0])
    assert sig.standard_distance(x, y) == pytest.approx(np.sqrt(2.5))
    xc, yc, a, b, angle = sig.deviational_ellipse(x + 3, y - 1)
    assert (xc, yc) == pytest.approx((3, -1))
    assert (a, b) == pytest.approx((np.sqrt(2), np.sqrt(0.5)))
    assert angle == pytest.approx(90.0)
    # the same cross rotated 30 deg counter-clockwise: major axis at 120 deg == -60 deg
    t = np.deg2rad(30)
    xr, yr = x * np.cos(t) - y * np.sin(t), x * np.sin(t) + y * np.cos(t)
    _, _, a, b, angle = sig.deviational_ellipse(xr, yr)
    assert (a, b) == pytest.approx((np.sqrt(2), np.sqrt(0.5)))
    assert angle == pytest.approx(-60.0)
    assert sig.standard_distance(xr, yr) == pytest.approx(np.sqrt(a ** 2 + b ** 2))


def test_rotated_gaussian_cloud_on_lonlat():
    rng = np.random.default_rng(1)
    sig_major, sig_minor, theta = 2.0, 0.5, np.deg2rad(35.0)
    u = rng.normal(0, sig_major, 20000)
    v = rng.normal(0, sig_minor, 20000)
    x = u * np.cos(theta) - v * np.sin(theta)
    y = u * np.sin(theta) + v * np.cos(theta)
    lat0, lon0 = 45.0, 10.0
    lat = lat0 + y / KM_PER_DEG
    lon = lon0 + x / (KM_PER_DEG * np.cos(np.deg2rad(lat0)))
    geo = sig.cluster_geometry(np.zeros(lon.size, dtype=int), lon, lat, 1)
    # exact against the same statistics on the cluster's local projection
    xl, yl = lonlat_to_xy_km(lon, lat)
    xc, yc, a, b, angle = sig.deviational_ellipse(xl, yl)
    assert (xc, yc) == pytest.approx((0, 0), abs=1e-9)       # centroid = projection centre
    assert geo["ellipseSemiMinor"][0] == pytest.approx(b, rel=1e-9)
    assert geo["standardDistance"][0] == pytest.approx(sig.standard_distance(xl, yl), rel=1e-9)
    assert geo["ellipseSemiMajor"][0] == pytest.approx(a, rel=1e-9)
    assert geo["ellipseAngle"][0] == pytest.approx(angle, abs=1e-6)
    # and close to the cloud's true parameters
    assert geo["ellipseSemiMajor"][0] == pytest.approx(sig_major, rel=0.03)
    assert geo["ellipseSemiMinor"][0] == pytest.approx(sig_minor, rel=0.03)
    assert geo["ellipseAngle"][0] == pytest.approx(35.0, abs=1.0)
    assert geo["standardDistance"][0] == pytest.approx(np.hypot(sig_major, sig_minor), rel=0.03)
    assert geo["ellipseCenterLon"][0] == pytest.approx(lon.mean())


# ---------------------------------------------------------------------------- statistics
def test_signal_test_calibrated_under_noise_and_sees_seasonal_signal():
    rng = np.random.default_rng(2)
    for num_date in (60, 15):
        years = decimal_years(_dates(num_date))
        noise = rng.normal(0, 1.0, (4000, years.size))
        p, _, sigma, dof = sig.signal_test(noise, years)
        assert dof == 4
        assert np.median(sigma) == pytest.approx(1.0, rel=0.1)
        rate = np.mean(p < 0.05)
        # calibrated for long series, conservative (never liberal) for short ones
        assert 0.02 <= rate <= 0.065 and (num_date < 30 or rate >= 0.035), (num_date, rate)
    years = decimal_years(_dates())
    seasonal = 1.0 * np.sin(2 * np.pi * years) + rng.normal(0, 1.0, years.size)
    p, rms, _, _ = sig.signal_test(seasonal, years)
    assert p[0] < 1e-4 and rms[0] == pytest.approx(np.sqrt(0.5), rel=0.3)
    # a mean velocity of zero: the velocity test cannot see it
    assert sig.velocity_test(np.array([0.0]), np.array([0.002]), np.array([1.0]))[0] == 1.0
    # too few epochs to test: NaN, which select_hotspots does not hold against a cluster
    assert np.isnan(sig.signal_test(np.ones((1, 3)), years[:3])[0][0])


def test_noise_std_ignores_smooth_signal():
    rng = np.random.default_rng(3)
    years = decimal_years(_dates())
    signal = 0.05 * years + 0.01 * np.sin(2 * np.pi * years)
    data = signal + rng.normal(0, 0.003, (2000, years.size))
    sigma = sig.noise_std(data)
    assert np.median(sigma) == pytest.approx(0.003, rel=0.1)


def test_effective_count_is_clipped():
    n_eff = sig.effective_count([1.0, 1000.0, 1e6], 1.0, [50, 5000, 10])
    assert n_eff[0] == 1.0
    assert n_eff[1] == pytest.approx(1000 / (2 * np.pi))
    assert n_eff[2] == 10


# ---------------------------------------------------------------------------- the step
def test_scene_keeps_real_hotspots_and_drops_ramp_and_noise(tmp_path):
    stack, label, ts = make_scene(tmp_path)
    table, hot = disp.compute_dispersion(
        stack, label, max_sd=1.0, min_pixel=20, alpha=0.05, drop_insignificant=True,
        corr_length=0.5, max_memory=4, seed=0, log=lambda *_: None)
    ids = list(table["clusterId"])
    assert ids == [1, 2, 3, 4, 5]
    row = {cid: ids.index(cid) for cid in ids}
    assert table["isCandidate"].tolist() == [True, True, True, True, False]   # strip: S_d
    assert table["standardDistance"][row[5]] > 1.0
    assert table["isHotspot"].tolist() == [True, True, False, False, False]
    assert table["pValue"][row[2]] < 1e-6                    # seasonal hotspot found
    assert table["pValueVelocity"][row[3]] < 0.05            # ramp patch: velocity != 0 ...
    assert table["pValue"][row[3]] > 0.05                    # ... but no contrast with its ring
    assert table["ringPixel"][row[3]] > 100
    assert table["hotspotId"].tolist() == [1, 2, 0, 0, 0]
    # per-cluster time series statistics against numpy on the cluster's rows
    members = label == 1
    np.testing.assert_allclose(table["meanTimeseries"][row[1]], ts[members].mean(0), atol=1e-6)
    np.testing.assert_allclose(table["p90Timeseries"][row[1]],
                               np.percentile(ts[members].astype(np.float32), 90, axis=0),
                               atol=1e-6)
    assert table["meanVelocity"][row[1]] < -0.01
    # hotspot pixel label: ids 1..H on hotspot pixels, 0 elsewhere
    assert set(np.unique(hot)) == {0, 1, 2}
    assert np.array_equal(hot == 1, label == 1)


def make_atmosphere_scene(workdir, seed, size=120):
    """Spatially correlated atmosphere (5 mm, ~0.5 km), per-epoch ramps, a regional seasonal
    signal and a west-east trend as background; a weak seasonal hotspot (4 mm, label 1) and
    a linear one (-8 mm/yr, label 2); 20 compact patches of background (labels 3..22)."""
    from scipy.ndimage import gaussian_filter
    rng = np.random.default_rng(seed)
    dates = _dates()
    years = decimal_years(dates) - decimal_years(dates)[0]
    r, c = (a.ravel() for a in np.mgrid[0:size, 0:size])
    atm = np.stack([gaussian_filter(rng.normal(size=(size, size)), 5).ravel() for _ in years], 1)
    atm *= 0.005 / atm.std()
    ramp = (rng.normal(0, 0.01, years.size) * (c[:, None] / size - 0.5)
            + rng.normal(0, 0.01, years.size) * (r[:, None] / size - 0.5))
    regional = 0.008 * np.exp(-((r - 20) ** 2 + (c - 100) ** 2) / 3200)[:, None] * np.sin(
        2 * np.pi * years)
    trend = 0.01 * (c / size)[:, None] * years

    def bowl(r0, c0):
        return np.exp(-((r - r0) ** 2 + (c - c0) ** 2) / 50)[:, None]

    signal = 0.004 * bowl(60, 60) * np.sin(2 * np.pi * years) - 0.008 * bowl(90, 30) * years
    ts = atm + ramp + regional + trend + signal + rng.normal(0, 0.003, atm.shape)
    ts -= ts[:, :1]
    label = np.zeros(r.size, dtype=np.int32)
    centres = [(60, 60), (90, 30)] + [(a, b) for a in (12, 35, 60, 85, 108)
                                      for b in (12, 35, 85, 108)]
    for k, (a, b) in enumerate(centres, 1):
        label[(r - a) ** 2 + (c - b) ** 2 <= 25] = k
    attrs = {"GRID": "yes", "LENGTH": size, "WIDTH": size, "X_FIRST": 118.0, "Y_FIRST": 34.0,
             "X_STEP": STEP_DEG, "Y_STEP": -STEP_DEG, "X_UNIT": "degrees"}
    velocity = np.polyfit(years, ts.T, 1)[0]
    stack = write_stack(workdir / "hotspotStack.h5", ts, dates, 34 - (r + 0.5) * STEP_DEG,
                        118 + (c + 0.5) * STEP_DEG, attrs=attrs, row=r, col=c,
                        velocity=velocity, velocityStd=np.full(r.size, 0.002))
    return stack, label


def test_correlated_noise_scene_weak_hotspots_kept_background_patches_dropped(tmp_path):
    found, false_signal, false_velocity = 0, 0, 0
    for seed in range(3):
        stack, label = make_atmosphere_scene(tmp_path, seed)
        table, _ = disp.compute_dispersion(
            stack, label, max_sd=1.0, min_pixel=20, alpha=0.05, drop_insignificant=True,
            corr_length=0.5, max_memory=4, seed=0, log=lambda *_: None)
        found += int(table["isHotspot"][:2].sum())
        false_signal += int(table["isHotspot"][2:].sum())
        false_velocity += int((table["pValueVelocity"][2:] < 0.05).sum())
    # the weak seasonal and the linear hotspot, 3 times; the family-wise (Bonferroni) level
    # over the 22 candidates loses the weakest seasonal one (p = 0.015 at seed 1) and
    # keeps at most one of the 60 background patches (the paper keeps all 60)
    assert found >= 5
    assert false_signal <= 1
    assert false_velocity >= 15             # a velocity-only test keeps the trend's patches


def test_spatial_null_decision_on_correlated_noise_scene(tmp_path):
    """The same scenes decided by the false-discovery rate of the spatial null."""
    found, false_signal = 0, 0
    for seed in range(3):
        stack, label = make_atmosphere_scene(tmp_path, seed)
        table, _ = disp.compute_dispersion(
            stack, label, max_sd=1.0, min_pixel=20, alpha=0.05, drop_insignificant=True,
            corr_length=0.5, max_memory=4, seed=0, fdr=0.05, log=lambda *_: None)
        found += int(table["isHotspot"][:2].sum())
        false_signal += int(table["isHotspot"][2:].sum())
        assert np.all(np.isfinite(table["pValueSpatial"]))
    assert found >= 5                       # as the F-test with Bonferroni (test above)
    assert false_signal <= 1


def test_point_input(tmp_path):
    stack, label, _ = make_scene(tmp_path, points=True)
    table, hot = disp.compute_dispersion(
        stack, label, max_sd=1.0, min_pixel=20, alpha=0.05, drop_insignificant=True,
        corr_length=0.5, max_memory=4, seed=0, log=lambda *_: None)
    assert table["isHotspot"].tolist() == [True, True, False, False, False]
    # footprint area from the point spacing: close to the disc area of the patch
    disc_km2 = np.pi * 6.5 ** 2 * 0.001 ** 2 * KM_PER_DEG ** 2 * np.cos(np.deg2rad(34))
    assert table["areaKm2"][0] == pytest.approx(disc_km2, rel=0.5)
    assert hot.shape == label.shape


def test_drop_insignificant_no_keeps_compact_clusters(tmp_path):
    stack, label, _ = make_scene(tmp_path)
    table, _ = disp.compute_dispersion(
        stack, label, max_sd=1.0, min_pixel=20, alpha=0.05, drop_insignificant=False,
        corr_length=0.5, max_memory=4, seed=0, log=lambda *_: None)
    assert table["isHotspot"].tolist() == [True, True, True, True, False]
    assert table["isSignificant"].tolist()[:4] == [True, True, False, False]


def test_blocks_and_seed_give_same_result(tmp_path):
    stack, label, _ = make_scene(tmp_path)
    kw = dict(max_sd=1.0, min_pixel=20, alpha=0.05, drop_insignificant=True, corr_length=0.5,
              seed=0, log=lambda *_: None)
    big, hot_big = disp.compute_dispersion(stack, label, max_memory=4, **kw)
    # 1000-pixel blocks: 7 blocks over the 6360 pixels
    small, hot_small = disp.compute_dispersion(stack, label, max_memory=1e-6, **kw)
    assert np.array_equal(hot_big, hot_small)
    np.testing.assert_allclose(big["meanTimeseries"], small["meanTimeseries"], atol=1e-7)
    np.testing.assert_allclose(big["pValue"], small["pValue"], rtol=1e-6)
    # the spatial null: same seed, same placements, whatever the blocks
    a, hot_a = disp.compute_dispersion(stack, label, max_memory=4, fdr=0.05, **kw)
    b, hot_b = disp.compute_dispersion(stack, label, max_memory=1e-6, fdr=0.05, **kw)
    assert np.array_equal(hot_a, hot_b) and np.array_equal(hot_a, hot_big)
    np.testing.assert_allclose(a["qValue"], b["qValue"], rtol=1e-5)


def test_spatial_null_reads_no_stack_of_its_own(tmp_path, monkeypatch):
    """The projection of the spatial null is fed by the first pass over the stack, and gives
    what a read of its own (project_stack) gave: the same decisions, every integer column
    equal and the float columns within float32 rounding of the coefficients (here the pass
    reads blocks of 1342 pixels, project_stack blocks of 1789)."""
    from hotspot.steps import spatial_null
    stack, label, _ = make_scene(tmp_path)
    kw = dict(max_sd=1.0, min_pixel=20, alpha=0.05, drop_insignificant=True, corr_length=0.5,
              seed=0, fdr=0.05, max_memory=2.4e-3, log=lambda *_: None)
    setup = spatial_null.setup

    def own_read(stack_file, fdr, seed, on=True):
        spatial = setup(stack_file, fdr, seed, on)
        proj = spatial.pop("projection")
        spatial["coef"] = spatial_null.project_stack(stack_file, proj.basis, kw["max_memory"])
        return spatial

    monkeypatch.setattr(spatial_null, "setup", own_read)
    before, hot_before = disp.compute_dispersion(stack, label, **kw)
    monkeypatch.setattr(spatial_null, "setup", setup)

    def no_read(*args, **kwargs):
        raise AssertionError("spatial null read the stack")

    monkeypatch.setattr(spatial_null, "project_stack", no_read)
    after, hot_after = disp.compute_dispersion(stack, label, **kw)
    assert np.isfinite(after["pValueSpatial"]).any() and np.array_equal(hot_before, hot_after)
    assert before.keys() == after.keys()
    for key in before:
        if before[key].dtype.kind == "f":
            np.testing.assert_allclose(after[key], before[key], rtol=1e-5, atol=1e-12,
                                       equal_nan=True, err_msg=key)
        else:
            assert np.array_equal(before[key], after[key]), key


def test_nan_epochs_are_skipped(tmp_path):
    stack, label, ts = make_scene(tmp_path)
    ts = ts.astype(np.float32)
    ts[np.nonzero(label == 1)[0][:10], 5] = np.nan          # a few gaps in one epoch
    ts[np.nonzero(label == 0)[0][:50], 7] = np.nan          # and in the surroundings
    with h5py.File(stack, "a") as f:
        f["displacement"][:] = ts
    table, _ = disp.compute_dispersion(
        stack, label, max_sd=1.0, min_pixel=20, alpha=0.05, drop_insignificant=True,
        corr_length=0.5, max_memory=4, seed=0, log=lambda *_: None)
    np.testing.assert_allclose(table["meanTimeseries"][0], np.nanmean(ts[label == 1], 0),
                               atol=1e-6)
    assert np.all(np.isfinite(table["p10Timeseries"][0]))
    assert np.all(np.isfinite(table["pValue"][:4]))
    assert table["isHotspot"].tolist() == [True, True, False, False, False]


def _write_covariogram(workdir, length_km=0.5):
    write_h5(workdir / "covariogram.h5", {"distance": np.arange(3.0)},
             {"CORRELATION_LENGTH_KM": length_km})


def test_run_writes_products_and_view_renders(tmp_path, make_ctx):
    make_scene(tmp_path)
    _write_covariogram(tmp_path, 0.5)
    ctx = make_ctx(tmp_path, **{"hotspot.dispersion.maxStandardDistance": "auto"})
    disp.run(ctx)
    with h5py.File(tmp_path / "dispersion.h5") as f:
        for name in ("clusterId", "numPixel", "standardDistance", "ellipseCenterLon",
                     "ellipseCenterLat", "ellipseCenterX", "ellipseCenterY", "ellipseSemiMajor",
                     "ellipseSemiMinor", "ellipseAngle", "meanVelocity", "stdVelocity",
                     "isHotspot", "isSignificant", "pValue", "hotspotId", "meanTimeseries",
                     "p10Timeseries", "p90Timeseries", "date"):
            assert name in f, name
        assert f["meanTimeseries"].shape == (5, 60)
        assert float(f.attrs["MAX_STANDARD_DISTANCE_KM"]) == 0.5
        assert int(f.attrs["MIN_PIXEL"]) == 20
        assert str(f.attrs["INPUT_FILE"]).endswith("clusterDBSCAN.h5")
        assert f.attrs["hotspot.dispersion.maxStandardDistance"] == "auto"
    with h5py.File(tmp_path / "hotspot.h5") as f:
        hot = f["hotspot"][:]
        assert hot.shape == (LENGTH, WIDTH)
        assert f.attrs["NO_DATA_VALUE"] == -1
        assert hot[0, WIDTH - 1] == -1 and hot[40, 40] == 0
        assert hot[CENTRES[1]] == 1 and hot[CENTRES[2]] == 2
        assert f["hotspotId"][:].tolist() == [1, 2]
        assert f["parentCluster"][:].tolist() == [1, 2]
        assert f["meanTimeseries"].shape == (2, 60)
    out = tmp_path / "x.png"
    res = subprocess.run([sys.executable, "-m", "mintpy.cli.view", str(tmp_path / "hotspot.h5"),
                          "hotspot", "--nodisplay", "-o", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert out.is_file() and out.stat().st_size > 1000
    # the exports read hotspot.h5's table as written here
    from hotspot.steps.export import write_exports
    written = write_exports(ctx)
    assert [p.name for p in written][-1] == "hotspot.tif"
    props = [f["properties"] for f in
             json.loads((tmp_path / "hotspot.geojson").read_text())["features"]]
    assert [p["id"] for p in props] == [1, 2] and props[0]["num_pixel"] == 113
    assert props[0]["std_distance_km"] == pytest.approx(0.4336, abs=1e-3)
    assert props[0]["mean_velocity_mm_yr"] < -10 and props[0]["p_value"] < 1e-6
    # falseDiscoveryRate = auto (0.05): the spatial null's q-values decide; every hotspot has
    # its p- and q-value, its velocity, its ring's and their difference (mm/yr in exports)
    with h5py.File(tmp_path / "dispersion.h5") as f:
        assert f.attrs["FALSE_DISCOVERY_RATE"] == 0.05
        q = f["qValue"][:]
        assert np.all(q[:2] <= 0.05) and np.all(q[2:4] > 0.05) and np.isnan(q[4])
        np.testing.assert_allclose(f["velocityContrast"][:2],
                                   f["clusterVelocity"][:2] - f["ringVelocity"][:2])
    assert props[0]["p_value_spatial"] < 1e-6 and props[0]["q_value"] <= 0.05
    assert props[0]["velocity_contrast_mm_yr"] < -10
    assert props[0]["velocity_contrast_mm_yr"] == pytest.approx(
        props[0]["velocity_mm_yr"] - props[0]["ring_velocity_mm_yr"], abs=1e-3)
    header = (tmp_path / "hotspot.csv").read_text().splitlines()[0].split(",")
    assert {"p_value_spatial", "q_value", "velocity_mm_yr", "ring_velocity_mm_yr",
            "velocity_contrast_mm_yr"} <= set(header)


def test_auto_needs_covariogram(tmp_path, make_ctx):
    make_scene(tmp_path)
    ctx = make_ctx(tmp_path, **{"hotspot.dispersion.maxStandardDistance": "auto"})
    with pytest.raises(HotspotError, match="maxStandardDistance.*covariogram"):
        disp.run(ctx)
    assert not (tmp_path / "hotspot.h5").exists()


def test_failed_covariogram_falls_back_to_set_distance(tmp_path, make_ctx):
    make_scene(tmp_path)
    write_h5(tmp_path / "covariogram.h5", {"distance": np.arange(3.0)},
             {"CORRELATION_LENGTH_KM": "nan", "FIT_STATUS": "failed"})
    opts = disp.read_options(make_ctx(tmp_path))             # maxStandardDistance = 1.0
    assert opts["max_sd"] == opts["corr_length"] == 1.0
    with pytest.raises(HotspotError, match="covariogram.h5"):
        disp.read_options(make_ctx(tmp_path, **{"hotspot.dispersion.maxStandardDistance": "auto"}))


def test_bad_inputs_name_file_and_key(tmp_path, make_ctx):
    stack, label, _ = make_scene(tmp_path)
    with pytest.raises(HotspotError, match="maxStandardDistance"):
        disp.run(make_ctx(tmp_path, **{"hotspot.dispersion.maxStandardDistance": "-1"}))
    with pytest.raises(HotspotError, match="nope.h5: label file not found"):
        disp.run(make_ctx(tmp_path, **{"hotspot.dispersion.input": "nope.h5"}))
    with pytest.raises(HotspotError, match="unwrapCheck = yes needs the radar wavelength"):
        disp.run(make_ctx(tmp_path, **{"hotspot.dispersion.unwrapCheck": "yes"}))
    (tmp_path / "clusterDBSCAN.h5").unlink()
    with pytest.raises(HotspotError, match="none of clusterLSTMP.h5, clusterLSTM.h5, clusterDBSCAN"):
        disp.run(make_ctx(tmp_path))
    with pytest.raises(HotspotError, match="pixelLabel has 5 values"):
        disp.compute_dispersion(stack, label[:5], max_sd=1, min_pixel=1, alpha=0.05,
                                drop_insignificant=True, corr_length=1, max_memory=1, seed=0)


def test_lstm_labels_preferred_and_no_cluster_case(tmp_path, make_ctx):
    stack, label, _ = make_scene(tmp_path)
    write_label_file(tmp_path / "clusterLSTM.h5", np.where(label >= 0, 0, -1), stack)
    ctx = make_ctx(tmp_path)
    assert disp.input_file(ctx).name == "clusterLSTM.h5"
    write_label_file(tmp_path / "clusterLSTMP.h5", np.where(label >= 0, 0, -1), stack)
    assert disp.input_file(ctx).name == "clusterLSTMP.h5"
    disp.run(ctx)                          # no cluster at all: empty tables, all-zero map
    with h5py.File(tmp_path / "hotspot.h5") as f:
        assert f["hotspotId"].shape == (0,)
        assert set(np.unique(f["hotspot"][:])) == {-1, 0}


def test_empirical_null_drops_bulk_keeps_outliers():
    rng = np.random.default_rng(5)
    noise = np.full(200, 0.002)
    signal = 0.002 * np.exp(rng.normal(np.log(0.25), 0.3, 200))     # the bulk: noise patches
    signal[:3] = 0.002 * np.array([1.5, 2.0, 3.0])                    # three real hotspots
    table = {"standardDistance": np.full(200, 0.5), "numPixel": np.full(200, 50),
             "pValue": np.full(200, 1e-12), "signalRms": signal, "noiseLevel": noise}
    out = sig.select_hotspots(table, max_sd=1.0, min_pixel=20, alpha=0.05,
                               drop_insignificant=True)
    assert out["isHotspot"][:3].all()
    assert out["isHotspot"][3:].sum() <= 0.02 * 197
    # too few candidates for an empirical null: the F-test alone decides
    few = {k: v[:20] for k, v in table.items()}
    assert sig.select_hotspots(few, 1.0, 20, 0.05, True)["isHotspot"].all()
    # Bonferroni: p = 1e-3 passes alone (0.05 / 1) but not among 200 candidates
    table["pValue"][:3] = 1e-3
    assert not sig.select_hotspots(table, 1.0, 20, 0.05, True)["isHotspot"][:3].any()
    single = {k: v[:1] for k, v in table.items()}
    assert sig.select_hotspots(single, 1.0, 20, 0.05, True)["isHotspot"][0]


def test_unwrapping_error_patch_is_dropped_and_real_hotspots_kept(tmp_path):
    """Patch 4 (noise) gets a lambda/2 jump from epoch 30 on in its inner disk: strongly
    significant, but only a quantised jump, so not a hotspot; with the check off it is one."""
    stack, label, ts = make_scene(tmp_path)
    rows, cols = np.divmod(np.arange(LENGTH * WIDTH), WIDTH)
    valid = ~((rows < 10) & (cols > 70))
    r, c = rows[valid], cols[valid]
    half = 0.05546576 / 2
    inner = (r - CENTRES[4][0]) ** 2 + (c - CENTRES[4][1]) ** 2 <= 16
    ts = ts.copy()
    ts[inner, 30:] -= half
    dates = _dates()
    write_stack(stack, ts, dates, 34.0 - (r + 0.5) * STEP_DEG, 118.0 + (c + 0.5) * STEP_DEG,
                attrs={"GRID": "yes", "LENGTH": LENGTH, "WIDTH": WIDTH, "X_FIRST": 118.0,
                       "Y_FIRST": 34.0, "X_STEP": STEP_DEG, "Y_STEP": -STEP_DEG,
                       "X_UNIT": "degrees", "Y_UNIT": "degrees", "WAVELENGTH": 2 * half},
                row=r, col=c, velocity=np.zeros(r.size), velocityStd=np.full(r.size, 0.002),
                coherence=np.full(r.size, 0.9))
    kwargs = dict(max_sd=1.0, min_pixel=20, alpha=0.05, drop_insignificant=True, corr_length=0.5,
                  max_memory=4, seed=0, log=lambda *_: None)
    table, _ = disp.compute_dispersion(stack, label, half_wavelength=half, **kwargs)
    row = {cid: i for i, cid in enumerate(table["clusterId"])}
    assert table["pValue"][row[4]] < 1e-6                     # the jump is strong signal
    assert table["isQuantisedJump"][row[4]] and table["isUnwrapError"][row[4]]
    assert (table["unwrapStart"][row[4]], table["unwrapStop"][row[4]]) == (30, 60)
    assert table["pValueUnwrapCorrected"][row[4]] > 0.01
    assert table["isHotspot"].tolist() == [True, True, False, False, False]
    assert not table["isUnwrapError"][[row[1], row[2]]].any()
    off, _ = disp.compute_dispersion(stack, label, half_wavelength=None, **kwargs)
    assert off["isHotspot"].tolist() == [True, True, False, True, False]
    # with the spatial null deciding, the same null tests what is left once the jump is
    # removed (pValueSpatialUnwrapCorrected, which the q-value uses): nothing
    spatial, _ = disp.compute_dispersion(stack, label, half_wavelength=half, fdr=0.05, **kwargs)
    assert spatial["pValueSpatial"][row[4]] < 1e-6
    assert spatial["pValueSpatialUnwrapCorrected"][row[4]] > 0.05
    assert spatial["qValue"][row[4]] > 0.05
    assert spatial["isUnwrapError"][row[4]] and not spatial["isHotspot"][row[4]]
    assert np.isnan(spatial["pValueSpatialUnwrapCorrected"][[row[1], row[2]]]).all()
    assert spatial["isHotspot"][[row[1], row[2]]].all()


def test_touching_fragments_that_move_alike_are_merged(tmp_path):
    """Hotspot 1 split in an inner disk (6) and its rim (1): one hotspot of both, id 1."""
    stack, label, _ = make_scene(tmp_path)
    rows, cols = np.divmod(np.arange(LENGTH * WIDTH), WIDTH)
    valid = ~((rows < 10) & (cols > 70))
    r, c = rows[valid], cols[valid]
    split = label.copy()
    split[(r - CENTRES[1][0]) ** 2 + (c - CENTRES[1][1]) ** 2 <= 9] = 6
    kwargs = dict(max_sd=1.0, min_pixel=5, alpha=0.05, drop_insignificant=True, corr_length=0.5,
                  max_memory=4, seed=0, log=lambda *_: None)
    table, hot = disp.compute_dispersion(stack, split, **kwargs)
    assert table["mergedCluster"].tolist() == [[6, 1]]
    assert 6 not in table["clusterId"].tolist()
    row = {cid: i for i, cid in enumerate(table["clusterId"])}
    assert table["numMerged"][row[1]] == 2 and table["isHotspot"][row[1]]
    assert np.array_equal(hot == table["hotspotId"][row[1]], label == 1)
    apart, hot2 = disp.compute_dispersion(stack, split, merge=False, **kwargs)
    assert apart["mergedCluster"].size == 0 and len(np.unique(hot2[hot2 > 0])) == 3


def _disk(r, c, centre, radius):
    return (r - centre[0]) ** 2 + (c - centre[1]) ** 2 <= radius ** 2


def test_amplitude_core_splits_a_diluted_cluster(tmp_path):
    """The seasonal hotspot (cluster 2, a disk of radius 6) inside a cluster of radius 13:
    with the band-passed amplitude its core is the hotspot and the rest is background;
    without it the whole diluted cluster is the hotspot."""
    stack, label, _ = make_scene(tmp_path)
    rows, cols = np.divmod(np.arange(LENGTH * WIDTH), WIDTH)
    valid = ~((rows < 10) & (cols > 70))
    r, c = rows[valid], cols[valid]
    disk = label == 2
    diluted = label.copy()
    diluted[_disk(r, c, CENTRES[2], 13) & (label == 0)] = 2
    rng = np.random.default_rng(4)
    amplitude = 1.0 + 0.3 * rng.standard_normal(r.size)
    amplitude[disk | (label == 1)] += 1.0
    kwargs = dict(max_sd=1.0, min_pixel=20, alpha=0.05, drop_insignificant=True, corr_length=0.5,
                  max_memory=4, seed=0, log=lambda *_: None)
    table, hot = disp.compute_dispersion(stack, diluted, amplitude=amplitude, **kwargs)
    row = {cid: i for i, cid in enumerate(table["clusterId"])}
    cores = [cid for cid, i in row.items() if table["coreParent"][i]]
    assert [table["coreParent"][row[cid]] for cid in cores] == [2]
    core_row = row[cores[0]]
    assert table["isHotspot"][core_row] and not table["isHotspot"][row[2]]
    assert table["peakAmplitudeZ"][core_row] >= 7 and table["peakAmplitudeZ"][row[3]] < 7
    found = hot == table["hotspotId"][core_row]
    assert (found & disk).sum() / (found | disk).sum() >= 0.5
    assert table["isHotspot"][row[1]] and not table["isHotspot"][[row[3], row[4]]].any()
    whole, hot_whole = disp.compute_dispersion(stack, diluted, **kwargs)
    assert "peakAmplitudeZ" not in whole and not whole["coreParent"].any()
    found = hot_whole == whole["hotspotId"][list(whole["clusterId"]).index(2)]
    assert (found & disk).sum() / (found | disk).sum() < 0.5


def test_amplitude_core_key(tmp_path, capsys, make_ctx):
    """auto without hotspotFiltered.h5: off, logged; yes without it: an error naming the
    file and the key; with it: on, and recorded in dispersion.h5."""
    stack, label, ts = make_scene(tmp_path)
    disp.run(make_ctx(tmp_path))
    assert "hotspotFiltered.h5 not found" in capsys.readouterr().out
    with h5py.File(tmp_path / "dispersion.h5") as f:
        assert str(f.attrs["AMPLITUDE_CORE"]) == "False" and "peakAmplitudeZ" not in f
    with pytest.raises(HotspotError, match="amplitudeCore = yes needs the band-passed series"):
        disp.run(make_ctx(tmp_path, **{"hotspot.dispersion.amplitudeCore": "yes"}))
    with h5py.File(stack) as f:
        lat, lon, col = f["latitude"][:], f["longitude"][:], f["col"][:]
    # what tskm's spatial band-pass does to this scene: the west-east ramp is gone
    years = decimal_years(_dates()) - decimal_years(_dates())[0]
    filtered = ts - (0.020 * col / WIDTH)[:, None] * years[None, :]
    write_stack(tmp_path / "hotspotFiltered.h5", filtered - filtered.mean(axis=1, keepdims=True),
                _dates(), lat, lon)
    disp.run(make_ctx(tmp_path))
    with h5py.File(tmp_path / "dispersion.h5") as f:
        assert str(f.attrs["AMPLITUDE_CORE"]) == "True" and "peakAmplitudeZ" in f
        # nothing to split here (each crafted cluster is all core or all background), so
        # the first pass stands, with the peak gate: the two hotspots are kept
        assert int(f.attrs["NUM_AMPLITUDE_CORE"]) == 0
        assert f["isHotspot"][:].tolist() == [True, True, False, False, False]
        assert (f["peakAmplitudeZ"][:2] >= 7).all()
        assert f.attrs["hotspot.dispersion.amplitudeCore"] == "auto"


def test_hotspot_grows_over_a_touching_fragment_too_weak_alone(tmp_path):
    """The east rim of bowl 1 (label 7) moves like it but has no amplitude core of its own,
    so it is no hotspot alone: it touches hotspot 1, correlates with it, and joins it."""
    stack, label, _ = make_scene(tmp_path)
    rows, cols = np.divmod(np.arange(LENGTH * WIDTH), WIDTH)
    valid = ~((rows < 10) & (cols > 70))
    r, c = rows[valid], cols[valid]
    rim = (label == 0) & _disk(r, c, CENTRES[1], 9) & (c > CENTRES[1][1] + 2)
    split = label.copy()
    split[rim] = 7
    amplitude = 1.0 + 0.3 * np.random.default_rng(6).standard_normal(r.size)
    amplitude[(label == 1) | (label == 2)] += 1.0
    kwargs = dict(max_sd=1.0, min_pixel=20, alpha=0.05, drop_insignificant=True, corr_length=0.5,
                  max_memory=4, seed=0, amplitude=amplitude, log=lambda *_: None)
    apart, _ = disp.compute_dispersion(stack, split, merge=False, **kwargs)
    row = {cid: i for i, cid in enumerate(apart["clusterId"])}
    assert apart["isCandidate"][row[7]] and not apart["isHotspot"][row[7]]
    table, hot = disp.compute_dispersion(stack, split, **kwargs)
    assert [7, 1] in table["mergedCluster"].tolist()
    one = table["hotspotId"][list(table["clusterId"]).index(1)]
    assert one > 0 and np.array_equal(hot == one, (label == 1) | rim)


def test_a_diluted_merge_keeps_its_hotspots_merged():
    """Group 2 <- 5, 7 is no hotspot once merged: the fragment 5 (no hotspot alone) goes,
    hotspots 2 and 7 stay one; a lost group with fewer than two hotspots, or of hotspots
    only, is undone; groups that stayed hotspots are untouched."""
    merged = {5: 2, 7: 2, 9: 3}
    out, kept = frag._shrink_merges(merged, lost={2}, hot_before={2, 3, 7})
    assert out == {7: 2, 9: 3} and kept == [[2, 7]]
    out, kept = frag._shrink_merges({7: 2, 9: 3}, lost={2}, hot_before={2, 3, 7})
    assert out == {9: 3} and kept == []
    out, kept = frag._shrink_merges({5: 2, 6: 2}, lost={2}, hot_before={6})
    assert out == {} and kept == []
    # the hotspots of a lost group need not include its root (the smallest id)
    out, kept = frag._shrink_merges({5: 2, 6: 2}, lost={2}, hot_before={5, 6})
    assert out == {6: 5} and kept == [[5, 6]]


def test_peak_gate_grows_like_the_largest_of_n_noise_values():
    """The gate a cluster's peak amplitude z must reach rises with its size, as the largest of
    n standard normal values does (sqrt(2 ln n)): 4.4 at 20 pixels, 7.2 at 3,000."""
    gate = sig.hotspot_peak_gate(np.array([20, 273, 3221]))
    np.testing.assert_allclose(gate, 1.8 * np.sqrt(2 * np.log([20, 273, 3221])))
    assert np.all(np.diff(gate) > 0) and 4.3 < gate[0] < 4.5 and 7.1 < gate[2] < 7.3
    table = {"standardDistance": np.full(3, 0.5), "numPixel": np.array([273, 273, 3221]),
             "pValue": np.full(3, 1e-12), "peakAmplitudeZ": np.array([6.6, 5.9, 6.8])}
    # a 273-pixel cluster peaking at 6.6 is kept, at 5.9 it is not; 3,221 pixels at 6.8 is not
    out = sig.select_hotspots(table, max_sd=1.0, min_pixel=20, alpha=0.05, drop_insignificant=True)
    assert out["isHotspot"].tolist() == [True, False, False]
