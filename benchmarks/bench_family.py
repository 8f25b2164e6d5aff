#!/usr/bin/env python3
"""Detection on the randomized scene family (issue 12; docs/quality.md, "Scene family").

    python benchmarks/bench_family.py --dir /tmp/fam --seeds 0-5              # tuning seeds
    python benchmarks/bench_family.py --dir /tmp/fam --seeds 0-2 --null       # null scenes
    python benchmarks/bench_family.py --dir /tmp/fam --seeds 0-5 --null-seeds 0-2 --full
    python benchmarks/bench_family.py --dir /tmp/fam --seeds 1000-1039 --null-seeds 1000-1029 \\
        --full --held-out                                                     # the final report
    python benchmarks/bench_family.py --dir /tmp/fam --seeds 0-5 --variant fdr \\
        --set hotspot.dispersion.falseDiscoveryRate=0.05      # dispersion only, other keys

Protocol: seeds < 1000 are for tuning; seeds >= 1000 are held out, run once for the final
report (README + docs/quality.md) with the commit that produced them; the script refuses
them without --held-out.

For each scene it simulates the family scene (hotspot.simulation.family, medium size) in
DIR/seed_NNNN (DIR/null_NNNN for null scenes), runs hotspotApp.py with a template holding
only hotspot.randomSeed = seed: load_data -> dbscan, then dispersion on clusterDBSCAN.h5
(train_lstm / predict skipped), or all 8 steps with --full; then scores hotspot.h5 and
clusterDBSCAN.h5 (clusters covering >= 2 % of the truth background ignored) against
hotspotTruth.h5 and writes DIR/<scene>/score_fast.json (score_full.json).  A scene whose
score file exists is skipped (resumable; --rescore re-scores existing outputs without
rerunning).  A step that stops with ERROR counts every hotspot of the scene as missed.

The report (markdown on stdout and DIR/report_fast.md, JSON in DIR/report_fast.json):
per scene detected / eligible (peak >= 3 x the scene's noise level, see
hotspot.simulation.family) / false hotspots of hotspot.h5; totals; detection rate of
eligible hotspots by signal type, shape and size class; false hotspots per null scene.
Medium scene: ~2-3 min on 2 shared cores (--full: plus the LSTM training).

--variant NAME [--set KEY=VALUE ...]: re-runs only the dispersion step of scenes whose fast run
exists, in DIR/<scene>/var_NAME (links to the stack, the label files, the covariogram and the
band-passed series; a template with the seed and the --set keys), scores it into
score_var_NAME.json and reports into report_var_NAME.md: a decision rule is compared on the
same clusters in ~30 s a scene.
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from hotspot import products

REPO = Path(__file__).resolve().parents[1]
SIZE_CLASSES = [(0.0, 0.75, "< 0.75 km"), (0.75, 1.5, "0.75-1.5 km"), (1.5, 3.0, "1.5-3 km"),
                (3.0, float("inf"), ">= 3 km")]


def parse_seeds(text):
    """'0-5,8,10-11' -> [0, 1, 2, 3, 4, 5, 8, 10, 11]."""
    seeds = []
    for part in filter(None, (text or "").split(",")):
        lo, _, hi = part.partition("-")
        seeds.extend(range(int(lo), int(hi or lo) + 1))
    return seeds


def commit():
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        # only the code counts: docs and tests edited during a run leave the result as is
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "-uno", "--",
                                "hotspot", "benchmarks", "pyproject.toml"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _run_app(template, args, log):
    cmd = [sys.executable, "-m", "hotspot.cli.hotspotApp", str(template), *args]
    with open(log, "a") as fid:
        fid.write(f"$ {' '.join(cmd)}\n")
        fid.flush()
        return subprocess.run(cmd, stdout=fid, stderr=subprocess.STDOUT).returncode


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _last_error(log):
    lines = [ln for ln in Path(log).read_text(errors="replace").splitlines()
             if ln.startswith("ERROR")]
    return lines[-1] if lines else "step failed (see log)"


def run_scene(workdir, seed, null, full, size="medium"):
    """Simulate (if needed), run the pipeline, score; returns the scene's record."""
    from hotspot.simulation import score_files
    from hotspot.simulation.family import simulate_family
    workdir.mkdir(parents=True, exist_ok=True)
    truth = workdir / products.TRUTH
    t0 = time.time()
    if not truth.is_file():
        simulate_family(workdir, seed, size=size, null=null, print_msg=False)
    sim_seconds = time.time() - t0
    mode = "full" if full else "fast"
    template = workdir / "bench.cfg"
    template.write_text(f"hotspot.randomSeed = {seed}\n")
    log = workdir / f"pipeline_{mode}.log"
    log.unlink(missing_ok=True)
    # an earlier --full run leaves clusterLSTM.h5, which dispersion would prefer
    if not full:
        (workdir / products.LSTM).unlink(missing_ok=True)
    t0 = time.time()
    cpu0 = _children_cpu()
    if full:
        rc = _run_app(template, [], log)
    else:
        rc = _run_app(template, ["--start", "load_data", "--end", "dbscan"], log)
        rc = rc or _run_app(template, ["--dostep", "dispersion"], log)
    record = {"seed": seed, "null": null, "mode": mode, "commit": commit(),
              "simulate_seconds": round(sim_seconds, 1),
              "pipeline_seconds": round(time.time() - t0, 1),
              # CPU time says what the wall time would be on a machine of our own
              "pipeline_cpu_seconds": round(_children_cpu() - cpu0, 1),
              "scene": scene_info(truth), "error": None if rc == 0 else _last_error(log)}
    record["scores"] = score_outputs(workdir, score_files) if rc == 0 else {}
    return record


