"""load_data step: MintPy / WabInSAR / EGMS readers, bad inputs, CLI and update mode.

The EGMS files in tests/data are 200 rows (numpy.linspace(1, 11759, 200).astype(int)) of the
shared burst EGMS_L2b_117_0227_IW2_VV_2020_2024_1.csv; see tests/data/README.md.
"""
import re
import shutil
import zipfile
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
from mintpy.utils import ptime
from mintpy.utils import utils as ut
from mintpy.utils import writefile

from hotspot.cli import hotspotApp as cli
from hotspot.readers import Block, open_reader
from hotspot.steps.load_data import clean_block, linear_velocity, load_stack, run
from hotspot.utils.errors import HotspotError

DATA = Path(__file__).parent / "data"
LENGTH, WIDTH = 24, 30
DATES = ["20200101", "20200113", "20200125", "20200206", "20200218", "20200301", "20200313",
         "20200325", "20200406", "20200418", "20200430", "20200512"]
GEO = {"X_FIRST": "13.1", "Y_FIRST": "38.72", "X_STEP": "0.001", "Y_STEP": "-0.001",
       "X_UNIT": "degrees", "Y_UNIT": "degrees"}


# ---------------------------------------------------------------- scene builders
def mintpy_scene(workdir, geocoded=True, seed=0):
    """timeseries.h5, velocity.h5, temporalCoherence.h5, maskTempCoh.h5, inputs/geometry*.h5."""
    rng = np.random.default_rng(seed)
    workdir = Path(workdir)
    (workdir / "inputs").mkdir(parents=True, exist_ok=True)
    t = len(DATES)
    years = (np.arange(t) * 12) / 365.25
    vel = rng.normal(0, 0.01, (LENGTH, WIDTH)).astype(np.float32)
    ts = (vel[None] * years[:, None, None]
          + rng.normal(0, 0.002, (t, LENGTH, WIDTH))).astype(np.float32)
    ts -= ts[0]
    ts[5, 3, 4] = np.nan                  # a NaN epoch inside the mask: dropped and counted
    ts[:, 10, :] = np.nan                 # a no-data row outside the mask
    mask = rng.random((LENGTH, WIDTH)) > 0.3
    mask[10, :] = False
    mask[3, 4] = True
    meta = {"FILE_TYPE": "timeseries", "LENGTH": str(LENGTH), "WIDTH": str(WIDTH), "UNIT": "m",
            "REF_DATE": DATES[0], "REF_Y": "1", "REF_X": "1", "WAVELENGTH": "0.05546576",
            "DATA_TYPE": "float32", "PROCESSOR": "isce"}
    if geocoded:
        meta.update(GEO)
    writefile.write({"timeseries": ts, "date": np.array(DATES, dtype="S8"),
                     "bperp": np.zeros(t, dtype=np.float32)}, str(workdir / "timeseries.h5"),
                    metadata=meta)
    two_d = dict(meta, FILE_TYPE="velocity", UNIT="m/year")
    writefile.write({"velocity": vel, "velocityStd": np.full_like(vel, 0.001)},
                    str(workdir / "velocity.h5"), metadata=two_d)
    coh = rng.uniform(0.5, 1, (LENGTH, WIDTH)).astype(np.float32)
    writefile.write({"temporalCoherence": coh}, str(workdir / "temporalCoherence.h5"),
                    metadata=dict(meta, FILE_TYPE="temporalCoherence", UNIT="1"))
    writefile.write({"mask": mask}, str(workdir / "maskTempCoh.h5"),
                    metadata=dict(meta, FILE_TYPE="mask", UNIT="1"))
    inc = np.full((LENGTH, WIDTH), 38.5, dtype=np.float32)
    geom = {"incidenceAngle": inc, "height": np.zeros_like(inc)}
    if geocoded:
        name = "geometryGeo.h5"
    else:
        name = "geometryRadar.h5"
        yy, xx = np.mgrid[0:LENGTH, 0:WIDTH]
        geom["latitude"] = (34.0 + 0.0008 * yy + 0.0001 * xx).astype(np.float32)
        geom["longitude"] = (-118.0 + 0.001 * xx - 0.0002 * yy).astype(np.float32)
    writefile.write(geom, str(workdir / "inputs" / name), metadata=dict(meta, FILE_TYPE="geometry"))
    return {"ts": ts, "vel": vel, "coh": coh, "mask": mask, "meta": meta, "geom": geom}


