"""The randomized scene family (issue 12): declared ranges, reproducibility, truth, load_data."""
import hashlib
import importlib.util
import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from hotspot.cli import hotspotApp as app
from hotspot.cli import simulate as cli
from hotspot.simulation import read_truth, score_files
from hotspot.simulation.presets import TRUTH_LEVEL
from hotspot.simulation.family import (BASE_SIGNALS, DENSITIES, ELIGIBLE_SNR, GEOMETRIES,
                                       HELD_OUT_SEED, RANGES, SAMPLINGS, SHAPES, SIGNALS, SIZES,
                                       FamilyScene, draw_parameters, make_family_dates,
                                       signal_series, simulate_family)
from hotspot.utils.errors import HotspotError

MINTPY_FILES = ["timeseries.h5", "velocity.h5", "temporalCoherence.h5", "maskTempCoh.h5"]


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("family_small")
    simulate_family(out, 4, size="small", geometry="geo", print_msg=False)
    return out


def _within(value, bounds):
    lo, hi = bounds
    return lo <= value <= hi


def test_parameters_within_declared_ranges():
    """Every drawn parameter of 50 medium scenes lies in RANGES / SIZES (no file written)."""
    size = SIZES["medium"]
    seen = {"shape": set(), "signal": set(), "density": set(), "sampling": set(),
            "geometry": set()}
    for seed in range(50):
        p = draw_parameters(seed)
        lay, smp, noise = p["layout"], p["sampling"], p["noise"]
        assert _within(lay["valid_pixel"], size.valid_pixel)
        assert _within(lay["dy_km"], RANGES["pixel_km"]) and _within(lay["dx_km"],
                                                                     RANGES["pixel_km"])
        assert _within(lay["grid_aspect"], RANGES["grid_aspect"])
        assert lay["geometry"] in GEOMETRIES and lay["density"] in DENSITIES
        assert _within(lay["valid_fraction"], RANGES["valid_fraction"][lay["density"]])
        assert _within(lay["hole_fraction"], RANGES["hole_fraction"])
        assert _within(lay["lat0"], RANGES["lat0"]) and _within(lay["lon0"], RANGES["lon0"])
        assert _within(smp["num_date"], size.num_date) and smp["sampling"] in SAMPLINGS
        assert _within(smp["num_gap"], RANGES["num_gap"])
        assert all(_within(g, RANGES["gap_days"]) for g in smp["gap_days"])
        for name, value in noise.items():
            key = "season_phase" if name == "season_bg_phase" else name
            assert _within(value, RANGES[key]), (seed, name, value)
        assert _within(len(p["hotspots"]), size.num_hotspot)
        for h in p["hotspots"]:
            assert h["shape"] in SHAPES and h["signal"] in SIGNALS
            assert _within(h["size_km"], RANGES["size_km"])
            assert _within(h["aspect"], RANGES["aspect"])
            assert _within(h["peak_mm"], RANGES["peak_mm"])
            assert h["sign"] in (-1, 1) and 0 <= h["azimuth_deg"] <= 180
            if h["shape"] == "plateau":
                assert _within(h["plateau_fraction"], RANGES["plateau_fraction"])
            assert len(h["components"]) == (2 if h["signal"] == "combination" else 1)
            for part in h["components"]:
                assert part["kind"] in BASE_SIGNALS
                for key, name in (("at", "step_at"), ("onset", "decay_onset"),
                                  ("tau_yr", "decay_tau_yr"), ("power", "accel_power"),
                                  ("center", "pulse_center"), ("width", "pulse_width"),
                                  ("phase", "season_phase")):
                    if key in part:
                        assert _within(part[key], RANGES[name]), (seed, part)
            seen["shape"].add(h["shape"])
            seen["signal"].add(h["signal"])
        for key in ("density", "geometry"):
            seen[key].add(lay[key])
        seen["sampling"].add(smp["sampling"])
    # 50 seeds reach every category
    assert seen == {"shape": set(SHAPES), "signal": set(SIGNALS), "density": set(DENSITIES),
                    "sampling": set(SAMPLINGS), "geometry": set(GEOMETRIES)}


