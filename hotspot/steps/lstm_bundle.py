"""A trained classifier on disk: the .keras model, its JSON sidecar (preprocessing, classes,
reference pixels, priors) tied to it by SHA-256, and the checks that they belong together
(see hotspot.steps.lstm_models).
"""
import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hotspot import products
from hotspot.steps.lstm_models import (NUM_NEIGHBOURS, STATIC_FEATURES, Preprocessor, _keras,
                                       interpolation_weights)
from hotspot.steps.lstm_spatial import Reference, TwinResolver, neighbour_votes, one_hot
from hotspot.utils.errors import HotspotError
from hotspot.utils.h5io import atomic_path


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
    return Path(keras_path).with_suffix(products.SIDECAR_SUFFIX)


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