def valid_pixels(scene):
    """Row-major indices of the pixels load_data must keep."""
    keep = scene["mask"] & np.isfinite(scene["ts"]).all(axis=0)
    return np.nonzero(keep)


def scene_lat_lon(scene):
    if "latitude" in scene["geom"]:
        return scene["geom"]["latitude"], scene["geom"]["longitude"]
    return ut.get_lat_lon(scene["meta"])


def write_v73(path, arrays):
    """A MATLAB v7.3 file: HDF5 with a 512-byte MATLAB header, arrays stored transposed."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, arr in arrays.items():
            dset = f.create_dataset(name, data=np.asarray(arr, dtype=np.float64).T)
            dset.attrs["MATLAB_class"] = np.bytes_("double")
    header = (b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 "
              b"HDF5 schema 1.00 .")
    with open(path, "r+b") as f:
        f.write(header.ljust(116) + b"\x00" * 8 + b"\x00\x02IM")


def wabinsar_scene(workdir, scene, v73=False, nan_velocity_row=None):
    """The MintPy scene's valid pixels as the WabInSAR export (mm, N x T)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rr, cc = valid_pixels(scene)
    lat, lon = scene_lat_lon(scene)
    arrays = {
        "R_TS_den": scene["ts"][:, rr, cc].T.astype(np.float64) * 1000,
        "elpx_ll": np.column_stack([lon[rr, cc], lat[rr, cc], np.zeros(rr.size)]),
        "MVel": scene["vel"][rr, cc][:, None].astype(np.float64) * 1000,
        "MVelq": np.ones((rr.size, 1)),
        "Pco_m": scene["coh"][rr, cc][:, None].astype(np.float64),
    }
    if nan_velocity_row is not None:
        arrays["MVel"][nan_velocity_row] = np.nan
    for name, arr in arrays.items():
        if v73:
            write_v73(workdir / f"{name}.mat", {name: arr})
        else:
            scipy.io.savemat(workdir / f"{name}.mat", {name: arr})
    (workdir / "dates.txt").write_text("\n".join(DATES) + "\n")
    return arrays


def read_stack(path):
    with h5py.File(path, "r") as f:
        out = {k: f[k][:] for k in f}
        out["attrs"] = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    return out


def cli_run(workdir, template_text="", extra=()):
    template = Path(workdir) / "site.cfg"
    template.write_text(template_text)
    cli.main([str(template), "--dostep", "load_data", *extra])


def cli_error(workdir, capsys, template_text=""):
    with pytest.raises(SystemExit) as exc:
        cli_run(workdir, template_text)
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert not (Path(workdir) / "hotspotStack.h5").exists()
    assert not list(Path(workdir).glob("hotspotStack.tmp*"))
    return err


