#!/usr/bin/env python3
"""Throughput, peak memory and accuracy of the train_lstm / predict steps.

    # synthetic scene (labels from k-means + DBSCAN, like the workflow) then both variants
    python benchmarks/bench_lstm.py --dir /tmp/bench_lstm --length 150 --width 200
    # an existing work directory (hotspotStack.h5 + clusterDBSCAN.h5, e.g. the LA preset)
    python benchmarks/bench_lstm.py --dir /tmp/hotspot_bench_la --no-scene --variants fast

Functions for other scripts: make_scene(), bench_train(), bench_predict(), PeakRSS.
Training throughput = pixels x epochs fitted per second of model.fit (validation and
early stopping included); prediction throughput = stack pixels labelled per second,
reading the stack included. Peak memory = the highest resident set size of this process
during the call (polled every 0.1 s), so it includes TensorFlow's own ~0.5 GB.
"""
import argparse
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from hotspot import products  # noqa: E402

BEHAVIOURS = ("background", "subsidence", "uplift", "seasonal", "step", "accelerating")
# (x, y as fractions of the scene, radius km, behaviour); two pairs of twins.
HOTSPOTS = [
    (0.20, 0.25, 2.0, "subsidence"), (0.80, 0.75, 2.0, "subsidence"),
    (0.50, 0.50, 2.5, "uplift"), (0.75, 0.25, 1.5, "seasonal"), (0.25, 0.75, 1.5, "seasonal"),
    (0.50, 0.15, 1.5, "step"), (0.45, 0.85, 2.0, "accelerating"),
]


class PeakRSS:
    """Context manager: peak resident memory (MB) of this process while inside."""

    def __init__(self, interval=0.1):
        import psutil
        self._proc = psutil.Process()
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()

    def _poll(self):
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._proc.memory_info().rss / 2 ** 20)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._proc.memory_info().rss / 2 ** 20)


def _signal(kind, t):
    t = np.asarray(t)
    return {"background": 0 * t, "subsidence": -0.03 * t, "uplift": 0.015 * t,
            "seasonal": 0.012 * np.sin(2 * np.pi * t) - 0.004 * t,
            "step": -0.02 * (t > t[-1] / 2), "accelerating": -0.006 * t ** 2}[kind]


