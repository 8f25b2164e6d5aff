"""Step 5, train_lstm: LSTM classifiers of the DBSCAN clusters.

Reads WORKDIR/hotspotStack.h5 and WORKDIR/clusterDBSCAN.h5 (pixelLabel), writes
  model/lstm.keras, model/lstmPerceptron.keras   (+ .json sidecars, see lstm_models)
  trainLSTM.h5                                   scores, confusion matrices, histories
Architectures and preprocessing: hotspot.steps.lstm_models.

Protocol
- numSample labelled pixels (DBSCAN label >= 0, noise included as class 0) are drawn;
  when the largest class is more than 10x the smallest, the draw is class-balanced
  (each class gets an equal share, small classes give all they have, the rest is
  spread over the others).
- split = random: testSize of the sample held out at random (the paper's protocol).
  split = block: whole square tiles of blockSize km held out until testSize of the
  sample is reached. Neighbouring InSAR pixels are nearly identical, so the random split
  flatters the score; the blocked one measures how well the model labels places it has
  not seen. split = both fits once per split; the saved model is the random-split one.
- Early stopping watches the loss on 10 % of the training pixels (never the test pixels);
  the best weights are kept. patience = 0 turns early stopping off.
- maxClass: with more clusters than this, only the maxClass clusters of strongest signal
  (mean RMS of their pixels' band-passed series, hotspotFiltered.h5 of the tskm step, or of
  the mean-removed displacement without it) are classes; the other clusters' pixels join
  the no-cluster class. At Los Angeles scale dbscan gave 1,491-5,531 clusters: 20,000
  training pixels are 4-13 per class, too few to learn any (measured: 0.1 % accuracy,
  and a 5,531-wide softmax took 18 GB in predict).
- Twins (clusters of one temporal cluster split by DBSCAN) are found from
  clusterTSKM.h5; lstmPerceptron separates them by the position among its static inputs,
  lstm (series only) by the nearest-training-pixel post-step (lstm_models.TwinResolver).
  The per-class recall of both splits shows how well each model does on them.

trainLSTM.h5 layout (C classes, class index 0 = no cluster):
  sample/index, sample/label, sample/testRandom, sample/testBlock    the drawn pixels
  <model>/classId (C)       DBSCAN cluster id of each class index (0 = no cluster)
  <model>/twinGroup (C)     twin group of each class (-1 = none)
  <model>/<split>/confusion (C x C, rows normalised: true class -> predicted class)
  <model>/<split>/recall (C), <model>/<split>/count (C, test pixels per class)
  <model>/<split>/history/<metric> (per epoch: loss, accuracy, val_loss, val_accuracy)
  attrs of <model>/<split>: ACCURACY, TWIN_RECALL, TRAIN_TIME_S, NUM_TRAIN, NUM_TEST, EPOCHS_RUN
  attrs of <model>: ACCURACY_RANDOM, ACCURACY_BLOCK, TWIN_RECALL_RANDOM, TWIN_RECALL_BLOCK,
                    TRAIN_TIME_S (all fits), MODEL_FILE, SAVED_SPLIT
  root attrs: the step's template keys, VARIANT, TIME_STEP, BLOCK_SIZE_KM, BLOCK_SIZE_SOURCE,
              NUM_SAMPLE, BALANCED, MODELS, TRAIN_TIME_S, BACKEND
"""
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hotspot import products
from hotspot.steps import lstm_bundle as lb
from hotspot.steps import lstm_models as lm
from hotspot.steps import lstm_spatial as lsp
from hotspot.steps.train_lstm_sample import (KEY, block_split, limit_classes, random_split,
                                             sample_pixels, twin_parents)
from hotspot.utils.errors import HotspotError
from hotspot.utils.h5io import _attr_value, atomic_path, read_attrs
from hotspot.utils.labels import read_pixel_label
from hotspot.utils.stack import STACK_FILE, read_info, read_pixels, read_rows

STEP = "train_lstm"
OUTPUT = products.TRAIN
LABEL_FILE = products.DBSCAN
TSKM_FILE = products.TSKM
FILTER_FILE = products.FILTERED
COVARIOGRAM_FILE = products.COVARIOGRAM
MODEL_DIR = products.MODEL_DIR
VALIDATION_FRACTION = 0.1
EPOCH_LOG_EVERY = 10        # epochs between two progress lines of a fit


