"""dbscan step: spatial split of temporal clusters, eps / minSamples handling, big-data path."""
import math

import h5py
import numpy as np
import pytest
from sklearn.cluster import DBSCAN
from sklearn.metrics import adjusted_rand_score

from hotspot.steps import dbscan as db
from hotspot.utils.errors import HotspotError
from hotspot.utils.h5io import write_h5
from hotspot.utils.labels import read_pixel_label, write_label_file
from hotspot.utils.stack import write_stack

LAT0, LON0 = 34.0, -118.0
DX_KM = 0.1          # 100 m pixels
KM_PER_DEG = 111.195


def grid_stack(path, ny, nx, num_epoch=4):
    row, col = np.mgrid[:ny, :nx]
    y_step = -DX_KM / KM_PER_DEG
    x_step = DX_KM / (KM_PER_DEG * math.cos(math.radians(LAT0)))
    attrs = {"GRID": "yes", "LENGTH": ny, "WIDTH": nx, "X_FIRST": LON0, "Y_FIRST": LAT0,
             "X_STEP": x_step, "Y_STEP": y_step, "X_UNIT": "degrees", "Y_UNIT": "degrees"}
    disp = np.zeros((ny * nx, num_epoch), dtype=np.float32)
    dates = [f"2020010{k + 1}" for k in range(num_epoch)]
    write_stack(path, disp, dates, LAT0 + row.ravel() * y_step, LON0 + col.ravel() * x_step,
                attrs=attrs, row=row.ravel(), col=col.ravel())
    return row.ravel() * DX_KM, col.ravel() * DX_KM        # km from the corner (south, east)


def twins_scene(workdir, ny=60, nx=120):
    """Temporal cluster 1: two discs 6 km apart; 2: the rest; 3: empty (all noise)."""
    r_km, c_km = grid_stack(workdir / "hotspotStack.h5", ny, nx)
    temporal = np.full(ny * nx, 2, dtype=np.int32)
    for cy, cx in ((3.0, 3.0), (3.0, 9.0)):
        temporal[np.hypot(r_km - cy, c_km - cx) < 1.0] = 1
    temporal[:nx] = -1                      # a first row without data
    write_label_file(workdir / "clusterTSKM.h5", temporal, workdir / "hotspotStack.h5",
                     attrs={"NUM_CLUSTER": 3})
    return temporal


CTX_DEFAULTS = {"hotspot.dbscan.eps": "0.35"}


def read_table(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][:] for k in f if f[k].ndim == 1}, dict(f.attrs)


def test_twins_split_and_all_noise_cluster(tmp_path, make_ctx):
    temporal = twins_scene(tmp_path)
    db.run(make_ctx(tmp_path))
    out = tmp_path / "clusterDBSCAN.h5"
    labels = read_pixel_label(out)
    table, attrs = read_table(out)
    # background (parent 2) is one connected cluster; the twins are two clusters of parent 1
    assert table["parentCluster"].tolist() == [1, 1, 2]
    assert labels.max() == 3
    assert set(np.unique(labels[temporal == 1])) == {1, 2}
    assert (labels[temporal == -1] == -1).all()
    assert (labels[temporal == 2] == 3).all()
    np.testing.assert_array_equal(table["clusterSize"], np.bincount(labels[labels > 0])[1:])
    np.testing.assert_allclose(table["eps"], 0.35)
    assert table["temporalNumCluster"].tolist() == [2, 1, 0]      # temporal cluster 3 is empty
    assert attrs["EPS_SOURCE"] == "template" and attrs["MIN_SAMPLES_SOURCE"] == "auto"
    assert attrs["hotspot.dbscan.eps"] == "0.35" and attrs["NUM_CLUSTER"] == 3
    with h5py.File(out, "r") as f:
        assert f["label"].shape == (60, 120)                      # map on the source grid


