#!/usr/bin/env python3
"""Detection quality on simulated scenes, every parameter on auto (docs/quality.md).

    python benchmarks/bench_quality.py --dir /tmp/quality                      # medium hard, seed 0
    python benchmarks/bench_quality.py --dir /tmp/q --scenes medium:hard:0 medium:hard:1 \
        medium:easy:0 small:hard:0
    python benchmarks/bench_quality.py --dir /tmp/q --full                     # all 8 steps

For each scene (PRESET:DIFFICULTY:SEED) it simulates the scene (hotspot.simulation, MintPy
files only), runs hotspotApp.py with a template holding only hotspot.randomSeed:
load_data -> dbscan, then dispersion on clusterDBSCAN.h5 (train_lstm / predict skipped;
dispersion falls back to clusterDBSCAN.h5), or all 8 steps with --full. It scores
clusterDBSCAN.h5 (clusters covering >= 2 % of the truth background ignored, as
`hotspot_score.py clusterDBSCAN.h5 hotspotTruth.h5 --ignore-background 0.02`) and
hotspot.h5, and prints one table row per (scene, file); --json writes the scores.
Medium scene: ~2.5 min on 2 shared cores (--full: plus the LSTM training).
"""
import argparse
import json
import time
from pathlib import Path

from hotspot import products

DEFAULT_SCENES = ["medium:hard:0"]
FAST_STEPS = ["load_data", "covariogram", "tskm", "dbscan", "dispersion"]


def run_scene(workdir, preset, difficulty, seed, full=False):
    from hotspot.cli import hotspotApp
    from hotspot.simulation import score_files
    from hotspot.simulation import simulate_scene

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / products.TRUTH).is_file():
        simulate_scene(workdir, preset=preset, difficulty=difficulty, seed=seed, wabinsar=False)
    template = workdir / "quality.cfg"
    template.write_text(f"hotspot.randomSeed = {seed}\n")
    for name in (products.LSTM,):
        (workdir / name).unlink(missing_ok=True)
    t0 = time.time()
    if full:
        hotspotApp.main([str(template)])
    else:
        hotspotApp.main([str(template), "--start", "load_data", "--end", "dbscan"])
        hotspotApp.main([str(template), "--dostep", "dispersion"])
    seconds = time.time() - t0
    truth = workdir / products.TRUTH
    return seconds, {
        products.DBSCAN: score_files(workdir / products.DBSCAN, truth,
                                        ignore_background=0.02),
        products.HOTSPOT: score_files(workdir / products.HOTSPOT, truth),
    }


def table_row(scene, name, score):
    twins = score.get("twins", [])
    separated = sum(bool(t["separated"]) for t in twins)
    detected = f"{score['num_detected']}/{score['num_hotspot']}"
    return (f"| {scene:16s} | {name:17s} | {detected:8s} | {score['num_missed']:6d} "
            f"| {score['num_false']:5d} | {f'{separated}/{len(twins)}':6s} | {score['ari']:.3f} "
            f"| {score['mean_iou']:.3f}    |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", required=True, help="work folder (one sub-folder per scene)")
    parser.add_argument("--scenes", nargs="+", default=DEFAULT_SCENES,
                        help="PRESET:DIFFICULTY:SEED, e.g. medium:hard:0 small:easy:1")
    parser.add_argument("--full", action="store_true", help="run all 8 steps (LSTM included)")
    parser.add_argument("--json", help="write the scores to this file")
    inps = parser.parse_args(argv)
    rows, scores = [], {}
    for scene in inps.scenes:
        preset, difficulty, seed = scene.split(":")
        workdir = Path(inps.dir) / f"{preset}_{difficulty}_{seed}"
        seconds, result = run_scene(workdir, preset, difficulty, int(seed), inps.full)
        scores[scene] = {"seconds": seconds, **result}
        for name, score in result.items():
            rows.append(table_row(scene, name, score))
    print("\n| scene            | file              | detected | missed | false | twins  "
          "| ARI   | mean IoU |")
    print("|------------------|-------------------|----------|--------|-------|--------"
          "|-------|----------|")
    print("\n".join(rows))
    if inps.json:
        Path(inps.json).write_text(json.dumps(scores, indent=2, default=str))


if __name__ == "__main__":
    main()
