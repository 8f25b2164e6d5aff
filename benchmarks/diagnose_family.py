#!/usr/bin/env python3
"""Where each true hotspot of a simulated scene is lost (issue 12): one line per hotspot.

    python benchmarks/diagnose_family.py /tmp/fam/seed_0000 [/tmp/fam/seed_0001 ...] [--all]

For every (eligible, or with --all every) true hotspot of hotspotTruth.h5: the best IoU of a
cluster of clusterTSKM.h5, clusterDBSCAN.h5 and hotspot.h5, then the dispersion.h5 rows of the
best clusterDBSCAN.h5 cluster (the cluster itself, the amplitude cores cut from it, the
cluster it was merged into) with the tests that decided it: candidate (S_d, pixels), F-test p,
spatial null p / q, peak amplitude z against its gate, unwrapping error, hotspot or not.
"""
import argparse
import json
from pathlib import Path

import numpy as np

from hotspot import products
from hotspot.simulation import score_labels
from hotspot.steps.dispersion_significance import hotspot_peak_gate
from hotspot.utils.h5io import open_h5


def _label(path):
    if not path.is_file():
        return None
    with open_h5(path) as f:
        return f["pixelLabel"][:].astype(np.int64)


def _rows(table, cid):
    """Rows of dispersion.h5 that come from DBSCAN cluster cid."""
    rows = list(np.nonzero(table["clusterId"] == cid)[0])
    rows += list(np.nonzero(table["coreParent"] == cid)[0])
    merged = table["mergedCluster"]
    for a, b in merged.reshape(-1, 2):
        if a == cid:
            rows += list(np.nonzero(table["clusterId"] == b)[0])
    return sorted(set(rows))


def _describe(table, r):
    n = int(table["numPixel"][r])
    peak = float(table["peakAmplitudeZ"][r]) if "peakAmplitudeZ" in table else float("nan")
    gate = float(hotspot_peak_gate(np.array([n]))[0])
    parts = [f"c{int(table['clusterId'][r])}", f"n={n}",
             f"Sd={table['standardDistance'][r]:.2f}",
             "cand" if table["isCandidate"][r] else "NOTcand",
             f"pF={table['pValue'][r]:.1e}"]
    for key, fmt in (("pValueSpatial", "pS={:.1e}"), ("qValue", "q={:.2f}")):
        if key in table:
            parts.append(fmt.format(float(table[key][r])))
    parts += [f"peak={peak:.1f}/{gate:.1f}",
              "UNW" if table["isUnwrapError"][r] else "",
              "sig" if table["isSignificant"][r] else "nsig",
              "HOT" if table["isHotspot"][r] else "-"]
    if table["coreParent"][r]:
        parts.append(f"core-of-{int(table['coreParent'][r])}")
    return " ".join(p for p in parts if p)


def diagnose(scene, every=False):
    scene = Path(scene)
    with open_h5(scene / "hotspotTruth.h5") as f:
        truth = f["pixelTruth"][:].astype(np.int64)
        hid = f["hotspotId"][:]
        elig = f["eligible"][:] if "eligible" in f else np.ones(hid.size, bool)
        behaviour = [b.decode() if isinstance(b, bytes) else str(b) for b in f["behaviour"][:]]
        size = f["sizeKm"][:] if "sizeKm" in f else np.full(hid.size, np.nan)
        peak_signal = f["peakSignal"][:] if "peakSignal" in f else np.full(hid.size, np.nan)
        noise = float(f.attrs.get("family.noiseLevelMm", np.nan))
    labels = {name: _label(scene / name) for name in
              (products.TSKM, products.DBSCAN, "hotspot.h5")}
    table = {}
    if (scene / products.DISPERSION).is_file():
        with open_h5(scene / products.DISPERSION) as f:
            table = {k: f[k][:] for k in f if f[k].ndim <= 1 or k == "mergedCluster"}
    # best cluster and IoU of every true hotspot in each label file (the scorer's matching)
    rows = {name: {e["id"]: (e["cluster"], e["best_iou"])
                   for e in score_labels(lab, truth)["hotspots"]}
            for name, lab in labels.items() if lab is not None}
    lines = []
    for k, h in enumerate(hid):
        if not (every or elig[k]):
            continue
        pix = truth == h
        best = {name: rows[name].get(int(h), (0, 0.0)) if name in rows else (0, 0.0)
                for name in labels}
        head = (f"{scene.name} h{h} {behaviour[k]:<12} {size[k]:.2f} km n={int(pix.sum())} "
                f"peak {peak_signal[k] * 1000:.1f} mm ({peak_signal[k] * 1000 / noise:.1f}x) "
                + ("E " if elig[k] else "  ")
                + " ".join(f"{n.split('.')[0][7:] or n.split('.')[0]}:{c}@{iou:.2f}"
                           for n, (c, iou) in best.items()))
        lines.append(head)
        cid = best[products.DBSCAN][0]
        if table and cid:
            for r in _rows(table, cid):
                lines.append("      " + _describe(table, r))
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenes", nargs="+")
    parser.add_argument("--all", action="store_true", help="every hotspot, not only eligible")
    args = parser.parse_args(argv)
    for scene in args.scenes:
        print("\n".join(diagnose(scene, args.all)))


if __name__ == "__main__":
    main()
