"""train_lstm step and the model / data-preparation helpers (tiny real keras models)."""
import json
import os

import h5py
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from hotspot.hotspotApp import StepContext  # noqa: E402
from hotspot.steps import lstm_bundle as lb  # noqa: E402
from hotspot.steps import lstm_models as lm  # noqa: E402
from hotspot.steps import lstm_spatial as lsp  # noqa: E402
from hotspot.steps import train_lstm, train_lstm_sample  # noqa: E402
from hotspot.utils.errors import HotspotError  # noqa: E402
from hotspot.utils.h5io import read_attrs, write_h5  # noqa: E402
from hotspot.utils.labels import write_label_file  # noqa: E402
from hotspot.utils.stack import write_stack  # noqa: E402
from hotspot.utils.template import config_from_dict  # noqa: E402

LENGTH, WIDTH = 20, 30


def tiny_dates(num_date=24, step_days=12, start="2018-01-01"):
    return [str(np.datetime64(start) + int(d)).replace("-", "")
            for d in np.arange(num_date) * step_days]


def make_tiny_scene(workdir, num_date=24, seed=0, dates=None, covariogram=True):
    """A 20 x 30 grid: background (1), twin subsidence bowls (2, 3: same tskm cluster),
    uplift (4), a few noise pixels (0) and unlabelled pixels (-1)."""
    rng = np.random.default_rng(seed)
    dates = dates or tiny_dates(num_date)
    t = np.arange(len(dates)) / len(dates) * 3.0
    rr, cc = np.mgrid[0:LENGTH, 0:WIDTH]
    rr, cc = rr.ravel(), cc.ravel()
    label = np.ones(rr.size, dtype=np.int32)
    tskm = np.ones(rr.size, dtype=np.int32)
    twin_a = (rr < 6) & (cc < 7)
    twin_b = (rr >= 14) & (cc >= 23)
    uplift = (rr >= 7) & (rr < 13) & (cc >= 12) & (cc < 18)
    label[twin_a], label[twin_b], label[uplift] = 2, 3, 4
    tskm[twin_a | twin_b], tskm[uplift] = 2, 3
    noise = rng.random(rr.size) < 0.03
    label[noise & (label == 1)] = 0
    label[rng.random(rr.size) < 0.02] = -1
    signal = {1: 0 * t, 2: -0.05 * t, 3: -0.05 * t, 4: 0.03 * t - 0.01 * np.sin(2 * np.pi * t)}
    disp = np.stack([signal[k] for k in tskm]) + rng.normal(0, 0.002, (rr.size, len(dates)))
    disp -= disp[:, :1]
    lon = -118.0 + 0.01 * cc
    lat = 34.0 - 0.01 * rr
    attrs = {"GRID": "yes", "LENGTH": LENGTH, "WIDTH": WIDTH, "X_FIRST": -118.0, "Y_FIRST": 34.0,
             "X_STEP": 0.01, "Y_STEP": -0.01, "X_UNIT": "degrees", "Y_UNIT": "degrees"}
    stack = write_stack(workdir / "hotspotStack.h5", disp, dates, lat, lon, attrs=attrs,
                        velocity=np.polyfit(t, disp.T, 1)[0], velocityStd=np.full(rr.size, 1e-3),
                        coherence=rng.uniform(0.6, 1.0, rr.size), row=rr, col=cc)
    write_label_file(workdir / "clusterDBSCAN.h5", label, stack)
    write_label_file(workdir / "clusterTSKM.h5", tskm, stack)
    if covariogram:
        write_h5(workdir / "covariogram.h5", {"distance": np.arange(3.0)},
                 {"CORRELATION_LENGTH_KM": 4.0})
    return stack, label, tskm


