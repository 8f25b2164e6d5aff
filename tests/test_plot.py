"""Plot step: every figure is written from small synthetic products (grid and points),
missing inputs are skipped with a message, and MintPy's view.py renders the label files."""
import h5py
import numpy as np
import pytest

from hotspot.hotspotApp import is_up_to_date
from hotspot.plots.common import read_geometry
from hotspot.plots.data import PlotData
from hotspot.plots.diagnostics import confusion_scores
from hotspot.plots.series import hotspot_series
from hotspot.steps import plot
from hotspot.utils.errors import HotspotError
from hotspot.utils.h5io import read_attrs, write_h5
from hotspot.utils.labels import label_to_map, write_label_file
from hotspot.utils.stack import write_stack

DATES = [f"2020{m:02d}{d:02d}" for m in range(1, 11) for d in (5, 20)]
ALL_FIGURES = ["velocity_hotspots.png", "hotspot_summary.png", "label_tskm.png",
               "label_dbscan.png", "label_lstm.png", "label_lstmPerceptron.png",
               "label_hotspot.png", "centroids_tskm.png", "timeseries_hotspot.png",
               "silhouette.png", "covariogram.png", "standard_distance.png", "ellipses.png",
               "confusion_lstm.png", "confusion_lstmPerceptron.png", "training_lstm.png",
               "training_lstmPerceptron.png"]


def _scene(grid, seed=0):
    """Pixels with two subsiding discs (hotspots 1, 2) and one broad uplift (cluster 3)."""
    rng = np.random.default_rng(seed)
    if grid:
        length, width = 30, 40
        rr, cc = np.mgrid[:length, :width]
        valid = rng.random((length, width)) > 0.1          # masked pixels: not in the stack
        row, col = rr[valid].astype(np.int32), cc[valid].astype(np.int32)
        lon = -118.3 + (col + 0.5) * 0.001
        lat = 34.05 - (row + 0.5) * 0.001
        attrs = {"GRID": "yes", "LENGTH": length, "WIDTH": width, "X_FIRST": -118.3,
                 "Y_FIRST": 34.05, "X_STEP": 0.001, "Y_STEP": -0.001, "X_UNIT": "degrees",
                 "Y_UNIT": "degrees", "PROCESSOR": "mintpy"}
    else:
        n = 900
        lon = -118.3 + rng.random(n) * 0.04
        lat = 34.02 + rng.random(n) * 0.03
        row = col = None
        attrs = {"GRID": "no", "PROCESSOR": "egms"}
    n = lon.size
    label = np.zeros(n, np.int32)
    for k, (x, y, r) in enumerate([(-118.29, 34.04, 0.004), (-118.27, 34.03, 0.003)], 1):
        label[(lon - x) ** 2 + (lat - y) ** 2 < r ** 2] = k
    label[(label == 0) & (lon > -118.275) & (lat > 34.04)] = 3
    t = np.arange(len(DATES)) / 24.0
    rate = np.select([label == 1, label == 2, label == 3], [-0.03, -0.02, 0.01], 0.0)
    disp = rate[:, None] * t[None, :] + rng.normal(0, 0.002, (n, len(DATES)))
    return dict(lon=lon, lat=lat, row=row, col=col, attrs=attrs, label=label,
                velocity=(rate + rng.normal(0, 0.001, n)).astype(np.float32), disp=disp)


