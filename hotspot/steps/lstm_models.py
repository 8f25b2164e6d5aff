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
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from hotspot.utils.errors import HotspotError
from hotspot.utils.geo import lonlat_to_xy_km
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
    import keras
    return keras


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