@dataclass
class TrainSettings:
    models: tuple = ("lstm", "lstmPerceptron")
    variant: str = "fast"
    time_step: int = 4
    num_sample: int = 20000
    test_size: float = 0.5
    splits: tuple = ("random", "block")
    block_size: float = None        # km; None = auto
    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 1e-3
    patience: int = 5
    max_class: int = 1000
    series: str = "auto"            # displacement / filtered; auto: resolved by run()
    num_reference: int = 200_000
    seed: int = 0
    verbose: int = 0                # keras' own epoch lines; EPOCH_LOG_EVERY lines instead


def model_names(config, key=KEY + "model"):
    choice = config.get_choice(key, ["lstm", "lstmPerceptron", "both"])
    return lm.MODEL_NAMES if choice == "both" else (choice,)


def read_settings(config):
    variant = config.get_choice(KEY + "variant", list(lm.VARIANTS))
    split = config.get_choice(KEY + "split", ["random", "block", "both"])
    time_step = (lm.TIME_STEP_AUTO[variant] if config.is_auto(KEY + "timeStep")
                 else config.get_int(KEY + "timeStep", min_value=1))
    block = None if config.is_auto(KEY + "blockSize") else config.get_float(KEY + "blockSize")
    if block is not None and block <= 0:
        raise HotspotError(f"{config.source}: {KEY}blockSize = {block} is not valid; "
                           "expected a tile size > 0 km or auto")
    test_size = config.get_float(KEY + "testSize", min_value=0.0, max_value=1.0)
    if not 0 < test_size < 1:
        raise HotspotError(f"{config.source}: {KEY}testSize = {test_size} is not valid; "
                           "expected a fraction between 0 and 1 (exclusive)")
    return TrainSettings(
        models=tuple(model_names(config)), variant=variant, time_step=time_step,
        num_sample=config.get_int(KEY + "numSample", min_value=2),
        test_size=test_size,
        splits=("random", "block") if split == "both" else (split,),
        block_size=block,
        epochs=config.get_int(KEY + "epochs", min_value=1),
        batch_size=config.get_int(KEY + "batchSize", min_value=1),
        learning_rate=config.get_float(KEY + "learningRate", min_value=1e-12),
        patience=config.get_int(KEY + "patience", min_value=0),
        max_class=config.get_int(KEY + "maxClass", min_value=1),
        series=("auto" if config.is_auto(KEY + "series")
                else config.get_choice(KEY + "series", list(lm.SERIES_SOURCES))),
        num_reference=config.get_int(KEY + "numReference", min_value=0),
        seed=config.seed)


# blockSize auto is at most this share of the scene's extent: 3 x 3 tiles or more, so that the
# blocked split can hold out testSize of the sample in whole tiles
MAX_BLOCK_FRACTION = 1.0 / 3.0


def auto_block_size(workdir, x, y, log=print):
    """2 x the covariogram's correlation length, at most MAX_BLOCK_FRACTION of the scene's
    extent; fallback: 1/5 of the scene's extent."""
    extent = float(max(np.nanmax(x) - np.nanmin(x), np.nanmax(y) - np.nanmin(y)))
    cov = Path(workdir) / COVARIOGRAM_FILE
    if cov.is_file():
        length = read_attrs(cov).get("CORRELATION_LENGTH_KM")
        try:
            length = float(length)
        except (TypeError, ValueError):
            length = None
        if length and np.isfinite(length) and length > 0:
            source = read_attrs(cov).get("CORRELATION_LENGTH_SOURCE", "fit")
            size = 2.0 * length
            how = f"2 x CORRELATION_LENGTH_KM of {COVARIOGRAM_FILE} ({source})"
            cap = MAX_BLOCK_FRACTION * extent
            if size > cap > 0:
                # a correlation length of the order of the scene (ramps, family scenes of
                # issue 12: 27 km on a 45 km scene) would leave one tile and stop the step
                log(f"{KEY}blockSize = 2 x {length:.3g} km is over 1/3 of the scene's "
                    f"{extent:.3g} km: {cap:.3g} km")
                return cap, how + ", capped at 1/3 of the scene's extent"
            return size, how
    size = max(extent / 5.0, 1e-3)
    log(f"{COVARIOGRAM_FILE} with CORRELATION_LENGTH_KM not found: {KEY}blockSize = "
        f"{size:.2f} km (1/5 of the scene's extent, fallback)")
    return size, "fallback: scene extent / 5"


