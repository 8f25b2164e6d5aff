"""Step 6, predict: label every pixel of hotspotStack.h5 with the trained classifier(s).

Writes clusterLSTM.h5 (model lstm) and clusterLSTMP.h5 (model lstmPerceptron), label
files like clusterDBSCAN.h5 (pixelLabel + map `label` on the source grid, so view.py shows
them) plus the class probability (`probability` map, `pixelProbability` vector). A pixel
whose best class probability is below hotspot.predict.minProbability gets 0 (no cluster).

The stack is read once, block by block (block size from mintpy.compute.maxMemory), and
every model labels each block. hotspot.predict.modelFile applies a model trained elsewhere:
a stack with other epochs is interpolated to the model's epochs (with a warning); a stack
that does not span the model's period is an error.

When WORKDIR/clusterDBSCAN.h5 matches the stack, the agreement with the DBSCAN labels on
the labelled pixels not used for training is printed and stored (AGREEMENT_HELD_OUT), and
beside it the per-class recall weighted by each class's share of the scene
(AGREEMENT_SCENE_WEIGHTED: the scene-wide agreement also when the held-out pixels are the
class-balanced test half of the training sample). hotspot.predict.priorCorrection (auto: yes)
reweights the probabilities of a model trained on a class-balanced sample to the scene's class
frequencies (ModelBundle.prior_weights).
"""
import contextlib
import json
from pathlib import Path

import numpy as np

from hotspot import products
from hotspot.steps import lstm_bundle as lb
from hotspot.steps import lstm_models as lm
from hotspot.utils.errors import HotspotError
from hotspot.utils.h5io import read_attrs
from hotspot.utils.labels import label_to_map, read_pixel_label, write_label_file
from hotspot.utils.stack import STACK_FILE, block_size, iter_blocks, read_info, read_pixels

STEP = "predict"
KEY = "hotspot.predict."
OUTPUT_NAME = products.PREDICT
LABEL_FILE = products.DBSCAN
TRAIN_FILE = products.TRAIN
MODEL_DIR = products.MODEL_DIR
MAX_BLOCK = 200_000         # pixels; keeps the progress bar moving on big stacks


def model_files(ctx):
    """{model name: .keras path} for this run, from predict.model and predict.modelFile."""
    given = ctx.config.get_path(KEY + "modelFile", ctx.workdir)
    names = _model_names(ctx)
    if given is not None and given.suffix == products.MODEL_SUFFIX:
        if not given.is_file():
            raise HotspotError(f"{KEY}modelFile = {given}: file not found; expected a .keras "
                               "file saved by train_lstm")
        meta = lb.sidecar_path(given)
        name = _sidecar_name(meta) if meta.is_file() else None
        if name not in OUTPUT_NAME:
            raise HotspotError(f"{KEY}modelFile = {given}: needs the sidecar {meta.name} written "
                               "by train_lstm beside it (model name, epochs, scaling)")
        return {name: given}
    folder = given if given is not None else ctx.path(MODEL_DIR)
    if given is not None and not given.is_dir():
        raise HotspotError(f"{KEY}modelFile = {given}: not found; expected a .keras file saved "
                           "by train_lstm or a folder holding lstm.keras / lstmPerceptron.keras")
    return {name: folder / f"{name}{products.MODEL_SUFFIX}" for name in names}


def _model_names(ctx):
    if not ctx.config.is_auto(KEY + "model"):
        choice = ctx.config.get_choice(KEY + "model", ["lstm", "lstmPerceptron", "both"])
        return lm.MODEL_NAMES if choice == "both" else (choice,)
    train_file = ctx.path(TRAIN_FILE)
    if train_file.is_file():
        trained = str(read_attrs(train_file).get("MODELS", "")).replace(",", " ").split()
        trained = [n for n in lm.MODEL_NAMES if n in trained]
        if trained:
            return tuple(trained)
    from hotspot.steps.train_lstm import model_names
    return tuple(model_names(ctx.config))


def _sidecar_name(meta_path):
    try:
        return json.loads(Path(meta_path).read_text()).get("name")
    except json.JSONDecodeError as exc:
        raise HotspotError(f"{meta_path}: not valid JSON ({exc})") from None


def inputs(ctx):
    out = [ctx.path(STACK_FILE)]
    for path in model_files(ctx).values():
        out += [path, lb.sidecar_path(path)]
    for name in (LABEL_FILE, products.FILTERED):
        if ctx.path(name).is_file():
            out.append(ctx.path(name))
    return out


def outputs(ctx):
    return [ctx.path(OUTPUT_NAME[name]) for name in model_files(ctx)]


# ----------------------------------------------------------------- computation