def test_different_seeds_draw_different_parameters():
    drawn = [json.dumps(draw_parameters(seed), sort_keys=True) for seed in range(20)]
    assert len(set(drawn)) == 20
    assert draw_parameters(3) == draw_parameters(3)


def test_null_draws_same_nuisances_without_hotspots():
    p, n = draw_parameters(5), draw_parameters(5, null=True)
    assert n["hotspots"] == [] and p["hotspots"]
    assert (n["layout"], n["sampling"], n["noise"]) == (p["layout"], p["sampling"], p["noise"])


def test_bad_arguments():
    with pytest.raises(HotspotError, match="size"):
        draw_parameters(0, size="huge")
    with pytest.raises(HotspotError, match="seed"):
        draw_parameters(-1)
    with pytest.raises(HotspotError, match="geometry"):
        draw_parameters(0, geometry="utm")


def test_medium_scene_size_and_hotspots_placed():
    """Medium scenes: 60-150k measured pixels, 100-150 dates, most hotspots find room."""
    drawn = placed = 0
    for seed in range(3):
        scene = FamilyScene(seed)
        assert 0.8 * 60000 <= scene.mask.sum() <= 1.2 * 150000
        assert 100 <= scene.num_date <= 150
        drawn += len(scene.params["hotspots"])
        placed += len(scene.hotspots)
    assert placed >= 0.8 * drawn


def test_signal_peak_is_the_drawn_peak():
    years = 2018 + np.arange(120) * 12 / 365.25
    rng = np.random.default_rng(0)
    for kind in BASE_SIGNALS:
        hot = draw_parameters(0)["hotspots"][0]
        from hotspot.simulation.family import _signal_parameters
        hot["components"] = [{"kind": kind, "weight": 1.0, **_signal_parameters(rng, kind)}]
        s = signal_series(hot, years)
        assert s[0] == 0
        assert np.abs(s).max() == pytest.approx(hot["peak_mm"] * 1e-3)


def test_dates_sampling_and_gaps():
    rng = np.random.default_rng(1)
    from datetime import datetime
    for kind, allowed in (("regular6", {6, 12}), ("regular12", {12, 24}),
                          ("irregular", {6, 12, 24, 48})):
        dates = make_family_dates({"num_date": 100, "sampling": kind, "num_gap": 1,
                                   "gap_days": [120], "start_year": 2017}, rng)
        days = np.diff([datetime.strptime(d, "%Y%m%d").toordinal() for d in dates])
        assert len(dates) == 100 and (days > 0).all()
        assert 120 in days
        assert set(days[days != 120]) <= allowed, kind


def test_same_seed_identical_files(tmp_path, small_dir):
    simulate_family(tmp_path, 4, size="small", geometry="geo", print_msg=False)
    files = sorted(p.relative_to(small_dir) for p in small_dir.rglob("*.h5"))
    assert len(files) == 6
    for rel in files:
        digest = [hashlib.md5((d / rel).read_bytes()).hexdigest() for d in (small_dir, tmp_path)]
        assert digest[0] == digest[1], rel
    assert not list(tmp_path.rglob("*.tmp*"))


