"""Scorer: IoU per hotspot, detections, false hotspots, ARI, twins; on real label files."""
import json

import numpy as np
import pytest

from hotspot.cli import score as cli
from hotspot.simulation import format_score, score_files, score_labels
from hotspot.simulation import read_truth, simulate_scene
from hotspot.utils.errors import HotspotError
from hotspot.utils.h5io import write_h5
from hotspot.utils.labels import write_label_file
from hotspot.utils.stack import write_stack


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A small simulated scene and a hotspotStack.h5 of its mask-valid pixels (stack order)."""
    from mintpy.utils import readfile
    from mintpy.utils import utils as ut
    out = tmp_path_factory.mktemp("scene")
    paths = simulate_scene(out, preset="small", seed=0, num_date=8, wabinsar=False,
                           print_msg=False)
    ts, atr = readfile.read(str(paths["timeseries"]))
    mask = readfile.read(str(paths["mask"]))[0]
    lats, lons = ut.get_lat_lon(atr)
    rows, cols = np.nonzero(mask)
    dates = readfile.get_slice_list(str(paths["timeseries"]))
    grid = {k: atr[k] for k in ("LENGTH", "WIDTH", "X_FIRST", "Y_FIRST", "X_STEP", "Y_STEP",
                                "X_UNIT", "Y_UNIT")}
    stack = write_stack(out / "hotspotStack.h5", ts[:, mask].T, [d.split("-")[1] for d in dates],
                        lats[mask], lons[mask], attrs={**grid, "GRID": "yes"}, row=rows, col=cols)
    return {"dir": out, "truth_file": paths["truth"], "stack": stack,
            "truth": read_truth(paths["truth"])}


def _score(labels, truth, **kw):
    return score_labels(labels, truth["pixelTruth"], twin_group=truth["twinGroup"],
                        behaviour=truth["behaviour"], **kw)


def test_perfect_labels(scene):
    truth = scene["truth"]
    s = _score(truth["pixelTruth"].copy(), truth)
    assert s["num_detected"] == s["num_hotspot"] == len(truth["hotspotId"])
    assert s["missed"] == [] and s["num_false"] == 0
    assert s["ari"] == pytest.approx(1.0) and s["mean_iou"] == pytest.approx(1.0)
    assert all(h["best_iou"] == 1.0 and h["precision"] == 1.0 for h in s["hotspots"])
    assert len(s["twins"]) == 2 and s["twins_separated"]
    json.dumps(s)                                        # serialisable as is


def test_relabelled_clusters_score_the_same(scene):
    truth = scene["truth"]
    perm = np.array([0, 17, 5, 9, 300, 2, 41])
    s = _score(perm[truth["pixelTruth"]], truth)
    assert s["num_detected"] == s["num_hotspot"] and s["ari"] == pytest.approx(1.0)
    assert s["hotspots"][0]["cluster"] == 17


def test_empty_labels_miss_everything(scene):
    truth = scene["truth"]
    for fill in (0, -1):
        s = _score(np.full(truth["pixelTruth"].size, fill), truth)
        assert s["num_detected"] == 0 and s["num_missed"] == s["num_hotspot"]
        assert s["num_false"] == 0 and s["num_cluster"] == 0
        assert all(h["best_iou"] == 0 and h["cluster"] == 0 for h in s["hotspots"])
        assert s["ari"] == pytest.approx(0.0, abs=1e-9)
        assert s["twins_separated"] is False


def test_shuffled_labels_miss_and_are_false(scene):
    truth = scene["truth"]
    shuffled = np.random.default_rng(0).permutation(truth["pixelTruth"])
    s = _score(shuffled, truth)
    assert s["num_detected"] == 0 and s["num_false"] == s["num_hotspot"]
    assert abs(s["ari"]) < 0.05


def test_split_cluster_lowers_iou(scene):
    truth = scene["truth"]
    labels = truth["pixelTruth"].copy()
    idx = np.flatnonzero(labels == 1)
    labels[idx[: idx.size * 2 // 3]] = 99                # 2/3 in another cluster
    s = _score(labels, truth)
    h1 = s["hotspots"][0]
    assert h1["best_iou"] == pytest.approx(idx[: idx.size * 2 // 3].size / idx.size)
    assert h1["cluster"] == 99 and h1["detected"] and h1["precision"] == 1.0
    assert s["false_clusters"] == [1]                    # the remaining third
    thirds = np.array_split(idx, 3)
    for piece, cid in zip(thirds, (97, 98, 99)):
        labels[piece] = cid                              # three pieces of IoU ~1/3
    s = _score(labels, truth)
    assert not s["hotspots"][0]["detected"] and 1 in s["missed"]
    assert s["hotspots"][0]["best_iou"] < 0.4
    assert s["ari"] < 1


def test_merged_twins_not_separated(scene):
    truth = scene["truth"]
    labels = truth["pixelTruth"].copy()
    twin1 = [int(h) for h, g in zip(truth["hotspotId"], truth["twinGroup"]) if g == 1]
    labels[labels == twin1[1]] = twin1[0]
    s = _score(labels, truth)
    tw = [t for t in s["twins"] if t["group"] == 1][0]
    assert tw["clusters"][0] == tw["clusters"][1] and not tw["separated"]
    assert s["twins_separated"] is False


def test_false_hotspots_and_ignore_options(scene):
    truth = scene["truth"]
    labels = truth["pixelTruth"].copy()
    background = np.flatnonzero(truth["pixelTruth"] == 0)
    labels[background] = 50                              # two huge background clusters
    labels[background[::2]] = 51
    labels[background[:12]] = 60                         # a small false hotspot
    s = _score(labels, truth)
    assert sorted(s["false_clusters"]) == [50, 51, 60]
    assert s["num_detected"] == s["num_hotspot"]
    s_big = _score(labels, truth, ignore_larger_than=1000)
    assert s_big["ignored_clusters"] == [50, 51] and s_big["false_clusters"] == [60]
    assert s_big["ari"] > s["ari"]
    s_bg = _score(labels, truth, ignore_background=0.05)
    assert s_bg["ignored_clusters"] == [50, 51] and s_bg["false_clusters"] == [60]
    assert _score(labels, truth, ignore_background=0.6)["ignored_clusters"] == []


def test_masked_truth_pixels_ignored_and_size_checked():
    truth = np.array([-1, -1, 0, 0, 1, 1, 1, 2, 2])
    label = np.array([5, 5, 0, 0, 3, 3, 3, 4, 4])
    s = score_labels(label, truth)
    assert s["num_pixel"] == 7 and s["num_detected"] == 2 and s["num_false"] == 0
    with pytest.raises(HotspotError, match="same pixels"):
        score_labels(label[:-1], truth)


def test_score_files_with_label_file(scene, tmp_path):
    truth = scene["truth"]
    labels = truth["pixelTruth"].copy()
    labels[labels == 3] = 0                              # one hotspot missed
    label_file = write_label_file(tmp_path / "hotspot.h5", labels, scene["stack"], name="hotspot")
    s = score_files(label_file, scene["truth_file"])
    assert s["compared"] == "pixels" and s["missed"] == [3]
    assert s["num_detected"] == s["num_hotspot"] - 1
    text = format_score(s)
    assert "NO" in text and "ARI" in text and "twins 2" in text and "NOT separated" in text


def test_score_files_falls_back_to_map(scene, tmp_path):
    raster = scene["truth"]["hotspot"]
    path = write_h5(tmp_path / "other.h5", {"label": raster, "pixelLabel": np.zeros(5, np.int32)})
    s = score_files(path, scene["truth_file"])
    assert s["compared"] == "map" and s["num_detected"] == s["num_hotspot"]
    bad = write_h5(tmp_path / "bad.h5", {"pixelLabel": np.zeros(5, np.int32)})
    with pytest.raises(HotspotError, match="pixelLabel"):
        score_files(bad, scene["truth_file"])


def test_cli_prints_table_and_writes_json(scene, tmp_path, capsys):
    label_file = write_label_file(tmp_path / "clusterDBSCAN.h5", scene["truth"]["pixelTruth"],
                                  scene["stack"], name="clusterDBSCAN")
    out = tmp_path / "score.json"
    cli.main([str(label_file), str(scene["truth_file"]), "--json", str(out),
              "--ignore-larger-than", "100000"])
    text = capsys.readouterr().out
    assert "best IoU" in text and "detected 6/6" in text
    data = json.loads(out.read_text())
    assert data["num_detected"] == 6 and data["options"]["ignore_larger_than"] == 100000
    with pytest.raises(SystemExit) as exc:
        cli.main([str(tmp_path / "missing.h5"), str(scene["truth_file"])])
    assert exc.value.code == 1
    assert "file not found" in capsys.readouterr().err