def tiny_config(**extra):
    values = {"hotspot.train_lstm.numSample": 800, "hotspot.train_lstm.epochs": 4,
              "hotspot.train_lstm.batchSize": 64, "hotspot.train_lstm.learningRate": 0.01,
              "hotspot.train_lstm.patience": 2, "hotspot.train_lstm.split": "both",
              "mintpy.compute.maxMemory": 0.01}
    values.update(extra)
    return config_from_dict(values)


def trained_workdir(path, **extra):
    make_tiny_scene(path)
    ctx = StepContext(workdir=path, config=tiny_config(**extra))
    train_lstm.run(ctx)
    return ctx


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_workdir(tmp_path_factory.mktemp("train"))


# ----------------------------------------------------------------- models

@pytest.mark.parametrize("variant", ["fast", "paper"])
def test_architectures_build_with_the_right_shapes(variant):
    t = 40
    m = lm.build_lstm(t, 5, variant)
    assert tuple(m.input_shape) == (None, t, 1)
    assert tuple(m.output_shape) == (None, 5)
    assert m.get_layer("probability").activation.__name__ == "softmax"
    units = lm.VARIANTS[variant]["units"]
    assert (m.get_layer("lstm1").units, m.get_layer("lstm2").units) == units
    p = lm.build_lstm_perceptron(t, 9, 5, variant)
    assert [tuple(s) for s in p.input_shape] == [(None, t, 1), (None, 9)]
    assert tuple(p.output_shape) == (None, 5)
    assert p.get_layer("bilstm1").forward_layer.units == units[0]
    assert p.get_layer("bilstm2").forward_layer.units == units[1]
    assert p.get_layer("head").units == 128
    x = np.zeros((3, t, 1), np.float32)
    probs = np.asarray(p.predict([x, np.zeros((3, 9), np.float32)], verbose=0))
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_paper_variant_is_table1():
    m = lm.build_lstm(247, 4, "paper")
    kinds = [type(layer).__name__ for layer in m.layers]
    assert kinds == ["InputLayer", "LSTM", "Dropout", "LSTM", "Dropout", "Dense"]
    assert [layer.rate for layer in m.layers if type(layer).__name__ == "Dropout"] == [0.2, 0.2]


def test_time_average_and_steps():
    x = np.arange(10, dtype=np.float32)[None].repeat(2, 0)
    out = lm.time_average(x, 4)
    assert out.shape == (2, lm.num_steps(10, 4)) == (2, 3)
    assert np.allclose(out[0], [1.5, 5.5, 8.5])
    assert lm.time_average(x, 1) is not None and lm.time_average(x, 1).shape == (2, 10)


def test_interpolation_to_model_epochs():
    src = tiny_dates(30, 6)
    dst = tiny_dates(20, 8, "2018-01-05")
    ts = lm.decimal_years(src)
    td = lm.decimal_years(dst)
    disp = np.stack([2 * (ts - ts[0]), -(ts - ts[0])])
    out = lm.interpolate_epochs(disp, lm.interpolation_weights(src, dst))
    assert out.shape == (2, 20)
    assert np.allclose(out[0], 2 * (td - td[0]), atol=1e-5)      # linear, re-referenced
    with pytest.raises(HotspotError, match="do not cover the model's epochs"):
        lm.interpolation_weights(src, tiny_dates(20, 30))


def test_preprocessor_scaling_and_nan():
    static = np.array([[1.0, np.nan], [3.0, np.nan], [5.0, np.nan]])
    prep = lm.Preprocessor.fit(tiny_dates(8), 2, np.ones((3, 8)) * [0, 1, 2, 3, 4, 5, 6, 7],
                               static, 0.0, 0.0)
    scaled = prep.static(static)
    assert np.allclose(scaled[:, 0].mean(), 0) and np.allclose(scaled[:, 0].std(), 1)
    assert np.all(scaled[:, 1] == 0)              # unknown feature -> the mean
    assert prep.series(np.full((2, 8), np.nan)).shape == (2, 4, 1)
    assert np.all(prep.series(np.full((2, 8), np.nan)) == 0)


