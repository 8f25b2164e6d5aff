"""Dispersion's fragment merge: touching hotspots (and weak fragments) whose contrasts move alike
become one cluster; a merge that dilutes keeps only its hotspots (see hotspot.steps.dispersion).
"""
import numpy as np
from scipy.spatial import cKDTree

from hotspot.steps import same_feature
from hotspot.utils.labels import NO_DATA

# Fragment merge (compute_dispersion): a hotspot and clusters with pixels closer than
# TOUCH_SPACING pixel spacings whose smoothed contrasts correlate at MERGE_CORRELATION.
# Medium hard scenes: fragment pairs correlated 0.86-0.98; the two fragments of seed 4's
# seasonal twin were 2.2 spacings apart (DBSCAN noise pixels between them), hence 2.5.
TOUCH_SPACING = 2.5
MERGE_CORRELATION = 0.8


def _shrink_merges(merged, lost, hot_before):
    """merged without the groups whose root is in `lost`, except that a lost group made of
    hotspots (of the pass before merging) and weaker fragments is kept for its >= 2
    hotspots alone. Returns (merges, the hotspot groups kept as lists of ids)."""
    out = {c: r for c, r in merged.items() if r not in lost}
    kept = []
    for root in sorted(lost):
        members = [root] + sorted(c for c, r in merged.items() if r == root)
        hot = sorted(m for m in members if m in hot_before)
        if 2 <= len(hot) < len(members):
            out.update({m: hot[0] for m in hot[1:]})
            kept.append(hot)
    return out, kept


def _merge_labels(labels, merged, core_parent, kwargs):
    """labels with each merged cluster renamed to its group's id, and the pass keywords with
    the merged cores dropped from core_parent."""
    lut = np.arange(labels.max() + 1)
    lut[list(merged)] = list(merged.values())
    out = np.where(labels > 0, lut[np.maximum(labels, 0)], labels)
    kwargs = dict(kwargs)
    if core_parent:
        kwargs["core_parent"] = {c: p for c, p in core_parent.items() if c not in merged}
    return out, kwargs


def fragment_groups(table, labels, geo):
    """{cluster id: id it merges into} for a hotspot and the clusters that touch it (pixels
    within TOUCH_SPACING spacings) and whose contrast series, smoothed over the tskm window,
    correlate with its at >= MERGE_CORRELATION: other hotspots, and compact candidates
    (tested against a ring, not unwrapping errors) too weak to be hotspots alone; each group
    goes to its smallest cluster id. With the spatial null (geo["null"]: falseDiscoveryRate
    set) two touching hotspots merge when hotspot.steps.same_feature finds them alike instead."""
    ids = table["clusterId"]
    hot = table["isHotspot"]
    partner = (table["isCandidate"] & ~hot & ~table["isUnwrapError"]
               & (np.asarray(table["ringPixel"]) > 0))
    null = geo.get("null")
    if null is not None:
        # under the spatial-null decision only hotspots merge: the halo around a bowl carries
        # some of its signal (a discovery, same shape) but is no part of it (docs/quality.md)
        partner = np.zeros_like(hot)
    if not hot.any() or hot.sum() + partner.sum() < 2:
        return {}
    labels = np.asarray(labels, dtype=np.int64)
    pix = np.nonzero(np.isin(labels, ids[hot | partner]))[0]
    pts = np.c_[geo["x"][pix], geo["y"][pix]]
    pairs = cKDTree(pts).query_pairs(TOUCH_SPACING * geo["spacing"], output_type="ndarray")
    if not pairs.size:
        return {}
    row = np.searchsorted(ids, labels[pix])
    a, b = row[pairs[:, 0]], row[pairs[:, 1]]
    # a core never goes back into the rest of the cluster it was split from
    parent_of = np.asarray(table.get("coreParent", np.zeros(ids.size)), dtype=np.int64)
    keep = (a != b) & (hot[a] | hot[b]) & (parent_of[a] != ids[b]) & (parent_of[b] != ids[a])
    touch = np.unique(np.sort(np.c_[a, b][keep], axis=1), axis=0)
    if not touch.size:
        return {}
    from scipy.ndimage import uniform_filter1d
    smooth = uniform_filter1d(geo["contrast"], geo["window"], axis=1, mode="nearest")
    parent = {}

    def root(c):
        while parent.get(c, c) != c:
            c = parent[c]
        return c

    for i, j in touch.tolist():
        if null is not None:
            # one feature by a test against the scene's noise (hotspot.steps.same_feature)
            alike = same_feature.same_feature(null["contrast"][i], null["contrast"][j],
                                              null["cov"][i], null["cov"][j], null["level"])[0]
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                r = np.corrcoef(smooth[i], smooth[j])[0, 1]
            alike = np.isfinite(r) and r >= MERGE_CORRELATION
        if alike:
            ci, cj = root(int(ids[i])), root(int(ids[j]))
            if ci != cj:
                parent[max(ci, cj)] = min(ci, cj)
    return {c: root(c) for c in parent}


def _hotspot_label(labels, table):
    """Per pixel: hotspotId of its cluster, 0 for no hotspot, NO_DATA where unmeasured."""
    labels = np.asarray(labels, dtype=np.int64)
    out = np.where(labels >= 0, 0, NO_DATA).astype(np.int32)
    labelled = labels > 0
    out[labelled] = table["hotspotId"][np.searchsorted(table["clusterId"], labels[labelled])]
    return out


def _cluster_peak(labels, ids, values):
    """Largest finite value of each cluster (ids sorted), NaN where it has none."""
    labels = np.asarray(labels)
    labelled = (labels > 0) & np.isfinite(values)
    peak = np.full(ids.size, np.nan)
    np.fmax.at(peak, np.searchsorted(ids, labels[labelled]), values[labelled])
    return peak
