#!/usr/bin/env python3
"""Wall time and peak memory of the covariogram and dbscan steps at Los Angeles scale.

    python benchmarks/bench_covdb.py --dir /tmp/covdb_bench          # 3,000,000 x 247
    python benchmarks/bench_covdb.py --dir /tmp/x --rows 300 --cols 400 --epochs 60

Builds a synthetic gridded stack block by block with StackWriter (low-rank field: a few
Gaussian random fields with exponential covariance, L = --length km, times random
temporal coefficients, plus white noise), then runs each step in a fresh process and
reports seconds and the child's peak RSS (MB).  The stack is deleted at the end unless
--keep.  Functions are importable by benchmarks/run_benchmarks.py.
"""
import argparse
import datetime
import json
import math
import multiprocessing
import resource
import shutil
import time
from pathlib import Path

import numpy as np

from hotspot import products

KM_PER_DEG = 111.195
LAT0, LON0 = 34.0, -118.5


def _periodic_exponential_fields(ny, nx, dx_km, length_km, num_field, rng):
    """num_field fields (ny*nx each, unit variance) with covariance exp(-h / length) on a torus."""
    ry = np.minimum(np.arange(ny), ny - np.arange(ny)) * dx_km
    rx = np.minimum(np.arange(nx), nx - np.arange(nx)) * dx_km
    eig = np.fft.rfft2(np.exp(-np.hypot(ry[:, None], rx[None, :]) / length_km)).real.clip(0)
    amp = np.sqrt(eig)
    fields = np.empty((num_field, ny * nx), dtype=np.float32)
    for k in range(num_field):
        white = np.fft.rfft2(rng.standard_normal((ny, nx)))
        fields[k] = np.fft.irfft2(amp * white, s=(ny, nx)).ravel()
    return fields


