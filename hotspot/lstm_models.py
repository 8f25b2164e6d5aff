"""Keras classifiers of the train_lstm / predict steps and the data preparation they share.

Two architectures (Tiwari & Shirzaei 2024, Table 1), in plain Keras 3 so they run on the
tensorflow (default, CPU or GPU), torch or jax backend (KERAS_BACKEND):

  lstm            series (T x 1) -> LSTM(u1, sequences) -> Dropout -> LSTM(u2) -> Dropout
                  -> Dense(C, softmax)
  lstmPerceptron  the same series through Bidirectional LSTMs (u1, then u2) with dropout,
                  plus a dense "perceptron" branch (Dense 64, 64, relu) on the static inputs
                  -> concatenate -> Dense(128, relu) -> Dense(C, softmax)
                  Static inputs: velocity, velocityStd, coherence, incidenceAngle and the
                  position x, y (km), z-scored; then the share of each class among the 10
                  nearest training pixels (neighbour_votes), which is what separates clusters
                  the series cannot: twins, a background split by DBSCAN, noise beside a cluster;
                  with series = filtered also the one-hot temporal (tskm) cluster of the pixel
                  (one_hot), the class that DBSCAN split in space.

Variants (template hotspot.train_lstm.variant):
  paper   u1, u2 = 128, 64 on every epoch (timeStep 1): the published sizes.
  fast    the series averaged over timeStep (default 4) epochs, a Conv1D(16, kernel 4,
          stride 2) that halves the sequence again, LSTM 32 / 16, and beside the LSTM a
          Dense(64) view of the whole (averaged) series joined before the output. Chosen by
          measurement (benchmarks/bench_lstm.py, T = 247, 2 CPU cores): 40x faster training
          and 60x faster prediction than `paper`; the dense view lifted the series-only
          model's test accuracy from 88.5 to 92.1 % on the hard simulated scene (k-means
          boundaries are nearly linear in the series, which 16 LSTM units approximate poorly).

Classes: index 0 is "no cluster" (DBSCAN noise, label 0), so predict can output 0; index
i > 0 is DBSCAN cluster `class_id[i]`. Softmax output with sparse categorical cross-entropy
(categorical cross-entropy on integer targets), Adam.

Everything predict needs to reproduce the training input (epochs, timeStep, scaling,
class ids, twin groups, the training pixels used as spatial reference, the training pixel
indices) is kept in a JSON sidecar beside the .keras file (`model/lstm.json`), tied to it
by the SHA-256 of the .keras file.
"""
import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hotspot.utils.errors import HotspotError
from hotspot.utils.geo import lonlat_to_xy_km
from hotspot.utils.h5io import atomic_path
from hotspot.utils.stack import decimal_years

MODEL_NAMES = ("lstm", "lstmPerceptron")
STATIC_FEATURES = ("velocity", "velocityStd", "coherence", "incidenceAngle", "x", "y")
STACK_STATIC = STATIC_FEATURES[:4]

# Layer sizes of each variant; `timeStep` is a template key (auto: TIME_STEP_AUTO).
VARIANTS = {
    "paper": {"units": (128, 64), "conv": None, "dropout": 0.2, "static_units": (64, 64),
              "head": 128},
    "fast": {"units": (32, 16), "conv": (16, 4, 2), "dropout": 0.2, "static_units": (64, 64),
             "head": 128, "skip": 64},
}
TIME_STEP_AUTO = {"paper": 1, "fast": 4}
NUM_NEIGHBOURS = 10         # training pixels whose labels lstmPerceptron sees (neighbour_votes)
VOTE_PRIOR = 4.0            # logit weight of the same-label votes (build_lstm_perceptron)


def _keras():
    """Import keras lazily: hotspotApp.py -H and the other steps must not load a backend."""
    from hotspot.utils.quiet import import_keras
    return import_keras()


def configure_backend(threads=None):
    """Thread pools of the backend; harmless if the backend already started.

    One intra-op pool over all usable cores and a small inter-op pool: LSTM steps are a
    chain of small matmuls, so concurrent ops only fight for the same cores.
    """
    keras = _keras()
    threads = threads or len(os.sched_getaffinity(0))
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
        except RuntimeError:
            pass  # the runtime was initialised by an earlier call in this process
    elif backend == "torch":
        import torch
        torch.set_num_threads(threads)
    return backend


# ----------------------------------------------------------------- models

