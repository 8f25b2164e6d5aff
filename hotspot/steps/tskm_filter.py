"""The band-pass of tskm (hotspotFiltered.h5) and the samples the estimator is fitted on
(see hotspot.steps.tskm).
"""
import time

import numpy as np

from hotspot.steps.tskm_estimator import UNIT_SCALE
from hotspot.utils.stack import block_size, iter_blocks, read_info, read_rows, smooth_window

BLOCK_CAP = 500_000          # pixels per assignment block: progress output and dask tasks
NOISE_SIGMA_CELL = 1.0       # spatial low-pass (Gaussian sigma, grid cells): pixel noise
BACKGROUND_SIGMA_KM = 2.0    # spatial high-pass (Gaussian sigma, km): ramps, atmosphere
MAD_TO_STD = 1.4826
STRONG_Z = 3.0               # stratified sample: 'strong' = RMS above median + STRONG_Z sigma


# ---------------------------------------------------------------- signal band-pass
def pixel_grid(stack_file, info, seed=0):
    """(row, col, shape, cell km) of every pixel on a regular grid.

    Gridded stacks use their raster; point stacks are snapped to square cells of the
    median nearest-neighbour spacing, or half the spacing of the points spread evenly over
    their bounding box when that is larger (several points in a cell share its value).
    """
    from hotspot.utils.geo import lonlat_to_xy_km, pixel_spacing
    from hotspot.utils.stack import read_pixels
    px = read_pixels(stack_file, ["longitude", "latitude", "row", "col"])
    ok = np.isfinite(px["longitude"]) & np.isfinite(px["latitude"])
    x = np.zeros(info.num_pixel)
    y = np.zeros(info.num_pixel)
    x[ok], y[ok] = lonlat_to_xy_km(px["longitude"][ok], px["latitude"][ok])
    cell = pixel_spacing(x[ok], y[ok], seed)
    row, col = px["row"].astype(np.int64), px["col"].astype(np.int64)
    if not (info.is_grid and (row >= 0).all() and (col >= 0).all()):
        # persistent scatterers crowd along buildings: on the EGMS Ustica burst (11,759
        # points) the median spacing is 3 m, a 1063 x 1348 grid whose 2 km Gaussian ran for
        # hours; half the spacing of the same points spread evenly bounds the grid to ~4 N cells
        area = max(float(np.ptp(x[ok]) * np.ptp(y[ok])), 0.0)
        cell = max(cell, 0.5 * np.sqrt(area / max(int(ok.sum()), 1)))
        row = np.floor((y.max() - y) / cell).astype(np.int64)
        col = np.floor((x - x.min()) / cell).astype(np.int64)
    shape = (int(row.max()) + 1, int(col.max()) + 1)
    return row, col, shape, cell


def bandpass(series_mm, row, col, shape, cell_km, window, overwrite=False):
    """Temporal moving average, then a spatial difference of Gaussians, of (n, T) series.

    The hotspot scale (hundreds of metres to a few km) passes; pixel noise (spatially
    white), atmosphere and ramps (spatially long, temporally white) are suppressed.
    Each series' temporal mean is removed. NaN rows stay NaN; they do not enter the
    spatial averages (normalised convolution). overwrite=True filters a float32 array in
    place (no copy of the stack).
    """
    from scipy.ndimage import gaussian_filter, uniform_filter1d
    X = np.asarray(series_mm, dtype=np.float32)
    if not overwrite and X is series_mm:
        X = X.copy()
    ok = np.isfinite(X).all(axis=1)
    X[~ok] = 0.0
    if window > 1:
        uniform_filter1d(X, window, axis=1, mode="nearest", output=X)
    X -= X.mean(axis=1, keepdims=True)
    r, c = row[ok], col[ok]
    flat = r * shape[1] + c
    size = shape[0] * shape[1]
    weight = np.bincount(flat, minlength=size).astype(np.float32).reshape(shape)
    s2 = BACKGROUND_SIGMA_KM / cell_km
    w1 = np.maximum(gaussian_filter(weight, NOISE_SIGMA_CELL)[r, c], 1e-6)
    w2 = np.maximum(gaussian_filter(weight, s2)[r, c], 1e-6)
    for t in range(X.shape[1]):
        grid = np.bincount(flat, weights=X[ok, t], minlength=size).astype(np.float32)
        grid = grid.reshape(shape)
        X[ok, t] = (gaussian_filter(grid, NOISE_SIGMA_CELL)[r, c] / w1
                    - gaussian_filter(grid, s2)[r, c] / w2)
    X[~ok] = np.nan
    return X