def test_auto_min_samples_scales_with_density():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 10, 20000), rng.uniform(0, 10, 20000)      # 200 points / km^2
    expected = 200 * math.pi * 0.5 ** 2
    assert db.expected_neighbours(x, y, 0.5) == pytest.approx(expected, rel=0.1)
    assert db.auto_min_samples(x, y, 0.5) == pytest.approx(0.5 * expected, rel=0.1)
    assert db.auto_min_samples(x[:2000], y[:2000], 0.5) < db.auto_min_samples(x, y, 0.5)
    assert db.auto_min_samples(x[:10], y[:10], 0.5) == db.MIN_SAMPLES_FLOOR


def test_all_noise_when_min_samples_too_large(tmp_path, make_ctx):
    twins_scene(tmp_path)
    db.run(make_ctx(tmp_path, **{"hotspot.dbscan.minSamples": "100000"}))
    labels = read_pixel_label(tmp_path / "clusterDBSCAN.h5")
    table, attrs = read_table(tmp_path / "clusterDBSCAN.h5")
    assert labels.max() == 0 and (labels == -1).sum() == 120
    assert table["parentCluster"].size == 0 and attrs["NUM_CLUSTER"] == 0


def test_eps_per_cluster_and_auto_from_covariogram(tmp_path, make_ctx):
    temporal = twins_scene(tmp_path)
    # eps 7 km joins the twins (6 km apart, 1 km radius); 0.35 km for the others
    db.run(make_ctx(tmp_path, **{"hotspot.dbscan.eps": "7, 0.35, 0.35",
                                "hotspot.dbscan.minSamples": "5"}))
    labels = read_pixel_label(tmp_path / "clusterDBSCAN.h5")
    table, _ = read_table(tmp_path / "clusterDBSCAN.h5")
    assert set(np.unique(labels[temporal == 1])) == {1}
    np.testing.assert_allclose(table["eps"], [7, 0.35])
    np.testing.assert_array_equal(table["minSamples"], [5, 5])

    write_h5(tmp_path / "covariogram.h5", {"distance": np.arange(3.0)},
             {"CORRELATION_LENGTH_KM": 0.35, "FIT_STATUS": "ok"})
    ctx = make_ctx(tmp_path, **{"hotspot.dbscan.eps": "auto"})
    assert tmp_path / "covariogram.h5" in db.inputs(ctx)
    db.run(ctx)
    table, attrs = read_table(tmp_path / "clusterDBSCAN.h5")
    assert "covariogram" in attrs["EPS_SOURCE"]
    assert table["parentCluster"].tolist() == [1, 1, 2]


def test_auto_eps_capped_by_pixel_spacing_finds_small_patches(tmp_path, make_ctx):
    # a correlation length of 5 km (the atmosphere) against patches of ~50 pixels: eps
    # auto is max(EPS_SPACING pixel spacings, EPS_MIN_KM), so each patch is a core region of its own and the
    # scattered pixels of the same temporal cluster (1 in 8) stay noise
    ny, nx = 60, 120
    r_km, c_km = grid_stack(tmp_path / "hotspotStack.h5", ny, nx)
    rng = np.random.default_rng(0)
    temporal = rng.integers(2, 10, ny * nx).astype(np.int32)
    centres = ((2.0, 2.0), (2.0, 5.0), (4.0, 9.0))
    for cy, cx in centres:
        temporal[np.hypot(r_km - cy, c_km - cx) < 0.4] = 1
    write_label_file(tmp_path / "clusterTSKM.h5", temporal, tmp_path / "hotspotStack.h5",
                     attrs={"NUM_CLUSTER": 9})
    write_h5(tmp_path / "covariogram.h5", {"distance": np.arange(3.0)},
             {"CORRELATION_LENGTH_KM": 5.0, "FIT_STATUS": "ok"})
    db.run(make_ctx(tmp_path, **{"hotspot.dbscan.eps": "auto"}))
    labels = read_pixel_label(tmp_path / "clusterDBSCAN.h5")
    table, attrs = read_table(tmp_path / "clusterDBSCAN.h5")
    assert db.pixel_spacing(c_km, r_km) == pytest.approx(DX_KM, rel=0.01)
    # 3.5 spacings of 100 m is below the floor of EPS_MIN_KM
    assert db.EPS_SPACING * DX_KM < db.EPS_MIN_KM
    np.testing.assert_allclose(table["temporalEps"], db.EPS_MIN_KM, rtol=0.01)
    assert "spacing" in attrs["EPS_SOURCE"]
    patch_ids = []
    for cy, cx in centres:
        inside = labels[np.hypot(r_km - cy, c_km - cx) < 0.4]
        assert np.unique(inside).size == 1 and inside[0] > 0
        patch_ids.append(inside[0])
    assert len(set(patch_ids)) == 3 and table["parentCluster"].tolist()[:3] == [1, 1, 1]
    assert np.sum(table["parentCluster"] == 1) == 3       # no cluster of scattered pixels