# ---------------------------------------------------------------- MintPy
@pytest.mark.parametrize("geocoded", [True, False])
def test_mintpy_scene_matches_timeseries(tmp_path, geocoded, make_ctx):
    scene = mintpy_scene(tmp_path, geocoded=geocoded)
    run(make_ctx(tmp_path))
    stack = read_stack(tmp_path / "hotspotStack.h5")
    rr, cc = valid_pixels(scene)
    assert rr.size == scene["mask"].sum() - 1           # the one NaN-epoch pixel is left out
    np.testing.assert_array_equal(stack["row"], rr)
    np.testing.assert_array_equal(stack["col"], cc)
    np.testing.assert_array_equal(stack["displacement"], scene["ts"][:, rr, cc].T)
    lat, lon = scene_lat_lon(scene)
    np.testing.assert_allclose(stack["latitude"], lat[rr, cc])
    np.testing.assert_allclose(stack["longitude"], lon[rr, cc])
    np.testing.assert_allclose(stack["velocity"], scene["vel"][rr, cc])
    np.testing.assert_allclose(stack["velocityStd"], 0.001)
    np.testing.assert_allclose(stack["coherence"], scene["coh"][rr, cc])
    np.testing.assert_allclose(stack["incidenceAngle"], 38.5)
    assert [d.decode() for d in stack["date"]] == DATES
    attrs = stack["attrs"]
    assert attrs["GRID"] == "yes" and attrs["PROCESSOR"] == "mintpy"
    assert int(attrs["LENGTH"]) == LENGTH and int(attrs["WIDTH"]) == WIDTH
    assert attrs["FILE_TYPE"] == "hotspotStack" and attrs["UNIT"] == "m"
    assert attrs["REF_Y"] == "1" and attrs["WAVELENGTH"] == "0.05546576"
    assert ("X_FIRST" in attrs) == geocoded
    assert attrs["hotspot.load.processor"] == "auto"
    assert attrs["NUM_MASKED"] == (~scene["mask"]).sum() and attrs["NUM_NAN_DROPPED"] == 1


def test_mintpy_blocks_equal_one_block(tmp_path, make_ctx):
    """Row blocks of 1000 pixels (tiny maxMemory, no cache) give the same stack as one block."""
    mintpy_scene(tmp_path)
    ctx = make_ctx(tmp_path)
    reader = open_reader(ctx.config, tmp_path, log=lambda m: None)
    assert len(reader.row_blocks(1e-6)) == 1 + (LENGTH - 1) // (1000 // WIDTH)
    load_stack(reader, tmp_path / "small.h5", max_memory=1e-6)
    load_stack(reader, tmp_path / "big.h5", max_memory=4)
    small, big = read_stack(tmp_path / "small.h5"), read_stack(tmp_path / "big.h5")
    for name in ("displacement", "row", "col", "latitude", "velocity", "coherence"):
        np.testing.assert_array_equal(small[name], big[name])


def test_mintpy_picks_corrected_timeseries_and_scales_unit(tmp_path, make_ctx):
    scene = mintpy_scene(tmp_path)
    shutil.copy(tmp_path / "timeseries.h5", tmp_path / "timeseries_ERA5_demErr.h5")
    with h5py.File(tmp_path / "timeseries_ERA5_demErr.h5", "r+") as f:
        f["timeseries"][...] = f["timeseries"][:] * 2
    reader = open_reader(make_ctx(tmp_path).config, tmp_path, log=lambda m: None)
    assert reader.ts_file.name == "timeseries_ERA5_demErr.h5"
    run(make_ctx(tmp_path, hotspot__load__timeseriesFile="timeseries.h5",
                 hotspot__load__unit="mm"))
    stack = read_stack(tmp_path / "hotspotStack.h5")
    rr, cc = valid_pixels(scene)
    np.testing.assert_allclose(stack["displacement"], scene["ts"][:, rr, cc].T / 1000, rtol=1e-6)


def test_mintpy_geo_folder_names(tmp_path, make_ctx):
    """geo/geo_*.h5 as MintPy's geocode step names them, found from the named time series."""
    scene = mintpy_scene(tmp_path / "src")
    geo = tmp_path / "geo"
    geo.mkdir()
    for name in ("timeseries.h5", "velocity.h5", "temporalCoherence.h5", "maskTempCoh.h5"):
        shutil.copy(tmp_path / "src" / name, geo / f"geo_{name}")
    shutil.copy(tmp_path / "src" / "inputs" / "geometryGeo.h5", geo / "geo_geometryRadar.h5")
    reader = open_reader(make_ctx(tmp_path, hotspot__load__timeseriesFile="geo/geo_timeseries.h5")
                         .config, tmp_path, log=lambda m: None)
    assert [p.name for p in reader.inputs] == ["geo_timeseries.h5", "geo_geometryRadar.h5",
                                               "geo_velocity.h5", "geo_temporalCoherence.h5",
                                               "geo_maskTempCoh.h5"]
    load_stack(reader, tmp_path / "stack.h5", max_memory=1)
    assert read_stack(tmp_path / "stack.h5")["row"].size == valid_pixels(scene)[0].size


