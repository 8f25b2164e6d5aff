"""predict step: block-wise labelling, label-file conventions, model reuse on other stacks."""
import os
import shutil

import h5py
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from test_lstm import make_tiny_scene, tiny_config, tiny_dates, trained_workdir  # noqa: E402

from hotspot.hotspotApp import StepContext  # noqa: E402
from hotspot.steps import lstm_bundle as lb  # noqa: E402
from hotspot.steps import lstm_models as lm  # noqa: E402
from hotspot.steps import lstm_spatial as lsp  # noqa: E402
from hotspot.steps import predict  # noqa: E402
from hotspot.utils.errors import HotspotError  # noqa: E402
from hotspot.utils.h5io import read_attrs  # noqa: E402
from hotspot.utils.labels import read_pixel_label  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_workdir(tmp_path_factory.mktemp("predict"), **{"hotspot.train_lstm.split": "random"})


def bundles_of(ctx):
    return {n: lb.load_bundle(ctx.path(f"model/{n}.keras")) for n in lm.MODEL_NAMES}


def test_block_split_prediction_equals_one_piece(trained):
    stack = trained.path("hotspotStack.h5")
    bundles = bundles_of(trained)
    one = predict.predict_stack(bundles, stack, 0.5, max_block=10 ** 6, log=lambda m: None)
    blocks = predict.predict_stack(bundles, stack, 0.5, batch_size=32, max_block=97,
                                   log=lambda m: None)
    for name in bundles:
        assert np.array_equal(one[name][0], blocks[name][0])
        assert np.allclose(one[name][1], blocks[name][1], atol=1e-5)


def test_step_writes_label_files_like_dbscan(trained):
    ctx = StepContext(workdir=trained.workdir,
                      config=tiny_config(**{"hotspot.predict.minProbability": 0.6}))
    predict.run(ctx)
    outs = predict.outputs(ctx)
    assert [p.name for p in outs] == ["clusterLSTM.h5", "clusterLSTMP.h5"]
    ref = read_attrs(ctx.path("clusterDBSCAN.h5"))
    dbscan = read_pixel_label(ctx.path("clusterDBSCAN.h5"))
    for path in outs:
        attrs = read_attrs(path)
        for key in ("LENGTH", "WIDTH", "X_FIRST", "Y_FIRST", "X_STEP", "Y_STEP", "FILE_TYPE",
                    "NO_DATA_VALUE"):
            assert attrs[key] == ref[key], key
        for key, value in ctx.step_attrs("predict").items():
            assert str(attrs[key]) == str(value)
        with h5py.File(path, "r") as f:
            labels = f["pixelLabel"][:]
            prob = f["pixelProbability"][:]
            assert f["label"].shape == (ref["LENGTH"], ref["WIDTH"])
            assert f["probability"].shape == f["label"].shape
            assert np.array_equal(f["label"][:].ravel(), labels)   # full grid, row-major
        assert np.all(labels[prob < 0.6] == 0)
        assert set(np.unique(labels)) <= {0, 1, 2, 3, 4}
        held = attrs["AGREEMENT_HELD_OUT"]
        assert attrs["NUM_HELD_OUT"] < int((dbscan >= 0).sum())        # training pixels left out
        assert 0.6 < held <= 1.0
    # Model with the position (neighbour votes) tells the twins apart.
    lstmp = read_pixel_label(ctx.path("clusterLSTMP.h5"))
    assert np.mean(lstmp[dbscan == 2] == 2) > 0.8 and np.mean(lstmp[dbscan == 3] == 3) > 0.8


def test_same_seed_same_labels(trained, tmp_path):
    other = trained_workdir(tmp_path, **{"hotspot.train_lstm.split": "random"})
    stack = trained.path("hotspotStack.h5")
    a = predict.predict_stack(bundles_of(trained), stack, 0.5, log=lambda m: None)
    b = predict.predict_stack(bundles_of(other), stack, 0.5, log=lambda m: None)
    for name in a:
        assert np.array_equal(a[name][0], b[name][0])


def test_model_file_on_a_stack_with_other_epochs(trained, tmp_path):
    # Same area, acquisitions every 8 days instead of 12, over a longer period.
    make_tiny_scene(tmp_path, dates=tiny_dates(45, 8), seed=3)
    cfg = tiny_config(**{"hotspot.predict.modelFile": str(trained.path("model/lstmPerceptron.keras"))})
    ctx = StepContext(workdir=tmp_path, config=cfg)
    assert [p.name for p in predict.outputs(ctx)] == ["clusterLSTMP.h5"]
    with pytest.warns(UserWarning, match="linearly interpolated to the model's epochs"):
        predict.run(ctx)
    attrs = read_attrs(tmp_path / "clusterLSTMP.h5")
    assert attrs["NUM_HELD_OUT"] == int((read_pixel_label(tmp_path / "clusterDBSCAN.h5") >= 0).sum())
    assert attrs["AGREEMENT_HELD_OUT"] > 0.6