# ----------------------------------------------------------------- sampling, splits, context

def test_sample_is_balanced_when_classes_are_unequal():
    labels = np.r_[np.full(5000, 1), np.full(50, 2), np.full(300, 0), np.full(100, -1)]
    idx, balanced = train_lstm.sample_pixels(labels, 600, np.random.default_rng(0))
    assert balanced and idx.size == 600 and np.all(labels[idx] >= 0)
    counts = np.bincount(labels[idx])
    assert counts[2] == 50 and counts[0] == 275 and counts[1] == 275
    again, _ = train_lstm.sample_pixels(labels, 600, np.random.default_rng(0))
    assert np.array_equal(idx, again)
    even = np.r_[np.full(100, 1), np.full(80, 2)]
    idx, balanced = train_lstm.sample_pixels(even, 90, np.random.default_rng(0))
    assert not balanced and idx.size == 90


def test_block_split_holds_out_whole_tiles():
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 40, 4000), rng.uniform(0, 30, 4000)
    test = train_lstm.block_split(x, y, 5.0, 0.5, rng)
    tile = np.floor(x / 5).astype(int) * 100 + np.floor(y / 5).astype(int)
    for t in np.unique(tile):
        assert len(np.unique(test[tile == t])) == 1
    assert 0.35 < test.mean() < 0.65
    with pytest.raises(HotspotError, match="blockSize"):
        train_lstm.block_split(x, y, 1000.0, 0.5, rng)


def test_neighbour_votes_leave_one_out():
    ref = lsp.Reference(x=[0, 1, 2, 10, 11], y=[0, 0, 0, 0, 0], cls=[1, 1, 2, 3, 3])
    votes = lsp.neighbour_votes(ref, np.array([0.1, 10.5]), np.zeros(2), 4, 2)
    assert np.allclose(votes, [[0, 1, 0, 0], [0, 0, 0, 1]])
    loo = lsp.neighbour_votes(ref, ref.x, ref.y, 4, 1, self_index=np.arange(5))
    assert np.allclose(loo.argmax(axis=1), [1, 1, 1, 3, 3])   # pixel 2 sees its neighbour 1


def test_twin_post_step_picks_the_nearest_twin():
    ref = lsp.Reference(x=[0, 0, 50, 50], y=[0, 1, 0, 1], cls=[1, 1, 2, 2])
    resolver = lsp.TwinResolver(group=[-1, 0, 0])
    prob = np.array([[0.2, 0.45, 0.35], [0.2, 0.45, 0.35], [0.9, 0.05, 0.05]])
    idx, p = resolver.resolve(prob, np.array([49.0, 1.0, 0.0]), np.zeros(3), ref)
    assert idx.tolist() == [2, 1, 0]
    assert np.allclose(p, [0.8, 0.8, 0.9])
    assert lsp.twin_groups([0, 5, 6, 7], {5: 1, 6: 1, 7: 2}) == [-1, 0, 0, -1]


# ----------------------------------------------------------------- training

def test_training_lowers_the_loss(tmp_path):
    stack, label, tskm = make_tiny_scene(tmp_path)
    settings = train_lstm.TrainSettings(models=("lstm",), num_sample=600, epochs=6, batch_size=64,
                                        learning_rate=0.01, patience=0, splits=("random",),
                                        verbose=0)
    res = train_lstm.train(stack, label, settings, tskm=tskm, log=lambda m: None)
    scores = res["models"]["lstm"]["splits"]["random"]
    loss = scores["history"]["loss"]
    assert loss.size == 6 and loss[-1] < 0.7 * loss[0]
    assert scores["accuracy"] > 0.6


