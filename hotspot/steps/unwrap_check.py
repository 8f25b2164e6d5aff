"""Phase-unwrapping-error signature of a cluster (used by the dispersion step).

An unwrapping error shifts a patch of pixels by an integer number n of half wavelengths
(n lambda / 2 in LOS: 27.7 mm at C band) over some epochs and by the same amount on every
pixel of the patch. MintPy's unwrapping-error correction should remove such patches
upstream; the ones it leaves are compact, strong and highly significant, so the paper's
recipe and our signal test keep them as hotspots (on the hard simulated scenes they were
8-10 of the 11-12 false hotspots, docs/quality.md).

Test of one cluster, on its contrast series c(t) (cluster mean minus the ring background)
and the rows of its pixels (minus the same background):
  1. box: the epoch interval [start, stop) whose boxcar a 1[start <= t < stop] + b best
     fits c(t) (least squares over every interval, from cumulative sums; the first epoch is
     the reference and is never inside the box);
  2. per-pixel jump j_i = mean of pixel i inside the box - mean outside it, and its nearest
     multiple n_i lambda / 2;
  3. signature: at least MIN_FRACTION of the pixels (and MIN_PIXEL) have n_i != 0, and their
     jumps lie within MAX_RESIDUAL of n_i lambda / 2 (median of |j_i - n_i lambda / 2|).
     A deformation bowl moves its pixels by a continuum of amounts (median residual ~ lambda
     / 8 for a bowl deeper than lambda / 2); a patch that was unwrapped wrong moves them by
     one quantum;
  4. the corrected contrast c(t) - mean(n_i) lambda / 2 1[box] is returned for the signal
     test (after up to MAX_BOX quantised boxes, each found on what the previous left:
     family seed 2 had patches unwrapped wrong over two intervals, +43 mm over epochs
     45-126 and -26 mm over 143-149, which one box left significant, docs/quality.md): a
     cluster whose signal is only that quantised jump has no signal left, while a real step
     or bowl that happens to pass 3 keeps what is not a multiple of lambda / 2;
  5. nested boxes: when a box fails 3, it and the best box of what its fit leaves are fitted
     together to every pixel (constant + two boxcars) and their two jumps tested as in 3
     (family seed 5: one quantum over epochs 84-143 and one more inside it over ~113-138;
     the single box saw per-pixel jumps of ~1.4 quanta and the patch, 29 pixels at -8.7
     mm/yr, was reported as a hotspot at q 1e-102).
"""
import warnings

import numpy as np

MIN_FRACTION = 0.1          # share of the cluster's pixels that must carry the jump
MIN_PIXEL = 3
MAX_RESIDUAL = 1.0 / 6.0    # of lambda / 2: median |j - n lambda / 2| of the jumping pixels
MAX_BOX = 3                 # quantised boxes removed in turn (signature())


def best_box(series):
    """Per row of series (K x T): (start, stop, amplitude) of the best-fitting boxcar.

    Least squares of x(t) = a 1[start <= t < stop] + b over all 1 <= start < stop <= T;
    the reduction of the residual sum of squares is S^2 T / (L (T - L)) with S the sum of the
    mean-removed series over the box and L its length. Rows with NaN give start = stop = 0.
    """
    x = np.atleast_2d(np.asarray(series, dtype=np.float64))
    k, t = x.shape
    start = np.zeros(k, dtype=np.int64)
    stop = np.zeros(k, dtype=np.int64)
    amp = np.zeros(k)
    if t < 3:
        return start, stop, amp
    ok = np.all(np.isfinite(x), axis=1)
    xc = x[ok] - x[ok].mean(axis=1, keepdims=True)
    csum = np.concatenate([np.zeros((xc.shape[0], 1)), np.cumsum(xc, axis=1)], axis=1)
    s_idx, e_idx = np.triu_indices(t + 1, k=1)
    keep = (s_idx >= 1) & (e_idx - s_idx < t)
    s_idx, e_idx = s_idx[keep], e_idx[keep]
    length = (e_idx - s_idx).astype(np.float64)
    total = csum[:, e_idx] - csum[:, s_idx]                      # (K', pairs)
    gain = total ** 2 * t / (length * (t - length))
    best = np.argmax(gain, axis=1)
    rows = np.arange(best.size)
    length_best = length[best]
    start[ok], stop[ok] = s_idx[best], e_idx[best]
    # a = mean inside - mean outside = S T / (L (T - L))
    amp[ok] = total[rows, best] * t / (length_best * (t - length_best))
    return start, stop, amp


def pixel_jumps(rows, start, stop):
    """Mean inside [start, stop) minus mean outside, per row (NaN-aware)."""
    rows = np.atleast_2d(np.asarray(rows, dtype=np.float64))
    inside = np.zeros(rows.shape[1], dtype=bool)
    inside[start:stop] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)    # all-NaN rows give NaN
        return np.nanmean(rows[:, inside], axis=1) - np.nanmean(rows[:, ~inside], axis=1)


