#!/usr/bin/env python3
"""Benchmarks of the tskm step: kernel assignment against tslearn, and the whole step.

    python benchmarks/bench_tskm.py assign --n 20000            # pairs/s, labels vs tslearn
    python benchmarks/bench_tskm.py step --pixels 200000        # wall time, peak RSS

Functions called by the lead's benchmark script:
    bench_assign_vs_tslearn(n, T=247, k=7, ...) -> {metric: {...}}  (same run, all metrics)
    bench_tskm_step(stack, **template)          -> {"wall_s", "peak_rss_mb", ...}
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from hotspot import products

PIXELS_LA = 3_000_000


def synthetic_series(n, num_date=247, seed=0):
    """Displacement-like series in mm: a continuum of rates (mostly stable ground, some
    subsidence and uplift), seasonal terms of random amplitude and phase, white noise.

    A continuum rather than k separate patterns: most pixels then lie between two
    centroids, the hard case for early abandoning.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(num_date) * 12 / 365.25
    rate = np.where(rng.random(n) < 0.7, rng.normal(0, 2, n), rng.uniform(-40, 15, n))
    amp = rng.gamma(2.0, 2.0, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    X = (rate[:, None] * t + amp[:, None] * np.sin(2 * np.pi * t + phase[:, None])
         + rng.normal(0, 3, (n, num_date)))
    return X - X[:, :1]


def _tslearn_model(C, metric, gamma, radius):
    """A tslearn TimeSeriesKMeans holding centroids C, as if fitted."""
    from tslearn.clustering import TimeSeriesKMeans
    params = {"gamma": gamma} if metric == "softdtw" else {}
    if radius is not None and metric != "euclidean":
        params.update(global_constraint="sakoe_chiba", sakoe_chiba_radius=radius)
    model = TimeSeriesKMeans(len(C), metric=metric, metric_params=params)
    model.cluster_centers_ = np.asarray(C, dtype=np.float64)[..., None]
    model.n_features_in_ = 1
    return model


def bench_assign_vs_tslearn(n=20000, T=247, k=7, n_ref=200, radius=None, gamma=0.01, seed=0,
                            metrics=("softdtw", "dtw", "euclidean")):
    """Assignment speed (pixel-centroid pairs/s) of hotspot.steps.kernels.assign and tslearn's
    predict on the same centroids, and their label agreement on the first n_ref series.

    Centroids: k-means (Euclidean) of the series, i.e. realistic, close to each other.
    tslearn runs on n_ref series only (~550 soft-DTW pairs/s).
    """
    from sklearn.cluster import KMeans

    from hotspot.steps import kernels
    X = synthetic_series(n, T, seed)
    C = KMeans(k, n_init=1, random_state=seed).fit(X[:min(n, 20000)]).cluster_centers_
    C = C[np.argsort(C[:, -1])]
    out = {"n": n, "T": T, "k": k, "n_ref": n_ref, "radius": radius, "gamma": gamma}
    for metric in metrics:
        kernels.assign(X[:300], C, metric, gamma, radius)          # compile / load the cache
        t0 = time.perf_counter()
        labels, _, stats = kernels.assign(X, C, metric, gamma, radius, return_stats=True)
        t_kernel = time.perf_counter() - t0
        model = _tslearn_model(C, metric, gamma, radius)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.predict(X[:2, :, None])                           # tslearn's numba compile
            t0 = time.perf_counter()
            ref = model.predict(X[:n_ref, :, None])
            t_ref = time.perf_counter() - t0
        kernel_rate = n * k / t_kernel
        ref_rate = n_ref * k / t_ref
        out[metric] = {
            "kernel_pairs_per_s": kernel_rate,
            "tslearn_pairs_per_s": ref_rate,
            "speedup": kernel_rate / ref_rate,
            "label_agreement": float(np.mean(labels[:n_ref] == ref)),
            "kernel_s": t_kernel,
            "estimated_3M_pixel_s": PIXELS_LA * k / kernel_rate,
            "tslearn_estimated_3M_pixel_s": PIXELS_LA * k / ref_rate,
            "num_tier2": stats["num_tier2"],
            "num_tier3": stats["num_tier3"],
        }
    return out


def write_synthetic_stack(path, num_pixel, num_date=247, seed=0, block=100_000):
    """A hotspotStack.h5 of synthetic_series (metres), written block by block."""
    from hotspot.utils.stack import StackWriter
    dates = [str(d) for d in np.datetime_as_string(
        np.datetime64("2016-01-01") + np.arange(num_date) * 12, unit="D")]
    dates = [d.replace("-", "") for d in dates]
    side = int(np.ceil(np.sqrt(num_pixel)))
    with StackWriter(path, num_pixel, dates, {"GRID": "no"}) as w:
        for s in range(0, num_pixel, block):
            e = min(s + block, num_pixel)
            idx = np.arange(s, e)
            w.write_block(s, displacement=synthetic_series(e - s, num_date, seed + s) / 1000,
                          latitude=34 + (idx // side) * 1e-3, longitude=-118 + (idx % side) * 1e-3)
    return Path(path)


_STEP_CODE = """
import json, sys
from hotspot.hotspotApp import StepContext
from hotspot.steps import tskm
from hotspot.utils.template import config_from_dict
ctx = StepContext(workdir=sys.argv[1], config=config_from_dict(json.loads(sys.argv[2])))
tskm.run(ctx)
"""


def bench_tskm_step(stack, log_file=None, **template):
    """Wall time and peak RSS (process tree, polled every 0.2 s) of the tskm step on `stack`.

    The step runs in its own process, as hotspotApp.py runs it; `template` holds extra
    template keys with '.' replaced by '__' (e.g. hotspot__tskm__metric="dtw").
    Output: WORKDIR/clusterTSKM.h5 next to the stack (named hotspotStack.h5).
    """
    import psutil
    stack = Path(stack).resolve()
    if stack.name != products.STACK:
        raise ValueError(f"{stack}: the step reads WORKDIR/hotspotStack.h5")
    values = {k.replace("__", "."): str(v) for k, v in template.items()}
    log_file = Path(log_file or stack.with_name("bench_tskm.log"))
    t0 = time.time()
    peak = 0
    with open(log_file, "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", _STEP_CODE, str(stack.parent),
                                 json.dumps(values)], stdout=log, stderr=subprocess.STDOUT)
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                procs = [ps] + ps.children(recursive=True)
                peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.2)
    import h5py
    with h5py.File(stack, "r") as f:
        n, t = f["displacement"].shape
    return {"wall_s": time.time() - t0, "peak_rss_mb": peak / 1024 ** 2,
            "returncode": proc.returncode, "num_pixel": n, "num_date": t,
            "log": str(log_file)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("assign", help="kernel vs tslearn assignment")
    a.add_argument("--n", type=int, default=20000)
    a.add_argument("--T", type=int, default=247)
    a.add_argument("--k", type=int, default=7)
    a.add_argument("--n-ref", type=int, default=200)
    a.add_argument("--radius", type=int, default=None)
    s = sub.add_parser("step", help="the whole step on a synthetic stack")
    s.add_argument("--pixels", type=int, default=200_000)
    s.add_argument("--T", type=int, default=247)
    s.add_argument("--dir", default=None)
    s.add_argument("--template", action="append", default=[], help="key=value (repeatable)")
    inps = parser.parse_args(argv)
    if inps.cmd == "assign":
        res = bench_assign_vs_tslearn(inps.n, inps.T, inps.k, inps.n_ref, inps.radius)
    else:
        workdir = Path(inps.dir or tempfile.mkdtemp(prefix="bench_tskm_"))
        workdir.mkdir(parents=True, exist_ok=True)
        stack = workdir / products.STACK
        if not stack.is_file():
            write_synthetic_stack(stack, inps.pixels, inps.T)
        extra = dict(kv.split("=", 1) for kv in inps.template)
        res = bench_tskm_step(stack, **{k.strip().replace(".", "__"): v.strip()
                                        for k, v in extra.items()})
    print(json.dumps(res, indent=1, default=str))
    return res


if __name__ == "__main__":
    main()
