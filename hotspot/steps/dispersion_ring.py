"""Dispersion's ring background: the measured pixels around each candidate, the plane fitted to
them per epoch, the contrast of the cluster against it, and the one pass over the stack
that accumulates every cluster's series and hands its blocks to other per-pixel consumers
(see hotspot.steps.dispersion).
"""
import numpy as np
from scipy import sparse

from hotspot.steps import unwrap_check
from hotspot.steps.dispersion_significance import KM_PER_DEG, signal_test
from hotspot.steps.export import grid_georef
from hotspot.utils.h5io import open_h5, require_dataset
from hotspot.utils.stack import block_size, iter_blocks, num_blocks

MIN_RING_PIXEL = 10
MAX_RING_PIXEL = 5000          # a ring mean of 5000 pixels is noise-free enough; bounds memory
MAX_SAMPLE_PER_CLUSTER = 5000  # rows per cluster for the 10/90 % percentile time series


# ---------------------------------------------------------------------------- spatial
def pixel_area_km2(attrs, lat, spacing_km):
    """Footprint area (km2) of each pixel: from the grid steps, else spacing^2 (points)."""
    geo = grid_georef(attrs)
    if geo is None:
        return np.full(np.shape(lat), spacing_km ** 2)
    if geo["geographic"]:
        return (abs(geo["x_step"] * geo["y_step"]) * KM_PER_DEG ** 2
                * np.cos(np.deg2rad(np.asarray(lat, dtype=np.float64))))
    return np.full(np.shape(lat), abs(geo["x_step"] * geo["y_step"]) / 1e6)


def ring_members(tree, centre_xy, r_in, r_out, owner, cluster, rng):
    """Indices of tree points in the ring r_in <= r < r_out around centre (km) whose owner
    is not `cluster`; at most MAX_RING_PIXEL of them (seeded) and the full count."""
    idx = np.asarray(tree.query_ball_point(centre_xy, r_out), dtype=np.int64)
    if idx.size:
        dist = np.hypot(*(tree.data[idx] - centre_xy).T)
        idx = idx[(dist >= r_in) & (owner[idx] != cluster)]
    total = idx.size
    if total > MAX_RING_PIXEL:
        idx = np.sort(rng.choice(idx, size=MAX_RING_PIXEL, replace=False))
    return idx, total


def ring_matrix(tree, measured_idx, pixel_cluster, cand_idx, table, spacing, corr_length, rng):
    """Sparse (6 x candidate) x pixel matrix of the plane-fit moments 1, x, y, xx, xy, yy
    of each candidate's ring (x, y relative to its centroid), and each cluster's ring size
    (0: fewer than MIN_RING_PIXEL)."""
    rows, cols, vals = [], [], []
    ring_total = np.zeros(table["numPixel"].size, dtype=np.int64)
    owner = pixel_cluster[measured_idx]
    for j, c in enumerate(cand_idx):
        r_in = 2.0 * table["standardDistance"][c] + spacing
        r_out = r_in + max(corr_length, 3.0 * spacing)
        centre = np.array([table["ellipseCenterX"][c], table["ellipseCenterY"][c]])
        members, ring_total[c] = ring_members(tree, centre, r_in, r_out, owner, c, rng)
        if ring_total[c] < MIN_RING_PIXEL:
            ring_total[c] = 0
            continue
        xr, yr = tree.data[members, 0] - centre[0], tree.data[members, 1] - centre[1]
        for k, v in enumerate((np.ones_like(xr), xr, yr, xr * xr, xr * yr, yr * yr)):
            rows.append(np.full(members.size, 6 * j + k))
            cols.append(measured_idx[members])
            vals.append(v)
    empty = [np.zeros(0)]
    ring = sparse.csc_matrix((np.concatenate(vals or empty),
                              (np.concatenate(rows or empty).astype(np.int64),
                               np.concatenate(cols or empty).astype(np.int64))),
                             shape=(6 * cand_idx.size, pixel_cluster.size))
    return ring, ring_total


def ring_contrast(ts, cand_idx, ring_total):
    """(contrast M x T, background M x T (NaN without ring), has_ring M): module docstring."""
    contrast = ts["mean"].astype(np.float64)
    background = np.full(contrast.shape, np.nan)
    fitted = ring_background(ts["ring_moment"], ts["ring_gram"])
    for j, c in enumerate(cand_idx):
        if ring_total[c] and np.all(np.isfinite(fitted[j])):
            background[c] = fitted[j]
    has_ring = np.all(np.isfinite(background), axis=1)
    contrast[has_ring] -= background[has_ring]
    return contrast, background, has_ring