def test_mintpy_without_velocity_fits_it(tmp_path, make_ctx):
    scene = mintpy_scene(tmp_path)
    run(make_ctx(tmp_path, hotspot__load__velocityFile="no", hotspot__load__maskFile="no",
                 hotspot__load__coherenceFile="no"))
    stack = read_stack(tmp_path / "hotspotStack.h5")
    assert stack["displacement"].shape[0] == LENGTH * WIDTH - WIDTH - 1   # NaN row + NaN pixel
    assert np.isnan(stack["coherence"]).all()
    rr, cc = valid_pixels(dict(scene, mask=np.ones_like(scene["mask"])))
    years = np.array(ptime.yyyymmdd2years(DATES))
    expected = np.polyfit(years, scene["ts"][:, rr, cc].astype(np.float64), 1)[0]
    np.testing.assert_allclose(stack["velocity"], expected, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- WabInSAR
@pytest.mark.parametrize("v73", [False, True])
def test_wabinsar_equals_mintpy(tmp_path, v73, make_ctx):
    scene = mintpy_scene(tmp_path / "mintpy")
    run(make_ctx(tmp_path / "mintpy"))
    wabinsar_scene(tmp_path / "wab", scene, v73=v73)
    run(make_ctx(tmp_path / "wab"))
    ref = read_stack(tmp_path / "mintpy" / "hotspotStack.h5")
    wab = read_stack(tmp_path / "wab" / "hotspotStack.h5")
    assert wab["displacement"].shape == ref["displacement"].shape
    np.testing.assert_allclose(wab["displacement"], ref["displacement"], rtol=1e-5, atol=1e-9)
    for name in ("latitude", "longitude", "velocity", "coherence"):
        np.testing.assert_allclose(wab[name], ref[name], rtol=1e-6)
    np.testing.assert_allclose(wab["velocityStd"], 0.001)
    assert (wab["row"] == -1).all() and np.isnan(wab["incidenceAngle"]).all()
    assert wab["attrs"]["GRID"] == "no" and wab["attrs"]["PROCESSOR"] == "wabinsar"


@pytest.mark.parametrize("v73", [False, True])
def test_wabinsar_nan_row_dropped_everywhere(tmp_path, v73, make_ctx):
    scene = mintpy_scene(tmp_path / "mintpy")
    arrays = wabinsar_scene(tmp_path, scene, v73=v73, nan_velocity_row=7)
    run(make_ctx(tmp_path))
    stack = read_stack(tmp_path / "hotspotStack.h5")
    keep = np.arange(arrays["R_TS_den"].shape[0]) != 7
    np.testing.assert_allclose(stack["displacement"], arrays["R_TS_den"][keep] / 1000, rtol=1e-6)
    np.testing.assert_allclose(stack["longitude"], arrays["elpx_ll"][keep, 0])
    np.testing.assert_allclose(stack["coherence"], arrays["Pco_m"][keep, 0], rtol=1e-6)
    assert stack["attrs"]["NUM_NAN_DROPPED"] == 1


def test_wabinsar_orientation_by_number_of_dates(tmp_path, make_ctx):
    """A v7.3 file written N x T as h5py sees it (not MATLAB's layout) is read the same."""
    scene = mintpy_scene(tmp_path / "mintpy")
    arrays = wabinsar_scene(tmp_path, scene, v73=True)
    write_v73(tmp_path / "R_TS_den.mat", {"R_TS_den": arrays["R_TS_den"].T})
    run(make_ctx(tmp_path, hotspot__load__unit="mm"))
    stack = read_stack(tmp_path / "hotspotStack.h5")
    np.testing.assert_allclose(stack["displacement"], arrays["R_TS_den"] / 1000, rtol=1e-6)


def test_wabinsar_single_variable_with_other_name(tmp_path, make_ctx):
    scene = mintpy_scene(tmp_path / "mintpy")
    arrays = wabinsar_scene(tmp_path, scene)
    scipy.io.savemat(tmp_path / "MVel.mat", {"v": arrays["MVel"]})
    run(make_ctx(tmp_path))
    np.testing.assert_allclose(read_stack(tmp_path / "hotspotStack.h5")["velocity"],
                               arrays["MVel"][:, 0] / 1000)
    scipy.io.savemat(tmp_path / "MVel.mat", {"a": arrays["MVel"], "b": arrays["MVel"]})
    with pytest.raises(HotspotError, match=r"MVel.mat: expected a variable named 'MVel'"):
        open_reader(make_ctx(tmp_path).config, tmp_path)


# ---------------------------------------------------------------- EGMS
@pytest.mark.parametrize("name", ["egms_subset.csv", "egms_subset.zip"])
def test_egms_subset(tmp_path, name, make_ctx):
    shutil.copy(DATA / name, tmp_path / name)
    run(make_ctx(tmp_path, hotspot__load__timeseriesFile=name))
    stack = read_stack(tmp_path / "hotspotStack.h5")
    csv = pd.read_csv(DATA / "egms_subset.csv")
    dates = [c for c in csv.columns if c.isdigit()]
    mm = csv[dates].to_numpy()
    assert stack["displacement"].shape == (200, 207)
    np.testing.assert_allclose(stack["displacement"], (mm - mm[:, :1]) / 1000, atol=1e-7)
    assert np.abs(mm[:, 0]).max() > 1                       # the raw first epoch is not zero
    np.testing.assert_array_equal(stack["latitude"], csv["latitude"])
    np.testing.assert_allclose(stack["velocity"], csv["mean_velocity"] / 1000, rtol=1e-6)
    np.testing.assert_allclose(stack["velocityStd"], csv["mean_velocity_std"] / 1000, rtol=1e-6)
    np.testing.assert_allclose(stack["coherence"], csv["temporal_coherence"], rtol=1e-6)
    np.testing.assert_allclose(stack["incidenceAngle"], csv["incidence_angle"], rtol=1e-6)
    assert [d.decode() for d in stack["date"]] == dates
    assert stack["attrs"]["GRID"] == "no" and stack["attrs"]["PROCESSOR"] == "egms"


def test_egms_chunks_and_l3_positions(tmp_path, monkeypatch, make_ctx):
    """Chunks of 60 rows give the same stack as one chunk; L3 easting/northing become lat/lon."""
    csv = pd.read_csv(DATA / "egms_subset.csv")
    l3 = csv.drop(columns=["latitude", "longitude", "incidence_angle", "temporal_coherence"])
    l3.to_csv(tmp_path / "EGMS_L3_test.csv", index=False)
    reader = open_reader(make_ctx(tmp_path).config, tmp_path, log=lambda m: None)
    assert reader.processor == "egms"
    load_stack(reader, tmp_path / "one.h5", max_memory=1)
    import hotspot.readers.egms as egms_module
    monkeypatch.setattr(egms_module, "block_size", lambda *args, **kw: 60)
    assert [b.data["displacement"].shape[0] for b in reader.iter_blocks(1)] == [60, 60, 60, 20]
    load_stack(reader, tmp_path / "chunks.h5", max_memory=1e-9)
    one, stack = read_stack(tmp_path / "one.h5"), read_stack(tmp_path / "chunks.h5")
    for name in ("displacement", "latitude", "velocity"):
        np.testing.assert_array_equal(stack[name], one[name])
    np.testing.assert_allclose(stack["latitude"], csv["latitude"], atol=2e-6)
    np.testing.assert_allclose(stack["longitude"], csv["longitude"], atol=2e-6)
    assert np.isnan(stack["coherence"]).all()


def test_egms_nan_rows_dropped(tmp_path, make_ctx):
    text = (DATA / "egms_subset.csv").read_text().splitlines()
    cells = text[3].split(",")
    cells[40] = ""                                            # an empty epoch
    text[3] = ",".join(cells)
    (tmp_path / "EGMS_x.csv").write_text("\n".join(text) + "\n")
    run(make_ctx(tmp_path))
    stack = read_stack(tmp_path / "hotspotStack.h5")
    assert stack["displacement"].shape[0] == 199 and stack["attrs"]["NUM_NAN_DROPPED"] == 1


# ---------------------------------------------------------------- pure functions
def test_linear_velocity_matches_polyfit():
    rng = np.random.default_rng(1)
    disp = rng.normal(0, 0.01, (50, len(DATES)))
    vel, std = linear_velocity(disp, DATES)
    years = np.array(ptime.yyyymmdd2years(DATES))
    np.testing.assert_allclose(vel, np.polyfit(years, disp.T, 1)[0], rtol=1e-5, atol=1e-8)
    resid = disp.T - np.polyval(np.polyfit(years, disp.T, 1), years[:, None])
    sigma2 = (resid ** 2).sum(axis=0) / (len(DATES) - 2)
    expected = np.sqrt(sigma2 / ((years - years.mean()) ** 2).sum())
    np.testing.assert_allclose(std, expected, rtol=1e-5)


def test_linear_velocity_matches_mintpy_estimator():
    """The pseudo-inverse kernel against mintpy.utils.time_func.estimate_time_func."""
    from mintpy.utils import time_func
    rng = np.random.default_rng(2)
    disp = rng.normal(0, 0.01, (3000, len(DATES))).astype(np.float32)
    vel, std = linear_velocity(disp, DATES, chunk=1000)
    design, params, e2 = time_func.estimate_time_func({"polynomial": 1}, DATES,
                                                      disp.T.astype(np.float64))
    np.testing.assert_allclose(vel, params[1], rtol=1e-7, atol=1e-12)
    var = np.linalg.inv(design.T @ design)[1, 1] / (len(DATES) - 2)
    np.testing.assert_allclose(std, np.sqrt(e2 * var), rtol=1e-7)
    two, two_std = linear_velocity(disp[:, :2], DATES[:2])
    assert np.isnan(two_std).all()
    dt = np.diff(ptime.yyyymmdd2years(DATES[:2]))[0]
    np.testing.assert_allclose(two, (disp[:, 1] - disp[:, 0]) / dt, rtol=1e-5)


def test_clean_block_references_and_counts():
    disp = np.array([[1.0, 2.0, 3.0], [np.nan, 1.0, 1.0], [5.0, 5.0, 6.0]])
    counts = Counter()
    out = clean_block({"displacement": disp, "latitude": np.array([1.0, 2.0, np.nan]),
                       "longitude": np.zeros(3), "velocity": np.zeros(3),
                       "velocityStd": np.zeros(3)}, DATES[:3], counts)
    np.testing.assert_array_equal(out["displacement"], [[0, 1, 2]])
    assert counts["NaN in displacement"] == 1 and counts["NaN in latitude"] == 1


def test_no_partial_stack_when_reading_fails_midway(tmp_path):
    class Failing:
        dates, attrs, inputs, processor, num_raw = DATES, {"GRID": "no"}, [tmp_path / "x"], "x", 4
        calls = 0

        def iter_blocks(self, max_memory):
            self.calls += 1
            data = {"displacement": np.zeros((2, len(DATES))), "latitude": np.zeros(2),
                    "longitude": np.zeros(2)}
            yield Block(dict(data))
            if self.calls > 1:
                raise HotspotError("x: read error in block 2")
            yield Block(dict(data))

    with pytest.raises(HotspotError, match="block 2"):
        load_stack(Failing(), tmp_path / "hotspotStack.h5", max_memory=1e-9)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- CLI, update mode, bad input
def test_cli_run_and_update_mode(tmp_path, capsys):
    mintpy_scene(tmp_path)
    cli_run(tmp_path)
    out = capsys.readouterr().out
    assert "hotspotStack.h5" in out and "left out" in out
    mtime = (tmp_path / "hotspotStack.h5").stat().st_mtime_ns
    cli_run(tmp_path)
    assert "skip step load_data" in capsys.readouterr().out
    assert (tmp_path / "hotspotStack.h5").stat().st_mtime_ns == mtime
    cli_run(tmp_path, "hotspot.load.maskFile = no\n")            # a changed key re-runs
    assert "skip step" not in capsys.readouterr().out


def _truncate(path):
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 3])


