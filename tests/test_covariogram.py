"""covariogram step: estimator, model fit, correlation length, file, errors."""
import math

import h5py
import numpy as np
import pytest

from hotspot.steps import covariogram as cg
from hotspot.utils.errors import HotspotError
from hotspot.utils.stack import write_stack

DX_KM = 0.5
LAT0, LON0 = 34.0, -118.0
KM_PER_DEG = 111.195


def exponential_field(ny, nx, dx, length, num_epoch, rng):
    """Gaussian random fields, covariance exp(-h/length), one per epoch (circulant embedding)."""
    my, mx = 2 * ny, 2 * nx
    ry = np.minimum(np.arange(my), my - np.arange(my)) * dx
    rx = np.minimum(np.arange(mx), mx - np.arange(mx)) * dx
    eig = np.fft.fft2(np.exp(-np.hypot(ry[:, None], rx[None, :]) / length)).real.clip(0)
    fields = []
    while len(fields) < num_epoch:
        w = rng.standard_normal((my, mx)) + 1j * rng.standard_normal((my, mx))
        f = np.fft.ifft2(np.sqrt(eig) * w) * np.sqrt(my * mx)
        fields += [f.real[:ny, :nx], f.imag[:ny, :nx]]
    return np.stack(fields[:num_epoch], axis=-1).reshape(ny * nx, num_epoch)


def grid_lonlat(ny, nx, dx=DX_KM):
    row, col = np.mgrid[:ny, :nx]
    y_step = -dx / KM_PER_DEG
    x_step = dx / (KM_PER_DEG * math.cos(math.radians(LAT0)))
    lat = LAT0 + row.ravel() * y_step
    lon = LON0 + col.ravel() * x_step
    attrs = {"GRID": "yes", "LENGTH": ny, "WIDTH": nx, "X_FIRST": LON0, "Y_FIRST": LAT0,
             "X_STEP": x_step, "Y_STEP": y_step, "X_UNIT": "degrees", "Y_UNIT": "degrees"}
    return lon, lat, row.ravel(), col.ravel(), attrs


def make_stack(path, ny=100, nx=100, length=5.0, num_epoch=60, seed=0):
    rng = np.random.default_rng(seed)
    disp = 0.01 * exponential_field(ny, nx, DX_KM, length, num_epoch, rng)
    # per-pixel offsets: the temporal mean removal must drop them
    disp += rng.normal(0, 0.05, (ny * nx, 1))
    lon, lat, row, col, attrs = grid_lonlat(ny, nx)
    dates = [f"{2016 + k // 12}{k % 12 + 1:02d}15" for k in range(num_epoch)]
    return write_stack(path, disp, dates, lat, lon, attrs=attrs, row=row, col=col)


CTX_DEFAULTS = {"hotspot.covariogram.numPair": 200_000, "hotspot.covariogram.binSize": 0.5,
              "hotspot.covariogram.maxDistance": 20}


@pytest.fixture(scope="module")
def field_dir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cov")
    make_stack(workdir / "hotspotStack.h5")
    return workdir


def test_recovers_exponential_correlation_length(field_dir, make_ctx):
    ctx = make_ctx(field_dir)
    cg.run(ctx)
    length = cg.read_correlation_length(field_dir)
    assert length == pytest.approx(5.0, rel=0.2)
    with h5py.File(field_dir / "covariogram.h5", "r") as f:
        attrs = dict(f.attrs)
        dist, cov, count = f["distance"][:], f["covariance"][:], f["pairCount"][:]
        model = f["modelCovariance"][:]
    assert attrs["MODEL"] == "exponential"
    assert attrs["NUM_PAIR"] == 200_000 and count.sum() == 200_000
    assert 0 < attrs["CORRELATION_LENGTH_STD_KM"] < 1.0
    assert attrs["CORRELATION_LENGTH_STD_KM"] >= attrs["CORRELATION_LENGTH_FORMAL_STD_KM"]
    assert "mean" in attrs["ESTIMATOR"]
    assert attrs["hotspot.covariogram.numPair"] == "200000"          # step keys for update mode
    assert dist.shape == cov.shape == model.shape == (40,)
    # field variance 1e-4 m^2 (x (1 - 1/T) from the temporal mean removal), decaying with h
    assert cov[1] == pytest.approx(1e-4 * math.exp(-0.75 / 5), rel=0.25)
    assert cov[1] > cov[10] > cov[30]
    assert np.nanmax(np.abs(model - cov)[count > 100]) < 2e-5
    # stratified sampling: every bin beyond the pixel spacing gets pairs
    assert (count[1:] > 1000).all()


