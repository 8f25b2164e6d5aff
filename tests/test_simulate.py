"""Simulated scenes: MintPy products, WabInSAR export and truth are consistent and realistic."""
import hashlib
import math

import h5py
import numpy as np
import pytest
import scipy.io

from hotspot.cli import simulate as cli
from hotspot.simulation.fields import FieldGenerator
from hotspot.simulation.matfile import MatWriter
from hotspot.simulation.presets import CATALOGUE, PRESETS, TRUTH_LEVEL, WAVELENGTH
from hotspot.simulation.scene import (BEHAVIOURS, Scene, behaviour_series, make_dates,
                                      simulate_scene)
from hotspot.simulation.truth import read_truth
from hotspot.utils.errors import HotspotError
from hotspot.utils.geo import haversine_km

MINTPY_FILES = ["timeseries.h5", "velocity.h5", "temporalCoherence.h5", "maskTempCoh.h5",
                "inputs/geometryGeo.h5"]
GRID_KEYS = ["LENGTH", "WIDTH", "X_FIRST", "Y_FIRST", "X_STEP", "Y_STEP", "X_UNIT", "Y_UNIT",
             "REF_Y", "REF_X", "REF_LAT", "REF_LON", "REF_DATE", "FILE_TYPE", "UNIT", "WAVELENGTH"]


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("small_easy")
    simulate_scene(out, preset="small", difficulty="easy", seed=0, print_msg=False)
    return out


@pytest.fixture(scope="module")
def hard_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("small_hard")
    simulate_scene(out, preset="small", difficulty="hard", seed=0, print_msg=False)
    return out


def _read(path, name=None):
    from mintpy.utils import readfile
    return readfile.read(str(path), datasetName=name)


def test_mintpy_products_read_with_readfile(scene_dir):
    from mintpy.utils import readfile
    from mintpy.utils import utils as ut
    ts, atr = _read(scene_dir / "timeseries.h5")
    length, width = PRESETS["small"].length, PRESETS["small"].width
    assert ts.shape == (60, length, width) and ts.dtype == np.float32
    for key in GRID_KEYS:
        assert key in atr, key
    assert atr["FILE_TYPE"] == "timeseries" and atr["UNIT"] == "m"
    assert atr["X_UNIT"] == atr["Y_UNIT"] == "degrees"
    assert len(readfile.get_slice_list(str(scene_dir / "timeseries.h5"))) == 60
    for name in MINTPY_FILES:
        assert readfile.read_attribute(str(scene_dir / name))["LENGTH"] == str(length)
    vel_atr = readfile.read_attribute(str(scene_dir / "velocity.h5"))
    assert vel_atr["FILE_TYPE"] == "velocity" and vel_atr["UNIT"] == "m/year"
    for name in ("velocity", "velocityStd"):
        assert _read(scene_dir / "velocity.h5", name)[0].shape == (length, width)
    for name in ("height", "incidenceAngle", "azimuthAngle"):
        data = _read(scene_dir / "inputs/geometryGeo.h5", name)[0]
        assert data.shape == (length, width) and np.isfinite(data).all()
    inc = _read(scene_dir / "inputs/geometryGeo.h5", "incidenceAngle")[0]
    assert 29 < inc.min() < inc.max() < 46
    mask = _read(scene_dir / "maskTempCoh.h5")[0]
    assert mask.dtype == bool and 0.75 < mask.mean() < 0.95
    # REF_LAT / REF_LON are the centre of REF_Y / REF_X as MintPy computes it
    lats, lons = ut.get_lat_lon(atr)
    ry, rx = int(atr["REF_Y"]), int(atr["REF_X"])
    assert float(atr["REF_LAT"]) == pytest.approx(lats[ry, rx], abs=1e-9)
    assert float(atr["REF_LON"]) == pytest.approx(lons[ry, rx], abs=1e-9)
    assert mask[ry, rx]
    assert 33.5 < lats.mean() < 34.5 and -119 < lons.mean() < -117.5


def test_grid_spans_tens_of_km_and_hotspots_are_1_to_4_km(scene_dir):
    from mintpy.utils import utils as ut
    atr = _read(scene_dir / "timeseries.h5")[1]
    lats, lons = ut.get_lat_lon(atr)
    ns = haversine_km(lons[0, 0], lats[0, 0], lons[-1, 0], lats[-1, 0])
    ew = haversine_km(lons[0, 0], lats[0, 0], lons[0, -1], lats[0, -1])
    assert 25 < ns < 35 and 35 < ew < 45
    truth = read_truth(scene_dir / "hotspotTruth.h5")
    assert np.all((truth["radiusKm"] >= 0.5) & (truth["radiusKm"] <= 2.0))