def _set_dates(path, dates):
    with h5py.File(path, "r+") as f:
        f["date"][...] = np.array(dates, dtype="S8")


BAD_MINTPY = {
    "missing velocity file": ("hotspot.load.velocityFile = vel.h5\n", None,
                              r"vel.h5: file not found \(set by hotspot.load.velocityFile\)"),
    "wrong dataset": ("hotspot.load.velocityFile = temporalCoherence.h5\n", None,
                      r"temporalCoherence.h5: dataset 'velocity' not found"),
    "shape mismatch": ("", lambda d: writefile.write(
        {"mask": np.ones((5, 5), dtype=bool)}, str(d / "maskTempCoh.h5"),
        metadata={"FILE_TYPE": "mask", "LENGTH": "5", "WIDTH": "5"}),
        r"maskTempCoh.h5: dataset 'mask' is \(5, 5\); expected \(24, 30\)"),
    "unsorted dates": ("", lambda d: _set_dates(d / "timeseries.h5", DATES[1:2] + DATES[:1]
                                                + DATES[2:]), r"dates are not sorted"),
    "duplicated dates": ("", lambda d: _set_dates(d / "timeseries.h5", DATES[:1] + DATES[:-1]),
                         r"duplicated date\(s\) 20200101"),
    "no valid pixel": ("", lambda d: writefile.write(
        {"mask": np.zeros((LENGTH, WIDTH), dtype=bool)}, str(d / "maskTempCoh.h5"),
        metadata={"FILE_TYPE": "mask", "LENGTH": str(LENGTH), "WIDTH": str(WIDTH)}),
        r"no valid pixel \(left out: masked: 720"),
    "corrupt timeseries": ("", lambda d: _truncate(d / "timeseries.h5"),
                           r"timeseries.h5: cannot be opened as HDF5"),
    "garbage velocity": ("", lambda d: (d / "velocity.h5").write_bytes(b"not hdf5" * 100),
                         r"velocity.h5: cannot be opened as HDF5"),
    "radar without geometry": ("", "radar", r"no geometry file with latitude / longitude"),
    "no timeseries dataset": ("hotspot.load.timeseriesFile = velocity.h5\n", None,
                              r"velocity.h5: dataset 'timeseries' not found"),
}