@dataclass
class Sample:
    index: np.ndarray        # pixel indices in the stack
    label: np.ndarray        # DBSCAN labels
    disp: np.ndarray         # (n, T) model series (displacement or band-passed)
    static: np.ndarray       # (n, 6) raw static features incl. x, y km
    lon0: float
    lat0: float
    pool_index: np.ndarray = None   # labelled pixels outside the sample: extra reference
    pool_label: np.ndarray = None   # their DBSCAN labels
    pool_xy: np.ndarray = None      # (m, 2) their x, y km
    temporal: np.ndarray = None     # (n,) tskm labels of the sample (None: unknown)
    pool_temporal: np.ndarray = None


def read_sample(stack_file, index, labels, series_file=None, num_pool=0, rng=None):
    """The sample's series and static inputs, and up to num_pool other labelled pixels
    (seeded draw) that may serve as spatial reference (their labels and positions only)."""
    pix = read_pixels(stack_file, list(lm.STACK_STATIC) + ["longitude", "latitude"])
    lon0 = float(np.nanmean(pix["longitude"]))
    lat0 = float(np.nanmean(pix["latitude"]))
    from hotspot.utils.geo import lonlat_to_xy_km
    xy = lonlat_to_xy_km(pix["longitude"][index], pix["latitude"][index], lon0, lat0)
    sub = {k: v[index] for k, v in pix.items()}
    disp = read_rows(series_file or stack_file, index)
    other = np.ones(labels.size, dtype=bool)
    other[index] = False
    pool = np.nonzero(other & (labels >= 0))[0]
    if pool.size > num_pool:
        rng = rng or np.random.default_rng(0)
        pool = np.sort(rng.choice(pool, num_pool, replace=False))
    pool_xy = np.column_stack(lonlat_to_xy_km(pix["longitude"][pool], pix["latitude"][pool],
                                              lon0, lat0)) if pool.size else np.zeros((0, 2))
    return Sample(index=index, label=labels[index], disp=disp,
                  static=lm.static_features(sub, xy), lon0=lon0, lat0=lat0,
                  pool_index=pool, pool_label=labels[pool], pool_xy=pool_xy)


def class_index(class_id, labels):
    return np.searchsorted(np.asarray(class_id), labels)


def class_frequency(class_id, labels):
    """Frequency of each class (order of class_id) among labels (>= 0), add-one smoothed so
    that a class missing from a small sample keeps a finite prior ratio."""
    labels = np.asarray(labels)
    counts = np.bincount(class_index(class_id, labels[labels >= 0]),
                         minlength=len(class_id)) + 1.0
    return counts / counts.sum()


