"""hotspot_score.py: score a label file against the truth of a simulated scene."""
import argparse
import json
from pathlib import Path

EXAMPLE = """example:
  hotspot_score.py hotspot.h5 hotspotTruth.h5
  hotspot_score.py clusterDBSCAN.h5 hotspotTruth.h5 --ignore-background 0.02
  hotspot_score.py clusterLSTM.h5 hotspotTruth.h5 --ignore-larger-than 5000 --json score.json
"""


def create_parser():
    parser = argparse.ArgumentParser(
        prog="hotspot_score.py",
        description=("Compare a label file (pixelLabel: cluster ids from 1, 0/-1 none) with "
                     "hotspotTruth.h5 from hotspot_simulate.py: best IoU per true hotspot, "
                     "detected (IoU >= threshold) / missed, false hotspots, ARI, twins."),
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLE)
    parser.add_argument("label_file", help="label file (hotspot.h5, clusterDBSCAN.h5, ...)")
    parser.add_argument("truth_file", help="hotspotTruth.h5 of the simulated scene")
    parser.add_argument("--dataset", default="pixelLabel",
                        help="per-pixel label dataset (default: %(default)s)")
    parser.add_argument("--iou-threshold", dest="iou_threshold", type=float, default=0.5,
                        help="IoU for a detection (default: %(default)s)")
    parser.add_argument("--ignore-larger-than", dest="ignore_larger_than", type=int,
                        metavar="N", help="treat clusters of more than N pixels as background")
    parser.add_argument("--ignore-background", dest="ignore_background", type=float,
                        metavar="IOU", help="treat clusters whose IoU with the truth background "
                                            "is >= IOU as background (e.g. 0.02)")
    parser.add_argument("--json", dest="json_file", help="also write the score as JSON")
    return parser


def _run(inps):
    from hotspot.simulation import format_score, score_files
    from hotspot.utils.errors import HotspotError
    from hotspot.utils.h5io import atomic_path
    if not 0 < inps.iou_threshold <= 1:
        raise HotspotError(f"--iou-threshold {inps.iou_threshold}: expected a value in (0, 1]")
    score = score_files(inps.label_file, inps.truth_file, dataset=inps.dataset,
                        iou_threshold=inps.iou_threshold,
                        ignore_larger_than=inps.ignore_larger_than,
                        ignore_background=inps.ignore_background)
    print(f"label file: {inps.label_file}\ntruth file: {inps.truth_file}")
    print(format_score(score))
    if inps.json_file:
        with atomic_path(inps.json_file) as tmp:
            Path(tmp).write_text(json.dumps(score, indent=2))
        print(f"score written to {inps.json_file}")
    return score


def main(argv=None):
    from hotspot.hotspotApp import main_exit
    inps = create_parser().parse_args(argv)
    # None: console scripts pass main's return value to sys.exit
    main_exit(_run, inps)


if __name__ == "__main__":
    main()