def test_referenced_to_first_date_and_reference_pixel(scene_dir):
    ts, atr = _read(scene_dir / "timeseries.h5")
    ry, rx = int(atr["REF_Y"]), int(atr["REF_X"])
    assert np.all(ts[:, ry, rx] == 0)
    assert np.all(ts[0] == 0)
    assert atr["REF_DATE"] == atr["START_DATE"]
    # masked pixels keep (noisier) values, like MintPy
    mask = _read(scene_dir / "maskTempCoh.h5")[0]
    assert np.isfinite(ts).all()
    coh = _read(scene_dir / "temporalCoherence.h5")[0]
    assert coh[~mask].max() < 0.7 <= coh[mask].min()
    noise = np.diff(ts, axis=0).std(axis=0)
    assert np.median(noise[~mask]) > 1.3 * np.median(noise[mask])


def test_velocity_is_linear_fit_of_timeseries(scene_dir):
    from mintpy.utils import ptime
    ts, atr = _read(scene_dir / "timeseries.h5")
    vel = _read(scene_dir / "velocity.h5", "velocity")[0]
    vstd = _read(scene_dir / "velocity.h5", "velocityStd")[0]
    dates = [d.decode() for d in h5py.File(scene_dir / "timeseries.h5")["date"][:]]
    years = np.array(ptime.date_list2vector(dates)[1])
    rows, cols = np.array([3, 20, 40, 55]), np.array([5, 33, 60, 70])
    y = ts[:, rows, cols].astype(np.float64)
    design = np.column_stack([np.ones_like(years), years - years[0]])
    coef, resid, *_ = np.linalg.lstsq(design, y, rcond=None)
    np.testing.assert_allclose(vel[rows, cols], coef[1], rtol=1e-4, atol=1e-6)
    stt = ((years - years.mean()) ** 2).sum()
    np.testing.assert_allclose(vstd[rows, cols], np.sqrt(resid / (len(years) - 2) / stt),
                               rtol=1e-3, atol=1e-6)


def test_truth_file_agrees_with_mask_and_rule(scene_dir):
    mask = _read(scene_dir / "maskTempCoh.h5")[0]
    truth = read_truth(scene_dir / "hotspotTruth.h5")
    raster = truth["hotspot"]
    assert raster.dtype == np.int32 and raster.shape == mask.shape
    assert np.array_equal(raster == -1, ~mask)
    assert truth["pixelTruth"].size == mask.sum()
    assert np.array_equal(truth["pixelTruth"], raster[mask])
    ids = truth["hotspotId"]
    assert 4 <= ids.size <= 6 and list(ids) == list(range(1, ids.size + 1))
    for k, n in zip(ids, truth["numPixel"]):
        assert n == (truth["pixelTruth"] == k).sum() >= 8
    # rule: bowl >= 30 % of the peak (the Scene object recomputes the layout)
    scene = Scene("small", "easy", 0)
    inside = (scene.bowl >= TRUTH_LEVEL) & mask
    assert np.array_equal(raster > 0, inside)
    atr = truth["attrs"]
    assert atr["FILE_TYPE"] == "mask" and int(atr["LENGTH"]) == mask.shape[0]
    assert atr["simulate.preset"] == "small" and "0.3" in atr["simulate.truthRule"]
    with h5py.File(scene_dir / "hotspotTruth.h5") as f:
        assert f["hotspotTimeseries"].shape == (ids.size, 60)
        assert np.all(f["hotspotTimeseries"][:, 0] == 0)


def test_twins_same_behaviour_far_apart():
    for preset in ("small", "medium"):
        scene = Scene(preset, "easy", 1)
        groups = {}
        for h in scene.hotspots:
            if h.twin:
                groups.setdefault(h.twin, []).append(h)
        assert len(groups) >= 2
        ext_y, ext_x = scene.grid.extent_km
        for members in groups.values():
            assert len(members) == 2
            a, b = members
            assert a.behaviour == b.behaviour and a.amplitude == b.amplitude
            lat, lon = scene.grid.lat_lon([a.row, b.row], [a.col, b.col])
            assert haversine_km(lon[0], lat[0], lon[1], lat[1]) >= 0.39 * math.hypot(ext_x, ext_y)
    assert len(Scene("medium", "easy", 0).hotspots) >= 8


def test_hotspot_signal_follows_behaviour(scene_dir):
    ts = _read(scene_dir / "timeseries.h5")[0]
    truth = read_truth(scene_dir / "hotspotTruth.h5")
    with h5py.File(scene_dir / "hotspotTruth.h5") as f:
        expected = f["hotspotTimeseries"][:]
    raster = truth["hotspot"]
    background = ts[:, raster == 0].mean(axis=1)
    for k in truth["hotspotId"]:
        mean = ts[:, raster == k].mean(axis=1) - background
        # the mean bowl value inside the 30 % contour is ~0.6 of the peak
        corr = np.corrcoef(mean, expected[k - 1])[0, 1]
        assert corr > 0.8, (k, corr)