def filter_stack(stack_file, out_file, max_memory, seed=0, log=print):
    """Write the band-passed stack (metres, same layout as hotspotStack.h5) to out_file;
    returns (out_file, RMS of each band-passed series in metres, NaN where incomplete).

    The spatial filter needs whole epochs: the series are held in memory once
    (N x T float32) and the rasters are filtered one epoch at a time.
    """
    from hotspot.utils.stack import StackWriter, read_pixels
    info = read_info(stack_file)
    row, col, shape, cell = pixel_grid(stack_file, info, seed)
    window = smooth_window(info.dates)
    need = info.num_pixel * info.num_date * 4 / 1024 ** 3
    log(f"tskm: band-pass of the series: {window}-epoch moving average, difference of "
        f"Gaussians {NOISE_SIGMA_CELL * cell * 1000:.0f} m - {BACKGROUND_SIGMA_KM} km on a "
        f"{shape[0]} x {shape[1]} grid of {cell * 1000:.0f} m ({need:.2f} GB in memory"
        + (f", above maxMemory {max_memory} GB" if need > max_memory else "") + ")")
    t0 = time.time()
    data = np.empty((info.num_pixel, info.num_date), dtype=np.float32)
    size = block_size(info.num_date, max_memory, copies=4, cap=BLOCK_CAP)
    for s, e in iter_blocks(info.num_pixel, size):
        data[s:e] = _read_block(stack_file, s, e)
    data *= np.float32(UNIT_SCALE)
    bandpass(data, row, col, shape, cell, window, overwrite=True)
    data /= np.float32(UNIT_SCALE)
    rms = np.empty(info.num_pixel)
    pos = read_pixels(stack_file, ["longitude", "latitude"])
    attrs = {"FILTER": f"moving average {window} epochs; difference of Gaussians "
                       f"sigma {NOISE_SIGMA_CELL} cell - {BACKGROUND_SIGMA_KM} km",
             "SOURCE_FILE": str(stack_file)}
    with StackWriter(out_file, info.num_pixel, info.dates, attrs) as w:
        for s, e in iter_blocks(info.num_pixel, size):
            w.write_block(s, displacement=data[s:e], latitude=pos["latitude"][s:e],
                          longitude=pos["longitude"][s:e])
            rms[s:e] = np.sqrt(np.mean(np.square(data[s:e], dtype=np.float64), axis=1))
    log(f"tskm: filtered {info.num_pixel} series in {time.time() - t0:.1f} s -> {out_file}")
    return out_file, rms


def draw_stratified_sample(stack_file, n_sample, seed, rms):
    """Half the sample among the strong series, half uniform among the others.

    rms (N, NaN = incomplete series): 'strong' = above median + STRONG_Z x 1.4826 MAD of
    the scene (at least the n_sample // 2 largest).
    """
    rms = np.asarray(rms, dtype=np.float64)
    valid = np.nonzero(np.isfinite(rms))[0]
    rng = np.random.default_rng(seed)
    if valid.size <= n_sample:
        pick = valid
    else:
        r = rms[valid]
        med = np.median(r)
        threshold = med + STRONG_Z * MAD_TO_STD * np.median(np.abs(r - med))
        n_top = n_sample // 2
        strong = valid[r > threshold]
        if strong.size < n_top:
            strong = valid[np.argsort(-r, kind="stable")[:n_top]]
        top = rng.choice(strong, size=n_top, replace=False)
        rest = np.setdiff1d(valid, top, assume_unique=True)
        pick = rng.permutation(np.r_[top, rng.choice(rest, size=n_sample - n_top,
                                                     replace=False)])
    return pick.astype(np.int64), read_rows(stack_file, pick)


# ---------------------------------------------------------------- I/O around the estimator
def draw_sample(stack_file, n_sample, seed, chunk=None):
    """Random pixels with a complete time series: (indices in draw order, series in m).

    The permutation comes from numpy's default_rng(seed), so the sample is a function of
    the stack and the seed only.
    """
    info = read_info(stack_file)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(info.num_pixel)
    chunk = chunk or max(n_sample, 1000)
    keep_idx, keep_rows = [], []
    have = 0
    for s in range(0, perm.size, chunk):
        idx = perm[s:s + chunk]
        rows = read_rows(stack_file, idx)
        ok = np.isfinite(rows).all(axis=1)
        keep_idx.append(idx[ok])
        keep_rows.append(rows[ok])
        have += int(ok.sum())
        if have >= n_sample:
            break
    idx = np.concatenate(keep_idx)[:n_sample]
    rows = np.concatenate(keep_rows)[:n_sample]
    return idx.astype(np.int64), rows


def _read_block(stack_file, start, stop):
    from hotspot.utils.stack import read_pixels
    return read_pixels(stack_file, ["displacement"], start, stop)["displacement"]