def build_lstm(num_steps, num_classes, variant="fast", seed=None, channels=1):
    """Time-series-only classifier: (num_steps, channels) -> class probabilities."""
    keras = _keras()
    layers = keras.layers
    spec = _variant(variant)
    inp = keras.Input((num_steps, channels), name="series")
    x = _series_front(inp, spec)
    x = layers.LSTM(spec["units"][0], return_sequences=True, seed=seed, name="lstm1")(x)
    x = layers.Dropout(spec["dropout"], seed=seed)(x)
    x = layers.LSTM(spec["units"][1], seed=seed, name="lstm2")(x)
    x = layers.Dropout(spec["dropout"], seed=seed)(x)
    x = _series_skip(inp, x, spec)
    out = layers.Dense(num_classes, activation="softmax", name="probability")(x)
    return keras.Model(inp, out, name="lstm")


def build_lstm_perceptron(num_steps, num_static, num_classes, variant="fast", seed=None,
                          channels=1, vote_prior=0.0):
    """Bidirectional LSTM on the series + dense branch on the static features.

    vote_prior > 0: a third input, the neighbour votes (num_classes), is added to the output
    logits times vote_prior. The votes are also among the static inputs, but a dense layer
    must learn to pass each of hundreds of classes through from ~20 training pixels each;
    the prior gives the model that identity and leaves it to learn the exceptions
    (medium hard scene, same-label votes: 97.96 % held out without it, README with it).
    """
    keras = _keras()
    layers = keras.layers
    spec = _variant(variant)
    series = keras.Input((num_steps, channels), name="series")
    static = keras.Input((num_static,), name="static")
    x = _series_front(series, spec)
    x = layers.Bidirectional(layers.LSTM(spec["units"][0], return_sequences=True, seed=seed),
                             name="bilstm1")(x)
    x = layers.Dropout(spec["dropout"], seed=seed)(x)
    x = layers.Bidirectional(layers.LSTM(spec["units"][1], seed=seed), name="bilstm2")(x)
    x = layers.Dropout(spec["dropout"], seed=seed)(x)
    x = _series_skip(series, x, spec)
    s = static
    for i, units in enumerate(spec["static_units"]):
        s = layers.Dense(units, activation="relu", name=f"perceptron{i + 1}")(s)
    h = layers.Concatenate()([x, s])
    h = layers.Dense(spec["head"], activation="relu", name="head")(h)
    if not vote_prior:
        out = layers.Dense(num_classes, activation="softmax", name="probability")(h)
        return keras.Model([series, static], out, name="lstmPerceptron")
    votes = keras.Input((num_classes,), name="votes")
    logits = layers.Dense(num_classes, name="logits")(h)
    logits = layers.Add()([logits, layers.Rescaling(float(vote_prior), name="vote_prior")(votes)])
    out = layers.Activation("softmax", name="probability")(logits)
    return keras.Model([series, static, votes], out, name="lstmPerceptron")


def build_model(name, num_steps, num_static, num_classes, variant="fast", seed=None, channels=1,
                vote_prior=0.0):
    if name == "lstm":
        return build_lstm(num_steps, num_classes, variant, seed, channels)
    if name == "lstmPerceptron":
        return build_lstm_perceptron(num_steps, num_static, num_classes, variant, seed, channels,
                                     vote_prior)
    raise ValueError(f"unknown model {name}")


def compile_model(model, learning_rate):
    keras = _keras()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _variant(variant):
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant}; expected one of {', '.join(VARIANTS)}")
    return VARIANTS[variant]


def _series_skip(inp, x, spec):
    """Optional dense view of the whole series beside the LSTM summary."""
    if not spec.get("skip"):
        return x
    layers = _keras().layers
    flat = layers.Flatten(name="series_flat")(inp)
    d = layers.Dense(spec["skip"], activation="relu", name="series_dense")(flat)
    return layers.Concatenate(name="series_join")([x, d])


def _series_front(inp, spec):
    if not spec["conv"]:
        return inp
    filters, kernel, stride = spec["conv"]
    return _keras().layers.Conv1D(filters, kernel, strides=stride, padding="same",
                                  activation="relu", name="downsample")(inp)


# ----------------------------------------------------------------- data preparation

