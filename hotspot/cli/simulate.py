"""hotspot_simulate.py: write a simulated InSAR scene with known deformation hotspots."""
import argparse

EXAMPLE = """example:
  hotspot_simulate.py sim_small                               # small easy scene, seed 0
  hotspot_simulate.py sim_medium --preset medium --difficulty hard --seed 3
  hotspot_simulate.py sim_la --preset la --no-wabinsar        # ~3 million pixels x 247 dates
  hotspot_simulate.py sim_v5 --mat-format v5                  # WabInSAR .mat as MAT v5
"""


def create_parser():
    parser = argparse.ArgumentParser(
        prog="hotspot_simulate.py",
        description=("Simulate a geocoded InSAR scene (MintPy timeseries.h5, velocity.h5, "
                     "temporalCoherence.h5, maskTempCoh.h5, inputs/geometryGeo.h5 and a WabInSAR "
                     "export in OUTDIR/wabinsar) with known hotspots in OUTDIR/hotspotTruth.h5; "
                     "score labels against it with hotspot_score.py."),
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLE)
    parser.add_argument("outdir", help="output directory")
    parser.add_argument("--preset", default="small", choices=["small", "medium", "la"],
                        help="scene size: small 60x80 / medium 300x300 / la 1800x2000 pixels "
                             "(default: %(default)s)")
    parser.add_argument("--difficulty", default="easy", choices=["easy", "hard"],
                        help="signal and noise levels (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--num-date", dest="num_date", type=int,
                        help="number of acquisitions (default: 60 / 120 / 247 by preset)")
    parser.add_argument("--no-wabinsar", dest="wabinsar", action="store_false",
                        help="do not write the WabInSAR export")
    parser.add_argument("--mat-format", dest="mat_format", default="v73", choices=["v73", "v5"],
                        help="MATLAB format of the WabInSAR .mat files (default: %(default)s)")
    return parser


def _run(inps):
    from hotspot.simulation import simulate_scene, truth_summary
    paths = simulate_scene(inps.outdir, preset=inps.preset, difficulty=inps.difficulty,
                           seed=inps.seed, num_date=inps.num_date, wabinsar=inps.wabinsar,
                           mat_format=inps.mat_format)
    print()
    print(truth_summary(paths["truth"]))
    return paths


def main(argv=None):
    from hotspot.hotspotApp import main_exit
    inps = create_parser().parse_args(argv)
    # None: console scripts pass main's return value to sys.exit
    main_exit(_run, inps)


if __name__ == "__main__":
    main()