def _quantised_box(rows, contrast, half_wavelength):
    """The best box of contrast and its signature on rows (one step of signature())."""
    start, stop, _ = best_box(contrast[None, :])
    start, stop = int(start[0]), int(stop[0])
    if stop <= start:
        return None
    jumps_all = pixel_jumps(rows, start, stop)
    finite = np.isfinite(jumps_all)
    if not finite.any():
        return None
    quanta_all = np.where(finite, np.round(np.nan_to_num(jumps_all) / half_wavelength), 0.0)
    jumps, quanta = jumps_all[finite], quanta_all[finite]
    moved = quanta != 0
    fraction = float(moved.mean())
    residual = (float(np.median(np.abs(jumps[moved] - quanta[moved] * half_wavelength)))
                if moved.any() else np.nan)
    quantised = bool(moved.sum() >= MIN_PIXEL and fraction >= MIN_FRACTION
                     and residual <= MAX_RESIDUAL * half_wavelength)
    jump = float(quanta.mean() * half_wavelength)
    return {"start": start, "stop": stop, "jump": jump, "fraction": fraction,
            "residual": residual, "is_quantised": quantised,
            "boxes": [(start, stop, jump, quanta_all * half_wavelength)]}


def signature(rows, contrast, half_wavelength):
    """Unwrapping-error signature of one cluster: dict (module docstring).

    rows: (n, T) series of (a sample of) the cluster's pixels minus the ring background;
    contrast: (T,) the cluster's contrast series. Keys: start, stop (epoch indices of the
    first box), jump (mean n_i lambda / 2, m), fraction (share of pixels with n_i != 0),
    residual (median |j_i - n_i lambda / 2| over them, m), is_quantised (bool), num_box
    (quantised boxes removed), corrected (the contrast with every quantised box removed).
    A patch can be unwrapped wrong more than once (two intervals, or two patches that
    overlap): after a quantised box is removed, from the contrast and from each pixel by its
    own n_i lambda / 2, the next best box is tested the same way, up to MAX_BOX boxes.
    """
    contrast = np.asarray(contrast, dtype=np.float64)
    out = {"start": 0, "stop": 0, "jump": 0.0, "fraction": 0.0, "residual": np.nan,
           "is_quantised": False, "num_box": 0, "corrected": contrast}
    if not (half_wavelength and half_wavelength > 0) or contrast.size < 3:
        return out
    rows = np.array(np.atleast_2d(rows), dtype=np.float64)
    corrected = contrast.copy()
    while out["num_box"] < MAX_BOX:
        box = _quantised_box(rows, corrected, half_wavelength)
        if box is None:
            break
        if not box["is_quantised"] and out["num_box"] + 2 <= MAX_BOX:
            # a patch unwrapped wrong over an interval inside (or overlapping) another's: one
            # box's per-pixel jumps fall between quanta, the two boxes fitted together do not
            pair = _quantised_pair(rows, corrected, box, half_wavelength)
            if pair is not None and pair["is_quantised"]:
                box = pair
        if out["num_box"] == 0:
            out.update({key: box[key] for key in ("start", "stop", "jump", "fraction",
                                                  "residual", "is_quantised")})
        if not box["is_quantised"]:
            break
        for start, stop, jump, pixel_jump in box["boxes"]:
            inside = np.zeros(contrast.size)
            inside[start:stop] = 1.0
            corrected = corrected - jump * inside
            rows -= pixel_jump[:, None] * inside[None, :]
            out["num_box"] += 1
    out["corrected"] = corrected
    return out


def _quantised_pair(rows, contrast, first, half_wavelength):
    """The box `first` (not quantised on its own) and the best box of what its fit leaves,
    fitted together to every pixel (constant + two boxcars, least squares) and tested for
    the signature like one box: family seed 5, a patch -1 quantum over epochs 84-143 and one
    more inside it over ~113-138 gave per-pixel jumps of ~1.4 quanta to the single box."""
    t = contrast.size
    ind1 = np.zeros(t)
    ind1[first["start"]:first["stop"]] = 1.0
    amp1 = contrast[ind1 > 0].mean() - contrast[ind1 == 0].mean()
    start2, stop2, _ = best_box((contrast - amp1 * ind1)[None, :])
    start2, stop2 = int(start2[0]), int(stop2[0])
    if stop2 <= start2 or (start2, stop2) == (first["start"], first["stop"]):
        return None
    ind2 = np.zeros(t)
    ind2[start2:stop2] = 1.0
    design = np.c_[np.ones(t), ind1, ind2]
    if np.linalg.matrix_rank(design) < 3:
        return None
    finite = np.all(np.isfinite(rows), axis=1)
    if not finite.any():
        return None
    coef = np.linalg.lstsq(design, rows[finite].T, rcond=None)[0]       # (3, pixels)
    jumps = coef[1:]
    quanta = np.round(jumps / half_wavelength)
    moved = np.any(quanta != 0, axis=0)
    fraction = float(moved.mean())
    residual = (float(np.median(np.max(np.abs(jumps - quanta * half_wavelength), axis=0)[moved]))
                if moved.any() else np.nan)
    quantised = bool(moved.sum() >= MIN_PIXEL and fraction >= MIN_FRACTION
                     and residual <= MAX_RESIDUAL * half_wavelength)
    pixel_jump = np.zeros((2, rows.shape[0]))
    pixel_jump[:, finite] = quanta * half_wavelength
    jump = quanta.mean(axis=1) * half_wavelength
    return {"start": first["start"], "stop": first["stop"], "jump": float(jump[0]),
            "fraction": fraction, "residual": residual, "is_quantised": quantised,
            "boxes": [(first["start"], first["stop"], float(jump[0]), pixel_jump[0]),
                      (start2, stop2, float(jump[1]), pixel_jump[1])]}