def make_scene(workdir, length=150, width=200, num_date=247, spacing_deg=0.002, seed=0,
               labels="pipeline", noise_mm=3.0, atmo_mm=3.0, block_rows=100):
    """Write hotspotStack.h5, clusterTSKM.h5, clusterDBSCAN.h5 and covariogram.h5 of a scene.

    Gaussian-shaped hotspots of five behaviours (two pairs of twins) on a noisy background.
    labels='pipeline': k-means (scikit-learn, euclidean) on the series, then DBSCAN per
    temporal cluster on the positions, as the workflow does; labels='truth': from the
    hotspot shapes (fast, for multi-million-pixel scenes).
    """
    from scipy.ndimage import zoom

    from hotspot.utils.geo import lonlat_to_xy_km
    from hotspot.utils.h5io import write_h5
    from hotspot.utils.labels import write_label_file
    from hotspot.utils.stack import StackWriter
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t_days = np.arange(num_date) * 6
    dates = [str(np.datetime64("2016-01-01") + int(d)).replace("-", "") for d in t_days]
    t = t_days / 365.25
    lon = -118.4 + spacing_deg * np.arange(width)
    lat = 34.2 - spacing_deg * np.arange(length)
    lon2, lat2 = np.meshgrid(lon, lat)
    x, y = lonlat_to_xy_km(lon2, lat2)
    x0, y0 = x.min(), y.min()
    sx, sy = np.ptp(x), np.ptp(y)
    profiles = np.stack([np.exp(-((x - (x0 + fx * sx)) ** 2 + (y - (y0 + fy * sy)) ** 2) / r ** 2)
                         for fx, fy, r, _ in HOTSPOTS])
    signals = np.stack([_signal(kind, t) for *_, kind in HOTSPOTS]).astype(np.float32)
    # Atmosphere: a smooth field per epoch, on a coarse grid zoomed to the scene.
    coarse = rng.normal(0, atmo_mm / 1000, size=(num_date, 6, 8)).astype(np.float32)
    attrs = {"GRID": "yes", "LENGTH": length, "WIDTH": width, "X_FIRST": lon[0],
             "Y_FIRST": lat[0], "X_STEP": spacing_deg, "Y_STEP": -spacing_deg,
             "X_UNIT": "degrees", "Y_UNIT": "degrees", "PROCESSOR": "simulated"}
    n = length * width
    vel = np.empty(n, dtype=np.float32)
    with StackWriter(workdir / products.STACK, n, dates, attrs) as w:
        for r0 in range(0, length, block_rows):
            r1 = min(length, r0 + block_rows)
            rows = slice(r0, r1)
            prof = profiles[:, rows].reshape(len(HOTSPOTS), -1)
            disp = prof.T.astype(np.float32) @ signals
            atmo = np.stack([zoom(c, (length / 6, width / 8), order=1)[rows] for c in coarse],
                            axis=-1).reshape(-1, num_date)
            disp += atmo - atmo[:, :1]
            disp += rng.normal(0, noise_mm / 1000, disp.shape).astype(np.float32)
            disp -= disp[:, :1]
            a, b = r0 * width, r1 * width
            vel[a:b] = np.polyfit(t, disp.T, 1)[0]
            rr, cc = np.mgrid[rows, 0:width]
            w.write_block(a, displacement=disp, latitude=lat2[rows].ravel(),
                          longitude=lon2[rows].ravel(), velocity=vel[a:b],
                          velocityStd=np.full(b - a, 0.001),
                          coherence=np.clip(rng.normal(0.8, 0.1, b - a), 0, 1),
                          incidenceAngle=np.repeat(np.linspace(33, 44, width)[None], r1 - r0,
                                                   0).ravel(),
                          row=rr.ravel(), col=cc.ravel())
    stack = workdir / products.STACK
    xs, ys = x.ravel(), y.ravel()
    spacing_km = spacing_deg * 111.0
    if labels == "truth":
        tskm, dbscan = _truth_labels(profiles.reshape(len(HOTSPOTS), -1))
    else:
        tskm, dbscan = _pipeline_labels(stack, xs, ys, spacing_km, seed)
    write_label_file(workdir / products.TSKM, tskm, stack)
    write_label_file(workdir / products.DBSCAN, dbscan, stack)
    write_h5(workdir / products.COVARIOGRAM, {"distance": np.array([0.0])},
             {"CORRELATION_LENGTH_KM": 4 * spacing_km})
    return stack


def _truth_labels(profiles):
    """Hotspot core -> its cluster; fringe (0.2-0.35 of the peak) -> noise; the rest one cluster."""
    kinds = [k for *_, k in HOTSPOTS]
    best = profiles.argmax(axis=0)
    peak = profiles.max(axis=0)
    tskm = np.where(peak > 0.35, np.array([BEHAVIOURS.index(k) for k in kinds])[best] + 1, 1)
    dbscan = np.where(peak > 0.35, best + 2, 1)
    dbscan = np.where((peak > 0.2) & (peak <= 0.35), 0, dbscan)
    return tskm.astype(np.int32), dbscan.astype(np.int32)


def _pipeline_labels(stack, x, y, spacing_km, seed, num_temporal=6, num_fit=4000):
    """k-means (k = num_temporal) then DBSCAN per temporal cluster with eps = the correlation
    length written to covariogram.h5, as the workflow does (k fixed: the silhouette score
    picks 2, deformation / none, on this scene, which leaves no twins to test)."""
    from sklearn.cluster import DBSCAN, KMeans

    from hotspot.utils.stack import read_pixels
    disp = read_pixels(stack, ["displacement"])["displacement"]
    rng = np.random.default_rng(seed)
    fit = rng.choice(disp.shape[0], min(num_fit, disp.shape[0]), replace=False)
    km = KMeans(num_temporal, n_init=3, random_state=seed).fit(disp[fit])
    tskm = km.predict(disp).astype(np.int32) + 1
    dbscan = np.zeros(disp.shape[0], dtype=np.int32)
    next_id = 1
    xy = np.column_stack([x, y])
    for k in np.unique(tskm):
        sel = np.nonzero(tskm == k)[0]
        lab = DBSCAN(eps=4 * spacing_km, min_samples=15).fit(xy[sel]).labels_
        for c in range(lab.max() + 1):
            members = sel[lab == c]
            if members.size >= 20:       # like hotspot.dispersion.minPixel: tiny bits -> noise
                dbscan[members] = next_id
                next_id += 1
    return tskm, dbscan