def time_average(disp, step):
    """Average every `step` epochs along axis 1 (the last block over what it has)."""
    disp = np.asarray(disp, dtype=np.float32)
    if step <= 1:
        return disp
    n, t = disp.shape
    full = (t // step) * step
    parts = [disp[:, :full].reshape(n, t // step, step).mean(axis=2)]
    if full < t:
        parts.append(disp[:, full:].mean(axis=1, keepdims=True))
    return np.concatenate(parts, axis=1)


def num_steps(num_date, step):
    """Length of the series after time_average."""
    return -(-num_date // max(1, step))


def interpolation_weights(src_dates, dst_dates, source="stack"):
    """(index, weight) so that out = x[:, i] * (1 - w) + x[:, i + 1] * w samples x at dst_dates.

    Linear in time. The model's window must lie inside the stack's (tolerance: one median
    epoch interval, clamped): extrapolating a deformation series is guesswork.
    """
    ts = decimal_years(src_dates)
    td = decimal_years(dst_dates)
    tol = float(np.median(np.diff(td))) if td.size > 1 else 0.0
    if td[0] < ts[0] - tol or td[-1] > ts[-1] + tol:
        raise HotspotError(
            f"{source}: dates {src_dates[0]}-{src_dates[-1]} do not cover the model's epochs "
            f"{dst_dates[0]}-{dst_dates[-1]}; the model can only label a stack that spans its "
            "training period (retrain it with train_lstm on this stack)")
    td = np.clip(td, ts[0], ts[-1])
    i = np.clip(np.searchsorted(ts, td, side="right") - 1, 0, ts.size - 2)
    w = (td - ts[i]) / (ts[i + 1] - ts[i])
    return i, w.astype(np.float32)


def interpolate_epochs(disp, weights):
    """Sample series at the model's epochs and re-reference them to its first epoch."""
    i, w = weights
    disp = np.asarray(disp, dtype=np.float32)
    out = disp[:, i] * (1 - w) + disp[:, i + 1] * w
    return out - out[:, :1]


SERIES_SOURCES = ("displacement", "filtered")


@dataclass
class Preprocessor:
    """Turns stack rows into model inputs; fitted on the training pixels, stored as JSON.

    series_source 'displacement': the stack's series with their amplitude (one global
    scale): one channel. 'filtered': the band-passed series that tskm clustered
    (hotspotFiltered.h5), as two channels: each series z-scored (the shape tskm's k-means
    saw, normalize = zscore) and the same series on one global scale (its amplitude, which
    the z-score drops and which tells a hotspot from a noise pixel of the same shape).
    Static features are z-scored with the training means/stds; unknown values (NaN) become
    the mean (0).
    """
    dates: list
    time_step: int
    series_scale: float = 1.0
    static_mean: list = field(default_factory=list)
    static_std: list = field(default_factory=list)
    lon0: float = 0.0
    lat0: float = 0.0
    series_source: str = "displacement"

    @property
    def channels(self):
        return 2 if self.series_source == "filtered" else 1

    @classmethod
    def fit(cls, dates, time_step, disp, static, lon0, lat0, series_source="displacement"):
        series = time_average(disp, time_step)
        scale = float(np.nanstd(series)) if series.size else 1.0
        if not np.isfinite(scale) or scale <= 0:
            scale = 1.0
        with warnings.catch_warnings():
            # An input unknown everywhere (e.g. no incidence angle) is expected: it becomes 0.
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(static, axis=0) if static.size else np.zeros(static.shape[1])
            std = np.nanstd(static, axis=0) if static.size else np.ones(static.shape[1])
        mean = np.where(np.isfinite(mean), mean, 0.0)
        std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        return cls(dates=[str(d) for d in dates], time_step=int(time_step), series_scale=scale,
                   static_mean=[float(v) for v in mean], static_std=[float(v) for v in std],
                   lon0=float(lon0), lat0=float(lat0), series_source=series_source)

    @property
    def num_steps(self):
        return num_steps(len(self.dates), self.time_step)

    def series(self, disp):
        """(n, T) series on the model's epochs -> (n, T', channels) float32."""
        x = time_average(disp, self.time_step) / np.float32(self.series_scale)
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
        if self.channels == 1:
            return x[:, :, None]
        centred = x - x.mean(axis=1, keepdims=True)
        std = centred.std(axis=1, keepdims=True)
        z = np.divide(centred, std, out=np.zeros_like(centred), where=std > 1e-6)
        return np.stack([z, x], axis=2)

    def static(self, raw):
        """(n, S) raw static features (stack order of STATIC_FEATURES) -> scaled float32."""
        x = (np.asarray(raw, dtype=np.float64) - self.static_mean) / self.static_std
        return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)

    def positions(self, lon, lat):
        return lonlat_to_xy_km(lon, lat, self.lon0, self.lat0)


def static_features(pixels, xy):
    """Stack columns of STATIC_FEATURES from read_pixels output and positions (x, y) km."""
    cols = [np.asarray(pixels[name], dtype=np.float64) for name in STACK_STATIC]
    cols += [np.asarray(xy[0], dtype=np.float64), np.asarray(xy[1], dtype=np.float64)]
    return np.stack(cols, axis=1)


# ----------------------------------------------------------------- spatial context

@dataclass
class Reference:
    """Training pixels (position km, class index, tskm label) that predict consults for
    spatial context. temporal is empty when the model has no temporal input."""
    x: list = field(default_factory=list)
    y: list = field(default_factory=list)
    cls: list = field(default_factory=list)
    temporal: list = field(default_factory=list)

    def __post_init__(self):
        # rounded as the JSON sidecar stores them: on a grid many neighbours tie, and the
        # trained and the reloaded model must pick the same ones
        self.x = np.round(np.asarray(self.x, dtype=np.float64), 4)
        self.y = np.round(np.asarray(self.y, dtype=np.float64), 4)
        self.cls = np.asarray(self.cls, dtype=np.int64)
        self.temporal = np.asarray(self.temporal, dtype=np.int64)
        self._trees = {}

    @property
    def size(self):
        return int(self.cls.size)

    def rows(self, group=None):
        """Reference rows of one temporal group (all rows for None)."""
        if group is None:
            return np.arange(self.size)
        return np.nonzero(self.temporal == group)[0]

    def tree(self, group=None):
        if group not in self._trees:
            from scipy.spatial import cKDTree
            rows = self.rows(group)
            self._trees[group] = cKDTree(np.column_stack([self.x[rows], self.y[rows]]))
        return self._trees[group]

    def to_dict(self):
        return {"x": self.x.tolist(), "y": self.y.tolist(),
                "cls": self.cls.tolist(), "temporal": self.temporal.tolist()}


def neighbour_votes(ref, x, y, num_class, k, self_index=None, group=None):
    """Share of each class among the k nearest reference pixels, (n, num_class) float32.

    This is how lstmPerceptron tells apart clusters that the series cannot (twins, one
    background split by DBSCAN, noise beside a cluster): what the training labels around a
    pixel say. self_index: for reference pixels themselves, their row in `ref`, left out
    (leave-one-out) so that training sees the same evidence as prediction.
    group: the pixels' temporal (tskm) labels; then only reference pixels of the same
    temporal label vote - DBSCAN joined pixels of one temporal cluster only, so these are
    the neighbours that decide a pixel's cluster (mixed neighbours gave 96 % on the medium
    hard scene, same-label ones more: README).
    """
    n = np.asarray(x).shape[0]
    out = np.zeros((n, num_class), dtype=np.float32)
    if n == 0 or ref.size == 0:
        return out
    pts = np.nan_to_num(np.column_stack([x, y]), nan=0.0)
    self_index = None if self_index is None else np.asarray(self_index, dtype=np.int64)
    if group is None or ref.temporal.size != ref.size:
        _votes_into(out, np.arange(n), ref, None, pts, k, self_index)
        return out
    group = np.asarray(group, dtype=np.int64)
    for g in np.unique(group):
        _votes_into(out, np.nonzero(group == g)[0], ref, int(g), pts, k, self_index)
    return out


def _votes_into(out, query, ref, group, pts, k, self_index):
    """Fill out[query] with the class shares of the k nearest reference pixels of group."""
    rows = ref.rows(group)
    k = min(k, rows.size - (1 if self_index is not None else 0))
    if k < 1 or query.size == 0:
        return
    num_class = out.shape[1]
    if self_index is None:
        _, idx = ref.tree(group).query(pts[query], k=k, workers=-1)
        idx = rows[idx.reshape(query.size, k)]
    else:
        _, idx = ref.tree(group).query(pts[query], k=k + 1, workers=-1)
        idx = rows[idx.reshape(query.size, k + 1)]
        drop = idx == self_index[query][:, None]
        drop[~drop.any(axis=1), -1] = True
        drop &= np.cumsum(drop, axis=1) == 1         # duplicate positions: drop one only
        idx = idx[~drop].reshape(query.size, k)
    # counts of the occupied (pixel, class) cells only: a dense bincount of pixels x classes
    # cost 10x more at 1,000 classes; out's rows of `query` are still zero (np.put writes
    # into out's flat index whatever its layout)
    cell, count = np.unique((query[:, None] * num_class + ref.cls[idx]).ravel(),
                            return_counts=True)
    np.put(out, cell, count / np.float32(k))


@dataclass
class TwinResolver:
    """Documented post-step of the time-series-only model.

    DBSCAN splits one temporal (tskm) cluster into spatially separate clusters ("twins")
    whose series are indistinguishable; an LSTM that sees only the series spreads its
    probability over them. The probabilities of twins are summed and the pixel goes to the
    twin owning the nearest training pixel. `group[c]` is the twin group of class index c
    (-1: not a twin).
    """
    group: list

    @property
    def active(self):
        return any(g >= 0 for g in self.group)

    def resolve(self, prob, x, y, ref):
        """(n, C) probabilities -> (class index, probability) per pixel."""
        prob = np.asarray(prob)
        if not self.active:
            idx = prob.argmax(axis=1)
            return idx, prob[np.arange(prob.shape[0]), idx].astype(np.float32)
        units, unit_of_class = self._units()
        to_unit = np.zeros((len(self.group), len(units)), dtype=prob.dtype)
        to_unit[np.arange(len(self.group)), unit_of_class] = 1
        merged = prob @ to_unit
        best = merged.argmax(axis=1)
        p = merged[np.arange(prob.shape[0]), best]
        idx = np.array([units[u][0] for u in best], dtype=np.int64)
        for u, members in enumerate(units):
            sel = np.nonzero(best == u)[0]
            if len(members) < 2 or sel.size == 0:
                continue
            # Without a position the pixel keeps the twin the model liked best.
            idx[sel] = np.array(members)[prob[sel][:, members].argmax(axis=1)]
            own = np.isin(ref.cls, members)
            pts = np.column_stack([x[sel], y[sel]])
            ok = np.all(np.isfinite(pts), axis=1)
            if own.any() and ok.any():
                from scipy.spatial import cKDTree
                _, nn = cKDTree(np.column_stack([ref.x[own], ref.y[own]])).query(pts[ok])
                idx[sel[ok]] = ref.cls[own][nn]
        return idx, p.astype(np.float32)

    def _units(self):
        """Merged output units: singletons and twin groups, in class order."""
        units, unit_of_group = [], {}
        unit_of_class = np.empty(len(self.group), dtype=np.int64)
        for c, g in enumerate(self.group):
            if g < 0:
                unit_of_class[c] = len(units)
                units.append([c])
            elif g in unit_of_group:
                unit_of_class[c] = unit_of_group[g]
                units[unit_of_group[g]].append(c)
            else:
                unit_of_group[g] = len(units)
                unit_of_class[c] = len(units)
                units.append([c])
        return units, unit_of_class

    def to_dict(self):
        return {"group": [int(g) for g in self.group]}


def one_hot(labels, k):
    """(n, k + 1) float32 one-hot of tskm labels 1..k; column 0 = unknown (-1, 0)."""
    labels = np.asarray(labels, dtype=np.int64)
    out = np.zeros((labels.size, k + 1), dtype=np.float32)
    out[np.arange(labels.size), np.where((labels >= 1) & (labels <= k), labels, 0)] = 1.0
    return out


def twin_groups(class_id, parent):
    """Twin group per class index from the parent temporal cluster of each class.

    parent: dict cluster id -> tskm cluster (or None when unknown). Noise (class 0) and
    clusters alone in their temporal cluster get -1.
    """
    group = [-1] * len(class_id)
    if not parent:
        return group
    by_parent = {}
    for c, cid in enumerate(class_id):
        if cid > 0 and parent.get(int(cid)) is not None:
            by_parent.setdefault(parent[int(cid)], []).append(c)
    twins = [members for _, members in sorted(by_parent.items()) if len(members) > 1]
    for g, members in enumerate(twins):
        for c in members:
            group[c] = g
    return group


# ----------------------------------------------------------------- saved bundle

@dataclass
class ModelBundle:
    """A trained model with everything needed to apply it to a stack."""
    name: str
    variant: str
    class_id: list
    prep: Preprocessor
    twins: TwinResolver
    reference: Reference = field(default_factory=Reference)
    num_neighbours: int = NUM_NEIGHBOURS
    model: object = None
    train_stack: dict = field(default_factory=dict)
    train_index: list = field(default_factory=list)
    temporal: dict = field(default_factory=dict)
    vote_prior: float = 0.0
    # class frequencies (order of class_id) of the rows the model was fitted on and of the
    # training scene's labelled pixels; their ratio corrects the output for the prior shift
    # of a class-balanced sample (prior_weights)
    train_prior: list = field(default_factory=list)
    scene_prior: list = field(default_factory=list)

    @property
    def uses_static(self):
        return self.name == "lstmPerceptron"

    @property
    def num_temporal(self):
        """k of the tskm clusters whose one-hot label lstmPerceptron sees (0: none)."""
        return int(self.temporal.get("num_cluster", 0)) if self.uses_static else 0

    def static_width(self, num_raw):
        """Width of the static input that inputs() builds from num_raw raw features."""
        return num_raw + len(self.class_id) + (self.num_temporal + 1 if self.num_temporal else 0)

    def inputs(self, disp, static_raw, self_index=None, temporal=None):
        """Model inputs of stack rows; self_index: rows of `reference` (training, see votes);
        temporal: the rows' tskm labels (needed when num_temporal > 0)."""
        x = self.prep.series(disp)
        if not self.uses_static:
            return x
        if self.num_temporal and temporal is None:
            raise HotspotError(f"model '{self.name}' needs the temporal (tskm) label of "
                               "every pixel")
        group = temporal if self.num_temporal else None
        votes = neighbour_votes(self.reference, static_raw[:, -2], static_raw[:, -1],
                                len(self.class_id), self.num_neighbours, self_index, group)
        parts = [self.prep.static(static_raw), votes]
        if self.num_temporal:
            parts.append(one_hot(temporal, self.num_temporal))
        out = [x, np.concatenate(parts, axis=1)]
        return out + [votes] if self.vote_prior else out

    def predict_proba(self, disp, static_raw, batch_size=4096, temporal=None):
        n = disp.shape[0]
        if n == 0:
            return np.zeros((0, len(self.class_id)), dtype=np.float32)
        inputs = self.inputs(disp, static_raw, temporal=temporal)
        inputs = inputs if isinstance(inputs, list) else [inputs]
        # Batch by batch into one preallocated array: model.predict converts each whole input
        # to a tensor (a copy of the ~1,000-wide static block) and concatenates the outputs
        # (a copy of the probabilities); per batch, the copies are small and reuse memory.
        # Every batch has one shape (the ragged tail is padded), so the backend compiles the
        # predict function once.
        batch = min(batch_size, n)
        out = None
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            rows = [a[start:stop] for a in inputs]
            if stop - start < batch:
                pad = batch - (stop - start)
                rows = [np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)])
                        for a in rows]
            prob = np.asarray(self.model.predict_on_batch(rows if len(rows) > 1 else rows[0]))
            if out is None:
                out = np.empty((n, prob.shape[1]), dtype=np.float32)
            out[start:stop] = prob[:stop - start]
        return out

    def prior_weights(self):
        """scene / training class frequency per class, or None when unknown or equal.

        A softmax trained on a class-balanced sample estimates p(class | x) under the
        sample's class frequencies; multiplying by scene / sample frequency and renormalising
        gives the posterior under the scene's (Saerens, Latinne & Decaestecker 2002, Neural
        Computation 14, 21-41). LA-scale scene (docs/quality.md): the no-cluster class is 79 %
        of the pixels but 0.1 % of the balanced sample; uncorrected, 14 % of the no-cluster
        pixels took a cluster's label.
        """
        k = len(self.class_id)
        if len(self.train_prior) != k or len(self.scene_prior) != k:
            return None
        train = np.asarray(self.train_prior, dtype=np.float64)
        scene = np.asarray(self.scene_prior, dtype=np.float64)
        if not (np.all(train > 0) and np.all(scene > 0)) or np.allclose(train, scene):
            return None
        return scene / train

    def classify(self, disp, static_raw, batch_size=4096, temporal=None, prior_correction=False):
        """(cluster id, probability) per row; argmax after the twin post-step.

        prior_correction: reweight the probabilities to the scene's class frequencies
        (prior_weights) before the argmax."""
        prob = self.predict_proba(disp, static_raw, batch_size, temporal)
        weights = self.prior_weights() if prior_correction else None
        if weights is not None:
            # in place (predict_proba returns a fresh array): the (pixels x classes) block
            # is the largest array of predict
            if prob.dtype != np.float32 or not prob.flags.writeable:
                prob = prob.astype(np.float32)
            prob *= weights.astype(np.float32)
            prob /= prob.sum(axis=1, keepdims=True)
        idx, p = self.twins.resolve(prob, static_raw[:, -2], static_raw[:, -1], self.reference)
        return np.asarray(self.class_id, dtype=np.int32)[idx], p

    def save(self, keras_path):
        """Write the .keras file and its JSON sidecar, each atomically; sidecar first."""
        keras_path = Path(keras_path)
        keras_path.parent.mkdir(parents=True, exist_ok=True)
        # Keras picks the format from the suffix: the temp name must end in .keras.
        tmp = keras_path.with_name(f"{keras_path.stem}.tmp{os.getpid()}.keras")
        try:
            self.model.save(tmp)
            meta = {"name": self.name, "variant": self.variant,
                    "class_id": [int(c) for c in self.class_id],
                    "static_features": list(STATIC_FEATURES),
                    "num_neighbours": int(self.num_neighbours),
                    "preprocessing": asdict(self.prep), "twins": self.twins.to_dict(),
                    "reference": self.reference.to_dict(), "train_stack": self.train_stack,
                    "train_index": [int(i) for i in self.train_index],
                    "temporal": self.temporal, "vote_prior": float(self.vote_prior),
                    "train_prior": [float(v) for v in self.train_prior],
                    "scene_prior": [float(v) for v in self.scene_prior],
                    "keras_sha256": _sha256(tmp)}
            with atomic_path(sidecar_path(keras_path)) as jtmp:
                jtmp.write_text(json.dumps(meta))
            os.replace(tmp, keras_path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return keras_path


def sidecar_path(keras_path):
    return Path(keras_path).with_suffix(".json")


def load_bundle(keras_path):
    """Load a .keras model and its sidecar, checking that they belong together."""
    keras_path = Path(keras_path)
    meta_path = sidecar_path(keras_path)
    if not keras_path.is_file():
        raise HotspotError(f"{keras_path}: model file not found; run the train_lstm step first "
                           "or set hotspot.predict.modelFile to a trained .keras file")
    if not meta_path.is_file():
        raise HotspotError(f"{meta_path}: preprocessing file of model {keras_path.name} not found; "
                           "a model is saved by train_lstm as NAME.keras + NAME.json")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise HotspotError(f"{meta_path}: not valid JSON ({exc})") from None
    if meta.get("keras_sha256") != _sha256(keras_path):
        raise HotspotError(f"{keras_path}: does not match {meta_path.name} (written by different "
                           "train_lstm runs); run train_lstm again")
    keras = _keras()
    model = keras.models.load_model(keras_path, compile=False)
    return ModelBundle(name=meta["name"], variant=meta["variant"], class_id=meta["class_id"],
                       prep=Preprocessor(**meta["preprocessing"]),
                       twins=TwinResolver(**meta["twins"]), model=model,
                       reference=Reference(**meta["reference"]),
                       num_neighbours=meta["num_neighbours"],
                       train_stack=meta.get("train_stack", {}),
                       train_index=meta.get("train_index", []),
                       temporal=meta.get("temporal", {}),
                       vote_prior=meta.get("vote_prior", 0.0),
                       train_prior=meta.get("train_prior", []),
                       scene_prior=meta.get("scene_prior", []))


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_dates(bundle, stack_dates, source):
    """None when the stack has the model's epochs, else interpolation weights (with a warning)."""
    model_dates = bundle.prep.dates
    if list(stack_dates) == list(model_dates):
        return None
    weights = interpolation_weights(list(stack_dates), model_dates, source)
    msg = (f"{source}: {len(stack_dates)} epochs ({stack_dates[0]}-{stack_dates[-1]}) differ from "
           f"the {len(model_dates)} epochs model '{bundle.name}' was trained on "
           f"({model_dates[0]}-{model_dates[-1]}); the series are linearly interpolated to the "
           "model's epochs")
    warnings.warn(msg, stacklevel=2)
    print(f"WARNING: {msg}", flush=True)
    return weights
