"""Spatial side of the LSTM classifiers: the training pixels as a reference, their neighbour
votes (lstmPerceptron), twin resolution and one-hot labels (see hotspot.steps.lstm_models).
"""
from dataclasses import dataclass, field

import numpy as np


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
