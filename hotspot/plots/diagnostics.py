"""Diagnostic figures: covariogram, silhouette score, LSTM training and confusion, S_d test."""
import numpy as np
from matplotlib.patches import Patch

from hotspot import products
from hotspot.plots.common import (M_TO_MM, cluster_color, new_figure, read_datasets,
                                  save_figure)
from hotspot.utils.h5io import open_h5, read_attrs

HISTORY_NAMES = ("loss", "val_loss", "accuracy", "val_accuracy")


def plot_covariogram(data, out):
    path = data.path(products.COVARIOGRAM)
    d = read_datasets(path, ["distance", "covariance"], optional=["pairCount", "modelCovariance"])
    attrs = read_attrs(path)
    fig = new_figure(7, 5)
    ax = fig.add_subplot()
    dist = np.asarray(d["distance"], dtype=float)
    cov = np.asarray(d["covariance"], dtype=float) * M_TO_MM ** 2
    if "pairCount" in d:
        twin = ax.twinx()
        width = np.median(np.diff(dist)) if dist.size > 1 else 1.0
        twin.bar(dist, d["pairCount"], width=width * 0.9, color="0.9", zorder=0)
        twin.set_ylabel("pixel pairs per bin", color="0.45")
        twin.tick_params(axis="y", colors="0.45")
        ax.set_zorder(twin.get_zorder() + 1)
        ax.patch.set_visible(False)
    ax.plot(dist, cov, "o", color="tab:blue", ms=4, label="empirical covariance")
    model = attrs.get("MODEL", "model")
    if "modelCovariance" in d:
        ax.plot(dist, np.asarray(d["modelCovariance"], float) * M_TO_MM ** 2, "-",
                color="tab:red", lw=2, label=f"fitted {model} model")
    length = attrs.get("CORRELATION_LENGTH_KM")
    title = "Spatial covariogram of the displacement time series"
    if length is not None:
        length = float(length)
        std = attrs.get("CORRELATION_LENGTH_STD_KM")
        text = f"correlation length {length:.2f}"
        if std is not None and np.isfinite(float(std)):
            std = float(std)
            ax.axvspan(length - std, length + std, color="tab:green", alpha=0.15)
            text += f" ± {std:.2f}"
        ax.axvline(length, color="tab:green", ls="--", lw=1.5, label=text + " km")
        title += f"\ncorrelation length = {length:.2f} km"
    ax.axhline(0, color="0.5", lw=0.6)
    ax.set_xlabel("Distance between pixels (km)")
    ax.set_ylabel("Covariance (mm²)")
    ax.set_title(title)
    ax.legend(fontsize="small", loc="upper right")
    return save_figure(fig, out, data.dpi)


def plot_silhouette(data, out):
    path = data.path(products.TSKM)
    d = read_datasets(path, ["silhouetteK", "silhouetteScore"])
    chosen = read_attrs(path).get("NUM_CLUSTER")
    k = np.asarray(d["silhouetteK"], dtype=int)
    score = np.asarray(d["silhouetteScore"], dtype=float)
    fig = new_figure(6, 4.5)
    ax = fig.add_subplot()
    ax.plot(k, score, "o-", color="tab:blue", label="silhouette score")
    title = "Number of temporal clusters (higher score = better separated)"
    if chosen is not None and int(chosen) in k:
        c = int(chosen)
        ax.plot([c], score[k == c][:1], "o", ms=12, mfc="none", mec="tab:red", mew=2,
                label=f"chosen k = {c}")
        title += f"\nchosen k = {c}"
    ax.set_xlabel("Number of clusters k")
    ax.set_ylabel("Mean silhouette score (-1 to 1)")
    ax.set_xticks(k)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize="small")
    return save_figure(fig, out, data.dpi)