def test_saved_model_reloads_and_predicts_identically(tmp_path, trained):
    for name in lm.MODEL_NAMES:
        path = trained.path(f"model/{name}.keras")
        bundle = lb.load_bundle(path)
        meta = json.loads(lb.sidecar_path(path).read_text())
        assert meta["class_id"] == [0, 1, 2, 3, 4] and meta["variant"] == "fast"
        assert meta["preprocessing"]["time_step"] == 4 and len(meta["preprocessing"]["dates"]) == 24
        from hotspot.utils.stack import read_pixels, read_rows
        rows = np.arange(0, 600, 7)
        pix = read_pixels(trained.path("hotspotStack.h5"), list(lm.STACK_STATIC)
                          + ["longitude", "latitude"])
        pix = {k: v[rows] for k, v in pix.items()}
        static = lm.static_features(pix, bundle.prep.positions(pix["longitude"], pix["latitude"]))
        disp = read_rows(trained.path("hotspotStack.h5"), rows)
        first = bundle.predict_proba(disp, static)
        again = lb.load_bundle(path).predict_proba(disp, static)
        assert np.array_equal(first, again)
        assert np.allclose(first.sum(axis=1), 1, atol=1e-5)


def test_sidecar_must_match_model(tmp_path, trained):
    src = trained.path("model/lstm.keras")
    dst = tmp_path / "lstm.keras"
    dst.write_bytes(src.read_bytes() + b"\0")
    (tmp_path / "lstm.json").write_text(lb.sidecar_path(src).read_text())
    with pytest.raises(HotspotError, match="does not match"):
        lb.load_bundle(dst)
    (tmp_path / "lstm.json").unlink()
    with pytest.raises(HotspotError, match="lstm.json"):
        lb.load_bundle(dst)


def test_step_writes_scores_for_both_splits(trained):
    attrs = read_attrs(trained.path("trainLSTM.h5"))
    for key, value in trained.step_attrs("train_lstm").items():
        assert str(attrs[key]) == str(value)
    assert attrs["VARIANT"] == "fast" and attrs["BLOCK_SIZE_KM"] == 8.0
    assert "CORRELATION_LENGTH_KM" in attrs["BLOCK_SIZE_SOURCE"]
    with h5py.File(trained.path("trainLSTM.h5"), "r") as f:
        assert f["sample/testRandom"].shape == f["sample/testBlock"].shape == f["sample/index"].shape
        for name in lm.MODEL_NAMES:
            g = f[name]
            assert g["classId"][:].tolist() == [0, 1, 2, 3, 4]
            assert g["twinGroup"][:].tolist() == [-1, -1, 0, 0, -1]
            for split in ("random", "block"):
                conf = g[f"{split}/confusion"][:]
                assert conf.shape == (5, 5)
                filled = np.isfinite(conf).all(axis=1)
                assert np.allclose(conf[filled].sum(axis=1), 1)
                assert g[f"{split}/recall"].shape == (5,)
                assert g[f"{split}/history/loss"].size == g[split].attrs["EPOCHS_RUN"] >= 1
                assert 0 <= g[split].attrs["ACCURACY"] <= 1
            assert g.attrs["ACCURACY_RANDOM"] > 0.5
            assert g.attrs["TRAIN_TIME_S"] > 0
            assert g.attrs["SAVED_SPLIT"] == "random"
    outs = train_lstm.outputs(trained)
    assert all(p.is_file() for p in outs) and outs[0].name == "trainLSTM.h5"


def test_same_seed_same_model(tmp_path):
    a = trained_workdir(tmp_path / "a", **{"hotspot.train_lstm.model": "lstm",
                                           "hotspot.train_lstm.split": "random"})
    b = trained_workdir(tmp_path / "b", **{"hotspot.train_lstm.model": "lstm",
                                           "hotspot.train_lstm.split": "random"})
    wa = lb.load_bundle(a.path("model/lstm.keras")).model.get_weights()
    wb = lb.load_bundle(b.path("model/lstm.keras")).model.get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(wa, wb))