def predict_stack(bundles, stack_file, min_probability=0.5, batch_size=4096, max_memory=4.0,
                  max_block=MAX_BLOCK, log=print, filtered_file=None, temporal=None,
                  prior_correction=False):
    """Label every pixel of the stack with each bundle, block by block.

    Returns {name: (pixel labels int32, probability float32)}; labels are DBSCAN-style
    cluster ids, 0 where the probability is below min_probability. filtered_file: the
    band-passed copy of the stack (same pixels and epochs), read for the bundles trained
    on the filtered series. temporal: {name: tskm label of every pixel} for the bundles
    that take it as input (ModelBundle.num_temporal). prior_correction: reweight each
    model's probabilities from its training sample's class frequencies to the scene's
    (ModelBundle.prior_weights) before the argmax and the minProbability cut.
    """
    temporal = temporal or {}
    from mintpy.utils import ptime
    info = read_info(stack_file)
    weights = {name: lb.check_dates(b, info.dates, str(stack_file)) for name, b in bundles.items()}
    out = {name: (np.zeros(info.num_pixel, dtype=np.int32),
                  np.zeros(info.num_pixel, dtype=np.float32)) for name in bundles}
    # per pixel: the series and, for lstmPerceptron, the neighbour votes as wide as the
    # classes, held three times (the votes, the static input they are concatenated into, the
    # logit-prior input): 1,001 classes at LA scale are 12x wider than the 247 epochs
    width = info.num_date + max((3 * len(b.class_id) if b.uses_static else 0)
                                for b in bundles.values())
    size = block_size(width, max_memory, copies=6, cap=max_block)
    # whole batches per block: only the last block has a ragged tail to pad
    if size > batch_size:
        size -= size % batch_size
    log(f"predict {', '.join(bundles)} on {info.num_pixel} pixels x {info.num_date} epochs "
        f"in blocks of {size} pixels")
    names = list(lm.STACK_STATIC) + ["longitude", "latitude"]
    prog = ptime.progressBar(maxValue=info.num_pixel)
    import h5py
    sources = {b.prep.series_source for b in bundles.values()}
    if "filtered" in sources and filtered_file is None:
        raise HotspotError(f"{stack_file}: a model was trained on the band-passed series; "
                           "predict needs the filtered copy of this stack (tskm step)")
    files = {"displacement": stack_file, "filtered": filtered_file}
    with contextlib.ExitStack() as stack:
        dsets = {src: stack.enter_context(h5py.File(files[src], "r"))["displacement"]
                 for src in sources}
        for start, stop in iter_blocks(info.num_pixel, size):
            blocks = {src: d[start:stop] for src, d in dsets.items()}
            pix = read_pixels(stack_file, names, start, stop)
            for name, bundle in bundles.items():
                xy = bundle.prep.positions(pix["longitude"], pix["latitude"])
                disp = blocks[bundle.prep.series_source]
                series = disp if weights[name] is None else lm.interpolate_epochs(disp, weights[name])
                tk = temporal.get(name)
                cid, prob = bundle.classify(series, lm.static_features(pix, xy), batch_size,
                                            None if tk is None else tk[start:stop],
                                            prior_correction=prior_correction)
                cid = np.where(prob >= min_probability, cid, 0)
                out[name][0][start:stop] = cid
                out[name][1][start:stop] = prob
            prog.update(stop, suffix=f"{stop}/{info.num_pixel}")
    prog.close()
    return out


def held_out_agreement(pred, dbscan, bundle, stack_info):
    """Agreement with DBSCAN on labelled pixels not used to train the model.

    Training pixels are excluded only when the model was trained on this very stack
    (same pixel count and epochs); a model from another stack has seen none of them.
    DBSCAN clusters that are not among the model's classes (train_lstm.maxClass) count as
    no cluster (0), the label the model was trained to give them.
    """
    class_id = np.asarray(bundle.class_id)
    dbscan = np.where((dbscan <= 0) | np.isin(dbscan, class_id), dbscan, 0)
    held = dbscan >= 0
    same = (bundle.train_stack.get("num_pixel") == stack_info.num_pixel
            and list(bundle.train_stack.get("dates", [])) == list(stack_info.dates))
    if same and len(bundle.train_index):
        held[np.asarray(bundle.train_index, dtype=np.int64)] = False
    n = int(held.sum())
    agree = float(np.mean(pred[held] == dbscan[held])) if n else float("nan")
    truth = dbscan[held].astype(np.int64)
    total = np.bincount(truth)
    hits = np.bincount(truth[pred[held] == truth], minlength=total.size)
    ids = np.nonzero(total)[0]
    recall = (hits[ids] / total[ids]).astype(np.float32)
    # per-class recall weighted by the class's share of the scene: the scene-wide agreement
    # whatever the class mix of the held-out pixels (a class-balanced test half, or the
    # scene's own pixels when the reference does not cover it)
    scene = np.bincount(dbscan[dbscan >= 0].astype(np.int64), minlength=total.size)[ids]
    weighted = float(np.sum(scene * recall) / scene.sum()) if scene.sum() else float("nan")
    return {"agreement": agree, "num": n, "cluster_id": ids.astype(np.int32), "recall": recall,
            "scene_weighted": weighted}


def filtered_series(ctx, stack_file, info):
    """WORKDIR/hotspotFiltered.h5 for this stack; made with the tskm step's band-pass when it
    is missing or belongs to other pixels / epochs (a model applied to a new stack)."""
    from hotspot.steps import tskm
    from hotspot.steps.train_lstm import FILTER_FILE, _same_pixels
    path = ctx.path(FILTER_FILE)
    if _same_pixels(path, info):
        return path
    ctx.log(f"predict: the model sees band-passed series and {path.name} does not match "
            f"{stack_file.name}: filtering it now (as the tskm step does)")
    tskm.filter_stack(stack_file, path, ctx.config.max_memory, seed=ctx.config.seed,
                      log=ctx.log)
    return path