def read_training(path):
    """{model: {'history': {name: array}, 'confusion': {split: {...}}, 'classId': array}}.

    Follows train_lstm's layout (<model>/<split>/confusion, count, history/<metric>, split
    attrs ACCURACY / TWIN_RECALL) but accepts any nesting: a dataset named like a Keras
    history key is history, one whose name contains 'confusion' a confusion matrix keyed
    by its parent group.
    """
    models = {}
    with open_h5(path) as f:
        for model, group in f.items():
            if not hasattr(group, "visititems"):
                continue
            entry = {"history": {}, "confusion": {}, "classId": None}

            def visit(name, obj, entry=entry, group=group):
                if not hasattr(obj, "shape"):
                    return
                base = name.rsplit("/", 1)[-1]
                parent = name.rsplit("/", 1)[0] if "/" in name else ""
                if base in HISTORY_NAMES:
                    prefix = parent.replace("history", "").strip("/")
                    entry["history"][f"{prefix}/{base}" if prefix else base] = obj[()]
                elif "confusion" in base.lower():
                    owner = group[parent] if parent else group
                    count = owner["count"][()] if "count" in owner else None
                    entry["confusion"][parent or "test"] = {
                        "matrix": obj[()], "count": count, "attrs": dict(owner.attrs)}
                elif base == "classId":
                    entry["classId"] = obj[()]
            group.visititems(visit)
            models[model] = entry
    return models


def model_names(path, kind):
    """Models in trainLSTM.h5 that have a `kind` ('history' / 'confusion') to plot."""
    return [m for m, e in read_training(path).items() if e[kind]]


def confusion_scores(matrix, count=None, attrs=None):
    """(row-normalised matrix, overall accuracy, mean recall) of a count or normalised matrix."""
    cm = np.nan_to_num(np.asarray(matrix, dtype=float))
    rowsum = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rowsum, out=np.zeros_like(cm), where=rowsum > 0)
    present = rowsum[:, 0] > 0
    if count is not None:
        present &= np.asarray(count) > 0
    recall = float(np.mean(np.diag(norm)[present])) if present.any() else np.nan
    if attrs and "ACCURACY" in attrs:
        accuracy = float(attrs["ACCURACY"])
    elif count is not None and np.sum(count) > 0:
        accuracy = float(np.sum(np.diag(norm) * count) / np.sum(count))
    elif not np.allclose(rowsum[present], 1.0):
        accuracy = float(np.trace(cm) / cm.sum())        # a matrix of counts
    else:
        accuracy = np.nan                                 # normalised, no counts: unknown
    return norm, accuracy, recall