def _pixel_stats(index, num_cluster, px, labelled):
    """Velocity (m/yr), velocityStd and coherence statistics per cluster, NaN-aware."""
    out = {}
    v = px["velocity"][labelled].astype(np.float64)
    ok = np.isfinite(v)
    n = np.bincount(index[ok], minlength=num_cluster).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(index[ok], v[ok], num_cluster) / n
        dev = v[ok] - mean[index[ok]]
        out["meanVelocity"] = mean
        out["stdVelocity"] = np.sqrt(np.bincount(index[ok], dev * dev, num_cluster) / n)
        order = np.argsort(index, kind="stable")
        starts = np.searchsorted(index[order], np.arange(num_cluster))
        if num_cluster:
            out["minVelocity"] = np.fmin.reduceat(v[order], starts)
            out["maxVelocity"] = np.fmax.reduceat(v[order], starts)
        else:
            out["minVelocity"] = out["maxVelocity"] = np.zeros(0)
        vs = px["velocityStd"][labelled].astype(np.float64)
        ok = np.isfinite(vs)
        out["rmsVelocityStd"] = np.sqrt(np.bincount(index[ok], vs[ok] ** 2, num_cluster)
                                        / np.bincount(index[ok], minlength=num_cluster))
        coh = px["coherence"][labelled].astype(np.float64)
        ok = np.isfinite(coh)
        out["meanCoherence"] = (np.bincount(index[ok], coh[ok], num_cluster)
                                / np.bincount(index[ok], minlength=num_cluster))
    return out


def _majority(index, num_cluster, temporal_label, labelled):
    """Most frequent temporal (tskm) cluster of each cluster, -1 when unknown."""
    out = np.full(num_cluster, -1, dtype=np.int32)
    if temporal_label is None or temporal_label.shape != labelled.shape or not num_cluster:
        return out
    t = np.asarray(temporal_label, dtype=np.int64)[labelled]
    ok = t > 0
    if not ok.any():
        return out
    tid, tinv = np.unique(t[ok], return_inverse=True)
    counts = sparse.coo_matrix((np.ones(tinv.size), (index[ok], tinv)),
                               shape=(num_cluster, tid.size)).toarray()
    has = counts.sum(axis=1) > 0
    out[has] = tid[np.argmax(counts[has], axis=1)]
    return out


def _timeseries_pass(stack_file, info, pixel_cluster, num_cluster, ring, max_memory, rng,
                     consumers=()):
    """One blockwise pass: cluster and ring sums, percentile samples.

    consumers: callables consumer(start, stop, block) given every block of the displacement
    as read (rows start..stop, in order, not to be modified), so that other per-pixel work
    shares this read (the spatial null's projection, hotspot.steps.spatial_null); with
    consumers, blocks without a cluster or ring pixel are read too."""
    from hotspot.utils.progress import progress_bar
    n, t = info.num_pixel, info.num_date
    labelled = pixel_cluster >= 0
    # seeded subsample of each cluster's rows for the percentiles, bounded by memory
    cap = int(min(MAX_SAMPLE_PER_CLUSTER,
                  max(100, 0.25 * max_memory * 1024 ** 3 / (8 * t) / max(num_cluster, 1))))
    sample_pos = np.full(n, -1, dtype=np.int64)
    picked = []
    for c, members in enumerate(_group(pixel_cluster, num_cluster)):
        if members.size > cap:
            members = np.sort(rng.choice(members, size=cap, replace=False))
        picked.append(members)
    picked_all = np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)
    sample_pos[picked_all] = np.arange(picked_all.size)
    samples = np.empty((picked_all.size, t), dtype=np.float32)

    sums = np.zeros((num_cluster, t))
    counts = np.zeros((num_cluster, t))
    num_ring = ring.shape[0] // 6
    first = ring[0::6]                  # the "1" rows: ring membership
    moment = np.zeros((3 * num_ring, t))
    gram = np.zeros((6 * num_ring, t))
    in_ring = np.asarray(first.sum(axis=0)).ravel() > 0
    size = block_size(t, max_memory, bytes_per_value=8, copies=4)
    bar = progress_bar(maxValue=num_blocks(n, size), prefix="dispersion: ")
    with open_h5(stack_file) as f:
        dset = require_dataset(f, "displacement", stack_file)
        for i, (start, stop) in enumerate(iter_blocks(n, size)):
            bar.update(i + 1, suffix=f"{start}-{stop}")
            use = labelled[start:stop] | in_ring[start:stop]
            if not (use.any() or consumers):
                continue
            disp = dset[start:stop]
            for consumer in consumers:
                consumer(start, stop, disp)
            if not use.any():
                continue
            nan = np.isnan(disp)
            valid = (~nan).astype(np.float64)
            # float64 sums: results must not depend on the block size
            disp = np.where(nan, 0.0, disp.astype(np.float64))
            pc = pixel_cluster[start:stop]
            rows = np.nonzero(pc >= 0)[0]
            onehot = sparse.csr_matrix((np.ones(rows.size), (pc[rows], rows)),
                                       shape=(num_cluster, stop - start))
            sums += onehot @ disp
            counts += onehot @ valid
            if num_ring:
                block_ring = ring[:, start:stop]
                # sum(d), sum(x d), sum(y d) of each ring and epoch
                moment += (block_ring[_moment_rows(num_ring)] @ disp)
                if nan.any():
                    gram += block_ring @ valid
                else:
                    gram += np.asarray(block_ring.sum(axis=1))
            pos = sample_pos[start:stop]
            keep = pos >= 0
            samples[pos[keep]] = np.where(nan[keep], np.nan, disp[keep])
    bar.close()

    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts
    out = {"mean": mean.astype(np.float32), "ring_moment": moment.reshape(num_ring, 3, t),
           "ring_gram": gram.reshape(num_ring, 6, t)}
    p10 = np.full((num_cluster, t), np.nan, dtype=np.float32)
    p90 = np.full((num_cluster, t), np.nan, dtype=np.float32)
    offset = 0
    for c, members in enumerate(picked):
        rows = samples[offset:offset + members.size]
        offset += members.size
        if rows.size:
            # nanpercentile loops in Python over epochs: only where NaNs need it
            pct = np.nanpercentile if np.isnan(rows).any() else np.percentile
            p10[c], p90[c] = pct(rows, [10, 90], axis=0)
    offsets = np.concatenate([[0], np.cumsum([m.size for m in picked])]).astype(np.int64)
    out.update({"p10": p10, "p90": p90, "samples": samples, "sample_offsets": offsets})
    return out