@pytest.mark.parametrize("case", list(BAD_MINTPY))
def test_bad_mintpy_input(tmp_path, capsys, case):
    template, damage, message = BAD_MINTPY[case]
    mintpy_scene(tmp_path, geocoded=damage != "radar")
    if damage == "radar":
        (tmp_path / "inputs" / "geometryRadar.h5").unlink()
    elif damage is not None:
        damage(tmp_path)
    err = cli_error(tmp_path, capsys, template)
    assert err.startswith("ERROR: ")
    assert re.search(message, err), err


BAD_WABINSAR = {
    "missing date file": (lambda d, n: (d / "dates.txt").unlink(), r"no date file .*dates.txt"),
    "unsorted dates": (lambda d, n: (d / "dates.txt").write_text("\n".join(DATES[::-1])),
                       r"dates.txt .*dates are not sorted"),
    "wrong number of dates": (lambda d, n: (d / "dates.txt").write_text("\n".join(DATES[:-2])),
                              r"R_TS_den.mat: 'R_TS_den' has shape .*expected N x 10"),
    "lon/lat shape": (lambda d, n: scipy.io.savemat(d / "elpx_ll.mat",
                                                    {"elpx_ll": np.zeros((5, 3))}),
                      r"elpx_ll.mat: 'elpx_ll' has shape \(5, 3\); expected \d+ x 3"),
    "velocity length": (lambda d, n: scipy.io.savemat(d / "MVel.mat", {"MVel": np.zeros((5, 1))}),
                        r"MVel.mat: 'MVel' has shape \(5, 1\); expected a vector of \d+"),
    "corrupt mat": (lambda d, n: (d / "Pco_m.mat").write_bytes(b"\x00garbage" * 50),
                    r"Pco_m.mat: cannot be read as a MATLAB .mat file"),
    "corrupt v7.3": (lambda d, n: (write_v73(d / "R_TS_den.mat", {"R_TS_den": np.zeros((4, 12))}),
                                _truncate(d / "R_TS_den.mat")),
                     r"R_TS_den.mat: cannot be"),
    "all NaN": (lambda d, n: scipy.io.savemat(d / "MVel.mat", {"MVel": np.full((n, 1), np.nan)}),
                r"no valid pixel"),
}


