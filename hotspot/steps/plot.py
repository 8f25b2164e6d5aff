"""Step 8, plot: figures of every product present in WORKDIR -> WORKDIR/pic, and GIS exports.

Each figure is drawn when the files (and datasets) it needs exist; the others
are skipped with a message naming the missing input and the step that makes
it. pic/plot.h5 lists the figures written and holds the step's template keys
(update mode); it is written last, so it only exists after a complete run.
"""
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import h5py
import numpy as np

from hotspot import products
from hotspot.plots import data as files
from hotspot.plots.data import PlotData
from hotspot.utils.errors import HotspotError
from hotspot.utils.h5io import write_h5
from hotspot.utils.stack import STACK_FILE, read_info

PIC_DIR = products.PIC_DIR
MANIFEST = products.PLOT_MANIFEST
# The step that writes each input, for the "run step X first" hints.
MADE_BY = {STACK_FILE: "load_data", files.COVARIOGRAM_FILE: "covariogram",
           files.TSKM_FILE: "tskm", files.DBSCAN_FILE: "dbscan", files.TRAIN_FILE: "train_lstm",
           files.LSTM_FILE: "predict", files.LSTMP_FILE: "predict",
           files.DISPERSION_FILE: "dispersion", files.HOTSPOT_FILE: "dispersion"}


@dataclass
class FigureJob:
    name: str            # file name in pic/
    needs: tuple         # ((file, (dataset, ...)), ...)
    draw: object         # draw(data, out_path)
    reason: str = None   # why it cannot be drawn, when known before looking at `needs`


def figure_jobs(workdir):
    """Every figure the plot step knows, with what it needs (trainLSTM.h5 adds one per model)."""
    from hotspot.plots import diagnostics, maps, series, summary
    stack = (STACK_FILE, ("velocity", "latitude", "longitude"))
    label = {f: (f, ("pixelLabel",)) for f in (files.TSKM_FILE, files.DBSCAN_FILE,
                                                files.LSTM_FILE, files.LSTMP_FILE,
                                                files.HOTSPOT_FILE)}
    jobs = [
        FigureJob("velocity_hotspots.png", (stack,), maps.plot_velocity_hotspots),
        FigureJob("hotspot_summary.png", (stack, label[files.HOTSPOT_FILE]), summary.plot_summary),
        FigureJob("label_tskm.png", (stack, label[files.TSKM_FILE]),
                  partial(maps.plot_label_map, label_file=files.TSKM_FILE)),
        FigureJob("label_dbscan.png", (stack, label[files.DBSCAN_FILE]),
                  partial(maps.plot_label_map, label_file=files.DBSCAN_FILE)),
        FigureJob("label_lstm.png", (stack, label[files.LSTM_FILE]),
                  partial(maps.plot_label_map, label_file=files.LSTM_FILE)),
        FigureJob("label_lstmPerceptron.png", (stack, label[files.LSTMP_FILE]),
                  partial(maps.plot_label_map, label_file=files.LSTMP_FILE)),
        FigureJob("label_hotspot.png", (stack, label[files.HOTSPOT_FILE]),
                  partial(maps.plot_label_map, label_file=files.HOTSPOT_FILE)),
        FigureJob("centroids_tskm.png", (stack, (files.TSKM_FILE, ("centroid", "pixelLabel"))),
                  series.plot_centroids),
        FigureJob("timeseries_hotspot.png", (stack, label[files.HOTSPOT_FILE]),
                  series.plot_hotspot_timeseries),
        FigureJob("silhouette.png", ((files.TSKM_FILE, ("silhouetteK", "silhouetteScore")),),
                  diagnostics.plot_silhouette),
        FigureJob("covariogram.png", ((files.COVARIOGRAM_FILE, ("distance", "covariance")),),
                  diagnostics.plot_covariogram),
        FigureJob("standard_distance.png",
                  ((files.DISPERSION_FILE, ("clusterId", "standardDistance")),),
                  diagnostics.plot_standard_distance),
        FigureJob("ellipses.png", (stack, (files.DISPERSION_FILE, tuple(maps.ELLIPSE_DATASETS))),
                  maps.plot_ellipses),
    ]
    train = workdir / files.TRAIN_FILE
    need_train = ((files.TRAIN_FILE, ()),)
    models = {}
    if train.is_file():
        try:
            models = {kind: diagnostics.model_names(train, kind)
                      for kind in ("confusion", "history")}
        except HotspotError as exc:
            jobs.append(FigureJob("confusion_<model>.png / training_<model>.png", need_train,
                                  None, reason=str(exc)))
    else:
        jobs.append(FigureJob("confusion_<model>.png / training_<model>.png", need_train, None))
    for model in models.get("confusion", []):
        jobs.append(FigureJob(f"confusion_{model}.png", need_train,
                              partial(diagnostics.plot_confusion, model=model)))
    for model in models.get("history", []):
        jobs.append(FigureJob(f"training_{model}.png", need_train,
                              partial(diagnostics.plot_training, model=model)))
    return jobs