def test_deramp_removes_a_ramp_per_epoch_and_recovers_the_length(tmp_path, make_ctx):
    """A random plane per epoch (an orbit ramp, 3x the field's std across the scene) on top of
    a 5 km exponential field: deramp = yes finds the field's length, deramp = no (auto) the
    ramp's tens of km (what the family scenes of issue 12 showed)."""
    ny = nx = 100
    rng = np.random.default_rng(3)
    disp = 0.01 * exponential_field(ny, nx, DX_KM, 5.0, 60, rng)
    lon, lat, row, col, attrs = grid_lonlat(ny, nx)
    x, y = (col.ravel() - nx / 2) * DX_KM, (row.ravel() - ny / 2) * DX_KM
    slope = rng.normal(0, 0.03 / 50, (2, 60))        # m/km: +-3 cm over the 50 km scene
    disp += x[:, None] * slope[0] + y[:, None] * slope[1]
    dates = [f"{2016 + k // 12}{k % 12 + 1:02d}15" for k in range(60)]
    lengths = {}
    for deramp in ("yes", "auto"):
        work = tmp_path / deramp
        work.mkdir()
        write_stack(work / "hotspotStack.h5", disp, dates, lat, lon, attrs=attrs, row=row,
                    col=col)
        cg.run(make_ctx(work, **{"hotspot.covariogram.deramp": deramp}))
        lengths[deramp] = cg.read_correlation_length(work)
        with h5py.File(work / "covariogram.h5", "r") as f:
            assert f.attrs["DERAMP"] == ("plane per epoch" if deramp == "yes" else "no")
    assert lengths["yes"] == pytest.approx(5.0, rel=0.25)
    assert lengths["auto"] > 2 * lengths["yes"]


def test_deramp_plane_is_exact_on_a_plane():
    rng = np.random.default_rng(0)
    lon, lat = rng.uniform(-118, -117.9, 500), rng.uniform(34, 34.1, 500)
    plane = (0.1 + 2 * (lon[:, None] + 118) - 3 * (lat[:, None] - 34)) * rng.normal(size=(1, 7))
    left = cg.deramp_plane(lon, lat, plane.astype(np.float32))
    assert left.dtype == np.float32 and left.shape == (500, 7)
    assert np.abs(left).max() < 1e-6 * np.abs(plane).max()


def test_deramp_plane_stays_within_one_float32_copy():
    """The sample is sized to half of maxMemory: removing the planes may add a float32 copy
    and a chunk, not float64 copies of the whole sample (~3x, before)."""
    import tracemalloc
    rng = np.random.default_rng(1)
    n, t = 200_000, 40
    lon, lat = rng.uniform(-118, -117.5, n), rng.uniform(34, 34.5, n)
    anomaly = rng.normal(size=(n, t)).astype(np.float32)
    expected = cg.deramp_plane(lon[:5000], lat[:5000], anomaly[:5000], chunk=5000)
    tracemalloc.start()
    left = cg.deramp_plane(lon, lat, anomaly)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1.5 * anomaly.nbytes
    # chunking changes nothing but the order of the float64 sums
    np.testing.assert_allclose(cg.deramp_plane(lon[:5000], lat[:5000], anomaly[:5000],
                                               chunk=700), expected, atol=1e-6)
    assert left.shape == anomaly.shape and left.dtype == np.float32