@pytest.mark.parametrize("case", list(BAD_WABINSAR))
def test_bad_wabinsar_input(tmp_path, capsys, case):
    scene = mintpy_scene(tmp_path / "mintpy")
    arrays = wabinsar_scene(tmp_path, scene)
    damage, message = BAD_WABINSAR[case]
    damage(tmp_path, arrays["R_TS_den"].shape[0])
    err = cli_error(tmp_path, capsys)
    assert re.search(message, err), err


BAD_EGMS = {
    "duplicated date column": (lambda h: h.replace("20200109", "20200103", 1),
                               r"duplicated column\(s\) 20200103"),
    "unsorted date columns": (lambda h: h.replace("20200109", "20191231", 1),
                              r"dates are not sorted \(20200103 comes before 20191231\)"),
    "no position": (lambda h: h.replace("latitude", "lat", 1).replace("easting", "x", 1),
                    r"columns 'latitude' and 'longitude' .* not found"),
    "text in numbers": ("row", r"cannot parse the CSV after 0 points"),
}


@pytest.mark.parametrize("case", list(BAD_EGMS))
def test_bad_egms_input(tmp_path, capsys, case):
    lines = (DATA / "egms_subset.csv").read_text().splitlines()
    edit, message = BAD_EGMS[case]
    if edit == "row":
        cells = lines[5].split(",")
        cells[30] = "abc"
        lines[5] = ",".join(cells)
    else:
        lines[0] = edit(lines[0])
    (tmp_path / "EGMS_bad.csv").write_text("\n".join(lines) + "\n")
    err = cli_error(tmp_path, capsys)
    assert re.search(message, err), err


def test_bad_egms_zip_and_missing(tmp_path, capsys):
    with zipfile.ZipFile(tmp_path / "EGMS_two.zip", "w") as z:
        z.writestr("a.csv", "latitude\n")
        z.writestr("b.csv", "latitude\n")
    err = cli_error(tmp_path, capsys)
    assert "expected exactly one .csv inside the zip archive, found 2" in err
    (tmp_path / "EGMS_two.zip").unlink()
    err = cli_error(tmp_path, capsys)
    assert "no input found" in err and "R_TS_den.mat" in err
    err = cli_error(tmp_path, capsys, "hotspot.load.timeseriesFile = EGMS_none.csv\n")
    assert "EGMS_none.csv: file not found" in err
    err = cli_error(tmp_path, capsys, "hotspot.load.processor = mintpy\n")
    assert "no MintPy time series (timeseries*.h5) found (looked for" in err
    err = cli_error(tmp_path, capsys, "hotspot.load.timeseriesFile = data.txt\n")
    assert "cannot tell the processor from the extension '.txt'" in err