def missing_input(workdir, needs, contents):
    """Why a figure cannot be drawn (None when it can); contents caches dataset lists."""
    for name, datasets in needs:
        path = workdir / name
        if not path.is_file():
            return f"{name} not found (made by step {MADE_BY.get(name, '?')})"
        if name not in contents:
            contents[name] = _dataset_names(path)
        absent = [d for d in datasets if d not in contents[name]]
        if absent:
            return f"{name} has no dataset {', '.join(absent)}"
    return None


def _dataset_names(path):
    names = set()
    try:
        with h5py.File(path, "r") as f:
            f.visit(names.add)
    except OSError:
        return set()
    return names


def plan(ctx):
    """(jobs to draw, [(figure, reason) skipped]) from the files present now."""
    workdir = ctx.path("")
    todo, skipped, contents = [], [], {}
    for job in figure_jobs(workdir):
        reason = missing_input(workdir, job.needs, contents) or job.reason
        if reason is None and job.draw is not None:
            todo.append(job)
        else:
            skipped.append((job.name, reason or "nothing to plot"))
    return todo, skipped


def inputs(ctx):
    return [ctx.path(name) for name in files.INPUT_FILES if ctx.path(name).is_file()]


def outputs(ctx):
    pic = ctx.path(PIC_DIR)
    return [pic / MANIFEST] + [pic / job.name for job in plan(ctx)[0]] + export_outputs(ctx)


def run(ctx):
    dpi = ctx.config.get_int("hotspot.plot.dpi", min_value=20, max_value=1200)
    do_export = ctx.config.get_bool("hotspot.plot.export")
    pic = ctx.path(PIC_DIR)
    pic.mkdir(parents=True, exist_ok=True)
    data = PlotData(workdir=ctx.path(""), dpi=dpi, seed=ctx.config.seed,
                    max_memory=ctx.config.max_memory, log=ctx.log)
    todo, skipped = plan(ctx)
    for name, reason in skipped:
        ctx.log(f"plot: skip {name}: {reason}")
    written = []
    for k, job in enumerate(todo, 1):
        start = time.time()
        out = pic / job.name
        try:
            job.draw(data, out=out)
        except HotspotError as exc:
            # One inconsistent product must not cost the user the other figures.
            skipped.append((job.name, str(exc)))
            ctx.log(f"plot [{k}/{len(todo)}] skip {job.name}: {exc}")
            continue
        written.append(job.name)
        ctx.log(f"plot [{k}/{len(todo)}] {out} ({time.time() - start:.1f} s)")
    exported = run_export(ctx, do_export)
    attrs = dict(ctx.step_attrs("plot"))
    attrs.update({"FILE_TYPE": "hotspotFigures", "NUM_FIGURE": len(written),
                  "SKIPPED": "; ".join(f"{n}: {r}" for n, r in skipped) or "none",
                  "EXPORT": ", ".join(p.name for p in exported) or "none"})
    write_h5(pic / MANIFEST, {"figure": np.array(written, dtype="S")}, attrs)
    ctx.log(f"plot: {len(written)} figure(s) in {pic}, {len(skipped)} skipped")
    return written


def run_export(ctx, enabled):
    """GIS exports of hotspot.h5 (hotspot.steps.export) when hotspot.plot.export = yes."""
    from hotspot.steps import export
    if not enabled:
        ctx.log("plot: GIS export off (hotspot.plot.export = no)")
        return []
    if not ctx.path(files.HOTSPOT_FILE).is_file():
        ctx.log(f"plot: skip GIS export: {files.HOTSPOT_FILE} not found (made by step dispersion)")
        return []
    return [Path(p) for p in export.write_exports(ctx)]


def export_outputs(ctx):
    """The files write_exports makes for this work directory (update mode)."""
    from hotspot.steps.export import EXPORT_NAMES, grid_georef
    if not (ctx.config.get_bool("hotspot.plot.export") and ctx.path(files.HOTSPOT_FILE).is_file()
            and ctx.path(STACK_FILE).is_file()):
        return []
    names = [n for n in EXPORT_NAMES if not n.endswith(".tif")]
    if grid_georef(read_info(ctx.path(STACK_FILE)).attrs) is not None:
        names += [n for n in EXPORT_NAMES if n.endswith(".tif")]
    return [ctx.path(n) for n in names]