def test_same_seed_same_result_other_seed_differs(field_dir, tmp_path):
    stack = field_dir / "hotspotStack.h5"
    lon, lat, anom = cg.read_sample(stack, 3000, seed=1, max_memory=1, log=lambda m: None)
    res1 = cg.covariogram(lon, lat, anom, 50_000, 0.5, 20, seed=1, log=lambda m: None)
    lon2, lat2, anom2 = cg.read_sample(stack, 3000, seed=1, max_memory=1, log=lambda m: None)
    res2 = cg.covariogram(lon2, lat2, anom2, 50_000, 0.5, 20, seed=1, log=lambda m: None)
    assert np.array_equal(res1["count"], res2["count"])
    assert np.array_equal(res1["covariance"], res2["covariance"], equal_nan=True)
    assert res1["length"] == res2["length"]
    lon3, lat3, anom3 = cg.read_sample(stack, 3000, seed=2, max_memory=1, log=lambda m: None)
    res3 = cg.covariogram(lon3, lat3, anom3, 50_000, 0.5, 20, seed=2, log=lambda m: None)
    assert not np.array_equal(res1["count"], res3["count"])


def test_sample_subset_removes_mean_and_skips_nan(tmp_path):
    lon, lat, row, col, attrs = grid_lonlat(20, 30)
    rng = np.random.default_rng(3)
    disp = rng.normal(0, 0.01, (600, 8)) + 5.0
    disp[7, 3] = np.nan
    stack = write_stack(tmp_path / "s.h5", disp, [f"2020010{k + 1}" for k in range(8)], lat, lon,
                        attrs=attrs, row=row, col=col)
    lon_s, lat_s, anom = cg.read_sample(stack, 10_000, seed=0, max_memory=0.001,
                                        log=lambda m: None)
    assert anom.shape == (599, 8) and anom.dtype == np.float32
    assert np.abs(anom.mean(axis=1)).max() < 1e-5
    keep = np.delete(np.arange(600), 7)
    np.testing.assert_allclose(anom, disp[keep] - disp[keep].mean(1, keepdims=True), atol=1e-5)
    np.testing.assert_array_equal(lon_s, lon[keep])


def test_pair_kernel_matches_numpy_cov():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 37)).astype(np.float32)
    a -= a.mean(axis=1, keepdims=True)
    i, j = rng.integers(0, 500, 3000), rng.integers(0, 500, 3000)
    fast = cg.pair_covariance(a, i, j)
    np.testing.assert_allclose(fast, cg.pair_covariance_numpy(a, i, j), rtol=1e-10, atol=1e-12)
    for k in range(5):
        ref = np.cov(a[i[k]].astype(np.float64), a[j[k]].astype(np.float64), bias=True)[0, 1]
        assert fast[k] == pytest.approx(ref, rel=1e-6, abs=1e-9)


def test_pairs_within_max_distance_and_stratified():
    lon, lat, *_ = grid_lonlat(80, 80)
    sampler = cg.PairSampler(lon, lat, 0.5, 10.0, np.random.default_rng(0))
    i, j, d = sampler.draw(200_000)
    assert (i != j).all() and (d < 10.0).all()
    true = cg.haversine_km(lon[i], lat[i], lon[j], lat[j])
    np.testing.assert_allclose(d, true)
    counts = np.bincount((d / 0.5).astype(int), minlength=20)[2:]
    assert counts.min() > 0.5 * counts.mean()      # near-uniform over distance, not ~h


@pytest.mark.parametrize("model", cg.MODELS)
def test_fit_models_and_length_definition(model):
    h = (np.arange(60) + 0.5) * 0.5
    params = (2e-4, 6.0, 1e-5)
    cov = cg.model_covariance(h, model, params)
    std = np.full(h.size, 1e-5)
    fit = cg.fit_model(h, cov, std, np.full(h.size, 1000), model)
    assert fit["status"] == "ok"
    assert fit["params"][1] == pytest.approx(6.0, rel=1e-3)
    # correlation length: model covariance at L is offset + sill / e
    at_l = cg.model_covariance(fit["length"], model, fit["params"])
    assert at_l == pytest.approx(1e-5 + 2e-4 / math.e, rel=1e-3)


