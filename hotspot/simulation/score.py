"""Score a label map against the truth of a simulated scene (hotspot.simulation).

score_labels(label, truth) compares per-pixel arrays in the same order (the stack order:
mask-valid pixels, row-major).  truth: -1 not measured (ignored), 0 background, k >= 1
hotspot k.  label: -1 / 0 no cluster, c >= 1 cluster c (any label file's pixelLabel).

For every true hotspot: the predicted cluster with the best IoU (intersection over union
of the pixel sets), its precision and recall, and `detected` = IoU >= iou_threshold (0.5).
With IoU > 0.5 a cluster can match at most one hotspot, so detections are one-to-one.
False hotspots: predicted clusters whose IoU is below the threshold against every true
hotspot.  ARI: sklearn's adjusted_rand_score of the two partitions over the measured
pixels (clusters vs hotspots + background).  Twins (hotspots of one twinGroup, same
behaviour far apart): `separated` when their best clusters are different clusters.

Label files of the intermediate steps (clusterTSKM.h5, clusterDBSCAN.h5) also label the
background, which would all count as false hotspots.  Two options treat such clusters as
background (label 0) before any metric is computed, and list them as `ignored_clusters`:
  ignore_larger_than = N     clusters with more than N measured pixels
  ignore_background = f      clusters whose IoU with the truth background is >= f
                             (a cluster covering >= f of the background pixels)
e.g. hotspot_score.py clusterDBSCAN.h5 hotspotTruth.h5 --ignore-background 0.02
"""
import numpy as np

from hotspot.utils.errors import HotspotError

IOU_THRESHOLD = 0.5


def _contingency(truth_ids, label_ids):
    """Counts[i, j] of pixels with truth value ti[i] and label value lj[j]."""
    t_vals, t_inv = np.unique(truth_ids, return_inverse=True)
    l_vals, l_inv = np.unique(label_ids, return_inverse=True)
    counts = np.bincount(t_inv.astype(np.int64) * l_vals.size + l_inv,
                         minlength=t_vals.size * l_vals.size)
    return t_vals, l_vals, counts.reshape(t_vals.size, l_vals.size)


def _iou(counts, row_size, col_size):
    union = row_size[:, None] + col_size[None, :] - counts
    return np.where(union > 0, counts / np.maximum(union, 1), 0.0)


def score_labels(label, truth, twin_group=None, behaviour=None, iou_threshold=IOU_THRESHOLD,
                 ignore_larger_than=None, ignore_background=None):
    """Compare per-pixel labels with the truth; returns a JSON-serialisable dict.

    twin_group / behaviour: per-hotspot sequences (index k-1 for hotspot k), optional.
    """
    from sklearn.metrics import adjusted_rand_score
    label = np.asarray(label).ravel()
    truth = np.asarray(truth).ravel()
    if label.shape != truth.shape:
        raise HotspotError(f"score: {label.size} labels but {truth.size} truth pixels; "
                           "both must list the same pixels in the same order")
    measured = truth >= 0
    t = truth[measured].astype(np.int64)
    p = np.where(label[measured] > 0, label[measured], 0).astype(np.int64)

    # clusters treated as background
    t_vals, l_vals, counts = _contingency(t, p)
    col_size = counts.sum(axis=0)
    ignored = set()
    if ignore_larger_than is not None:
        ignored |= {int(c) for c, n in zip(l_vals, col_size) if c > 0 and n > ignore_larger_than}
    if ignore_background is not None and 0 in t_vals:
        bg_row = int(np.nonzero(t_vals == 0)[0][0])
        bg_iou = _iou(counts[bg_row:bg_row + 1], counts[bg_row:bg_row + 1].sum(axis=1),
                      col_size)[0]
        ignored |= {int(c) for c, v in zip(l_vals, bg_iou) if c > 0 and v >= ignore_background}
    if ignored:
        p = np.where(np.isin(p, sorted(ignored)), 0, p)
        t_vals, l_vals, counts = _contingency(t, p)
        col_size = counts.sum(axis=0)

    row_size = counts.sum(axis=1)
    iou = _iou(counts, row_size, col_size)
    cluster_cols = np.nonzero(l_vals > 0)[0]
    hotspot_ids = _hotspot_ids(truth, twin_group)
    hotspots = []
    for hid in hotspot_ids:
        entry = {"id": int(hid), "behaviour": _item(behaviour, hid, ""),
                 "twin_group": int(_item(twin_group, hid, 0)), "num_pixel": 0,
                 "best_iou": 0.0, "cluster": 0, "cluster_pixel": 0, "precision": 0.0,
                 "recall": 0.0, "detected": False}
        rows = np.nonzero(t_vals == hid)[0]
        if rows.size and cluster_cols.size:
            r = int(rows[0])
            j = int(cluster_cols[np.argmax(iou[r, cluster_cols])])
            entry["num_pixel"] = int(row_size[r])
            if counts[r, j] > 0:
                entry.update({
                    "best_iou": float(iou[r, j]), "cluster": int(l_vals[j]),
                    "cluster_pixel": int(col_size[j]),
                    "precision": float(counts[r, j] / col_size[j]),
                    "recall": float(counts[r, j] / row_size[r]),
                    "detected": bool(iou[r, j] >= iou_threshold)})
        elif rows.size:
            entry["num_pixel"] = int(row_size[rows[0]])
        hotspots.append(entry)

    hot_rows = np.nonzero(t_vals > 0)[0]
    best_per_cluster = (iou[np.ix_(hot_rows, cluster_cols)].max(axis=0) if hot_rows.size
                        else np.zeros(cluster_cols.size))
    false_ids = [int(c) for c in l_vals[cluster_cols[best_per_cluster < iou_threshold]]]
    detected = [h["id"] for h in hotspots if h["detected"]]
    missed = [h["id"] for h in hotspots if not h["detected"]]
    twins = _twins(hotspots)
    return {
        "num_pixel": int(t.size),
        "num_hotspot": len(hotspots),
        "num_cluster": int(cluster_cols.size),
        "num_detected": len(detected),
        "num_missed": len(missed),
        "num_false": len(false_ids),
        "detected": detected,
        "missed": missed,
        "false_clusters": false_ids,
        "ignored_clusters": sorted(ignored),
        "mean_iou": float(np.mean([h["best_iou"] for h in hotspots])) if hotspots else 0.0,
        "ari": float(adjusted_rand_score(t, p)) if t.size else 0.0,
        "twins_separated": all(tw["separated"] for tw in twins) if twins else None,
        "hotspots": hotspots,
        "twins": twins,
        "options": {"iou_threshold": iou_threshold, "ignore_larger_than": ignore_larger_than,
                    "ignore_background": ignore_background},
    }


