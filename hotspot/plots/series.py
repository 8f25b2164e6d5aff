"""Time-series figures: TSKM centroids and hotspot mean series, with their spread.

The spread comes from a seeded sample of member pixels read with
hotspot.utils.stack.read_rows, so memory stays bounded whatever the stack size.
"""
import math

import numpy as np

from hotspot import products
from hotspot.plots.common import (M_TO_MM, cluster_color, dates_axis, empty_message,
                                  format_date_axis, label_counts, new_figure, read_strings,
                                  save_figure)
from hotspot.utils.h5io import open_h5, read_attrs
from hotspot.utils.stack import read_rows

MAX_SAMPLE_PER_CLUSTER = 500
MAX_PANELS = 24


def sample_members(pixel_label, ids, num_date, seed, max_memory_gb,
                   per_cluster=MAX_SAMPLE_PER_CLUSTER):
    """{id: sorted pixel indices}, at most per_cluster each, within the memory budget."""
    budget = float(max_memory_gb) * 1024 ** 3 / 4
    per_cluster = int(max(10, min(per_cluster, budget // max(1, len(ids) * num_date * 4 * 3))))
    rng = np.random.default_rng(seed)
    out = {}
    for i in ids:
        idx = np.nonzero(pixel_label == i)[0]
        if idx.size > per_cluster:
            idx = np.sort(rng.choice(idx, per_cluster, replace=False))
        out[i] = idx
    return out


def member_stats(data, pixel_label, ids):
    """{id: (mean, p10, p90)} of the member displacement series, mm."""
    samples = sample_members(pixel_label, ids, data.info.num_date, data.seed, data.max_memory)
    if not samples:
        return {}
    all_idx = np.concatenate(list(samples.values()))
    rows = read_rows(data.stack_file, all_idx) * M_TO_MM
    out, start = {}, 0
    for i, idx in samples.items():
        block = rows[start:start + idx.size]
        start += idx.size
        if block.size == 0:
            continue
        p10, p90 = np.nanpercentile(block, [10, 90], axis=0)
        out[i] = (np.nanmean(block, axis=0), p10, p90)
    return out


def _scale_to_mm(dset):
    unit = dset.attrs.get("UNIT", "m")
    unit = unit.decode() if isinstance(unit, bytes) else str(unit)
    return {"m": M_TO_MM, "cm": 10.0, "mm": 1.0}.get(unit.strip().lower(), M_TO_MM)


def plot_centroids(data, out):
    """TSKM centroids (m -> mm) per cluster, with the p10-p90 band of sampled members.

    tskm's NORMALIZE changes what a centroid is: 'mean' centroids are mean-removed
    (drawn shifted by their members' temporal mean so they sit on the members),
    'zscore' centroids have no unit (the members' mean is drawn instead).
    """
    path = data.path(products.TSKM)
    attrs = read_attrs(path)
    with open_h5(path) as f:
        unit = str(attrs.get("CENTROID_UNIT", f["centroid"].attrs.get("UNIT", "m")))
        centroid = f["centroid"][()].astype(np.float64)
        c_dates = read_strings(f["date"]) if "date" in f else None
    normalize = str(attrs.get("NORMALIZE", attrs.get("hotspot.tskm.normalize", "none"))).lower()
    unitless = normalize == "zscore" or unit.strip() == "1"
    if not unitless:
        centroid = centroid * {"m": M_TO_MM, "cm": 10.0, "mm": 1.0}.get(unit.strip(), M_TO_MM)
    labels = data.pixel_label(products.TSKM)
    counts = label_counts(labels)
    ids = list(range(1, centroid.shape[0] + 1))
    stats = member_stats(data, labels, [i for i in ids if counts.get(i, 0) > 0])
    s_dates = dates_axis(data.info.dates)
    if c_dates is None or len(c_dates) != centroid.shape[1]:
        c_dates = data.info.dates if centroid.shape[1] == data.info.num_date else None
    fig = new_figure(8.5, 5.5)
    ax = fig.add_subplot()
    for i in ids:
        color = cluster_color(i)
        if i in stats:
            mean, p10, p90 = stats[i]
            ax.fill_between(s_dates, p10, p90, color=color, alpha=0.2, lw=0)
        label = f"cluster {i} ({counts.get(i, 0):,} px)"
        if unitless or c_dates is None:
            if i in stats:
                ax.plot(s_dates, stats[i][0], color=color, lw=2, label=label + ", member mean")
        else:
            line = centroid[i - 1]
            if normalize == "mean" and i in stats:
                line = line + np.nanmean(stats[i][0])
            ax.plot(dates_axis(c_dates), line, color=color, lw=2, label=label)
    ax.axhline(0, color="0.5", lw=0.6)
    format_date_axis(ax)
    ax.set_ylabel("LOS displacement (mm)")
    metric = attrs.get("METRIC", attrs.get("hotspot.tskm.metric", ""))
    what = "member means" if unitless else "centroids"
    note = {"mean": ", mean-removed", "zscore": ", z-scored fit"}.get(normalize, "")
    ax.set_title(f"Time-series k-means {what} (k = {len(ids)}"
                 + (f", {metric}" if metric else "") + note
                 + ")\nband: 10-90 % of member pixels")
    fig.legend(loc="outside right upper", fontsize="small", frameon=False)
    return save_figure(fig, out, data.dpi)


def hotspot_series(data, max_count=None):
    """[(hotspot id, mean, p10, p90, mean velocity mm/yr, num pixel)] sorted by |velocity|.

    Uses dispersion.h5's per-cluster series when present, else samples the stack.
    """
    labels = data.pixel_label(products.HOTSPOT)
    counts = label_counts(labels)
    ids = [i for i in counts if i > 0]
    if not ids:
        return []
    series = _dispersion_series(data, ids)
    if series is None:
        series = member_stats(data, labels, ids)
    vel = data.velocity_mm
    ok = (labels > 0) & np.isfinite(vel)
    n = int(labels.max()) + 1
    vsum = np.bincount(labels[ok], weights=vel[ok], minlength=n)
    vcnt = np.bincount(labels[ok], minlength=n)
    rows = []
    for i in ids:
        if i not in series:
            continue
        v = vsum[i] / vcnt[i] if vcnt[i] else np.nan
        rows.append((i, *series[i], float(v), counts[i]))
    rows.sort(key=lambda r: -abs(r[4]) if np.isfinite(r[4]) else 0)
    return rows[:max_count] if max_count else rows


def _dispersion_series(data, ids):
    path = data.path(products.DISPERSION)
    need = ("hotspotId", "meanTimeseries", "p10Timeseries", "p90Timeseries")
    if not path.is_file():
        return None
    with open_h5(path) as f:
        if not all(k in f for k in need):
            return None
        scale = _scale_to_mm(f["meanTimeseries"])
        hid = f["hotspotId"][()].astype(int)
        if f["meanTimeseries"].shape[1] != data.info.num_date:
            return None
        mean, p10, p90 = (f[k][()] * scale for k in need[1:])
    out = {}
    for row, h in enumerate(hid):
        if h in ids:
            out[int(h)] = (mean[row], p10[row], p90[row])
    return out if set(out) == set(ids) else None


def hotspot_background(data):
    """{hotspot id: displacement of its surroundings, mm} from dispersion.h5's ring fit."""
    path = data.path(products.DISPERSION)
    if not path.is_file():
        return {}
    with open_h5(path) as f:
        if not all(k in f for k in ("hotspotId", "ringTimeseries", "ringPixel")):
            return {}
        ring = f["ringTimeseries"][()] * _scale_to_mm(f["ringTimeseries"])
        hid, npx = f["hotspotId"][()].astype(int), f["ringPixel"][()]
    if ring.ndim != 2 or ring.shape[1] != data.info.num_date:
        return {}
    return {int(h): ring[k] for k, h in enumerate(hid) if h > 0 and npx[k] > 0}


def plot_hotspot_timeseries(data, out):
    """One panel per hotspot (strongest first): mean displacement and its 10-90 % band."""
    rows = hotspot_series(data)
    shown = rows[:MAX_PANELS]
    ncol = min(4, max(1, len(shown)))
    nrow = max(1, math.ceil(len(shown) / ncol))
    fig = new_figure(3.4 * ncol + 0.6, 2.6 * nrow + 0.8)
    if not shown:
        ax = fig.add_subplot()
        empty_message(ax, "no hotspot found (hotspot.h5 has no cluster id > 0)")
        ax.set_axis_off()
        fig.suptitle("Hotspot time series")
        return save_figure(fig, out, data.dpi)
    dates = dates_axis(data.info.dates)
    background = hotspot_background(data)
    axes = fig.subplots(nrow, ncol, squeeze=False, sharex=True)
    for ax, (i, mean, p10, p90, vel, npx) in zip(axes.flat, shown):
        color = cluster_color(i)
        ax.fill_between(dates, p10, p90, color=color, alpha=0.3, lw=0, label="10-90 %")
        ax.plot(dates, mean, color=color, lw=2, label="mean")
        if i in background:
            ax.plot(dates, background[i], color="0.35", lw=1, ls="--", label="surroundings")
        ax.axhline(0, color="0.5", lw=0.6)
        ax.set_title(f"H{i}: {vel:+.1f} mm/yr, {npx:,} px", fontsize="medium")
        format_date_axis(ax)
        ax.set_xlabel("")
    for ax in axes.flat[len(shown):]:
        ax.set_axis_off()
    for ax in axes[:, 0]:
        ax.set_ylabel("LOS displacement (mm)")
    axes.flat[0].legend(fontsize="x-small", loc="best")
    more = f" (strongest {len(shown)} of {len(rows)})" if len(rows) > len(shown) else ""
    fig.suptitle(f"Mean time series of the hotspots{more}; band: 10-90 % of pixels")
    return save_figure(fig, out, data.dpi)