# what the dispersion step reads from a fast run (hotspotTruth.h5 for the score)
VARIANT_LINKS = (products.STACK, products.DBSCAN, products.TSKM, products.COVARIOGRAM,
                 products.FILTERED, products.TRUTH)


def run_variant(scene_dir, seed, name, settings, override=None):
    """Dispersion alone on the clusters of a finished fast run, with other template keys;
    override: a sub-folder of the scene whose files replace the fast run's (e.g. a
    covariogram.h5 made with other keys)."""
    from hotspot.simulation import score_files
    work = scene_dir / f"var_{name}"
    work.mkdir(exist_ok=True)
    for file in VARIANT_LINKS:
        link = work / file
        source = scene_dir / file
        if override and (scene_dir / override / file).is_file():
            source = scene_dir / override / file
        if source.is_file():
            link.unlink(missing_ok=True)
            link.symlink_to(source.resolve())
    template = work / "variant.cfg"
    keys = dict([("hotspot.randomSeed", seed), *settings])     # --set may change the seed too
    template.write_text("".join(f"{k} = {v}\n" for k, v in keys.items()))
    log = work / "dispersion.log"
    log.unlink(missing_ok=True)
    t0 = time.time()
    rc = _run_app(template, ["--dostep", "dispersion", "--force"], log)
    record = {"seed": seed, "mode": f"var_{name}", "settings": settings, "commit": commit(),
              "pipeline_seconds": round(time.time() - t0, 1), "pipeline_cpu_seconds": None,
              "scene": scene_info(scene_dir / products.TRUTH),
              "error": None if rc == 0 else _last_error(log)}
    record["scores"] = score_outputs(work, score_files) if rc == 0 else {}
    return record


def score_outputs(workdir, score_files):
    truth = workdir / products.TRUTH
    scores = {products.HOTSPOT: score_files(workdir / products.HOTSPOT, truth)}
    if (workdir / products.DBSCAN).is_file():
        scores[products.DBSCAN] = score_files(workdir / products.DBSCAN, truth,
                                                 ignore_background=0.02)
    return scores


def scene_info(truth_file):
    import h5py
    with h5py.File(truth_file, "r") as f:
        atr = f.attrs
        params = json.loads(atr["family.parameters"])
        info = {"geometry": str(atr["family.geometry"]), "density": str(atr["family.density"]),
                "sampling": str(atr["family.sampling"]),
                "noise_mm": float(atr["family.noiseLevelMm"]),
                "nuisance_mm": float(atr.get("family.nuisanceStdMm", float("nan"))),
                "num_pixel": int(f["pixelTruth"].shape[0]), "num_date": int(f["date"].shape[0]),
                "num_hotspot": int(f["hotspotId"].shape[0]),
                "num_eligible": int(f["eligible"][()].sum()) if f["eligible"].size else 0,
                "turbulence_mm": round(params["noise"]["turbulence_mm"], 2)}
    return info


def _missed_rows(truth_file):
    """Hotspot entries, all missed, of a scene whose pipeline stopped."""
    from hotspot.simulation import read_truth
    truth = read_truth(truth_file)
    return [{"id": int(hid), "behaviour": truth["behaviour"][i], "shape": truth["shape"][i],
             "size_km": float(truth["sizeKm"][i]), "peak": float(truth["peakSignal"][i]),
             "eligible": bool(truth["eligible"][i]), "detected": False}
            for i, hid in enumerate(truth["hotspotId"])]