def _hotspot_ids(truth, twin_group):
    """Hotspot ids: from the table when given (hotspots with no measured pixel included)."""
    present = {int(v) for v in np.unique(truth) if v > 0}
    if twin_group is not None:
        present |= set(range(1, len(twin_group) + 1))
    return sorted(present)


def _item(seq, hid, default):
    if seq is None or hid - 1 >= len(seq):
        return default
    value = seq[hid - 1]
    return value.item() if hasattr(value, "item") else value


def _twins(hotspots):
    groups = {}
    for h in hotspots:
        if h["twin_group"] > 0:
            groups.setdefault(h["twin_group"], []).append(h)
    out = []
    for group, members in sorted(groups.items()):
        clusters = [m["cluster"] for m in members]
        out.append({"group": group, "hotspots": [m["id"] for m in members],
                    "clusters": clusters,
                    "separated": (all(c > 0 for c in clusters)
                                  and len(set(clusters)) == len(clusters)),
                    "detected": all(m["detected"] for m in members)})
    return out


# ---------------------------------------------------------------- files

def _read_labels(label_file, dataset, truth_shape, num_measured):
    """pixelLabel of a label file, or its map on the truth grid when the pixels differ."""
    from hotspot.utils.h5io import open_h5
    with open_h5(label_file) as f:
        if dataset in f and f[dataset].ndim == 1 and f[dataset].shape[0] == num_measured:
            return f[dataset][:], "pixels"
        maps = [name for name, obj in f.items()
                if getattr(obj, "shape", None) == tuple(truth_shape) and obj.dtype.kind in "iu"]
        if maps:
            return f[maps[0]][:], "map"
        have = f[dataset].shape if dataset in f else "missing"
        raise HotspotError(
            f"{label_file}: dataset '{dataset}' ({have}) does not match the {num_measured} "
            f"measured pixels of the truth, and no integer map of shape {tuple(truth_shape)} "
            "was found; score a label file made from this simulated scene")


def score_files(label_file, truth_file, dataset="pixelLabel", **kwargs):
    """score_labels for a label file (pixelLabel, see hotspot.utils.labels) and hotspotTruth.h5.

    When the label file lists other pixels than the truth (e.g. a stack loaded with an
    extra mask), its map on the truth grid (LENGTH x WIDTH integer dataset) is used.
    """
    from hotspot.simulation.truth import read_truth
    truth = read_truth(truth_file)
    pixel_truth = truth["pixelTruth"]
    labels, kind = _read_labels(label_file, dataset, truth["hotspot"].shape, pixel_truth.size)
    target = pixel_truth if kind == "pixels" else truth["hotspot"]
    score = score_labels(labels, target, twin_group=truth["twinGroup"],
                         behaviour=truth["behaviour"], **kwargs)
    score["label_file"] = str(label_file)
    score["truth_file"] = str(truth_file)
    score["compared"] = kind
    return score


def format_score(score):
    """A readable table of a score dict."""
    lines = [f"{'hotspot':>7}  {'behaviour':<20} {'twin':>4} {'pixels':>7} {'best IoU':>8} "
             f"{'cluster':>7} {'precision':>9} {'recall':>6}  detected"]
    for h in score["hotspots"]:
        lines.append(f"{h['id']:>7}  {h['behaviour'] or '-':<20} {h['twin_group'] or '-':>4} "
                     f"{h['num_pixel']:>7} {h['best_iou']:>8.3f} {h['cluster'] or '-':>7} "
                     f"{h['precision']:>9.3f} {h['recall']:>6.3f}  "
                     f"{'yes' if h['detected'] else 'NO'}")
    thr = score["options"]["iou_threshold"]
    lines.append(f"detected {score['num_detected']}/{score['num_hotspot']} (IoU >= {thr:g}), "
                 f"missed {score['num_missed']} {score['missed']}, "
                 f"false hotspots {score['num_false']} {_short(score['false_clusters'])}, "
                 f"mean IoU {score['mean_iou']:.3f}, ARI {score['ari']:.3f}")
    if score["ignored_clusters"]:
        lines.append(f"clusters treated as background: {_short(score['ignored_clusters'])}")
    for tw in score["twins"]:
        ids = ", ".join(str(i) for i in tw["hotspots"])
        cl = " / ".join(str(c) if c else "-" for c in tw["clusters"])
        lines.append(f"twins {tw['group']} (hotspots {ids}): clusters {cl} -> "
                     f"{'separated' if tw['separated'] else 'NOT separated'}")
    return "\n".join(lines)


def _short(ids, n=12):
    ids = list(ids)
    text = ", ".join(str(i) for i in ids[:n])
    return f"[{text}{', ...' if len(ids) > n else ''}]"