def fit_model(name, sample, train, settings, dates, class_id, twin_group, rng, log=print,
              pool_ok=None, series_source="displacement", temporal=None, scene_prior=()):
    """Fit one model on sample[train]; returns (bundle, history dict, seconds).

    scene_prior: class frequencies of the whole scene (class_frequency), kept in the bundle
    beside those of sample[train] for predict's prior correction.

    Reference pixels (the spatial context of neighbour_votes and of the twin post-step):
    the training side of the split, then the pool pixels allowed for this split (pool_ok:
    not test pixels, not in a held-out tile), up to settings.num_reference in all. The
    reference's labels are training labels: predict's held-out agreement leaves them out.
    """
    keras = lm._keras()
    train_rows = np.nonzero(train)[0]
    prep = lm.Preprocessor.fit(dates, settings.time_step, sample.disp[train_rows],
                               sample.static[train_rows], sample.lon0, sample.lat0,
                               series_source=series_source)
    y = class_index(class_id, sample.label)
    ref_rows = train_rows
    if ref_rows.size > max(settings.num_reference, 1):
        ref_rows = np.sort(rng.choice(ref_rows, settings.num_reference, replace=False))
    pool = np.zeros(0, dtype=np.int64)
    if sample.pool_index is not None and sample.pool_index.size:
        pool = np.nonzero(pool_ok if pool_ok is not None else
                          np.ones(sample.pool_index.size, dtype=bool))[0]
        room = max(settings.num_reference - ref_rows.size, 0)
        if pool.size > room:
            pool = np.sort(rng.choice(pool, room, replace=False))
    pool_cls = class_index(class_id, sample.pool_label[pool]) if pool.size else pool
    reference = lsp.Reference(
        x=np.concatenate([sample.static[ref_rows, -2], sample.pool_xy[pool, 0]]),
        y=np.concatenate([sample.static[ref_rows, -1], sample.pool_xy[pool, 1]]),
        cls=np.concatenate([y[ref_rows], pool_cls]),
        temporal=(np.concatenate([sample.temporal[ref_rows], sample.pool_temporal[pool]])
                  if temporal and sample.temporal is not None else []))
    ref_pos = np.full(sample.index.size, -1, dtype=np.int64)
    ref_pos[ref_rows] = np.arange(ref_rows.size)
    twins = lsp.TwinResolver(group=list(twin_group) if name == "lstm" else [-1] * len(class_id))
    bundle = lb.ModelBundle(name=name, variant=settings.variant, class_id=list(class_id),
                            prep=prep, twins=twins, reference=reference,
                            temporal=dict(temporal or {}),
                            # same-label votes (temporal input) are what DBSCAN decided by
                            vote_prior=lm.VOTE_PRIOR if temporal else 0.0,
                            train_prior=list(class_frequency(class_id, sample.label[train_rows])),
                            scene_prior=list(scene_prior))
    fit_rows = train_rows
    use_val = settings.patience > 0 and fit_rows.size >= 20
    val_rows = np.array([], dtype=np.int64)
    if use_val:
        perm = rng.permutation(fit_rows)
        nval = max(1, int(round(VALIDATION_FRACTION * fit_rows.size)))
        val_rows, fit_rows = np.sort(perm[:nval]), np.sort(perm[nval:])
    keras.utils.set_random_seed(settings.seed)
    model = lm.build_model(name, prep.num_steps, bundle.static_width(sample.static.shape[1]),
                           len(class_id), settings.variant,
                           seed=settings.seed, channels=prep.channels,
                           vote_prior=bundle.vote_prior)
    lm.compile_model(model, settings.learning_rate)
    bundle.model = model

    def model_inputs(rows):
        return bundle.inputs(sample.disp[rows], sample.static[rows], self_index=ref_pos[rows],
                             temporal=None if sample.temporal is None else sample.temporal[rows])

    kwargs = {"callbacks": [epoch_logger(name, settings.epochs, log)]}
    if use_val:
        kwargs["validation_data"] = (model_inputs(val_rows), y[val_rows])
        kwargs["callbacks"].append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=settings.patience, restore_best_weights=True))
    t0 = time.time()
    hist = model.fit(model_inputs(fit_rows), y[fit_rows], epochs=settings.epochs,
                     batch_size=settings.batch_size, shuffle=True, verbose=settings.verbose,
                     **kwargs)
    seconds = time.time() - t0
    history = {k: np.asarray(v, dtype=np.float32) for k, v in hist.history.items()}
    seen = sample.index[train_rows]
    if pool.size:
        seen = np.union1d(seen, sample.pool_index[pool])
    bundle.train_index = seen
    log(f"{name}: {len(history.get('loss', []))} epochs in {seconds:.1f} s "
        f"({fit_rows.size} training, {val_rows.size} validation pixels)")
    return bundle, history, seconds