def _rate(hit, total):
    return f"{hit}/{total} ({100 * hit / total:.0f} %)" if total else "-"


def report(records, workdir):
    """Markdown tables and a JSON summary of the scene records."""
    lines = ["| scene | geometry | density | sampling | pixels x dates | noise mm | detected "
             "(eligible) | detected (all) | false | DBSCAN level (eligible) | minutes (CPU) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    totals = {"eligible": 0, "eligible_detected": 0, "hotspots": 0, "detected": 0,
              "false_signal": 0, "false_null": 0, "signal_scenes": 0, "null_scenes": 0,
              "errors": 0, "dbscan_eligible_detected": 0}
    groups = {"signal": {}, "shape": {}, "size": {}}
    for rec in records:
        info = rec["scene"]
        name = f"{'null' if rec['null'] else 'seed'} {rec['seed']}"
        rows = (rec["scores"][products.HOTSPOT]["hotspots"] if products.HOTSPOT in rec["scores"]
                else _missed_rows(Path(workdir) / rec["folder"] / products.TRUTH))
        false = rec["scores"][products.HOTSPOT]["num_false"] if products.HOTSPOT in rec["scores"] else 0
        db = rec["scores"].get(products.DBSCAN)
        db_elig = (sum(h["detected"] for h in db["hotspots"] if h["eligible"]) if db else 0)
        elig = [h for h in rows if h["eligible"]]
        n_elig_det = sum(h["detected"] for h in elig)
        totals["errors"] += rec["error"] is not None
        if rec["null"]:
            totals["null_scenes"] += 1
            totals["false_null"] += false
        else:
            totals["signal_scenes"] += 1
            totals["false_signal"] += false
            totals["eligible"] += len(elig)
            totals["eligible_detected"] += n_elig_det
            totals["hotspots"] += len(rows)
            totals["detected"] += sum(h["detected"] for h in rows)
            totals["dbscan_eligible_detected"] += db_elig
        for h in elig:
            size = next(label for lo, hi, label in SIZE_CLASSES if lo <= h["size_km"] < hi)
            for key, value in (("signal", h["behaviour"]), ("shape", h["shape"]),
                               ("size", size)):
                hit = groups[key].setdefault(value, [0, 0])
                hit[0] += bool(h["detected"])
                hit[1] += 1
        minutes = f"{rec['pipeline_seconds'] / 60:.1f}"
        if rec.get("pipeline_cpu_seconds") is not None:
            minutes += f" ({rec['pipeline_cpu_seconds'] / 60:.1f})"
        status = f" (stopped: {rec['error'][:60]})" if rec["error"] else ""
        lines.append(
            f"| {name}{status} | {info['geometry']} | {info['density']} | {info['sampling']} "
            f"| {info['num_pixel']:,} x {info['num_date']} | {info['noise_mm']:.1f} "
            f"| {n_elig_det}/{len(elig)} | {sum(h['detected'] for h in rows)}/{len(rows)} "
            f"| {false} | {db_elig}/{len(elig) if db else '-'} | {minutes} |")
    t = totals
    lines += ["", f"- eligible hotspots detected (hotspot.h5, IoU >= 0.5): "
                  f"{_rate(t['eligible_detected'], t['eligible'])}; at the clusterDBSCAN.h5 "
                  f"level {_rate(t['dbscan_eligible_detected'], t['eligible'])}",
              f"- all hotspots detected: {_rate(t['detected'], t['hotspots'])}",
              f"- false hotspots per scene with hotspots: "
              f"{t['false_signal'] / t['signal_scenes']:.2f}" if t["signal_scenes"] else
              "- no scene with hotspots",
              f"- false hotspots per null scene: {t['false_null'] / t['null_scenes']:.2f} "
              f"({t['false_null']} in {t['null_scenes']})" if t["null_scenes"] else
              "- no null scene",
              f"- scenes whose pipeline stopped with an ERROR: {t['errors']}"]
    order = {"size": [label for _, _, label in SIZE_CLASSES]}
    for key, title in (("signal", "signal type"), ("shape", "shape"), ("size", "size class")):
        values = order.get(key, sorted(groups[key]))
        cells = [f"{v}: {_rate(*groups[key][v])}" for v in values if v in groups[key]]
        lines.append(f"- eligible detected by {title}: " + ("; ".join(cells) or "-"))
    summary = {"totals": totals, "groups": groups,
               "commits": sorted({rec["commit"] for rec in records}),
               "scenes": [{k: v for k, v in rec.items() if k != "scores"} | {
                   products.HOTSPOT: {k: rec["scores"][products.HOTSPOT][k]
                                  for k in ("num_detected", "num_hotspot", "num_false",
                                            "num_eligible", "num_eligible_detected")}
                   if products.HOTSPOT in rec["scores"] else None} for rec in records]}
    return "\n".join(lines), summary


