"""hotspot_simulate.py: write a simulated InSAR scene with known deformation hotspots."""
import argparse

EXAMPLE = """example:
  hotspot_simulate.py sim_small                               # small easy scene, seed 0
  hotspot_simulate.py sim_medium --preset medium --difficulty hard --seed 3
  hotspot_simulate.py sim_la --preset la --no-wabinsar        # ~3 million pixels x 247 dates
  hotspot_simulate.py sim_v5 --mat-format v5                  # WabInSAR .mat as MAT v5
  hotspot_simulate.py fam_7 --family --seed 7                 # scene 7 of the randomized family
  hotspot_simulate.py fam_7n --family --seed 7 --null         # its nuisances, no hotspot
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
    family = parser.add_argument_group(
        "scene family (hotspot.simulation.family: every parameter drawn per seed; seeds < 1000 "
        "tune, seeds >= 1000 are held out)")
    family.add_argument("--family", action="store_true",
                        help="draw a scene of the randomized family (MintPy files only; "
                             "--preset, --difficulty, --num-date, --mat-format are not used)")
    family.add_argument("--null", action="store_true",
                        help="with --family: the same scene without any hotspot")
    family.add_argument("--size", default="medium", choices=["small", "medium"],
                        help="with --family: scene size (default: %(default)s)")
    family.add_argument("--geometry", choices=["geo", "radar"],
                        help="with --family: override the drawn geometry")
    return parser


def _run_family(inps):
    from hotspot.simulation.family import family_summary, simulate_family
    paths = simulate_family(inps.outdir, inps.seed, size=inps.size, null=inps.null,
                            geometry=inps.geometry)
    print()
    print(family_summary(paths["truth"]))
    return paths


def _run(inps):
    from hotspot.utils.errors import HotspotError
    if inps.family:
        return _run_family(inps)
    if inps.null or inps.geometry:
        raise HotspotError("--null / --geometry need --family")
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