def test_flat_covariance_reports_failed_fit_and_read_raises(tmp_path):
    h = (np.arange(40) + 0.5) * 0.5
    cov = np.full(h.size, 3e-5)
    fit = cg.fit_model(h, cov + 1e-9 * np.sin(h), np.full(h.size, 1e-6), np.full(h.size, 100),
                       "exponential")
    assert fit["status"] != "ok"
    result = dict(fit, distance=h, covariance=cov, covariance_std=cov, count=np.ones(40),
                  model_covariance=cov, num_pair=40, bin_size=0.5, max_distance=20,
                  length_formal_std=np.nan, length_std_method="formal")
    cg.write_covariogram(tmp_path / "covariogram.h5", result, {}, 10, 10)
    with pytest.raises(HotspotError, match="hotspot.dbscan.eps"):
        cg.read_correlation_length(tmp_path)


def test_read_correlation_length_missing_file(tmp_path):
    with pytest.raises(HotspotError, match="covariogram step"):
        cg.read_correlation_length(tmp_path)


@pytest.mark.parametrize("key, value", [
    ("hotspot.covariogram.binSize", "0"),
    ("hotspot.covariogram.binSize", "abc"),
    ("hotspot.covariogram.maxDistance", "0.2"),
    ("hotspot.covariogram.numPair", "-5"),
    ("hotspot.covariogram.numPair", "1.5"),
    ("hotspot.covariogram.model", "cubic"),
])
def test_bad_keys_name_the_key(tmp_path, key, value, make_ctx):
    ctx = make_ctx(tmp_path, **{key: value})
    with pytest.raises(HotspotError, match=key.replace(".", r"\.")):
        cg.run(ctx)


def test_missing_stack_says_run_load_data(tmp_path, make_ctx):
    with pytest.raises(HotspotError, match="load_data"):
        cg.run(make_ctx(tmp_path))


def test_inputs_outputs(tmp_path, make_ctx):
    ctx = make_ctx(tmp_path)
    assert cg.inputs(ctx) == [tmp_path / "hotspotStack.h5"]
    assert cg.outputs(ctx) == [tmp_path / "covariogram.h5"]


def test_sparse_lookup_fallback_draws_the_same_pairs(monkeypatch):
    lon, lat, *_ = grid_lonlat(40, 50)
    dense = cg.PairSampler(lon, lat, 0.5, 8.0, np.random.default_rng(4)).draw(50_000)
    monkeypatch.setattr(cg, "DENSE_CELL_LIMIT", 0)
    sampler = cg.PairSampler(lon, lat, 0.5, 8.0, np.random.default_rng(4))
    assert sampler.table is None
    sparse = sampler.draw(50_000)
    for a, b in zip(dense, sparse):
        np.testing.assert_array_equal(a, b)


def test_update_mode_skips_a_finished_run(field_dir, make_ctx):
    from hotspot.hotspotApp import is_up_to_date
    ctx = make_ctx(field_dir)
    if not (field_dir / "covariogram.h5").is_file():
        cg.run(ctx)
    assert is_up_to_date("covariogram", cg, ctx)
    assert not is_up_to_date("covariogram", cg, make_ctx(field_dir, **{
        "hotspot.covariogram.model": "gaussian"}))


# ---------------------------------------------------------------- auto range and fallback
def auto_context(make_ctx, workdir, num_pair=300_000, deramp="auto"):
    """Bins and range left to auto; numPair set so that the tests stay fast."""
    return make_ctx(workdir, **{"hotspot.covariogram.numPair": num_pair,
                                "hotspot.covariogram.binSize": "auto",
                                "hotspot.covariogram.maxDistance": "auto",
                                "hotspot.covariogram.deramp": deramp})


def point_stack(path, lon, lat, disp):
    dates = [f"{2016 + k // 12}{k % 12 + 1:02d}15" for k in range(disp.shape[1])]
    return write_stack(path, disp, dates, lat, lon, attrs={"GRID": "no"})


def small_scene(workdir, field, dx, seed=0):
    """A square grid scene of ny x nx pixels at dx km from `field` (N, T in m), as a stack."""
    n = int(round(math.sqrt(field.shape[0])))
    lon, lat, *_ = grid_lonlat(n, n, dx)
    rng = np.random.default_rng(seed)
    disp = field + rng.normal(0, 0.05, (field.shape[0], 1))     # per-pixel offsets
    point_stack(workdir / "hotspotStack.h5", lon, lat, disp)