def make_stack(path, rows=1500, cols=2000, epochs=247, dx_km=0.05, length_km=3.0,
               num_field=6, noise=0.002, seed=0, block=100_000):
    """Write a rows*cols x epochs gridded stack with StackWriter, block by block."""
    from hotspot.utils.stack import StackWriter
    rng = np.random.default_rng(seed)
    fields = _periodic_exponential_fields(rows, cols, dx_km, length_km, num_field, rng)
    # 1 cm total signal, split over the fields
    coef = rng.standard_normal((num_field, epochs)) * (0.01 / math.sqrt(num_field))
    coef = coef.astype(np.float32)
    y_step = -dx_km / KM_PER_DEG
    x_step = dx_km / (KM_PER_DEG * math.cos(math.radians(LAT0)))
    attrs = {"GRID": "yes", "LENGTH": rows, "WIDTH": cols, "X_FIRST": LON0, "Y_FIRST": LAT0,
             "X_STEP": x_step, "Y_STEP": y_step, "X_UNIT": "degrees", "Y_UNIT": "degrees"}
    start = datetime.date(2015, 1, 1)
    dates = [(start + datetime.timedelta(days=12 * k)).strftime("%Y%m%d") for k in range(epochs)]
    n = rows * cols
    with StackWriter(path, n, dates, attrs) as w:
        for start in range(0, n, block):
            stop = min(start + block, n)
            idx = np.arange(start, stop)
            disp = fields[:, start:stop].T @ coef
            disp += rng.normal(0, noise, disp.shape).astype(np.float32)
            w.write_block(start, displacement=disp,
                          latitude=LAT0 + (idx // cols) * y_step,
                          longitude=LON0 + (idx % cols) * x_step,
                          row=idx // cols, col=idx % cols)
    return Path(path)


def make_tskm(stack_file, workdir, num_cluster=4, length_km=5.0, mix=0.1, seed=0):
    """clusterTSKM.h5 with spatially structured temporal clusters plus `mix` salt-and-pepper."""
    from hotspot.utils.labels import write_label_file
    from hotspot.utils.stack import read_info
    info = read_info(stack_file)
    rows, cols = info.shape
    dx_km = abs(float(info.attrs["Y_STEP"])) * KM_PER_DEG
    rng = np.random.default_rng(seed)
    field = _periodic_exponential_fields(rows, cols, dx_km, length_km, 1, rng)[0]
    edges = np.quantile(field, np.linspace(0, 1, num_cluster + 1)[1:-1])
    labels = (np.searchsorted(edges, field) + 1).astype(np.int32)
    flip = rng.random(labels.size) < mix
    labels[flip] = rng.integers(1, num_cluster + 1, int(flip.sum()))
    return write_label_file(Path(workdir) / products.TSKM, labels, stack_file,
                            attrs={"NUM_CLUSTER": num_cluster})


def _child(target, kwargs, queue):
    t0 = time.time()
    result = target(**kwargs)
    seconds = time.time() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    queue.put({"seconds": round(seconds, 2),
               "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
               "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), **(result or {})})


def measure(target, **kwargs):
    """Run target(**kwargs) in a fresh process: dict(seconds, cpu_seconds, peak_rss_mb, ...).

    cpu_seconds (user + system, all threads) is less sensitive than wall time to other
    jobs sharing the machine; peak_rss_mb is the child's own peak (ru_maxrss).
    """
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(target, kwargs, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def _run_step(step, workdir, overrides):
    import importlib

    from hotspot.hotspotApp import StepContext
    from hotspot.utils.template import config_from_dict
    ctx = StepContext(workdir=Path(workdir), config=config_from_dict(overrides))
    importlib.import_module(f"hotspot.{step}").run(ctx)
    from hotspot.utils.h5io import read_attrs
    attrs = read_attrs(Path(workdir) / {"covariogram": products.COVARIOGRAM,
                                        "dbscan": products.DBSCAN}[step])
    keep = ("CORRELATION_LENGTH_KM", "CORRELATION_LENGTH_STD_KM", "NUM_PAIR", "NUM_CLUSTER")
    return {k: np.asarray(attrs[k]).item() for k in keep if k in attrs}


def _link_stack(stack_file, workdir):
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    target = workdir / products.STACK
    if Path(stack_file).resolve() != target.resolve():
        if target.exists() or target.is_symlink():
            target.unlink()
        target.symlink_to(Path(stack_file).resolve())
    return workdir


def bench_covariogram(stack_file, workdir, num_pair=10_000_000, max_memory=4, seed=0):
    """covariogram step on stack_file: dict(seconds, peak_rss_mb, correlation length...)."""
    workdir = _link_stack(stack_file, workdir)
    overrides = {"hotspot.covariogram.numPair": num_pair, "mintpy.compute.maxMemory": max_memory,
                 "hotspot.randomSeed": seed}
    return measure(_run_step, step="covariogram", workdir=str(workdir), overrides=overrides)


def bench_dbscan(stack_file, workdir, eps=2.2, num_cluster=4, max_memory=4, seed=0):
    """dbscan step on all pixels of stack_file with synthetic temporal clusters."""
    workdir = _link_stack(stack_file, workdir)
    make_tskm(stack_file, workdir, num_cluster=num_cluster, seed=seed)
    overrides = {"hotspot.dbscan.eps": eps, "mintpy.compute.maxMemory": max_memory,
                 "hotspot.randomSeed": seed}
    return measure(_run_step, step="dbscan", workdir=str(workdir), overrides=overrides)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default="/tmp/covdb_bench")
    parser.add_argument("--rows", type=int, default=1500)
    parser.add_argument("--cols", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=247)
    parser.add_argument("--length", type=float, default=3.0, help="true correlation length, km")
    parser.add_argument("--num-pair", type=int, default=10_000_000)
    parser.add_argument("--eps", type=float, default=2.2)
    parser.add_argument("--max-memory", type=float, default=4)
    parser.add_argument("--keep", action="store_true", help="keep the synthetic stack")
    inps = parser.parse_args(argv)
    workdir = Path(inps.dir)
    workdir.mkdir(parents=True, exist_ok=True)
    stack = workdir / products.STACK
    results = {"pixels": inps.rows * inps.cols, "epochs": inps.epochs,
               "true_length_km": inps.length}
    try:
        t0 = time.time()
        make_stack(stack, inps.rows, inps.cols, inps.epochs, length_km=inps.length)
        results["make_stack_seconds"] = round(time.time() - t0, 1)
        print(f"stack written in {results['make_stack_seconds']} s", flush=True)
        results["covariogram"] = bench_covariogram(stack, workdir, inps.num_pair, inps.max_memory)
        print(json.dumps(results["covariogram"]), flush=True)
        results["dbscan"] = bench_dbscan(stack, workdir, inps.eps, max_memory=inps.max_memory)
        print(json.dumps(results["dbscan"]), flush=True)
    finally:
        if not inps.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results, indent=1, default=str))
    return results


if __name__ == "__main__":
    main()