def test_same_seed_identical_files(tmp_path, scene_dir):
    simulate_scene(tmp_path, preset="small", difficulty="easy", seed=0, print_msg=False)
    files = sorted(p.relative_to(scene_dir) for p in scene_dir.rglob("*") if p.is_file())
    assert len(files) == 13
    for rel in files:
        digest = [hashlib.md5((d / rel).read_bytes()).hexdigest() for d in (scene_dir, tmp_path)]
        assert digest[0] == digest[1], rel
    assert not list(tmp_path.rglob("*.tmp*"))


def test_other_seed_differs(tmp_path, scene_dir):
    simulate_scene(tmp_path, preset="small", difficulty="easy", seed=1, num_date=12,
                   wabinsar=False, print_msg=False)
    a = read_truth(scene_dir / "hotspotTruth.h5")["hotspot"]
    b = read_truth(tmp_path / "hotspotTruth.h5")["hotspot"]
    assert not np.array_equal(a, b)
    assert not (tmp_path / "wabinsar").exists()


def test_hard_differs_from_easy_with_same_layout(scene_dir, hard_dir):
    easy = read_truth(scene_dir / "hotspotTruth.h5")
    hard = read_truth(hard_dir / "hotspotTruth.h5")
    assert np.array_equal(easy["hotspot"], hard["hotspot"])
    assert np.all(np.abs(hard["amplitude"]) < np.abs(easy["amplitude"]))
    assert np.abs(hard["amplitude"]).min() <= 0.006          # the weak seasonal one
    assert 0.01 <= np.sort(np.abs(hard["amplitude"]))[2] <= 0.02
    assert np.abs(easy["amplitude"]).min() >= 0.015
    # noise: background spread per epoch is larger in hard
    spread = []
    for d in (scene_dir, hard_dir):
        ts = _read(d / "timeseries.h5")[0]
        spread.append(np.median(ts[:, easy["hotspot"] == 0].std(axis=1)[1:]))
    assert spread[1] > 1.5 * spread[0]
    assert 0.002 < spread[0] < 0.008 and 0.005 < spread[1] < 0.02


def test_wabinsar_v73_matches_timeseries(scene_dir):
    from mintpy.utils import utils as ut
    ts, atr = _read(scene_dir / "timeseries.h5")
    mask = _read(scene_dir / "maskTempCoh.h5")[0]
    wab = scene_dir / "wabinsar"
    assert scipy.io.matlab.matfile_version(str(wab / "R_TS_den.mat")) == (2, 0)   # v7.3
    with h5py.File(wab / "R_TS_den.mat") as f:
        data = f["R_TS_den"]
        assert data.shape == (60, mask.sum())            # MATLAB N x T seen transposed
        assert data.attrs["MATLAB_class"] == b"single"
        np.testing.assert_allclose(data[:], ts[:, mask] * 1000, rtol=1e-6, atol=1e-4)
    with h5py.File(wab / "elpx_ll.mat") as f:
        elpx = f["elpx_ll"][:].T
    lats, lons = ut.get_lat_lon(atr)
    assert elpx.shape == (mask.sum(), 3)
    np.testing.assert_allclose(elpx[:, 0], lons[mask], atol=1e-9)
    np.testing.assert_allclose(elpx[:, 1], lats[mask], atol=1e-9)
    vel = _read(scene_dir / "velocity.h5", "velocity")[0]
    with h5py.File(wab / "MVel.mat") as f:
        assert f["MVel"].shape == (1, mask.sum())
        np.testing.assert_allclose(f["MVel"][0], vel[mask] * 1000, rtol=1e-5, atol=1e-4)
    for name in ("MVelq", "Pco_m", "incidenceAngle"):
        with h5py.File(wab / f"{name}.mat") as f:
            assert f[name].shape == (1, mask.sum())
    dates = (wab / "dates.txt").read_text().split()
    assert dates == [d.decode() for d in h5py.File(scene_dir / "timeseries.h5")["date"][:]]


def test_wabinsar_v5(tmp_path):
    paths = simulate_scene(tmp_path, preset="small", seed=0, num_date=10, mat_format="v5",
                           print_msg=False)
    ts = _read(paths["timeseries"])[0]
    mask = _read(paths["mask"])[0]
    mat = scipy.io.loadmat(paths["wabinsar_timeseries"])["R_TS_den"]
    assert mat.shape == (mask.sum(), 10)
    np.testing.assert_allclose(mat, ts[:, mask].T * 1000, rtol=1e-6, atol=1e-4)
    assert scipy.io.loadmat(paths["wabinsar_MVel"])["MVel"].shape == (mask.sum(), 1)
    assert scipy.io.loadmat(paths["wabinsar_elpx_ll"])["elpx_ll"].shape == (mask.sum(), 3)


