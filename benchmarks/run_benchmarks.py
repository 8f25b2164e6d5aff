#!/usr/bin/env python3
"""Benchmark the hotspot workflow step by step: wall time and peak memory.

Each step runs as its own `hotspotApp.py --dostep STEP` process, exactly as a user runs it;
peak RSS is the maximum, over the run, of the summed resident memory of the process and
its children (polled every 0.2 s with psutil).

    python benchmarks/run_benchmarks.py --preset la --dir /tmp/bench_la   # ~3 M pixels x 247
    python benchmarks/run_benchmarks.py --preset medium --dir /tmp/bench_medium

Results are appended as a Markdown table to benchmarks/results.md (and printed).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import psutil

from hotspot import products

STEPS = ["load_data", "covariogram", "tskm", "dbscan", "train_lstm", "predict", "dispersion",
         "plot"]


def run_measured(cmd, log_file, env=None):
    """Run cmd; return (seconds, peak RSS in MB of the process tree, return code)."""
    t0 = time.time()
    with open(log_file, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        ps = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            try:
                procs = [ps] + ps.children(recursive=True)
                rss = sum(p.memory_info().rss for p in procs if p.is_running())
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.2)
    return time.time() - t0, peak / 1024 ** 2, proc.returncode


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="medium", choices=["small", "medium", "la"])
    parser.add_argument("--difficulty", default="hard", choices=["easy", "hard"])
    parser.add_argument("--dir", default=None, help="work directory (default /tmp/hotspot_bench_PRESET)")
    parser.add_argument("--steps", default=",".join(STEPS), help="comma-separated steps to time")
    parser.add_argument("--skip-simulate", action="store_true", help="reuse the scene in --dir")
    parser.add_argument("--template", action="append", default=[],
                        help="extra template line key=value (repeatable)")
    parser.add_argument("--results", default=str(Path(__file__).with_name("results.md")))
    inps = parser.parse_args(argv)

    workdir = Path(inps.dir or f"/tmp/hotspot_bench_{inps.preset}").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    rows = []
    if not inps.skip_simulate:
        cmd = ["hotspot_simulate.py", str(workdir), "--preset", inps.preset,
               "--difficulty", inps.difficulty]
        sec, mb, rc = run_measured(cmd, workdir / "bench_simulate.log", env)
        rows.append(("simulate (not part of the workflow)", sec, mb, rc))
        print(f"simulate: {sec:.1f} s, {mb:.0f} MB, rc={rc}", flush=True)
        if rc:
            sys.exit(f"simulation failed, see {workdir / 'bench_simulate.log'}")
    template = workdir / "bench.cfg"
    template.write_text("\n".join(["hotspot.randomSeed = 0"] + inps.template) + "\n")
    for step in inps.steps.split(","):
        cmd = ["hotspotApp.py", str(template), "--dostep", step, "--force"]
        sec, mb, rc = run_measured(cmd, workdir / f"bench_{step}.log", env)
        rows.append((step, sec, mb, rc))
        print(f"{step}: {sec:.1f} s, peak {mb:.0f} MB, rc={rc}", flush=True)
        if rc:
            print(f"  failed, see {workdir / f'bench_{step}.log'}")
            break

    info = {}
    stack = workdir / products.STACK
    if stack.is_file():
        import h5py
        with h5py.File(stack, "r") as f:
            info = {"pixels": f["displacement"].shape[0], "epochs": f["displacement"].shape[1]}
    score_line = ""
    truth, hotspot = workdir / products.TRUTH, workdir / products.HOTSPOT
    if truth.is_file() and hotspot.is_file():
        from hotspot.simulation import score_files
        s = score_files(hotspot, truth)
        score_line = json.dumps({k: s[k] for k in s if not isinstance(s[k], (list, dict))},
                                default=str)
    header = (f"\n### {inps.preset} / {inps.difficulty}: {info.get('pixels', '?')} pixels x "
              f"{info.get('epochs', '?')} epochs ({date.today()}, {os.cpu_count()} cores, "
              f"{psutil.virtual_memory().total / 1024 ** 3:.0f} GB, {platform.processor() or platform.machine()})\n\n"
              "| step | wall time (s) | peak RSS (MB) | exit |\n|---|---:|---:|---:|\n")
    body = "".join(f"| {s} | {sec:.1f} | {mb:.0f} | {rc} |\n" for s, sec, mb, rc in rows)
    total = sum(sec for s, sec, _, _ in rows if not s.startswith("simulate"))
    body += f"| **workflow total** | **{total:.1f}** | **{max((mb for _, _, mb, _ in rows), default=0):.0f}** | |\n"
    if score_line:
        body += f"\nscore of hotspot.h5 against the truth: `{score_line}`\n"
    text = header + body
    print(text)
    with open(inps.results, "a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