def test_truth_file(small_dir):
    truth = read_truth(small_dir / "hotspotTruth.h5")
    with h5py.File(small_dir / "maskTempCoh.h5", "r") as f:
        mask = f["mask"][()]
    raster = truth["hotspot"]
    assert ((raster == -1) == ~mask).all()
    assert np.array_equal(truth["pixelTruth"], raster[mask])
    k = len(truth["hotspotId"])
    assert k >= 1
    for name in ("shape", "sizeKm", "aspectRatio", "peakSignal", "eligible", "behaviour"):
        assert len(truth[name]) == k, name
    noise = float(truth["noiseLevel"])
    turbulence = truth["attrs"]["family.turbulenceMm"] * 1e-3
    # the RMS of Gamma(4, 1/4) factors is 1.12; 24-40 epochs scatter it
    assert 0.8 * turbulence < noise < 1.5 * turbulence
    assert truth["attrs"]["family.nuisanceStdMm"] * 1e-3 > 0.8 * noise
    assert np.array_equal(truth["eligible"].astype(bool),
                          truth["peakSignal"] >= ELIGIBLE_SNR * noise)
    assert np.allclose(np.abs(truth["amplitude"]), truth["peakSignal"])
    assert truth["attrs"]["family.noiseLevelMm"] == pytest.approx(noise * 1e3, abs=1e-3)
    with h5py.File(small_dir / "hotspotTruth.h5", "r") as f:
        series = f["hotspotTimeseries"][()]
    assert np.allclose(np.abs(series).max(axis=1), truth["peakSignal"], rtol=1e-5)
    # the written series are the synthesised epochs: hotspot signal x profile + nuisances
    scene = FamilyScene(4, size="small", geometry="geo")
    with h5py.File(small_dir / "timeseries.h5", "r") as f:
        assert np.allclose(f["timeseries"][5], next(
            d for t, d, _ in scene.epochs() if t == 5), atol=1e-6)


def test_hotspot_signal_times_profile_without_nuisance():
    scene = FamilyScene(4, size="small", geometry="geo")
    scene.nuisance_epoch = lambda t: (np.zeros(scene.grid.shape), 0.0)
    scene.unwrap = tuple(np.zeros(0, dtype=int) for _ in range(4))
    disp = np.stack([d.copy() for _, d, _ in scene.epochs()])
    for hot in scene.hotspots:
        flat = int(np.argmax(np.where(scene.profile_id == hot.hid, scene.profile, 0)))
        r, c = divmod(flat, scene.grid.shape[1])
        expected = scene.profile[r, c] * scene.hot_series[hot.hid - 1]
        assert np.allclose(disp[:, r, c], expected, atol=1e-9)
        assert scene.profile[r, c] > 0.8


def test_score_reports_family_fields(small_dir):
    truth = read_truth(small_dir / "hotspotTruth.h5")
    label_file = small_dir / "perfect.h5"
    with h5py.File(label_file, "w") as f:
        f["pixelLabel"] = np.where(truth["pixelTruth"] > 0, truth["pixelTruth"], 0)
    score = score_files(label_file, small_dir / "hotspotTruth.h5")
    assert score["num_detected"] == len(truth["hotspotId"]) and score["num_false"] == 0
    assert score["num_eligible"] == int(truth["eligible"].sum())
    assert score["num_eligible_detected"] == score["num_eligible"]
    h = score["hotspots"][0]
    assert h["shape"] in SHAPES and h["size_km"] > 0 and h["peak"] > 0
    assert score["noise_level"] == pytest.approx(float(truth["noiseLevel"]))


def test_null_scene_has_no_truth_hotspot(tmp_path):
    simulate_family(tmp_path, 4, size="small", null=True, print_msg=False)
    truth = read_truth(tmp_path / "hotspotTruth.h5")
    assert len(truth["hotspotId"]) == 0 and (truth["pixelTruth"] == 0).all()
    assert truth["attrs"]["simulate.difficulty"] == "null"
    with h5py.File(tmp_path / "perfect.h5", "w") as f:
        f["pixelLabel"] = np.zeros(truth["pixelTruth"].size, dtype=np.int32)
    score = score_files(tmp_path / "perfect.h5", tmp_path / "hotspotTruth.h5")
    assert score["num_hotspot"] == 0 and score["num_false"] == 0


