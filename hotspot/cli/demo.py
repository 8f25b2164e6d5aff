"""hotspot_demo.py: simulate a scene with known hotspots, run every step, score the result."""
import argparse
import json
from pathlib import Path

DEMO_TEMPLATE = """## hotspot demo template: everything else is auto
hotspot.randomSeed = {seed}
"""


def create_parser():
    parser = argparse.ArgumentParser(
        prog="hotspot_demo.py",
        description=("End-to-end demo: simulate a MintPy scene with known hotspots, run all "
                     "hotspotApp.py steps on it, write the figures to DIR/pic and score the "
                     "hotspot map against the truth."))
    parser.add_argument("dir", nargs="?", default="hotspot_demo", help="output directory")
    parser.add_argument("--preset", default="small", choices=["small", "medium", "la"],
                        help="scene size (default: %(default)s)")
    parser.add_argument("--difficulty", default="easy", choices=["easy", "hard"],
                        help="noise and signal setting (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    return parser


def _run(inps):
    from hotspot import products
    from hotspot.cli import hotspotApp
    from hotspot.simulation import format_score, score_files
    from hotspot.simulation import simulate_scene

    workdir = Path(inps.dir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"simulating a {inps.preset} / {inps.difficulty} scene in {workdir}")
    simulate_scene(workdir, preset=inps.preset, difficulty=inps.difficulty, seed=inps.seed)
    template = workdir / "demo.cfg"
    template.write_text(DEMO_TEMPLATE.format(seed=inps.seed))
    hotspotApp.main([str(template)])
    score = score_files(workdir / products.HOTSPOT, workdir / products.TRUTH)
    print(format_score(score))
    (workdir / "score.json").write_text(json.dumps(score, indent=2, default=str))
    print(f"\nfigures: {workdir / 'pic'}\nsummary figure: {workdir / 'pic' / 'hotspot_summary.png'}")


def main(argv=None):
    from hotspot.hotspotApp import main_exit
    main_exit(_run, create_parser().parse_args(argv))


if __name__ == "__main__":
    main()
