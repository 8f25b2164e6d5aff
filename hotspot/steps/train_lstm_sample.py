"""The training sample of train_lstm: balanced pixel sampling, class limits, random and spatial
block splits, and the twin parents of the classes (see hotspot.steps.train_lstm).
"""
from pathlib import Path

import numpy as np

from hotspot.utils.errors import HotspotError
from hotspot.utils.stack import read_info, read_pixels

BALANCE_RATIO = 10          # largest / smallest class above which the sample is balanced
KEY = "hotspot.train_lstm."


def allocate_balanced(counts, total):
    """Equal share per class; classes smaller than the share give all, the rest is re-spread."""
    counts = np.asarray(counts, dtype=np.int64)
    alloc = np.zeros_like(counts)
    open_ = np.ones(counts.size, dtype=bool)
    left = int(total)
    while left > 0 and open_.any():
        share = max(1, left // int(open_.sum()))
        room = counts - alloc
        add = np.where(open_, np.minimum(room, share), 0)
        if add.sum() > left:        # share of 1 over more classes than pixels left
            order = np.nonzero(add)[0][:left]
            add = np.zeros_like(add)
            add[order] = 1
        alloc += add
        left -= int(add.sum())
        open_ &= alloc < counts
    return alloc


def sample_pixels(labels, num_sample, rng, balance_ratio=BALANCE_RATIO):
    """Indices (sorted) of the labelled pixels to use, and whether the draw was balanced."""
    valid = np.nonzero(labels >= 0)[0]
    if valid.size <= num_sample:
        return valid, False
    ids, inverse, counts = np.unique(labels[valid], return_inverse=True, return_counts=True)
    if counts.max() <= balance_ratio * counts.min():
        return np.sort(rng.choice(valid, num_sample, replace=False)), False
    alloc = allocate_balanced(counts, num_sample)
    order = np.argsort(inverse, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    picks = [rng.choice(valid[order[bounds[k]:bounds[k + 1]]], alloc[k], replace=False)
             for k in range(ids.size) if alloc[k] > 0]
    return np.sort(np.concatenate(picks)), True


def cluster_signal(series_file, labels, max_memory=4.0):
    """Mean over each cluster's pixels of the RMS of the mean-removed series (m), indexed
    by cluster id (0..max id); one pass over series_file in blocks."""
    from hotspot.utils.stack import block_size, iter_blocks
    info = read_info(series_file)
    labels = np.asarray(labels, dtype=np.int64)
    size = max(int(labels.max()) + 1, 1)
    total = np.zeros(size)
    count = np.zeros(size)
    step = block_size(info.num_date, max_memory, copies=3)
    for s, e in iter_blocks(info.num_pixel, step):
        lab = labels[s:e]
        keep = lab > 0
        if not keep.any():
            continue
        rows = read_pixels(series_file, ["displacement"], s, e)["displacement"][keep]
        rows = rows.astype(np.float64)
        rms = np.sqrt(np.nanmean((rows - np.nanmean(rows, axis=1, keepdims=True)) ** 2, axis=1))
        ok = np.isfinite(rms)
        total += np.bincount(lab[keep][ok], rms[ok], size)
        count += np.bincount(lab[keep][ok], minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, 0.0)


def limit_classes(labels, max_class, series_file, max_memory=4.0, log=print):
    """labels with only the max_class clusters of strongest signal kept (others -> 0)."""
    ids = np.unique(labels[labels > 0])
    if ids.size <= max_class:
        return labels
    signal = cluster_signal(series_file, labels, max_memory)[ids]
    keep = ids[np.argsort(-signal, kind="stable")[:max_class]]
    log(f"{ids.size} clusters > maxClass {max_class}: the {max_class} of strongest signal "
        f"(mean RMS >= {1000 * np.sort(signal)[-max_class]:.2f} mm in {Path(series_file).name}) "
        "are classes, the others join the no-cluster class")
    return np.where(np.isin(labels, keep) | (labels <= 0), labels, 0)


def random_split(n, test_size, rng):
    """Boolean test mask with round(test_size * n) pixels held out at random."""
    test = np.zeros(n, dtype=bool)
    test[rng.permutation(n)[:int(round(test_size * n))]] = True
    return test


def block_split(x, y, block_km, test_size, rng, extra_xy=None):
    """Boolean test mask holding out whole block_km tiles until test_size of the pixels.

    extra_xy: (x, y) of other pixels; then also returns which of them lie in a held-out
    tile (they must not serve as reference for a blocked test).
    """
    x = np.nan_to_num(np.asarray(x, dtype=np.float64))
    y = np.nan_to_num(np.asarray(y, dtype=np.float64))
    x0, y0 = x.min(initial=0), y.min(initial=0)

    def tile_of(px, py):
        ix = np.floor((np.nan_to_num(px) - x0) / block_km).astype(np.int64)
        iy = np.floor((np.nan_to_num(py) - y0) / block_km).astype(np.int64)
        return ix * 10_000_019 + iy

    tile = tile_of(x, y)
    tiles, inverse, counts = np.unique(tile, return_inverse=True, return_counts=True)
    if tiles.size < 2:
        raise HotspotError(f"{KEY}blockSize = {block_km:.3g} km puts the whole sample in one tile; "
                           "expected a smaller tile size (or split = random)")
    order = rng.permutation(tiles.size)
    target = test_size * x.size
    cum = np.cumsum(counts[order])
    # The tile that crosses the target goes to the test side only if that lands closer to it.
    k = int(np.searchsorted(cum, target))
    if k < tiles.size and (k == 0 or abs(cum[k] - target) < abs(cum[k - 1] - target)):
        k += 1
    k = min(max(k, 1), tiles.size - 1)
    held = np.zeros(tiles.size, dtype=bool)
    held[order[:k]] = True
    if extra_xy is None:
        return held[inverse]
    return held[inverse], np.isin(tile_of(*extra_xy), tiles[held])


def twin_parents(labels, tskm):
    """Temporal (tskm) cluster of each DBSCAN cluster: the most common tskm label of its pixels."""
    if tskm is None:
        return {}
    sel = (labels > 0) & (tskm >= 0)
    if not sel.any():
        return {}
    pairs, counts = np.unique(np.column_stack([labels[sel], tskm[sel]]), axis=0,
                              return_counts=True)
    parent = {}
    best = {}
    for (cid, t), c in zip(pairs.tolist(), counts.tolist()):
        if c > best.get(cid, -1):
            best[cid], parent[cid] = c, t
    return parent