def temporal_labels(ctx, bundle, filtered_file, info):
    """tskm labels of every pixel for a bundle that takes them: clusterTSKM.h5 when it holds
    this stack's labels from the model's own centroids, else assigned now with them."""
    from hotspot.steps import tskm
    path = ctx.path(tskm.OUT_FILE)
    params = dict(bundle.temporal)
    params["centroids"] = np.asarray(params["centroids"], dtype=np.float64)
    if path.is_file():
        from hotspot.steps.train_lstm import read_temporal
        try:
            labels = read_pixel_label(path)
            same = (labels.shape == (info.num_pixel,)
                    and np.allclose(read_temporal(path)["centroids"], params["centroids"]))
        except (HotspotError, KeyError, ValueError):
            same = False
        if same:
            return labels
    ctx.log(f"predict: assigning the model's {params['num_cluster']} temporal centroids to "
            f"{filtered_file.name} ({path.name} is missing or from other centroids)")
    labels, _ = tskm.assign_stack(filtered_file, params, ctx.config.max_memory, log=ctx.log)
    return labels


def run(ctx):
    stack_file = ctx.path(STACK_FILE)
    info = read_info(stack_file)
    files = model_files(ctx)
    min_prob = ctx.config.get_float(KEY + "minProbability", min_value=0.0, max_value=1.0)
    batch = ctx.config.get_int(KEY + "batchSize", min_value=1)
    lm.configure_backend()
    bundles = {name: lb.load_bundle(path) for name, path in files.items()}
    for name, b in bundles.items():
        if b.name != name:
            raise HotspotError(f"{files[name]}: holds model '{b.name}', expected '{name}'")
    filtered = None
    if any(b.prep.series_source == "filtered" for b in bundles.values()):
        filtered = filtered_series(ctx, stack_file, info)
    temporal = {name: temporal_labels(ctx, b, filtered, info)
                for name, b in bundles.items() if b.num_temporal}
    key = KEY + "priorCorrection"
    prior = ctx.config.is_auto(key) or ctx.config.get_bool(key)
    for name, b in bundles.items():
        if prior and b.prior_weights() is None:
            ctx.log(f"{name}: no prior correction (the model was trained on a sample with the "
                    "scene's class frequencies, or its sidecar predates them)")
        elif prior:
            ctx.log(f"{name}: probabilities reweighted from the training sample's class "
                    f"frequencies to the scene's ({key}; no-cluster class x "
                    f"{b.prior_weights()[0]:.3g})")
    results = predict_stack(bundles, stack_file, min_prob, batch, ctx.config.max_memory,
                            log=ctx.log, filtered_file=filtered, temporal=temporal,
                            prior_correction=prior)
    dbscan = None
    label_file = ctx.path(LABEL_FILE)
    if label_file.is_file():
        dbscan = read_pixel_label(label_file)
        if dbscan.shape[0] != info.num_pixel:
            ctx.log(f"{LABEL_FILE}: {dbscan.shape[0]} labels for {info.num_pixel} pixels; "
                    "no agreement computed")
            dbscan = None
    for name, (labels, prob) in results.items():
        attrs = dict(ctx.step_attrs(STEP))
        attrs.update({"MODEL": name, "MODEL_FILE": str(files[name]),
                      "VARIANT": bundles[name].variant, "MIN_PROBABILITY": min_prob,
                      "TIME_STEP": bundles[name].prep.time_step,
                      "PRIOR_CORRECTION": bool(prior and bundles[name].prior_weights() is not None)})
        datasets = {"probability": label_to_map(prob, stack_file, fill=np.nan, dtype=np.float32),
                    "pixelProbability": prob}
        if dbscan is not None:
            agr = held_out_agreement(labels, dbscan, bundles[name], info)
            attrs.update({"AGREEMENT_HELD_OUT": agr["agreement"], "NUM_HELD_OUT": agr["num"],
                          "AGREEMENT_SCENE_WEIGHTED": agr["scene_weighted"]})
            datasets.update({"agreementClusterId": agr["cluster_id"],
                             "agreementRecall": agr["recall"]})
            ctx.log(f"{name}: agreement with {LABEL_FILE} on {agr['num']} pixels not used for "
                    f"training: {100 * agr['agreement']:.2f} %; per-class recall weighted by "
                    f"the classes' scene shares: {100 * agr['scene_weighted']:.2f} %")
        ctx.log(f"{name}: {int((labels > 0).sum())} pixels in {len(np.unique(labels[labels > 0]))}"
                f" clusters, {int((labels == 0).sum())} without (probability < {min_prob} or "
                "no-cluster class)")
        out = write_label_file(ctx.path(OUTPUT_NAME[name]), labels, stack_file, datasets=datasets,
                               attrs=attrs)
        ctx.log(f"written: {out}")
