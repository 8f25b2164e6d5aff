"""End to end through hotspotApp.py on simulated MintPy / WabInSAR scenes and the EGMS subset."""
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from hotspot.cli import hotspotApp as cli
from hotspot.simulation import simulate_scene

DATA = Path(__file__).parent / "data"
# Small but real settings: every step runs its full code path, in seconds.
FAST = """hotspot.randomSeed = 0
hotspot.covariogram.numPair = 200000
hotspot.tskm.numClusterRange = 2-4
hotspot.tskm.numSample = 400
hotspot.tskm.maxIter = 5
hotspot.train_lstm.numSample = 1500
hotspot.train_lstm.epochs = 2
hotspot.train_lstm.split = random
hotspot.plot.dpi = 50
"""


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("scene")
    simulate_scene(root, preset="small", difficulty="easy", seed=3, print_msg=False)
    return root


def _run(args):
    cli.main([str(a) for a in args])


def test_load_data_mintpy_and_wabinsar_agree(scene, tmp_path):
    (scene / "load.cfg").write_text("hotspot.randomSeed = 0\n")
    _run([scene / "load.cfg", "--dostep", "load_data"])
    with h5py.File(scene / "maskTempCoh.h5", "r") as f:
        mask = f["mask"][:].astype(bool)
    with h5py.File(scene / "timeseries.h5", "r") as f:
        ts = f["timeseries"][:]
    with h5py.File(scene / "hotspotStack.h5", "r") as f:
        disp = f["displacement"][:]
        rows, cols = f["row"][:], f["col"][:]
    assert disp.shape[0] == mask.sum()
    expected = ts[:, rows, cols].T - ts[0, rows, cols][:, None]
    np.testing.assert_allclose(disp, expected, atol=1e-6)

    wab = tmp_path / "wab"
    shutil.copytree(scene / "wabinsar", wab)
    (wab / "site.cfg").write_text("hotspot.load.processor = wabinsar\n")
    _run([wab / "site.cfg", "--dostep", "load_data"])
    with h5py.File(wab / "hotspotStack.h5", "r") as f:
        assert f.attrs["GRID"] == "no"
        np.testing.assert_allclose(f["displacement"][:], disp, atol=2e-6)


@pytest.mark.slow
def test_full_pipeline_mintpy(scene, capsys):
    work = scene / "full"
    work.mkdir()
    for name in ("timeseries.h5", "velocity.h5", "temporalCoherence.h5", "maskTempCoh.h5",
                 "hotspotTruth.h5"):
        shutil.copy(scene / name, work / name)
    shutil.copytree(scene / "inputs", work / "inputs")
    cfg = work / "site.cfg"
    cfg.write_text(FAST)
    _run([cfg])
    for name in ("hotspotStack.h5", "covariogram.h5", "clusterTSKM.h5", "clusterDBSCAN.h5",
                 "trainLSTM.h5", "model/lstm.keras", "model/lstmPerceptron.keras",
                 "clusterLSTM.h5", "clusterLSTMP.h5", "dispersion.h5", "hotspot.h5",
                 "hotspot.geojson", "hotspot.kmz", "hotspot.csv", "pic/hotspot_summary.png"):
        assert (work / name).is_file() and (work / name).stat().st_size > 0, name
    # label rasters live on the MintPy grid
    with h5py.File(work / "hotspot.h5", "r") as f, h5py.File(work / "velocity.h5", "r") as v:
        assert f["hotspot"].shape == v["velocity"].shape
        assert int(f.attrs["NO_DATA_VALUE"]) == -1
    from mintpy.cli import view
    out = work / "view_hotspot.png"
    view.main([str(work / "hotspot.h5"), "hotspot", "--nodisplay", "--noverbose", "-o", str(out)])
    assert out.stat().st_size > 0
    # a second run is skipped step by step (update mode)
    capsys.readouterr()
    _run([cfg])
    assert capsys.readouterr().out.count("skip step") == 8


def test_egms_subset_clusters(tmp_path):
    shutil.copy(DATA / "egms_subset.csv", tmp_path / "EGMS_subset.csv")
    cfg = tmp_path / "site.cfg"
    cfg.write_text(FAST + "hotspot.covariogram.maxDistance = 5\nhotspot.covariogram.binSize = 0.25\n"
                   "hotspot.dbscan.eps = 0.5\n")
    _run([cfg, "--start", "load_data", "--end", "dbscan"])
    with h5py.File(tmp_path / "clusterDBSCAN.h5", "r") as f:
        labels = f["pixelLabel"][:]
        assert f["label"].shape == labels.shape == (200,)
    assert labels.min() >= 0


def test_bad_input_leaves_no_output(tmp_path, capsys):
    (tmp_path / "timeseries.h5").write_bytes(b"not an hdf5 file")
    with pytest.raises(SystemExit) as exc:
        _run(["--dir", tmp_path, "--dostep", "load_data"])
    assert exc.value.code == 1
    assert "timeseries.h5" in capsys.readouterr().err
    assert not (tmp_path / "hotspotStack.h5").exists()