def _atomic_json(path, data):
    from hotspot.utils.h5io import atomic_path
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=1, default=str))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", required=True, help="work folder (one sub-folder per scene)")
    parser.add_argument("--seeds", default="", help="scene seeds, e.g. 0-5 or 0-3,7")
    parser.add_argument("--null", action="store_true", help="the --seeds are null scenes")
    parser.add_argument("--null-seeds", dest="null_seeds", default="",
                        help="null scene seeds, in addition to --seeds")
    parser.add_argument("--full", action="store_true", help="run all 8 steps (LSTM included)")
    parser.add_argument("--held-out", dest="held_out", action="store_true",
                        help="allow seeds >= 1000 (the held-out set: final report only)")
    parser.add_argument("--size", default="medium", choices=["small", "medium"],
                        help="scene size (small: a smoke test of the script; default: "
                             "%(default)s)")
    parser.add_argument("--rescore", action="store_true",
                        help="score existing outputs again (no simulation, no pipeline run)")
    parser.add_argument("--variant", help="re-run only dispersion of finished fast runs under "
                        "this name, with the --set keys")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="KEY=VALUE", help="template key of the variant (repeatable)")
    parser.add_argument("--override", metavar="SUBDIR",
                        help="with --variant: files in <scene>/SUBDIR replace the fast run's")
    inps = parser.parse_args(argv)
    settings = [tuple(part.strip() for part in kv.split("=", 1)) for kv in inps.settings]
    if any(len(kv) != 2 for kv in settings):
        parser.error("--set takes KEY=VALUE")
    if settings and not inps.variant:
        parser.error("--set needs --variant NAME")
    from hotspot.simulation.family import HELD_OUT_SEED
    scenes = [(s, inps.null) for s in parse_seeds(inps.seeds)]
    scenes += [(s, True) for s in parse_seeds(inps.null_seeds)]
    if not scenes:
        parser.error("no scene: give --seeds and / or --null-seeds")
    held = sorted({s for s, _ in scenes if s >= HELD_OUT_SEED})
    if held and not inps.held_out:
        parser.error(f"seeds {held[0]}..{held[-1]} are held out (>= {HELD_OUT_SEED}); they are "
                     "run once, for the final report, with --held-out")
    mode = f"var_{inps.variant}" if inps.variant else "full" if inps.full else "fast"
    root = Path(inps.dir)
    records = []
    for seed, null in scenes:
        folder = f"{'null' if null else 'seed'}_{seed:04d}"
        if inps.size != "medium":
            folder += f"_{inps.size}"
        score_file = root / folder / f"score_{mode}.json"
        if inps.variant:
            if not (root / folder / "score_fast.json").is_file():
                parser.error(f"{root / folder}: no fast run to take the clusters from")
            record = run_variant(root / folder, seed, inps.variant, settings, inps.override)
            record["null"] = null
            _atomic_json(score_file, record)
            print(f"{folder}: variant {inps.variant} {record['pipeline_seconds']:.0f} s"
                  f"{', ERROR ' + record['error'] if record['error'] else ''}", flush=True)
        elif score_file.is_file() and not inps.rescore:
            record = json.loads(score_file.read_text())
            print(f"{folder}: scored before ({score_file})", flush=True)
        elif inps.rescore and score_file.is_file():
            from hotspot.simulation import score_files
            record = json.loads(score_file.read_text())
            record["scene"] = scene_info(root / folder / products.TRUTH)
            if record["error"] is None:
                record["scores"] = score_outputs(root / folder, score_files)
            _atomic_json(score_file, record)
        else:
            print(f"{folder}: simulating and running the {mode} pipeline ...", flush=True)
            record = run_scene(root / folder, seed, null, inps.full, inps.size)
            _atomic_json(score_file, record)
            print(f"{folder}: {record['pipeline_seconds'] / 60:.1f} min"
                  f"{', ERROR ' + record['error'] if record['error'] else ''}", flush=True)
        record["folder"] = folder
        records.append(record)
    text, summary = report(records, root)
    header = (f"Scene family, {mode} pipeline, commit(s) {', '.join(summary['commits'])}; "
              f"eligible = peak signal >= 3 x the scene's noise level\n\n")
    (root / f"report_{mode}.md").write_text(header + text + "\n")
    _atomic_json(root / f"report_{mode}.json", summary)
    print("\n" + header + text)


if __name__ == "__main__":
    main()