def epoch_logger(name, epochs, log=print, every=EPOCH_LOG_EVERY):
    """Keras callback: one line every `every` epochs (keras' verbose output is two lines per
    epoch, ~120 lines per train_lstm run)."""
    keras = lm._keras()

    class EpochLog(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            done = epoch + 1
            if done % every and done != epochs:
                return
            logs = logs or {}
            parts = [f"{k} {logs[k]:.4g}" for k in ("loss", "accuracy", "val_loss", "val_accuracy")
                     if k in logs]
            log(f"{name}: epoch {done}/{epochs}: {', '.join(parts)}")

    return EpochLog()


def evaluate(bundle, sample, test, batch_size=4096):
    """Accuracy, per-class recall and row-normalised confusion on sample[test]."""
    rows = np.nonzero(test)[0]
    nclass = len(bundle.class_id)
    pred, _ = bundle.classify(sample.disp[rows], sample.static[rows], batch_size,
                              None if sample.temporal is None else sample.temporal[rows])
    truth = class_index(bundle.class_id, sample.label[rows])
    pred = class_index(bundle.class_id, pred)
    counts = np.zeros((nclass, nclass), dtype=np.int64)
    np.add.at(counts, (truth, pred), 1)
    per_class = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        confusion = counts / per_class[:, None]
    recall = np.diag(confusion).copy()
    accuracy = float(np.mean(truth == pred)) if rows.size else float("nan")
    return {"accuracy": accuracy, "recall": recall, "confusion": confusion, "count": per_class}


def twin_recall(recall, group):
    vals = [r for r, g in zip(recall, group) if g >= 0 and np.isfinite(r)]
    return float(np.mean(vals)) if vals else float("nan")


def train(stack_file, labels, settings, tskm=None, block_size=None, log=print,
          series_file=None, temporal=None):
    """Draw the sample, split it, fit and score every model; returns a results dict.

    block_size: km, or None to use 1/5 of the scene's extent. The saved bundle of each model
    is the one fitted on the first split of settings.splits. series_file: the band-passed
    stack (hotspotFiltered.h5) the models see instead of the displacement (series
    'filtered'); None for the displacement. temporal: the tskm model (read_temporal) whose
    labels (tskm) lstmPerceptron sees as input; None: not an input.
    """
    info = read_info(stack_file)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape[0] != info.num_pixel:
        raise HotspotError(f"{LABEL_FILE}: {labels.shape[0]} labels but {stack_file} has "
                           f"{info.num_pixel} pixels; run dbscan again on this stack")
    class_id = [0] + sorted(int(c) for c in np.unique(labels[labels > 0]))
    if len(class_id) < 2:
        raise HotspotError(f"{LABEL_FILE}: no cluster (all labels are 0 or -1); nothing to "
                           "train the classifiers on (check the dbscan step's eps / minSamples)")
    lm.configure_backend()
    rng = np.random.default_rng(settings.seed)
    index, balanced = sample_pixels(labels, settings.num_sample, rng)
    log(f"training sample: {index.size} pixels of {int((labels >= 0).sum())} labelled, "
        f"{len(class_id) - 1} clusters + no-cluster class"
        f"{', class-balanced' if balanced else ''}")
    series_source = "filtered" if series_file else "displacement"
    sample = read_sample(stack_file, index, labels, series_file, settings.num_reference,
                         np.random.default_rng([settings.seed, 4]))
    if temporal and tskm is not None:
        sample.temporal = np.asarray(tskm, dtype=np.int64)[index]
        sample.pool_temporal = np.asarray(tskm, dtype=np.int64)[sample.pool_index]
    else:
        temporal = None
    log(f"model series: {series_source}"
        + (f" ({Path(series_file).name}, z-scored + amplitude channels)" if series_file else "")
        + f"; spatial reference: up to {settings.num_reference} labelled pixels "
        f"({sample.pool_index.size} outside the sample available)")
    source = "given" if block_size else "unused"
    if block_size is None and "block" in settings.splits:
        extent = max(np.ptp(sample.static[:, -2]), np.ptp(sample.static[:, -1]))
        block_size, source = max(float(extent) / 5.0, 1e-3), "fallback: scene extent / 5"
    masks, pool_ok = {}, {}
    for split in ("random", "block"):
        split_rng = np.random.default_rng([settings.seed, 1 if split == "random" else 2])
        if split not in settings.splits:
            continue
        if split == "random":
            masks[split] = random_split(index.size, settings.test_size, split_rng)
            pool_ok[split] = np.ones(sample.pool_index.size, dtype=bool)
        else:
            masks[split], held = block_split(sample.static[:, -2], sample.static[:, -1],
                                             block_size, settings.test_size, split_rng,
                                             extra_xy=(sample.pool_xy[:, 0], sample.pool_xy[:, 1]))
            pool_ok[split] = ~held
    group = lsp.twin_groups(class_id, twin_parents(labels, tskm))
    scene_prior = class_frequency(class_id, labels)
    results = {"sample": sample, "masks": masks, "balanced": balanced, "class_id": class_id,
               "twin_group": group, "block_size": block_size, "block_source": source,
               "models": {}}
    for name in settings.models:
        res = {"splits": {}, "bundle": None}
        for split in settings.splits:
            log(f"--- {name}, {split} split: {int((~masks[split]).sum())} training / "
                f"{int(masks[split].sum())} test pixels")
            fit_rng = np.random.default_rng([settings.seed, 3])
            bundle, history, seconds = fit_model(name, sample, ~masks[split], settings,
                                                 info.dates, class_id, group, fit_rng, log,
                                                 pool_ok=pool_ok[split], series_source=series_source,
                                                 temporal=temporal if name == "lstmPerceptron"
                                                 else None, scene_prior=scene_prior)
            bundle.train_stack = {"num_pixel": info.num_pixel, "dates": info.dates,
                                  "path": str(Path(stack_file).resolve())}
            scores = evaluate(bundle, sample, masks[split])
            scores.update(history=history, train_time=seconds, num_train=int((~masks[split]).sum()),
                          num_test=int(masks[split].sum()), epochs_run=len(history.get("loss", [])),
                          twin_recall=twin_recall(scores["recall"], group))
            log(f"{name}, {split} split: test accuracy {100 * scores['accuracy']:.2f} %, "
                f"twin recall {100 * scores['twin_recall']:.1f} %")
            res["splits"][split] = scores
            if res["bundle"] is None:
                res["bundle"], res["saved_split"] = bundle, split
        results["models"][name] = res
    return results


def write_results(path, results, attrs):
    """trainLSTM.h5 (layout in the module docstring), atomically."""
    import h5py

    from hotspot.utils.units import set_units
    sample, masks = results["sample"], results["masks"]
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for key, value in attrs.items():
                f.attrs[key] = _attr_value(value)
            g = f.create_group("sample")
            g["index"] = sample.index.astype(np.int64)
            g["label"] = sample.label.astype(np.int32)
            for split in ("random", "block"):
                if split in masks:
                    g[f"test{split.capitalize()}"] = masks[split]
            for name, res in results["models"].items():
                m = f.create_group(name)
                m["classId"] = np.asarray(results["class_id"], dtype=np.int32)
                m["twinGroup"] = np.asarray(results["twin_group"], dtype=np.int32)
                total = 0.0
                for split, sc in res["splits"].items():
                    s = m.create_group(split)
                    s["confusion"] = sc["confusion"].astype(np.float32)
                    s["recall"] = sc["recall"].astype(np.float32)
                    s["count"] = sc["count"].astype(np.int64)
                    h = s.create_group("history")
                    for metric, values in sc["history"].items():
                        h[metric] = values
                    s.attrs.update({"ACCURACY": sc["accuracy"], "TWIN_RECALL": sc["twin_recall"],
                                    "TRAIN_TIME_S": sc["train_time"], "NUM_TRAIN": sc["num_train"],
                                    "NUM_TEST": sc["num_test"], "EPOCHS_RUN": sc["epochs_run"]})
                    m.attrs[f"ACCURACY_{split.upper()}"] = sc["accuracy"]
                    m.attrs[f"TWIN_RECALL_{split.upper()}"] = sc["twin_recall"]
                    total += sc["train_time"]
                m.attrs["TRAIN_TIME_S"] = total
                m.attrs["SAVED_SPLIT"] = res["saved_split"]
                m.attrs["MODEL_FILE"] = products.model_file(name)
            set_units(f)
    return Path(path)


def inputs(ctx):
    out = [ctx.path(STACK_FILE), ctx.path(LABEL_FILE)]
    out += [ctx.path(n) for n in (COVARIOGRAM_FILE, TSKM_FILE, FILTER_FILE)
            if ctx.path(n).is_file()]
    return out


def outputs(ctx):
    out = [ctx.path(OUTPUT)]
    for name in model_names(ctx.config):
        out += [ctx.path(products.model_file(name)), ctx.path(products.sidecar_file(name))]
    return out


def _read_tskm(workdir, num_pixel, log):
    path = Path(workdir) / TSKM_FILE
    if not path.is_file():
        log(f"{TSKM_FILE} not found: twin clusters unknown, model lstm gets no twin post-step")
        return None
    tskm = read_pixel_label(path)
    if tskm.shape[0] != num_pixel:
        log(f"{TSKM_FILE}: {tskm.shape[0]} labels for {num_pixel} pixels, ignored for twins")
        return None
    return tskm


def _same_pixels(path, info):
    """True when `path` is a stack of the same pixels and epochs as `info`; False when it is
    absent. A present but unreadable file is an error: falling back to the displacement
    would silently train the models on other series than the clusters were found in."""
    if not Path(path).is_file():
        return False
    try:
        other = read_info(path)
    except HotspotError as exc:
        raise HotspotError(f"{exc}; re-run the tskm step, which writes it "
                           "(hotspotApp.py TEMPLATE --dostep tskm --force)") from None
    return other.num_pixel == info.num_pixel and list(other.dates) == list(info.dates)


def read_temporal(tskm_file):
    """The fitted tskm model of clusterTSKM.h5 (centroids in the fit unit, metric, gamma,
    band radius, normalisation), as tskm.assign_rows takes it; JSON-ready."""
    import h5py
    from hotspot.steps.tskm import UNIT_SCALE
    attrs = read_attrs(tskm_file)
    with h5py.File(tskm_file, "r") as f:
        centroids = np.asarray(f["centroid"], dtype=np.float64)
    if str(attrs.get("CENTROID_UNIT")) == "m":
        centroids = centroids * UNIT_SCALE
    band = attrs.get("BAND_RADIUS", "none")
    return {"num_cluster": int(centroids.shape[0]), "centroids": centroids.tolist(),
            "metric": str(attrs.get("METRIC")), "gamma": float(attrs.get("GAMMA")),
            "band_radius": None if str(band) == "none" else int(band),
            "normalize": str(attrs.get("NORMALIZE"))}


def resolve_series(choice, filter_file, info):
    """'filtered' or 'displacement': auto takes the band-passed series of the tskm step
    when its file matches the stack (the series the clusters were found in)."""
    if choice == "displacement":
        return choice
    if _same_pixels(filter_file, info):
        return "filtered"
    if choice == "filtered":
        raise HotspotError(f"{KEY}series = filtered needs {filter_file} for this stack "
                           f"({info.num_pixel} pixels, {info.num_date} epochs); run the tskm "
                           "step first or set it to displacement")
    return "displacement"


def run(ctx):
    settings = read_settings(ctx.config)
    stack_file, label_file = ctx.path(STACK_FILE), ctx.path(LABEL_FILE)
    info = read_info(stack_file)
    if not label_file.is_file():
        raise HotspotError(f"{label_file}: not found; run the dbscan step first "
                           "(hotspotApp.py TEMPLATE --dostep dbscan)")
    labels = read_pixel_label(label_file)
    series_file = ctx.path(FILTER_FILE)
    if not _same_pixels(series_file, info):
        series_file = stack_file
    labels = limit_classes(labels, settings.max_class, series_file, ctx.config.max_memory,
                           ctx.log)
    tskm = _read_tskm(ctx.workdir, info.num_pixel, ctx.log)
    block, source = settings.block_size, "template"
    if "block" not in settings.splits:
        block, source = None, "unused (no block split)"
    elif block is None:
        pix = read_pixels(stack_file, ["longitude", "latitude"])
        from hotspot.utils.geo import lonlat_to_xy_km
        x, y = lonlat_to_xy_km(pix["longitude"], pix["latitude"])
        block, source = auto_block_size(ctx.workdir, x, y, ctx.log)
    model_series = resolve_series(settings.series, ctx.path(FILTER_FILE), info)
    # the tskm centroids are of the band-passed series: an input only with those series
    temporal = (read_temporal(ctx.path(TSKM_FILE))
                if model_series == "filtered" and tskm is not None else None)
    t0 = time.time()
    results = train(stack_file, labels, settings, tskm=tskm, block_size=block, log=ctx.log,
                    series_file=ctx.path(FILTER_FILE) if model_series == "filtered" else None,
                    temporal=temporal)
    results["block_source"] = source
    for name, res in results["models"].items():
        path = res["bundle"].save(ctx.path(products.model_file(name)))
        ctx.log(f"model written: {path} (+ {lb.sidecar_path(path).name})")
    attrs = dict(ctx.step_attrs(STEP))
    attrs.update({"VARIANT": settings.variant, "TIME_STEP": settings.time_step,
                  "BLOCK_SIZE_KM": results["block_size"] or "none", "BLOCK_SIZE_SOURCE": source,
                  "NUM_SAMPLE": int(results["sample"].index.size),
                  "BALANCED": results["balanced"], "MODELS": list(settings.models),
                  "SPLITS": list(settings.splits), "TRAIN_TIME_S": time.time() - t0,
                  "SERIES": model_series,
                  "BACKEND": lm._keras().backend.backend()})
    out = write_results(ctx.path(OUTPUT), results, attrs)
    ctx.log(f"written: {out}")