def cluster_rows(ts, c):
    """The sampled rows (at most MAX_SAMPLE_PER_CLUSTER) of cluster index c, m."""
    return ts["samples"][ts["sample_offsets"][c]:ts["sample_offsets"][c + 1]]


def unwrap_columns(ts, contrast, background, has_ring, candidate, half_wavelength, years):
    """Unwrapping-error signature of every candidate with a ring (hotspot.steps.unwrap_check) and
    the signal test of its contrast with the quantised jump removed; table columns, and
    unwrapRemoved (M x T, not written): the quantised boxes removed from each contrast, for the
    spatial null's test of what is left."""
    m, t = contrast.shape
    cols = {"unwrapStart": np.zeros(m, np.int32), "unwrapStop": np.zeros(m, np.int32),
            "unwrapJump": np.zeros(m), "unwrapFraction": np.zeros(m),
            "unwrapResidual": np.full(m, np.nan), "isQuantisedJump": np.zeros(m, bool),
            "unwrapNumBox": np.zeros(m, np.int32), "pValueUnwrapCorrected": np.full(m, np.nan),
            "signalRmsUnwrapCorrected": np.full(m, np.nan),
            "noiseLevelUnwrapCorrected": np.full(m, np.nan),
            "unwrapRemoved": np.zeros((m, t))}
    if not (half_wavelength and half_wavelength > 0):
        return cols
    corrected, which = [], []
    for c in np.nonzero(candidate & has_ring)[0]:
        sig = unwrap_check.signature(cluster_rows(ts, c) - background[c], contrast[c],
                                     half_wavelength)
        cols["unwrapStart"][c], cols["unwrapStop"][c] = sig["start"], sig["stop"]
        cols["unwrapJump"][c], cols["unwrapFraction"][c] = sig["jump"], sig["fraction"]
        cols["unwrapResidual"][c] = sig["residual"]
        cols["isQuantisedJump"][c] = sig["is_quantised"]
        cols["unwrapNumBox"][c] = sig["num_box"]
        if sig["is_quantised"]:
            corrected.append(sig["corrected"])
            which.append(c)
            cols["unwrapRemoved"][c] = contrast[c] - sig["corrected"]
    if which:
        p, rms, noise, _ = signal_test(np.array(corrected), years)
        cols["pValueUnwrapCorrected"][which] = p
        cols["signalRmsUnwrapCorrected"][which] = rms
        cols["noiseLevelUnwrapCorrected"][which] = noise
    return cols


def _moment_rows(num_ring):
    """Rows 1, x, y of each ring in the (6 x ring) moment matrix."""
    return (6 * np.arange(num_ring)[:, None] + np.arange(3)[None, :]).ravel()


def ring_background(moment, gram):
    """Plane fitted to each ring and epoch, evaluated at the centroid (the intercept).

    moment: (R, 3, T) sums of d, x d, y d; gram: (R, 6, T) sums of 1, x, y, xx, xy, yy.
    Falls back to the ring mean where the plane is ill-determined (collinear ring pixels).
    """
    num_ring, _, t = moment.shape
    out = np.full((num_ring, t), np.nan)
    if not num_ring:
        return out
    g = np.moveaxis(gram, 1, -1)                                     # (R, T, 6)
    mat = g[..., [0, 1, 2, 1, 3, 4, 2, 4, 5]].reshape(num_ring, t, 3, 3)
    rhs = np.moveaxis(moment, 1, -1)                                 # (R, T, 3)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = rhs[..., 0] / g[..., 0]
        cond = np.linalg.cond(mat)
        ok = np.isfinite(cond) & (cond < 1e8) & (g[..., 0] >= MIN_RING_PIXEL)
        if ok.any():
            out[ok] = np.linalg.solve(mat[ok], rhs[ok][..., None])[:, 0, 0]
        out[~ok] = mean[~ok]
    return out


def _group(pixel_cluster, num_cluster):
    """Pixel indices of each cluster 0..M-1 (sorted)."""
    order = np.argsort(pixel_cluster, kind="stable")
    bounds = np.searchsorted(pixel_cluster[order], np.arange(num_cluster + 1))
    return [order[bounds[c]:bounds[c + 1]] for c in range(num_cluster)]
