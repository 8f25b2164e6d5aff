"""hotspotApp.py: command line of the hotspot workflow."""
import argparse
import os
import sys
from pathlib import Path

from hotspot import STEP_LIST, __version__

EXAMPLE = """example:
  hotspotApp.py -g                           # write the default template hotspotApp.cfg
  hotspotApp.py -H                           # print the default template with comments
  hotspotApp.py site.cfg                     # run all steps in the directory of site.cfg
  hotspotApp.py site.cfg --dostep tskm       # run one step
  hotspotApp.py site.cfg --start dbscan --end predict
  hotspotApp.py --dir ./mintpy --dostep load_data   # default template, MintPy files in ./mintpy
"""


def create_parser():
    parser = argparse.ArgumentParser(
        prog="hotspotApp.py",
        description=("Deformation hotspots from InSAR displacement time series "
                     "(Tiwari & Shirzaei 2024). Steps: " + ", ".join(STEP_LIST)),
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLE)
    parser.add_argument("template", nargs="?", help="custom template file (key = value)")
    parser.add_argument("--dir", "--work-dir", dest="workdir",
                        help="work directory (default: directory of the template, else .)")
    parser.add_argument("-g", dest="generate", action="store_true",
                        help="write the default template to WORKDIR/hotspotApp.cfg and exit")
    parser.add_argument("-H", dest="print_template", action="store_true",
                        help="print the default template and exit")
    # step names are checked by hotspot.hotspotApp.select_steps: an ERROR line and exit 1
    parser.add_argument("--dostep", metavar="STEP",
                        help="run this step only: " + ", ".join(STEP_LIST))
    parser.add_argument("--start", metavar="STEP", help="first step to run")
    parser.add_argument("--end", "--stop", dest="end", metavar="STEP",
                        help="last step to run")
    parser.add_argument("--plot", action="store_true",
                        help="run the plot step after the selected steps")
    parser.add_argument("--force", action="store_true",
                        help="re-run steps even if their outputs are up to date")
    parser.add_argument("-v", "--version", action="version", version=f"hotspot {__version__}")
    return parser


def cmd_line_parse(argv=None):
    return create_parser().parse_args(argv)


def _run(inps):
    import warnings

    from hotspot.hotspotApp import StepContext, run_workflow, select_steps
    from hotspot.utils.errors import HotspotError
    from hotspot.utils.template import (DEFAULT_TEMPLATE, TEMPLATE_NAME, Config, merge_template,
                                        resolve_auto)

    if inps.print_template:
        print(DEFAULT_TEMPLATE.read_text())
        return
    if inps.dostep and (inps.start or inps.end):
        raise HotspotError("--dostep cannot be combined with --start / --end")
    # check the step names before anything is written
    steps = select_steps(inps.dostep, inps.start, inps.end)
    # absolute, not resolved: a symlinked template keeps the work directory it is in
    template = Path(inps.template).absolute() if inps.template else None
    if template is not None and not template.is_file():
        raise HotspotError(f"{inps.template}: template file not found")
    if inps.workdir:
        workdir = Path(inps.workdir).absolute()
    else:
        workdir = template.parent if template else Path(os.getcwd())
    if inps.generate:
        out = workdir / TEMPLATE_NAME
        if out.exists():
            print(f"{out} exists, keep it (remove it to write the default again)")
        else:
            workdir.mkdir(parents=True, exist_ok=True)
            out.write_text(DEFAULT_TEMPLATE.read_text())
            print(f"default template written to {out}")
        return
    if not workdir.is_dir():
        raise HotspotError(f"work directory {workdir} does not exist")

    print(f"hotspotApp.py {' '.join(sys.argv[1:])}")
    print(f"work directory: {workdir}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        raw, merged_file = merge_template(template, workdir)
    for warning in caught:
        if issubclass(warning.category, UserWarning):
            print(f"WARNING: {warning.message}")
    print(f"merged template: {merged_file}")
    config = Config(resolve_auto(raw), raw=raw, source=str(template or merged_file))
    # the keys every step uses, checked (the getters raise) before the first step runs
    _ = (config.max_memory, config.seed)
    ctx = StepContext(workdir=workdir, config=config, template_file=merged_file)
    if inps.plot and "plot" not in steps:
        steps = steps + ["plot"]
    run_workflow(ctx, steps, force=inps.force)


def main(argv=None):
    from hotspot.hotspotApp import main_exit
    inps = cmd_line_parse(argv)
    main_exit(_run, inps)


if __name__ == "__main__":
    main()