def test_stack_not_covering_the_model_period_is_an_error(trained, tmp_path):
    make_tiny_scene(tmp_path, dates=tiny_dates(10, 12))
    model_dir = tmp_path / "trained_models"
    shutil.copytree(trained.path("model"), model_dir)
    cfg = tiny_config(**{"hotspot.predict.modelFile": str(model_dir),
                         "hotspot.predict.model": "lstm"})
    with pytest.raises(HotspotError, match="do not cover the model's epochs"):
        predict.run(StepContext(workdir=tmp_path, config=cfg))


def test_missing_model_is_a_clear_error(tmp_path):
    make_tiny_scene(tmp_path)
    ctx = StepContext(workdir=tmp_path, config=tiny_config())
    with pytest.raises(HotspotError, match="run the train_lstm step first"):
        predict.run(ctx)
    cfg = tiny_config(**{"hotspot.predict.modelFile": str(tmp_path / "nowhere.keras")})
    with pytest.raises(HotspotError, match="modelFile"):
        predict.outputs(StepContext(workdir=tmp_path, config=cfg))


def test_agreement_counts_clusters_beyond_max_class_as_no_cluster():
    from types import SimpleNamespace
    from hotspot.steps.predict import held_out_agreement
    bundle = SimpleNamespace(class_id=[0, 1, 2], train_stack={}, train_index=[])
    info = SimpleNamespace(num_pixel=6, dates=["20200101"])
    dbscan = np.array([1, 2, 3, 3, 0, -1])       # cluster 3 was not a class of the model
    pred = np.array([1, 2, 0, 0, 0, 0])
    res = held_out_agreement(pred, dbscan, bundle, info)
    assert res["num"] == 5 and res["agreement"] == 1.0
    pred[0] = 2
    assert held_out_agreement(pred, dbscan, bundle, info)["agreement"] == 0.8


def test_scene_weighted_agreement_does_not_depend_on_the_held_out_mix():
    """Pixels 2, 3 (no cluster) were training pixels: the held-out pixels are one of each
    class; weighting their recall by the scene's shares (0.6 / 0.2 / 0.2) gives 0.8."""
    from types import SimpleNamespace
    from hotspot.steps.predict import held_out_agreement
    info = SimpleNamespace(num_pixel=6, dates=["20200101"])
    bundle = SimpleNamespace(class_id=[0, 1, 2], train_index=[2, 3],
                             train_stack={"num_pixel": 6, "dates": ["20200101"]})
    dbscan = np.array([1, 2, 0, 0, 0, -1])
    pred = np.array([1, 1, 0, 0, 0, 0])                  # class 2 missed
    res = held_out_agreement(pred, dbscan, bundle, info)
    assert res["num"] == 3 and res["agreement"] == pytest.approx(2 / 3)
    assert res["scene_weighted"] == pytest.approx(0.8)


def test_prior_correction_reweights_to_the_scene_frequencies():
    """A balanced sample (1/3 each) from a scene that is 80 % no cluster: an output of
    (0.3, 0.4, 0.3) is cluster 1 uncorrected and no cluster once corrected."""
    bundle = lb.ModelBundle(name="lstm", variant="fast", class_id=[0, 5, 7], prep=None,
                            twins=lsp.TwinResolver(group=[-1, -1, -1]),
                            train_prior=[1 / 3, 1 / 3, 1 / 3], scene_prior=[0.8, 0.1, 0.1])
    probs = np.array([[0.3, 0.4, 0.3], [0.05, 0.9, 0.05]], dtype=np.float32)
    # a fresh array per call, as the real predict_proba (classify reweights it in place)
    bundle.predict_proba = lambda *args, **kwargs: probs.copy()
    static = np.zeros((2, 6))
    np.testing.assert_allclose(bundle.prior_weights(), [2.4, 0.3, 0.3])
    raw_id, raw_p = bundle.classify(None, static)
    assert raw_id.tolist() == [5, 5] and raw_p[0] == pytest.approx(0.4)
    cid, p = bundle.classify(None, static, prior_correction=True)
    assert cid.tolist() == [0, 5]
    assert p[0] == pytest.approx(0.72 / (0.72 + 0.12 + 0.09))
    # equal or unknown frequencies: nothing to correct
    bundle.scene_prior = list(bundle.train_prior)
    assert bundle.prior_weights() is None
    bundle.scene_prior = []
    assert bundle.prior_weights() is None and bundle.classify(None, static, True)[0][0] == 5


def test_sidecar_keeps_sample_and_scene_class_frequencies(trained):
    from hotspot.steps.train_lstm import class_frequency
    dbscan = read_pixel_label(trained.path("clusterDBSCAN.h5"))
    for name, bundle in bundles_of(trained).items():
        assert len(bundle.train_prior) == len(bundle.class_id)
        assert sum(bundle.train_prior) == pytest.approx(1.0)
        np.testing.assert_allclose(bundle.scene_prior, class_frequency(bundle.class_id, dbscan))