def build_workdir(workdir, grid=True, full_dispersion=True, files=None):
    """Write a stack and every product the plot step reads (or only `files`)."""
    s = _scene(grid)
    stack = workdir / "hotspotStack.h5"
    extra = {"row": s["row"], "col": s["col"]} if grid else {}
    write_stack(stack, s["disp"], DATES, s["lat"], s["lon"], attrs=s["attrs"],
                velocity=s["velocity"], **extra)
    want = set(files) if files is not None else None

    def wanted(name):
        return want is None or name in want

    label = s["label"]
    labels_tskm = np.where(label == 3, 2, np.where(label > 0, 1, 3)).astype(np.int32)
    labels_tskm[: len(labels_tskm) // 50] = -1 if not grid else labels_tskm[0]
    if wanted("covariogram.h5"):
        dist = np.arange(0.25, 10, 0.5)
        write_h5(workdir / "covariogram.h5",
                 {"distance": dist, "covariance": 4e-5 * np.exp(-dist / 1.5) + 1e-6,
                  "pairCount": np.full(dist.size, 1000),
                  "modelCovariance": 4e-5 * np.exp(-dist / 1.5)},
                 {"CORRELATION_LENGTH_KM": 1.5, "CORRELATION_LENGTH_STD_KM": 0.2,
                  "MODEL": "exponential"})
    if wanted("clusterTSKM.h5"):
        t = np.arange(len(DATES)) / 24.0
        centroid = np.array([-0.025 * t, 0.01 * t, 0.0 * t])
        write_label_file(workdir / "clusterTSKM.h5", labels_tskm, stack,
                         datasets={"centroid": centroid, "date": np.array(DATES, dtype="S8"),
                                   "silhouetteK": np.arange(2, 8),
                                   "silhouetteScore": np.array([.4, .55, .5, .42, .4, .35])},
                         attrs={"NUM_CLUSTER": 3, "METRIC": "softdtw"})
    if wanted("clusterDBSCAN.h5"):
        write_label_file(workdir / "clusterDBSCAN.h5", label, stack,
                         datasets={"parentCluster": np.array([1, 1, 2]), "eps": np.array([1.5]),
                                   "minSamples": np.array([5]),
                                   "clusterSize": np.bincount(label)[1:]})
    if wanted("trainLSTM.h5"):
        rng = np.random.default_rng(1)
        groups = {"sample": {"index": np.arange(10), "label": np.zeros(10, np.int32)}}
        hist = {"loss": np.linspace(1.2, 0.3, 8), "val_loss": np.linspace(1.3, 0.4, 8),
                "accuracy": np.linspace(0.5, 0.9, 8), "val_accuracy": np.linspace(0.45, 0.85, 8)}
        cm = np.diag([50, 40, 30, 20]) + rng.integers(0, 5, (4, 4))
        # train_lstm's layout: per split, row-normalised matrix + counts + history
        groups["lstm"] = {"classId": np.arange(4), **{
            split: {"confusion": m / m.sum(1, keepdims=True), "count": m.sum(1),
                    "recall": np.diag(m) / m.sum(1), "history": hist}
            for split, m in (("random", cm), ("block", cm.T))}}
        # a flatter layout (history per model, matrices of counts) is read too
        groups["lstmPerceptron"] = {"classId": np.arange(4), "history": hist,
                                    "random": {"confusion": cm}, "block": {"confusion": cm.T}}
        write_h5(workdir / "trainLSTM.h5", groups)
    for name in ("clusterLSTM.h5", "clusterLSTMP.h5"):
        if wanted(name):
            write_label_file(workdir / name, label, stack,
                             datasets={"probability": np.full(label.size, 0.9, np.float32)})
    hot = np.where(label == 3, 0, label).astype(np.int32)
    table = {"clusterId": np.array([1, 2, 3]), "numPixel": np.bincount(label)[1:],
             "standardDistance": np.array([0.3, 0.25, 1.9]),
             "ellipseCenterLon": np.array([-118.29, -118.27, -118.2705]),
             "ellipseCenterLat": np.array([34.04, 34.03, 34.045]),
             "ellipseSemiMajor": np.array([0.4, 0.3, 1.5]),
             "ellipseSemiMinor": np.array([0.3, 0.25, 0.5]),
             "ellipseAngle": np.array([30.0, 0.0, 90.0]),
             "meanVelocity": np.array([-0.03, -0.02, 0.01]),
             "isHotspot": np.array([1, 1, 0], np.int8), "isSignificant": np.array([1, 1, 0]),
             "hotspotId": np.array([1, 2, 0])}
    if full_dispersion:
        rows = np.array([s["disp"][label == k].mean(0) for k in (1, 2, 3)])
        table.update({"meanTimeseries": rows, "p10Timeseries": rows - 0.002,
                      "p90Timeseries": rows + 0.002,
                      "ringTimeseries": rows * 0.1, "ringPixel": np.array([50, 40, 0])})
    if wanted("dispersion.h5"):
        write_h5(workdir / "dispersion.h5", {**table, "date": np.array(DATES, dtype="S8")},
                 {"MAX_STANDARD_DISTANCE_KM": 1.5})
    if wanted("hotspot.h5"):
        # as the dispersion step writes it: the map + the table rows of the hotspots
        hot_table = {k: v[:2] for k, v in table.items()}
        hot_table["parentCluster"] = hot_table.pop("clusterId")
        write_label_file(workdir / "hotspot.h5", hot, stack, name="hotspot", datasets=hot_table)
    return s


CTX_DEFAULTS = {"hotspot.plot.dpi": "60", "hotspot.plot.export": "no"}


def _check_png(path):
    assert path.is_file(), path
    assert path.stat().st_size > 2000, path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("grid", [True, False], ids=["grid", "points"])
def test_every_figure_written(tmp_path, grid, capsys, make_ctx):
    build_workdir(tmp_path, grid=grid, full_dispersion=grid)
    ctx = make_ctx(tmp_path)
    written = plot.run(ctx)
    assert sorted(written) == sorted(ALL_FIGURES)
    for name in ALL_FIGURES:
        _check_png(tmp_path / "pic" / name)
    outs = plot.outputs(ctx)
    assert outs[0] == tmp_path / "pic" / "plot.h5"
    assert sorted(p.name for p in outs[1:]) == sorted(ALL_FIGURES)
    attrs = read_attrs(outs[0])
    assert str(attrs["hotspot.plot.dpi"]) == "60" and attrs["NUM_FIGURE"] == len(ALL_FIGURES)
    with h5py.File(outs[0], "r") as f:
        assert sorted(v.decode() for v in f["figure"][:]) == sorted(ALL_FIGURES)
    assert is_up_to_date("plot", plot, ctx)
    assert "plot: skip" not in capsys.readouterr().out.replace("skip GIS", "")


def test_missing_inputs_are_skipped_with_reason(tmp_path, capsys, make_ctx):
    build_workdir(tmp_path, files={"covariogram.h5"})
    ctx = make_ctx(tmp_path)
    written = plot.run(ctx)
    assert sorted(written) == ["covariogram.png", "velocity_hotspots.png"]
    out = capsys.readouterr().out
    assert "skip label_tskm.png: clusterTSKM.h5 not found (made by step tskm)" in out
    assert "skip hotspot_summary.png: hotspot.h5 not found (made by step dispersion)" in out
    assert "trainLSTM.h5 not found" in out
    assert [p.name for p in plot.outputs(ctx)] == ["plot.h5", "velocity_hotspots.png",
                                                    "covariogram.png"]
    assert "clusterTSKM.h5 not found" in read_attrs(tmp_path / "pic" / "plot.h5")["SKIPPED"]


def test_missing_optional_dataset_and_stale_label_file(tmp_path, capsys, make_ctx):
    build_workdir(tmp_path, files={"clusterTSKM.h5", "hotspot.h5"})
    with h5py.File(tmp_path / "clusterTSKM.h5", "a") as f:      # numCluster given: no scan
        del f["silhouetteK"]
    write_h5(tmp_path / "hotspot.h5", {"pixelLabel": np.ones(5, np.int32), "hotspot": np.ones(5)})
    written = plot.run(make_ctx(tmp_path))
    out = capsys.readouterr().out
    assert "skip silhouette.png: clusterTSKM.h5 has no dataset silhouetteK" in out
    assert "pixelLabel has 5 values" in out and "re-run the step" in out
    assert "label_tskm.png" in written and "label_hotspot.png" not in written


def test_no_hotspot_still_draws_readable_figures(tmp_path, make_ctx):
    build_workdir(tmp_path, files={"hotspot.h5"})
    stack = tmp_path / "hotspotStack.h5"
    n = h5py.File(stack, "r")["velocity"].shape[0]
    write_label_file(tmp_path / "hotspot.h5", np.zeros(n, np.int32), stack, name="hotspot")
    written = plot.run(make_ctx(tmp_path))
    for name in ("hotspot_summary.png", "timeseries_hotspot.png", "label_hotspot.png"):
        assert name in written
        _check_png(tmp_path / "pic" / name)


def test_decimated_raster_matches_label_to_map(tmp_path):
    s = build_workdir(tmp_path, files=set())
    stack = tmp_path / "hotspotStack.h5"
    geom = read_geometry(stack)
    full = label_to_map(s["label"], stack)
    np.testing.assert_array_equal(geom.to_raster(s["label"], fill=-1, dtype=np.int32), full)
    geom.stride = 3
    np.testing.assert_array_equal(geom.to_raster(s["label"], fill=-1, dtype=np.int32),
                                  full[::3, ::3])
    assert geom.extent == pytest.approx((-118.3, -118.26, 34.02, 34.05))


@pytest.mark.parametrize("full_dispersion", [True, False], ids=["dispersion", "sampled"])
def test_hotspot_series_in_mm_strongest_first(tmp_path, full_dispersion):
    build_workdir(tmp_path, files={"hotspot.h5", "dispersion.h5"}, full_dispersion=full_dispersion)
    rows = hotspot_series(PlotData(workdir=tmp_path))
    assert [r[0] for r in rows] == [1, 2]                     # -30 mm/yr before -20 mm/yr
    hid, mean, p10, p90, vel, npx = rows[0]
    expected_end = -0.03 * (len(DATES) - 1) / 24.0 * 1000      # m -> mm
    assert mean[-1] == pytest.approx(expected_end, abs=1.5)
    assert vel == pytest.approx(-30, abs=1) and np.all(p10 <= mean) and np.all(mean <= p90)


def test_projected_grid_is_drawn_from_pixel_lonlat(tmp_path, make_ctx):
    s = _scene(True)
    attrs = dict(s["attrs"], X_FIRST=400000.0, Y_FIRST=3770000.0, X_STEP=100.0, Y_STEP=-100.0,
                 X_UNIT="meters", Y_UNIT="meters", EPSG=32611)
    stack = write_stack(tmp_path / "hotspotStack.h5", s["disp"], DATES, s["lat"], s["lon"],
                        attrs=attrs, velocity=s["velocity"], row=s["row"], col=s["col"])
    geom = read_geometry(stack)
    assert geom.mode == "scatter" and geom.index.size == s["lon"].size
    assert "velocity_hotspots.png" in plot.run(make_ctx(tmp_path))


def test_stack_without_lonlat_skips_maps_only(tmp_path, capsys, make_ctx):
    s = _scene(False)
    nan = np.full(s["lon"].size, np.nan)
    write_stack(tmp_path / "hotspotStack.h5", s["disp"], DATES, nan, nan,
                attrs={"GRID": "no"}, velocity=s["velocity"])
    build_workdir(tmp_path / "other", files={"covariogram.h5"})
    (tmp_path / "other" / "covariogram.h5").rename(tmp_path / "covariogram.h5")
    assert plot.run(make_ctx(tmp_path)) == ["covariogram.png"]
    assert "no pixel has a longitude/latitude" in capsys.readouterr().out


@pytest.mark.parametrize("normalize", ["none", "mean", "zscore"])
def test_centroid_figure_for_each_tskm_normalisation(tmp_path, normalize):
    from hotspot.plots.series import plot_centroids
    build_workdir(tmp_path, files={"clusterTSKM.h5"})
    with h5py.File(tmp_path / "clusterTSKM.h5", "a") as f:
        f.attrs["NORMALIZE"] = normalize
        f.attrs["CENTROID_UNIT"] = "1" if normalize == "zscore" else "m"
    _check_png(plot_centroids(PlotData(workdir=tmp_path, dpi=50), tmp_path / "c.png"))


def test_confusion_scores_from_counts_or_normalised_matrix():
    counts = np.array([[8, 2, 0], [1, 1, 0], [0, 0, 0]])       # class 2 absent from the test
    norm, acc, recall = confusion_scores(counts)
    assert acc == pytest.approx(9 / 12) and recall == pytest.approx((0.8 + 0.5) / 2)
    norm2, acc2, recall2 = confusion_scores(norm, count=counts.sum(1))
    np.testing.assert_allclose(norm2, norm)
    assert acc2 == pytest.approx(acc) and recall2 == pytest.approx(recall)
    assert confusion_scores(norm, attrs={"ACCURACY": 0.5})[1] == 0.5
    assert np.isnan(confusion_scores(norm)[1])                  # normalised, no counts


def test_corrupt_training_file_skips_its_figures(tmp_path, capsys, make_ctx):
    build_workdir(tmp_path, files={"covariogram.h5"})
    (tmp_path / "trainLSTM.h5").write_bytes(b"not hdf5")
    assert sorted(plot.run(make_ctx(tmp_path))) == ["covariogram.png", "velocity_hotspots.png"]
    assert "trainLSTM.h5: cannot be opened as HDF5" in capsys.readouterr().out


def test_exports_written_only_when_enabled(tmp_path, capsys, make_ctx):
    build_workdir(tmp_path, files={"hotspot.h5"})
    plot.run(make_ctx(tmp_path, **{"hotspot.plot.export": "no"}))
    assert not (tmp_path / "hotspot.geojson").exists()
    assert read_attrs(tmp_path / "pic" / "plot.h5")["EXPORT"] == "none"
    ctx = make_ctx(tmp_path, **{"hotspot.plot.export": "yes"})
    plot.run(ctx)
    names = ["hotspot.geojson", "hotspot.kmz", "hotspot.csv", "hotspot.tif"]
    assert read_attrs(tmp_path / "pic" / "plot.h5")["EXPORT"] == ", ".join(names)
    assert [p.name for p in plot.outputs(ctx)[-4:]] == names
    assert all((tmp_path / n).stat().st_size > 0 for n in names)
    assert is_up_to_date("plot", plot, ctx)
    (tmp_path / "hotspot.kmz").unlink()                       # a lost export re-runs the step
    assert not is_up_to_date("plot", plot, ctx)


def test_bad_dpi_names_the_key(tmp_path, make_ctx):
    build_workdir(tmp_path, files=set())
    with pytest.raises(HotspotError, match="hotspot.plot.dpi"):
        plot.run(make_ctx(tmp_path, **{"hotspot.plot.dpi": "abc"}))


@pytest.mark.parametrize("options", [[], ["-c", "tab20", "-v", "-0.5", "19.5", "--cm-lut", "20"]],
                         ids=["default", "tab20"])
def test_mintpy_view_renders_label_files(tmp_path, options):
    """The README's view.py commands work on the label files of a gridded input."""
    from mintpy.cli import view
    build_workdir(tmp_path, files={"hotspot.h5", "clusterDBSCAN.h5"})
    for name, dset in (("hotspot.h5", "hotspot"), ("clusterDBSCAN.h5", "label")):
        out = tmp_path / f"view_{dset}.png"
        view.main([str(tmp_path / name), dset, *options, "--lalo-label", "--noverbose",
                   "--nodisplay", "-o", str(out)])
        _check_png(out)