@pytest.mark.parametrize("geometry", ["geo", "radar"])
def test_load_data_reads_family_scene(tmp_path, geometry):
    simulate_family(tmp_path, 2, size="small", geometry=geometry, print_msg=False)
    geom = tmp_path / "inputs" / ("geometryGeo.h5" if geometry == "geo" else "geometryRadar.h5")
    assert geom.is_file()
    template = tmp_path / "site.cfg"
    template.write_text("")
    app.main([str(template), "--dostep", "load_data"])
    truth = read_truth(tmp_path / "hotspotTruth.h5")
    with h5py.File(tmp_path / "hotspotStack.h5", "r") as f:
        n = f["displacement"].shape[0] if "displacement" in f else None
        lat, lon = f["latitude"][()], f["longitude"][()]
    assert n == truth["pixelTruth"].size
    ref_lat = float(truth["attrs"]["REF_LAT"])
    assert np.abs(lat - ref_lat).max() < 0.2 and np.isfinite(lon).all()
    # the hotspot centres lie among the pixels' positions
    for clat, clon in zip(truth["centerLat"], truth["centerLon"]):
        d = np.hypot(lat - clat, (lon - clon) * math.cos(math.radians(clat)))
        assert d.min() * 111.2 < 1.0


def test_truth_footprint_follows_profile():
    scene = FamilyScene(7, size="small")
    truth = scene.truth_raster()
    for hot in scene.hotspots:
        inside = scene.profile[truth == hot.hid]
        assert inside.size and inside.min() >= TRUTH_LEVEL


def test_cli_family(tmp_path, capsys):
    cli.main([str(tmp_path / "fam"), "--family", "--seed", "3", "--size", "small"])
    out = capsys.readouterr().out
    assert "noise level" in out and "eligible" in out
    assert all((tmp_path / "fam" / name).is_file() for name in MINTPY_FILES)
    with pytest.raises(SystemExit) as exc:
        cli.main([str(tmp_path / "bad"), "--null"])
    assert exc.value.code == 1
    assert "--family" in capsys.readouterr().err


def _bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_family.py"
    spec = importlib.util.spec_from_file_location("bench_family", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_protocol_refuses_held_out_seeds(tmp_path, capsys):
    bench = _bench()
    assert bench.parse_seeds("0-3,7,10-11") == [0, 1, 2, 3, 7, 10, 11]
    with pytest.raises(SystemExit):
        bench.main(["--dir", str(tmp_path), "--seeds", f"998-{HELD_OUT_SEED}"])
    assert "held out" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_docs_list_every_declared_range():
    text = (Path(__file__).resolve().parents[1] / "docs" / "quality.md").read_text()
    section = text[text.index("## Scene family (issue 12)"):]
    for key in [*RANGES, "valid_pixel", "num_date", "num_hotspot"]:
        assert f"`{key}`" in section, key


@pytest.mark.slow
def test_bench_family_small_scene_end_to_end(tmp_path, capsys):
    """bench_family.py simulates, runs load_data -> dbscan + dispersion, scores, reports,
    and skips the scored scene when run again."""
    bench = _bench()
    bench.main(["--dir", str(tmp_path), "--seeds", "0", "--size", "small"])
    out = capsys.readouterr().out
    record = json.loads((tmp_path / "seed_0000_small" / "score_fast.json").read_text())
    assert record["error"] is None and record["seed"] == 0 and not record["null"]
    score = record["scores"]["hotspot.h5"]
    assert score["num_hotspot"] == record["scene"]["num_hotspot"] >= 1
    assert "| seed 0 |" in out and "eligible detected by signal type" in out
    summary = json.loads((tmp_path / "report_fast.json").read_text())
    assert summary["totals"]["signal_scenes"] == 1
    assert (tmp_path / "report_fast.md").read_text().startswith("Scene family")
    bench.main(["--dir", str(tmp_path), "--seeds", "0", "--size", "small"])
    assert "scored before" in capsys.readouterr().out