def test_bad_inputs_raise_clear_errors(tmp_path):
    make_tiny_scene(tmp_path)
    ctx = StepContext(workdir=tmp_path, config=tiny_config(**{"hotspot.train_lstm.testSize": 1}))
    with pytest.raises(HotspotError, match="testSize"):
        train_lstm.run(ctx)
    ctx = StepContext(workdir=tmp_path, config=tiny_config(**{"hotspot.train_lstm.variant": "big"}))
    with pytest.raises(HotspotError, match="variant = 'big'"):
        train_lstm.run(ctx)
    stack = tmp_path / "hotspotStack.h5"
    settings = train_lstm.TrainSettings(num_sample=100, epochs=1, verbose=0)
    with pytest.raises(HotspotError, match="no cluster"):
        train_lstm.train(stack, np.zeros(LENGTH * WIDTH, dtype=np.int32), settings)
    with pytest.raises(HotspotError, match="labels but"):
        train_lstm.train(stack, np.ones(10, dtype=np.int32), settings)
    (tmp_path / "clusterDBSCAN.h5").unlink()
    with pytest.raises(HotspotError, match="run the dbscan step"):
        train_lstm.run(StepContext(workdir=tmp_path, config=tiny_config()))


def test_block_size_fallback_without_covariogram(tmp_path):
    make_tiny_scene(tmp_path, covariogram=False)
    from hotspot.utils.geo import lonlat_to_xy_km
    x, y = lonlat_to_xy_km(-118.0 + 0.01 * np.arange(WIDTH), 34.0 - 0.01 * np.arange(WIDTH))
    lines = []
    size, source = train_lstm.auto_block_size(tmp_path, x, y, lines.append)
    assert source.startswith("fallback") and lines
    assert size == pytest.approx(max(np.ptp(x), np.ptp(y)) / 5)


def test_max_class_keeps_the_clusters_of_strongest_signal(tmp_path):
    stack, label, _ = make_tiny_scene(tmp_path)
    signal = train_lstm_sample.cluster_signal(stack, label, max_memory=0.001)
    # clusters 2, 3, 4 move 15 cm over the series, the background (1) is 2 mm noise
    assert min(signal[2], signal[3], signal[4]) > 10 * signal[1] > 0
    kept = train_lstm.limit_classes(label, 3, stack, log=lambda m: None)
    assert set(np.unique(kept[kept > 0])) == {2, 3, 4}
    np.testing.assert_array_equal(kept[label <= 0], label[label <= 0])
    assert np.all(kept[label == 1] == 0)
    assert train_lstm.limit_classes(label, 4, stack) is label


def test_block_split_flags_extra_pixels_in_held_out_tiles():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 10, 400), rng.uniform(0, 10, 400)
    ex, ey = rng.uniform(0, 10, 300), rng.uniform(0, 10, 300)
    test, held = train_lstm.block_split(x, y, 2.5, 0.5, np.random.default_rng(1), extra_xy=(ex, ey))
    assert np.array_equal(test, train_lstm.block_split(x, y, 2.5, 0.5, np.random.default_rng(1)))
    tile = np.floor(x / 2.5) * 100 + np.floor(y / 2.5)
    etile = np.floor(ex / 2.5) * 100 + np.floor(ey / 2.5)
    assert np.array_equal(held, np.isin(etile, tile[test]))
    assert 0 < held.mean() < 1


