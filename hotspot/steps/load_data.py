"""Step 1, load_data: one pixel stack (hotspotStack.h5) from MintPy, WabInSAR or EGMS products.

The readers (hotspot.readers) deliver blocks of pixels in metres; this step
drops the pixels that cannot be used (NaN in the time series, the position,
the velocity or the coherence), references every series to its first epoch,
fills a missing velocity by a linear fit, and writes the stack block by block.
The valid pixels are counted in a first pass because the stack's size must be
known before writing; the blocks of that pass are kept for the second one when
they fit in a quarter of mintpy.compute.maxMemory, otherwise they are re-read.
"""
from collections import Counter

import numpy as np

from hotspot.readers import open_reader
from hotspot.utils.errors import HotspotError
from hotspot.utils.stack import STACK_FILE, StackWriter

STEP = "load_data"
# A NaN in any of these drops the pixel from every dataset.
REQUIRED_FINITE = ("latitude", "longitude", "velocity", "velocityStd", "coherence")


def _quiet(message):
    """Log sink for inputs(): update mode should not repeat the reader's messages."""


def inputs(ctx):
    return open_reader(ctx.config, ctx.workdir, log=_quiet).inputs


def outputs(ctx):
    return [ctx.path(STACK_FILE)]


def linear_velocity(displacement, dates, chunk=16384):
    """Slope (m/yr) and its standard error of a linear fit of each series (n x T).

    MintPy's design matrix (time_func, polynomial 1) solved with its pseudo-inverse, as in
    MintPy's own "Opt. 1": one matrix product per chunk instead of scipy's per-call SVD,
    2.3x faster (200k x 247: 1.4 s vs 3.3 s) and equal to time_func.estimate_time_func
    to 1e-7 relative (tested).
    Chunks keep the float64 temporaries small next to the block.
    """
    from mintpy.utils import time_func
    dates = list(dates)
    design = time_func.get_design_matrix4time_func(dates, {"polynomial": 1}).astype(np.float64)
    pinv = np.linalg.pinv(design)
    dof = len(dates) - design.shape[1]
    # Two epochs fit exactly: no residual to estimate the uncertainty from.
    var_slope = np.linalg.inv(design.T @ design)[1, 1] / dof if dof > 0 else np.nan
    num = displacement.shape[0]
    vel, std = np.empty(num), np.empty(num)
    for start in range(0, num, chunk):
        part = np.asarray(displacement[start:start + chunk], dtype=np.float64)
        params = part @ pinv.T
        resid = part - params @ design.T
        vel[start:start + chunk] = params[:, 1]
        std[start:start + chunk] = np.sqrt(np.einsum("ij,ij->i", resid, resid) * var_slope)
    return vel, std


def clean_block(data, dates, counts, fit_velocity=True):
    """Keep the usable pixels of a reader block, first-epoch referenced, velocity filled.

    `counts` (Counter) collects why pixels were dropped; fit_velocity=False skips the
    fit of a missing velocity (a counting pass whose blocks are not kept).
    """
    disp = data["displacement"]
    keep = np.isfinite(disp).all(axis=1)
    counts["NaN in displacement"] += int((~keep).sum())
    for name in REQUIRED_FINITE:
        if name in data:
            bad = keep & ~np.isfinite(data[name])
            counts[f"NaN in {name}"] += int(bad.sum())
            keep &= ~bad
    if keep.all():
        out = dict(data)                  # no copy of the block when nothing is dropped
    else:
        out = {name: np.asarray(values)[keep] for name, values in data.items()}
    disp = out["displacement"].astype(np.float32, copy=False)
    disp -= disp[:, :1]
    out["displacement"] = disp
    if fit_velocity and ("velocity" not in out or "velocityStd" not in out):
        vel, std = linear_velocity(disp, dates)
        out.setdefault("velocity", vel)
        out.setdefault("velocityStd", std)
    return out


def _progress(reader, prefix):
    from mintpy.utils import ptime
    if getattr(reader, "num_raw", None):
        return ptime.progressBar(maxValue=reader.num_raw, prefix=prefix)
    return None


def scan(reader, max_memory, log=print):
    """First pass: number of valid pixels, drop counts, and the clean blocks if they fit."""
    counts = Counter()
    num_valid = num_raw = 0
    cache, cached_bytes = [], 0
    budget = 0.25 * max_memory * 1024 ** 3
    bar = _progress(reader, "scan ")
    for block in reader.iter_blocks(max_memory):
        counts["masked"] += block.num_masked
        num_raw += block.num_masked + block.data["displacement"].shape[0]
        clean = clean_block(block.data, reader.dates, counts, fit_velocity=cache is not None)
        num_valid += clean["displacement"].shape[0]
        if cache is not None:
            cached_bytes += sum(v.nbytes for v in clean.values())
            if cached_bytes <= budget:
                cache.append(clean)
            else:
                cache = None
        if bar:
            bar.update(num_raw, suffix=f"{num_valid} valid")
    if bar:
        bar.close()
    return num_valid, num_raw, counts, cache


def _clean_blocks(reader, max_memory):
    counts = Counter()
    bar = _progress(reader, "write ")
    done = 0
    for block in reader.iter_blocks(max_memory):
        done += block.num_masked + block.data["displacement"].shape[0]
        yield clean_block(block.data, reader.dates, counts)
        if bar:
            bar.update(done)
    if bar:
        bar.close()


def drop_summary(counts):
    return ", ".join(f"{k}: {v}" for k, v in counts.items() if v) or "none"


def load_stack(reader, path, max_memory, attrs=None, log=print):
    """Write the reader's valid pixels to `path` (StackWriter: temp file + rename)."""
    num_valid, num_raw, counts, cache = scan(reader, max_memory, log)
    log(f"{num_valid} of {num_raw} pixels valid; left out: {drop_summary(counts)}")
    if num_valid == 0:
        raise HotspotError(f"{reader.inputs[0]}: no valid pixel (left out: "
                           f"{drop_summary(counts)}); expected pixels with a finite time series and position inside the mask")
    out_attrs = dict(reader.attrs)
    out_attrs.update({"NUM_SOURCE_PIXEL": num_raw,
                      "NUM_MASKED": counts["masked"],
                      "NUM_NAN_DROPPED": sum(v for k, v in counts.items() if k != "masked")})
    out_attrs.update(attrs or {})
    blocks = cache if cache is not None else _clean_blocks(reader, max_memory)
    start = 0
    with StackWriter(path, num_valid, reader.dates, out_attrs) as writer:
        for block in blocks:
            n = block["displacement"].shape[0]
            if start + n > num_valid:
                break
            writer.write_block(start, **block)
            start += n
        if start != num_valid:
            raise HotspotError(f"{reader.inputs[0]}: the input changed while loading ({start} "
                               f"valid pixels in the second pass, {num_valid} in the first)")
    return num_valid


def run(ctx):
    reader = open_reader(ctx.config, ctx.workdir, log=ctx.log)
    ctx.log(f"processor: {reader.processor}; time series: {reader.inputs[0]}; "
            f"{len(reader.dates)} dates {reader.dates[0]} - {reader.dates[-1]}")
    path = outputs(ctx)[0]
    num = load_stack(reader, path, ctx.config.max_memory, attrs=ctx.step_attrs(STEP), log=ctx.log)
    ctx.log(f"{path}: {num} pixels x {len(reader.dates)} epochs written")
    return path