def test_auto_eps_without_covariogram_is_clear(tmp_path, make_ctx):
    twins_scene(tmp_path)
    with pytest.raises(HotspotError, match="covariogram"):
        db.run(make_ctx(tmp_path, **{"hotspot.dbscan.eps": "auto"}))


@pytest.mark.parametrize("key, value, match", [
    ("hotspot.dbscan.eps", "1, 2", "expected 1 or 3"),
    ("hotspot.dbscan.eps", "1, -2, 3", "> 0"),
    ("hotspot.dbscan.minSamples", "5, 5", "expected 1 or 3"),
    ("hotspot.dbscan.minSamples", "2.5", "integers"),
])
def test_bad_lists_name_the_key(tmp_path, key, value, match, make_ctx):
    twins_scene(tmp_path)
    with pytest.raises(HotspotError, match=key.replace(".", r"\.")) as err:
        db.run(make_ctx(tmp_path, **{key: value}))
    assert match in str(err.value)


def test_missing_or_mismatched_tskm_file(tmp_path, make_ctx):
    grid_stack(tmp_path / "hotspotStack.h5", 10, 10)
    with pytest.raises(HotspotError, match="tskm"):
        db.run(make_ctx(tmp_path))
    write_h5(tmp_path / "clusterTSKM.h5", {"pixelLabel": np.ones(7, dtype=np.int32)})
    with pytest.raises(HotspotError, match="7 values"):
        db.run(make_ctx(tmp_path))


def clustered_points(n, seed):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 30, (8, 2))
    blob = np.concatenate([rng.normal(c, rng.uniform(0.3, 1.2), (n // 10, 2)) for c in centres])
    noise = rng.uniform(0, 30, (n - blob.shape[0], 2))
    pts = np.concatenate([blob, noise])
    return pts[:, 0], pts[:, 1]


def test_cell_dbscan_agrees_with_exact():
    x, y = clustered_points(40_000, seed=1)
    eps = 0.4
    ms = db.auto_min_samples(x, y, eps)
    exact = DBSCAN(eps=eps, min_samples=ms).fit(np.column_stack([x, y])).labels_
    cell, how = db.dbscan_points(x, y, eps, ms, method="cell")
    assert how.startswith("cell")
    assert len(set(exact)) > 5
    assert adjusted_rand_score(exact, cell) > 0.95
    # auto picks exact for this size and gives sklearn's labels
    auto, how = db.dbscan_points(x, y, eps, ms)
    assert how == "exact" and np.array_equal(auto, exact)


def test_cell_dbscan_coarsens_under_small_memory_and_auto_switches():
    x, y = clustered_points(20_000, seed=2)
    labels, how = db.dbscan_points(x, y, 0.4, 20, max_memory=1e-4, method="auto")
    assert how.startswith("cell") and "0.04 km" not in how      # coarser than eps / 10
    assert labels.max() >= 0


def test_renumbering_is_deterministic_by_size():
    sub = np.array([4, 4, -1, 0, 0, 0, 7, 7, 4])
    new, sizes = db._renumber(sub, first_id=5)
    # sizes: label 0 -> 3, 4 -> 3 (first seen earlier), 7 -> 2
    assert new.tolist() == [5, 5, 0, 6, 6, 6, 7, 7, 5]
    assert sizes.tolist() == [3, 3, 2]


def test_outputs(tmp_path, make_ctx):
    ctx = make_ctx(tmp_path)
    assert db.outputs(ctx) == [tmp_path / "clusterDBSCAN.h5"]
    assert db.inputs(ctx) == [tmp_path / "hotspotStack.h5", tmp_path / "clusterTSKM.h5"]