def test_filtered_series_temporal_input_and_dense_reference(tmp_path):
    """series = filtered: two channels (z-score + amplitude); lstmPerceptron also sees the
    tskm label; the reference holds labelled pixels beyond the sample, never test pixels."""
    stack, label, tskm = make_tiny_scene(tmp_path)
    filtered = tmp_path / "hotspotFiltered.h5"
    from hotspot.steps.tskm import filter_stack
    filter_stack(stack, filtered, max_memory=0.01, log=lambda m: None)
    temporal = {"num_cluster": 3, "centroids": np.zeros((3, 24)).tolist(), "metric": "euclidean",
                "gamma": 0.01, "band_radius": None, "normalize": "zscore"}
    settings = train_lstm.TrainSettings(num_sample=300, epochs=2, batch_size=64, patience=0,
                                        splits=("random",), num_reference=400, verbose=0)
    res = train_lstm.train(stack, label, settings, tskm=tskm, log=lambda m: None,
                           series_file=filtered, temporal=temporal)
    sample, test = res["sample"], res["masks"]["random"]
    for name in lm.MODEL_NAMES:
        bundle = res["models"][name]["bundle"]
        assert bundle.prep.series_source == "filtered" and bundle.prep.channels == 2
        assert bundle.model.inputs[0].shape[-1] == 2
        assert bundle.reference.size == 400           # 150 training + 250 pool pixels
        seen = np.asarray(bundle.train_index)
        assert seen.size == 400 and not np.isin(sample.index[test], seen).any()
    lp = res["models"]["lstmPerceptron"]["bundle"]
    assert lp.num_temporal == 3 and res["models"]["lstm"]["bundle"].num_temporal == 0
    assert lp.model.inputs[1].shape[-1] == 6 + 5 + 4      # static + votes + one-hot tskm
    assert lp.vote_prior == lm.VOTE_PRIOR and lp.model.inputs[2].shape[-1] == 5
    x = lp.prep.series(sample.disp[:5])
    assert np.allclose(x[:, :, 0].std(axis=1), 1, atol=1e-4)   # z-scored channel
    with pytest.raises(HotspotError, match="temporal"):
        lp.predict_proba(sample.disp[:5], sample.static[:5])
    path = lp.save(tmp_path / "model" / "lstmPerceptron.keras")
    again = lb.load_bundle(path)
    assert again.num_temporal == 3 and again.prep.series_source == "filtered"
    tk = sample.temporal[:50]
    first = again.predict_proba(sample.disp[:50], sample.static[:50], temporal=tk)
    assert np.array_equal(first, lb.load_bundle(path).predict_proba(
        sample.disp[:50], sample.static[:50], temporal=tk))
    assert np.allclose(first, lp.predict_proba(sample.disp[:50], sample.static[:50], temporal=tk),
                       atol=1e-4)


def test_block_size_is_capped_for_a_scene_sized_correlation_length(tmp_path):
    """Family seed 0 (issue 12): a 27 km correlation length on a 45 km scene made blockSize
    54 km, one tile, and train_lstm stopped with an ERROR on valid data."""
    from hotspot.utils.geo import lonlat_to_xy_km
    from hotspot.utils.h5io import write_h5
    x, y = lonlat_to_xy_km(-118.0 + 0.01 * np.arange(WIDTH), 34.0 - 0.01 * np.arange(WIDTH))
    extent = max(np.ptp(x), np.ptp(y))
    for length, capped in ((extent, True), (extent / 10, False)):
        write_h5(tmp_path / "covariogram.h5", {"distance": np.arange(3.0)},
                 {"CORRELATION_LENGTH_KM": length, "CORRELATION_LENGTH_SOURCE": "fit"})
        lines = []
        size, source = train_lstm.auto_block_size(tmp_path, x, y, lines.append)
        if capped:
            assert size == pytest.approx(extent / 3) and "capped" in source and lines
        else:
            assert size == pytest.approx(2 * length) and "capped" not in source
    # the capped tiles leave the blocked split something to hold out (2 x 27 km: one tile)
    rng = np.random.default_rng(0)
    px, py = rng.uniform(0, extent, 500), rng.uniform(0, extent, 500)
    test = train_lstm_sample.block_split(px, py, extent / 3, 0.5, rng)
    assert 0.3 < test.mean() < 0.7
    with pytest.raises(HotspotError, match="one tile"):
        train_lstm_sample.block_split(px, py, 2 * extent, 0.5, rng)