@pytest.mark.parametrize("width, height, spacing, bin_size, max_distance", [
    (60.0, 55.0, 0.055, 0.5, 30.0),         # LA: today's 0.5 km bins over 30 km
    (44.1, 44.9, 0.15, 0.5, 30.0),          # medium simulated scene: unchanged
    (3.0, 3.0, 0.02, 3 * math.sqrt(2) / 2 / 60, 3 * math.sqrt(2) / 2),
    (3.0, 3.0, 0.2, 0.2, 3 * math.sqrt(2) / 2),   # coarse pixels: one spacing per bin
])
def test_auto_range_rule(width, height, spacing, bin_size, max_distance):
    geometry = {"width_km": width, "height_km": height, "diagonal_km": math.hypot(width, height),
                "side_km": max(width, height), "spacing_km": spacing}
    got_bin, got_max, how = cg.auto_range(geometry)
    assert got_max == pytest.approx(max_distance)
    assert got_bin == pytest.approx(bin_size)
    assert got_max / got_bin >= 10 and got_bin >= spacing
    assert how["binSize"].startswith("auto") and how["maxDistance"].startswith("auto")
    # a value given in the template is kept as given
    assert cg.auto_range(geometry, bin_size=0.1)[0] == 0.1
    assert cg.auto_range(geometry, max_distance=2.0)[1] == 2.0


def test_auto_range_template_bin_larger_than_auto_range_names_the_key():
    geometry = {"width_km": 3.0, "height_km": 3.0, "diagonal_km": 4.24, "side_km": 3.0,
                "spacing_km": 0.05}
    with pytest.raises(HotspotError, match=r"maxDistance = 2\.12 \(auto\).*binSize = 5"):
        cg.auto_range(geometry, bin_size=5.0)


def test_scene_geometry_and_num_pair():
    lon, lat, *_ = grid_lonlat(30, 40, 0.1)
    geometry = cg.scene_geometry(lon, lat)
    assert geometry["width_km"] == pytest.approx(3.9, rel=1e-3)
    assert geometry["height_km"] == pytest.approx(2.9, rel=1e-3)
    assert geometry["spacing_km"] == pytest.approx(0.1, rel=1e-3)
    assert cg.auto_num_pair(1000) == 499_500 and cg.auto_num_pair(10 ** 6) == 10 ** 7


def test_exponential_field_04km_on_3km_scene_is_resolved(tmp_path, capsys, make_ctx):
    # 60 x 60 pixels at 50 m: a 3 km scene; the old auto bins (0.5 km) put the whole decay
    # of a 0.4 km correlation length in the first bin
    rng = np.random.default_rng(5)
    small_scene(tmp_path, 0.01 * exponential_field(60, 60, 0.05, 0.4, 40, rng), 0.05)
    # the bins are under test: a plane removed from a scene only 7 lengths wide takes part of
    # the field's own variance with it (0.29 km with deramp), see the deramp test
    cg.run(auto_context(make_ctx, tmp_path, deramp="no"))
    with h5py.File(tmp_path / "covariogram.h5", "r") as f:
        attrs = dict(f.attrs)
        count = f["pairCount"][:]
    assert attrs["MAX_DISTANCE_KM"] == pytest.approx(0.5 * math.hypot(2.95, 2.95), rel=0.01)
    assert attrs["BIN_SIZE_KM"] == pytest.approx(0.05, rel=1e-3)      # one pixel spacing
    assert attrs["BIN_SIZE_SOURCE"].startswith("auto") and "MAX_DISTANCE_SOURCE" in attrs
    assert attrs["PIXEL_SPACING_KM"] == pytest.approx(0.05, rel=1e-3)
    assert (count[2:] > 0).all()
    assert attrs["CORRELATION_LENGTH_SOURCE"] == "fit"
    assert attrs["CORRELATION_LENGTH_KM"] == pytest.approx(0.4, rel=0.25)
    assert cg.read_correlation_length(tmp_path) == attrs["CORRELATION_LENGTH_KM"]
    assert "WARNING" not in capsys.readouterr().out