# ----------------------------------------------------------------- benchmarks

def bench_train(stack, labels, variant="fast", model="lstm", num_sample=20000, epochs=30,
                time_step=None, batch_size=256, patience=5, splits=("random",), tskm=None,
                block_size=None, seed=0, verbose=0):
    """Fit one model as train_lstm does; samples/s of fitting, peak RSS, test accuracy."""
    from hotspot.steps import lstm_models as lm
    from hotspot.steps.train_lstm import TrainSettings, train
    settings = TrainSettings(models=(model,), variant=variant,
                             time_step=time_step or lm.TIME_STEP_AUTO[variant],
                             num_sample=num_sample, splits=tuple(splits), epochs=epochs,
                             batch_size=batch_size, patience=patience, seed=seed, verbose=verbose)
    t0 = time.time()
    with PeakRSS() as mem:
        res = train(stack, labels, settings, tskm=tskm, block_size=block_size, log=lambda m: None)
    out = {"variant": variant, "model": model, "time_step": settings.time_step,
           "seconds": time.time() - t0, "peak_rss_mb": mem.peak_mb,
           "bundle": res["models"][model]["bundle"]}
    for split, sc in res["models"][model]["splits"].items():
        n_fit = int(round(sc["num_train"] * (1 - 0.1)))
        out[f"{split}_accuracy"] = sc["accuracy"]
        out[f"{split}_twin_recall"] = sc["twin_recall"]
        out[f"{split}_epochs"] = sc["epochs_run"]
        out[f"{split}_train_samples_per_s"] = n_fit * sc["epochs_run"] / sc["train_time"]
        out[f"{split}_train_time_s"] = sc["train_time"]
    return out


def bench_predict(stack, bundles, min_probability=0.5, batch_size=4096, max_memory=4.0,
                  labels=None):
    """Label the whole stack; pixels/s (I/O included), peak RSS, held-out agreement."""
    from hotspot.steps.predict import held_out_agreement, predict_stack
    from hotspot.utils.stack import read_info
    if not isinstance(bundles, dict):
        bundles = {b.name: b for b in bundles}
    info = read_info(stack)
    t0 = time.time()
    with PeakRSS() as mem:
        res = predict_stack(bundles, stack, min_probability, batch_size, max_memory,
                            log=lambda m: None)
    sec = time.time() - t0
    out = {"seconds": sec, "pixels_per_s": info.num_pixel / sec, "peak_rss_mb": mem.peak_mb,
           "num_pixel": info.num_pixel}
    if labels is not None:
        for name, (pred, _) in res.items():
            out[f"{name}_agreement"] = held_out_agreement(pred, labels, bundles[name],
                                                          info)["agreement"]
    return out


