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


def _touching(table, labels, geo, member, need):
    """Rows (i, j), i < j, of the clusters in `member` whose pixels come within TOUCH_SPACING
    spacings, at least one of each pair in `need`. Without the spatial null a core and the
    rest of the cluster it was split from never count (a core never goes back into it: the
    correlation rule cannot tell the noise pixels a weak hotspot was cut from from more of the
    same bowl). With it, same_feature can (half maximum, shape): family tuning seeds 0, 2, 4
    had bowls cut into a core and its parent's rest, each a hotspot below IoU 0.5
    (docs/quality.md)."""
    ids = table["clusterId"]
    labels = np.asarray(labels, dtype=np.int64)
    pix = np.nonzero(np.isin(labels, ids[member]))[0]
    pts = np.c_[geo["x"][pix], geo["y"][pix]]
    pairs = cKDTree(pts).query_pairs(TOUCH_SPACING * geo["spacing"], output_type="ndarray")
    if not pairs.size:
        return np.zeros((0, 2), dtype=np.int64)
    row = np.searchsorted(ids, labels[pix])
    a, b = row[pairs[:, 0]], row[pairs[:, 1]]
    parent_of = np.asarray(table.get("coreParent", np.zeros(ids.size)), dtype=np.int64)
    keep = (a != b) & (need[a] | need[b])
    if geo.get("null") is None:
        keep &= (parent_of[a] != ids[b]) & (parent_of[b] != ids[a])
    return np.unique(np.sort(np.c_[a, b][keep], axis=1), axis=0).reshape(-1, 2)


def fragment_groups(table, labels, geo):
    """{cluster id: id it merges into} for a hotspot and the clusters that touch it (pixels
    within TOUCH_SPACING spacings) and whose contrast series, smoothed over the tskm window,
    correlate with its at >= MERGE_CORRELATION: other hotspots, and compact candidates
    (tested against a ring, not unwrapping errors) too weak to be hotspots alone; each group
    goes to its smallest cluster id. With the spatial null (geo["null"]: falseDiscoveryRate
    set) the pairs are decided by hotspot.steps.same_feature instead, and groups join by
    complete linkage (same_feature_groups)."""
    ids = table["clusterId"]
    hot = table["isHotspot"]
    partner = (table["isCandidate"] & ~hot & ~table["isUnwrapError"]
               & (np.asarray(table["ringPixel"]) > 0))
    null = geo.get("null")
    if not hot.any() or hot.sum() + partner.sum() < 2:
        return {}
    touch = _touching(table, labels, geo, hot | partner, hot)
    if not touch.size:
        return {}
    if null is not None:
        return same_feature_groups(touch, ids, null)
    from scipy.ndimage import uniform_filter1d
    smooth = uniform_filter1d(geo["contrast"], geo["window"], axis=1, mode="nearest")
    parent = {}

    def root(c):
        while parent.get(c, c) != c:
            c = parent[c]
        return c

    for i, j in touch.tolist():
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.corrcoef(smooth[i], smooth[j])[0, 1]
        if np.isfinite(r) and r >= MERGE_CORRELATION:
            ci, cj = root(int(ids[i])), root(int(ids[j]))
            if ci != cj:
                parent[max(ci, cj)] = min(ci, cj)
    return {c: root(c) for c in parent}


def same_feature_groups(touch, ids, null):
    """{cluster id: id it merges into} from the touching pairs (rows i, j of the table) that
    hotspot.steps.same_feature finds alike against the scene's noise. Groups join by complete
    linkage, strongest evidence (the weaker piece's z along the stronger) first: two groups
    merge only when every touching pair between them is alike. A chain is not enough: the
    halo around a bowl is alike with a weak fragment of it but not with its core (medium hard
    seed 0: a 573-pixel background cluster joined a true hotspot through a 138-pixel piece
    of it, IoU 0.79 -> 0.33; docs/quality.md)."""
    verdict = {}
    for i, j in touch.tolist():
        alike, _, z, _ = same_feature.same_feature(null["contrast"][i], null["contrast"][j],
                                                    null["cov"][i], null["cov"][j],
                                                    null["level"])
        verdict[(i, j)] = verdict[(j, i)] = (alike, z)
    group = {}

    def members(c):
        return group.get(c, {c})

    where = {}
    order = sorted(((-v[1], i, j) for (i, j), v in verdict.items() if i < j and v[0]))
    for _, i, j in order:
        gi, gj = where.get(i, i), where.get(j, j)
        if gi == gj:
            continue
        if all(verdict.get((u, v), (True,))[0] for u in members(gi) for v in members(gj)):
            union = members(gi) | members(gj)
            root = min(union)
            group.pop(gi, None)
            group.pop(gj, None)
            group[root] = union
            for m in union:
                where[m] = root
    out = {}
    for rows in group.values():
        target = int(min(ids[r] for r in rows))
        out.update({int(ids[r]): target for r in rows if int(ids[r]) != target})
    return out


def halo_hotspots(table, labels, geo):
    """{cluster id: cluster id of the hotspot it is the halo of} among touching hotspots
    (hotspot.steps.same_feature.halo, the spatial null's contrasts and covariances of the
    last pass); empty without the spatial null. A halo of a halo goes to the strongest."""
    null = geo.get("null")
    hot = np.asarray(table["isHotspot"], dtype=bool)
    if null is None or hot.sum() < 2:
        return {}
    ids = table["clusterId"]
    out = {}
    for i, j in _touching(table, labels, geo, hot, hot).tolist():
        which = same_feature.halo(null["contrast"][i], null["contrast"][j], null["cov"][i],
                                  null["cov"][j], null["level"])
        if which:
            weak, strong = (i, j) if which == 1 else (j, i)
            out[int(ids[weak])] = int(ids[strong])
    for weak in list(out):
        seen = {weak}
        while out[weak] in out and out[weak] not in seen:
            seen.add(out[weak])
            out[weak] = out[out[weak]]
    return out


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