def test_v5_size_limit_and_bad_input(tmp_path):
    with pytest.raises(HotspotError, match="2 GB"):
        MatWriter.check_v5_size(3_040_000, 247)
    MatWriter.check_v5_size(90_000, 120)
    with pytest.raises(HotspotError, match="preset"):
        simulate_scene(tmp_path, preset="huge")
    with pytest.raises(HotspotError, match="difficulty"):
        simulate_scene(tmp_path, difficulty="extreme")
    with pytest.raises(HotspotError, match="num_date"):
        simulate_scene(tmp_path, num_date=2)
    with pytest.raises(HotspotError, match="mat_format"):
        simulate_scene(tmp_path, mat_format="v7")
    assert not list(tmp_path.iterdir())


def test_nuisances_present():
    scene = Scene("small", "hard", 0)
    # unwrapping jumps: multiples of lambda / 2, away from hotspots and the reference pixel
    assert len(scene.unwrap) >= 3
    for flat, start, stop, jump in scene.unwrap:
        assert flat.size >= 1 and 1 <= start < stop <= scene.num_date
        assert abs(jump) / (WAVELENGTH / 2) == pytest.approx(round(abs(jump) / (WAVELENGTH / 2)))
        assert not (scene.bowl.flat[flat] > 0).any()
    assert scene.unwrap_mask[scene.ref_yx] == 0
    assert scene.season_amp.mean() == pytest.approx(0.003, rel=0.2)
    assert scene.ramp_sigma > 0 and np.hypot(*scene.ramp_trend) > 0


def test_atmosphere_correlation_length_about_5km():
    gen = FieldGenerator((200, 200), 0.25, 0.25, 5.0)
    rng = np.random.default_rng(0)
    corr = []
    lag = 20                                              # 5 km
    for _ in range(10):
        f = gen.draw(rng).astype(np.float64)
        assert f.std() == pytest.approx(1, rel=1e-3)
        corr.append((np.mean(f[:, lag:] * f[:, :-lag]) + np.mean(f[lag:] * f[:-lag])) / 2)
    assert 0.2 < np.mean(corr) < 0.5                      # exp(-1) = 0.37


def test_behaviours_and_dates():
    dates = make_dates(247, "20150107", True, np.random.default_rng(0))
    from mintpy.utils import ptime
    days = np.diff([ptime.date_list2vector([d])[0][0].toordinal() for d in dates])
    assert len(dates) == 247 and set(days) <= {6, 12, 18, 24, 36}
    assert (days == 6).sum() > 20 and (days == 12).sum() > 100
    years = np.array(ptime.date_list2vector(dates)[1])
    for name in ("subsidence", "uplift", "creep", "postseismic", "step", "subsidence_seasonal"):
        g = behaviour_series(name, years)
        assert g[0] == pytest.approx(0, abs=0.3) and g[-1] == pytest.approx(1, abs=0.3), name
    step = behaviour_series("step", years)
    assert set(np.unique(step)) == {0.0, 1.0}
    creep = behaviour_series("creep", years)
    rate = np.diff(creep) / np.diff(years)
    assert np.all(np.diff(rate) >= -1e-9)                # accelerating
    seasonal = behaviour_series("seasonal", years)
    assert seasonal.max() == pytest.approx(1, abs=0.05) and seasonal.min() < -0.95
    assert {c[0] for c in CATALOGUE} == set(BEHAVIOURS)
    with pytest.raises(ValueError):
        behaviour_series("wobble", years)
    transient = behaviour_series("transient", years)
    assert transient[0] < 0.01 and transient[-1] < 0.01 and transient.max() > 0.99


def test_la_preset_size():
    p = PRESETS["la"]
    assert p.num_date == 247 and p.six_day
    assert p.length * p.width * p.valid_fraction == pytest.approx(3.04e6, rel=0.01)


def test_cli(tmp_path, capsys):
    cli.main([str(tmp_path / "sim"), "--num-date", "8", "--no-wabinsar", "--seed", "3",
              "--difficulty", "hard"])
    out = capsys.readouterr().out
    assert "timeseries.h5" in out and "subsidence" in out and "twin" in out
    assert (tmp_path / "sim" / "hotspotTruth.h5").is_file()
    with pytest.raises(SystemExit) as exc:
        cli.main([str(tmp_path / "bad"), "--num-date", "1"])
    assert exc.value.code == 1
    assert "num_date" in capsys.readouterr().err