def bench_throughput(variant="fast", model="lstm", num_date=247, num_class=20, n_train=4096,
                     n_predict=16384, batch_size=256, predict_batch=4096, time_step=None):
    """Model compute alone on random inputs (no stack, no I/O): samples/s of one training
    epoch and of prediction, after a warm-up call of each (tracing excluded)."""
    from hotspot.steps import lstm_models as lm
    keras = lm._keras()
    keras.utils.set_random_seed(0)
    steps = lm.num_steps(num_date, time_step or lm.TIME_STEP_AUTO[variant])
    num_static = len(lm.STATIC_FEATURES) + num_class
    net = lm.compile_model(lm.build_model(model, steps, num_static, num_class, variant), 1e-3)
    rng = np.random.default_rng(0)

    def inputs(n):
        x = rng.normal(size=(n, steps, 1)).astype(np.float32)
        return [x, rng.normal(size=(n, num_static)).astype(np.float32)] if model != "lstm" else x
    xt, yt = inputs(n_train), rng.integers(0, num_class, n_train)
    xp = inputs(n_predict)
    net.fit(xt, yt, batch_size=batch_size, epochs=1, verbose=0)
    t0 = time.time()
    net.fit(xt, yt, batch_size=batch_size, epochs=1, verbose=0)
    train_s = time.time() - t0
    net.predict(xp, batch_size=predict_batch, verbose=0)
    t0 = time.time()
    net.predict(xp, batch_size=predict_batch, verbose=0)
    predict_s = time.time() - t0
    return {"variant": variant, "model": model, "steps": steps, "backend": keras.backend.backend(),
            "train_samples_per_s": n_train / train_s, "predict_samples_per_s": n_predict / predict_s}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default="/tmp/bench_lstm")
    parser.add_argument("--no-scene", action="store_true", help="use the files in --dir")
    parser.add_argument("--length", type=int, default=150)
    parser.add_argument("--width", type=int, default=200)
    parser.add_argument("--num-date", type=int, default=247)
    parser.add_argument("--labels", default="pipeline", choices=["pipeline", "truth"])
    parser.add_argument("--variants", default="fast,paper")
    parser.add_argument("--models", default="lstm,lstmPerceptron")
    parser.add_argument("--splits", default="random,block")
    parser.add_argument("--num-sample", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--predict-pixels", type=int, default=0,
                        help="time prediction on the first N pixels only (0 = all)")
    inps = parser.parse_args(argv)

    from hotspot.steps.lstm_models import configure_backend
    from hotspot.utils.labels import read_pixel_label
    workdir = Path(inps.dir)
    configure_backend()
    if not inps.no_scene:
        t0 = time.time()
        make_scene(workdir, inps.length, inps.width, inps.num_date, labels=inps.labels)
        print(f"scene written in {time.time() - t0:.1f} s", flush=True)
    stack = workdir / products.STACK
    labels = read_pixel_label(workdir / products.DBSCAN)
    tskm_file = workdir / products.TSKM
    tskm = read_pixel_label(tskm_file) if tskm_file.is_file() else None
    from hotspot.steps.train_lstm import auto_block_size
    from hotspot.utils.geo import lonlat_to_xy_km
    from hotspot.utils.stack import read_pixels
    pix = read_pixels(stack, ["longitude", "latitude"])
    block, _ = auto_block_size(workdir, *lonlat_to_xy_km(pix["longitude"], pix["latitude"]))
    rows = []
    for variant in inps.variants.split(","):
        for model in inps.models.split(","):
            tr = bench_train(stack, labels, variant, model, inps.num_sample, inps.epochs,
                             batch_size=inps.batch_size, splits=inps.splits.split(","),
                             tskm=tskm, block_size=block)
            pr = bench_predict(stack, {model: tr["bundle"]}, labels=labels)
            rows.append((variant, model, tr, pr))
            split0 = inps.splits.split(",")[0]
            print(f"{variant} {model}: train {tr[f'{split0}_train_samples_per_s']:.0f} samples/s "
                  f"({tr['seconds']:.0f} s all splits, peak {tr['peak_rss_mb']:.0f} MB); "
                  f"predict {pr['pixels_per_s']:.0f} px/s (peak {pr['peak_rss_mb']:.0f} MB); "
                  + ", ".join(f"{k} {v:.4f}" for k, v in tr.items() if k.endswith(("accuracy",
                                                                                  "recall")))
                  + f", held-out agreement {pr[f'{model}_agreement']:.4f}", flush=True)
    print("\n| variant | model | timeStep | train samples/s | train s (all splits) | "
          "predict px/s | peak MB | acc random | acc block | twin recall random | "
          "held-out agreement |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for variant, model, tr, pr in rows:
        split0 = inps.splits.split(",")[0]
        print(f"| {variant} | {model} | {tr['time_step']} | "
              f"{tr[f'{split0}_train_samples_per_s']:.0f} | {tr['seconds']:.0f} | "
              f"{pr['pixels_per_s']:.0f} | {max(tr['peak_rss_mb'], pr['peak_rss_mb']):.0f} | "
              f"{100 * tr.get('random_accuracy', np.nan):.2f} | "
              f"{100 * tr.get('block_accuracy', np.nan):.2f} | "
              f"{100 * tr.get('random_twin_recall', np.nan):.1f} | "
              f"{100 * pr[f'{model}_agreement']:.2f} |")
    return rows


if __name__ == "__main__":
    sys.exit(main() and 0)