def plot_confusion(data, model, out):
    entry = read_training(data.path(products.TRAIN))[model]
    known = ["random", "block"]
    splits = sorted(entry["confusion"], key=lambda k: (known.index(k) if k in known else 2, k))
    fig = new_figure(5.2 * len(splits) + 0.8, 5)
    axes = fig.subplots(1, len(splits), squeeze=False)[0]
    im = None
    for ax, split in zip(axes, splits):
        item = entry["confusion"][split]
        norm, acc, recall = confusion_scores(item["matrix"], item["count"], item["attrs"])
        n = norm.shape[0]
        ids = entry["classId"] if entry["classId"] is not None and len(entry["classId"]) == n \
            else np.arange(n)
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        if n <= 15:
            for r in range(n):
                for c in range(n):
                    ax.text(c, r, f"{norm[r, c]:.2f}", ha="center", va="center",
                            fontsize="x-small", color="white" if norm[r, c] > 0.6 else "black")
        step = max(1, n // 20)
        ax.set_xticks(np.arange(0, n, step), [str(i) for i in ids[::step]], fontsize="small")
        ax.set_yticks(np.arange(0, n, step), [str(i) for i in ids[::step]], fontsize="small")
        ax.set_xlabel("Predicted cluster id")
        ax.set_ylabel("True cluster id (DBSCAN; 0 = no cluster)")
        title = f"{split} split: accuracy {acc:.3f}" if np.isfinite(acc) else f"{split} split"
        title += f"\nmean recall {recall:.3f}"
        twin = item["attrs"].get("TWIN_RECALL")
        if twin is not None and np.isfinite(float(twin)):
            title += f", twin recall {float(twin):.3f}"
        ax.set_title(title, fontsize="medium")
    cbar = fig.colorbar(im, ax=list(axes), shrink=0.8)
    cbar.set_label("Fraction of the true cluster (row-normalised)")
    fig.suptitle(f"Normalised confusion matrix of the test pixels: {model}")
    return save_figure(fig, out, data.dpi)


def plot_training(data, model, out):
    hist = read_training(data.path(products.TRAIN))[model]["history"]
    fig = new_figure(10, 4.2)
    ax_loss, ax_acc = fig.subplots(1, 2)
    # one colour per split (random / block), solid = training, dashed = validation
    splits = sorted({k.rsplit("/", 1)[0] if "/" in k else "" for k in hist},
                    key=lambda k: (k != "random", k))
    colors = dict(zip(splits, ["tab:blue", "tab:orange", "tab:green", "tab:purple"] * 4))
    for key, values in sorted(hist.items()):
        base = key.rsplit("/", 1)[-1]
        split = key.rsplit("/", 1)[0] if "/" in key else ""
        ax = ax_loss if base.endswith("loss") else ax_acc
        epochs = np.arange(1, len(values) + 1)
        style = "--" if base.startswith("val_") else "-"
        label = (f"{split} split, " if split else "") + (
            "validation" if base.startswith("val_") else "training")
        ax.plot(epochs, values, style, color=colors[split], marker="o", ms=3, label=label)
    for ax, ylabel in ((ax_loss, "Loss (cross-entropy)"), (ax_acc, "Accuracy (fraction)")):
        ax.set_xlabel("Epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
    ax_loss.set_title("Loss")
    ax_acc.set_title("Accuracy")
    fig.suptitle(f"Training curves: {model}")
    return save_figure(fig, out, data.dpi)


def plot_standard_distance(data, out):
    path = data.path(products.DISPERSION)
    d = read_datasets(path, ["clusterId", "standardDistance"],
                      optional=["isHotspot", "isSignificant", "hotspotId", "numPixel"])
    limit = read_attrs(path).get("MAX_STANDARD_DISTANCE_KM")
    cid = np.asarray(d["clusterId"], dtype=int)
    sd = np.asarray(d["standardDistance"], dtype=float)
    n = cid.size
    is_hot = np.asarray(d.get("isHotspot", np.zeros(n)), dtype=bool)
    signif = np.asarray(d.get("isSignificant", np.ones(n)), dtype=bool)
    hot_id = np.asarray(d.get("hotspotId", np.zeros(n)), dtype=int)
    order = np.argsort(cid)
    fig = new_figure(max(7.0, min(16.0, 0.25 * n + 3)), 4.8)
    ax = fig.add_subplot()
    x = np.arange(n)
    colors = [cluster_color(hot_id[k] if hot_id[k] > 0 else cid[k]) if is_hot[k] else "0.7"
              for k in order]
    bars = ax.bar(x, sd[order], color=colors, edgecolor="0.2", linewidth=0.4)
    for bar, k in zip(bars, order):
        if not signif[k]:
            bar.set_hatch("///")
    if limit is not None:
        ax.axhline(float(limit), color="tab:red", ls="--", lw=1.5)
    step = max(1, n // 40)
    ax.set_xticks(x[::step], [str(c) for c in cid[order][::step]], fontsize="small",
                  rotation=90 if n > 20 else 0)
    ax.set_xlabel("Cluster id")
    ax.set_ylabel("Standard distance S_d (km)")
    handles = [Patch(facecolor=cluster_color(1), edgecolor="0.2", label="hotspot"),
               Patch(facecolor="0.7", edgecolor="0.2", label="widespread / rejected"),
               Patch(facecolor="white", edgecolor="0.2", hatch="///",
                     label="signal not significant")]
    if limit is not None:
        from matplotlib.lines import Line2D
        handles.append(Line2D([], [], color="tab:red", ls="--",
                              label=f"threshold {float(limit):.2f} km"))
    ax.legend(handles=handles, fontsize="small", loc="best", framealpha=0.85)
    ax.set_title(f"Dispersion test: {int(is_hot.sum())} of {n} clusters are compact hotspots")
    return save_figure(fig, out, data.dpi)