def test_flat_field_falls_back_with_source_and_warning(tmp_path, capsys, make_ctx):
    # white noise: no spatial correlation at any distance the bins can see
    rng = np.random.default_rng(6)
    small_scene(tmp_path, rng.normal(0, 0.01, (50 * 50, 30)), 0.06)
    cg.run(auto_context(make_ctx, tmp_path, num_pair=100_000))
    attrs = dict(h5py.File(tmp_path / "covariogram.h5", "r").attrs)
    assert attrs["FIT_STATUS"] != "ok"
    assert attrs["CORRELATION_LENGTH_SOURCE"].startswith("fallback: ")
    assert attrs["FIT_STATUS"] in attrs["CORRELATION_LENGTH_SOURCE"]
    expected = max(0.1 * 49 * 0.06, 4 * 0.06)
    assert attrs["CORRELATION_LENGTH_KM"] == pytest.approx(expected, rel=1e-3)
    assert not np.isfinite(attrs["CORRELATION_LENGTH_FIT_KM"])
    assert "max(0.1 x the longer side" in attrs["CORRELATION_LENGTH_FALLBACK_RULE"]
    out = capsys.readouterr().out
    assert "WARNING: the covariogram resolves no correlation length" in out
    # the consumers of the auto correlation length accept it
    from hotspot.steps.dispersion import correlation_length
    assert cg.read_correlation_length(tmp_path) == pytest.approx(expected, rel=1e-3)
    assert correlation_length(tmp_path) == pytest.approx(expected, rel=1e-3)
    assert cg.correlation_length_source(tmp_path).startswith("fallback")


def test_scene_smaller_than_its_correlation_length_falls_back(tmp_path, capsys, make_ctx):
    rng = np.random.default_rng(7)
    small_scene(tmp_path, 0.01 * exponential_field(50, 50, 0.06, 30.0, 30, rng), 0.06)
    # without deramp: across 3 km a 30 km field is nearly a plane, which deramp removes
    cg.run(auto_context(make_ctx, tmp_path, num_pair=100_000, deramp="no"))
    attrs = dict(h5py.File(tmp_path / "covariogram.h5", "r").attrs)
    assert attrs["CORRELATION_LENGTH_SOURCE"].startswith("fallback: ")
    assert attrs["CORRELATION_LENGTH_KM"] == pytest.approx(0.1 * 49 * 0.06, rel=1e-3)
    assert "WARNING" in capsys.readouterr().out


def test_decay_within_the_first_bin_is_a_nugget(tmp_path, make_ctx):
    # 'buildings' 75 m apart, 4 scatterers each within 4 m sharing a strong series of their own
    # (a decay far below one bin), on top of a 0.5 km exponential field
    rng = np.random.default_rng(8)
    n, t = 40, 40
    field = 0.01 * exponential_field(n, n, 0.075, 0.5, t, rng)
    lon0, lat0, *_ = grid_lonlat(n, n, 0.075)
    own = 0.02 * rng.standard_normal((n * n, t))
    offsets = np.array([[0, 0], [0.004, 0], [0, 0.004], [0.003, 0.003]])
    k_lon = KM_PER_DEG * math.cos(math.radians(LAT0))
    lon = np.concatenate([lon0 + dx / k_lon for dx, _ in offsets])
    lat = np.concatenate([lat0 + dy / KM_PER_DEG for _, dy in offsets])
    disp = np.concatenate([field + own] * len(offsets)) + 0.002 * rng.standard_normal((4 * n * n, t))
    point_stack(tmp_path / "hotspotStack.h5", lon, lat, disp)
    # the nugget is under test; a plane removed from this 3 km scene shortens 0.5 to 0.34 km
    cg.run(auto_context(make_ctx, tmp_path, deramp="no"))
    attrs = dict(h5py.File(tmp_path / "covariogram.h5", "r").attrs)
    assert attrs["FIT_FIRST_BIN"] == 1 and "nugget" in attrs["FIT_NOTE"]
    assert attrs["CORRELATION_LENGTH_SOURCE"].startswith("fit (")
    assert attrs["CORRELATION_LENGTH_KM"] == pytest.approx(0.5, rel=0.3)
