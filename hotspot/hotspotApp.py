"""The hotspot workflow: template -> steps, like MintPy's smallbaselineApp.py.

Each step lives in its own module exposing
    run(ctx)       do the work, write outputs atomically
    inputs(ctx)    files the step reads (for update mode)
    outputs(ctx)   files the step writes; the first one is an HDF5 file whose
                   root attributes hold the step's template keys
Modules are imported lazily so that `hotspotApp.py -H` does not load TensorFlow.
"""
import importlib
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from hotspot import STEP_LIST
from hotspot.utils.errors import HotspotError
from hotspot.utils.template import Config

STEP_MODULES = {
    "load_data": "hotspot.steps.load_data",
    "covariogram": "hotspot.steps.covariogram",
    "tskm": "hotspot.steps.tskm",
    "dbscan": "hotspot.steps.dbscan",
    "train_lstm": "hotspot.steps.train_lstm",
    "predict": "hotspot.steps.predict",
    "dispersion": "hotspot.steps.dispersion",
    "plot": "hotspot.steps.plot",
}


@dataclass
class StepContext:
    """What a step gets: where to work and the configuration."""
    workdir: Path
    config: Config
    template_file: Path = None
    log_lines: list = field(default_factory=list)

    def path(self, name):
        return Path(self.workdir) / name

    def step_attrs(self, step):
        """Template keys of `step` to store as root attributes of its output."""
        return self.config.step_values(step)

    def log(self, message):
        print(message, flush=True)


def load_step(step):
    """The step's module, or a clear error when it is not implemented yet."""
    name = STEP_MODULES[step]
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            raise HotspotError(f"step '{step}' is not implemented yet") from None
        raise


def step_command(step, ctx):
    """The shell command that runs this one step again."""
    parts = ["hotspotApp.py"]
    if ctx.template_file:
        parts.append(str(ctx.template_file))
    parts += ["--dir", str(ctx.workdir), "--dostep", step]
    return " ".join(shlex.quote(p) for p in parts)


def is_up_to_date(step, module, ctx):
    """True when all outputs exist, are newer than the inputs and used the same config."""
    from hotspot.utils.h5io import read_attrs
    outputs = [Path(p) for p in module.outputs(ctx)]
    if not outputs or not all(p.is_file() for p in outputs):
        return False
    inputs = [Path(p) for p in module.inputs(ctx) if p is not None]
    if not all(p.exists() for p in inputs):
        return False
    oldest_out = min(p.stat().st_mtime for p in outputs)
    if inputs and max(p.stat().st_mtime for p in inputs) > oldest_out:
        return False
    try:
        stored = read_attrs(outputs[0])
    except HotspotError:
        return False
    wanted = ctx.step_attrs(step)
    return all(str(stored.get(k)) == str(v) for k, v in wanted.items())


def run_step(step, ctx, force=False):
    module = load_step(step)
    banner = f"******************** step - {step} ********************"
    ctx.log("\n" + banner)
    ctx.log(f"# {step_command(step, ctx)}")
    if not force and is_up_to_date(step, module, ctx):
        outs = ", ".join(Path(p).name for p in module.outputs(ctx))
        ctx.log(f"update mode: {outs} newer than the inputs and made with the same "
                f"configuration, skip step {step}.")
        return
    start = time.time()
    module.run(ctx)
    ctx.log(f"time used for step {step}: {time.time() - start:.1f} s")


def select_steps(dostep=None, start=None, end=None):
    """The steps to run, from --dostep / --start / --end."""
    for name in (dostep, start, end):
        if name is not None and name not in STEP_LIST:
            raise HotspotError(f"unknown step '{name}'; available steps: {', '.join(STEP_LIST)}")
    if dostep:
        return [dostep]
    i0 = STEP_LIST.index(start) if start else 0
    i1 = STEP_LIST.index(end) if end else len(STEP_LIST) - 1
    if i0 > i1:
        raise HotspotError(f"--start {start} comes after --end {end}")
    return STEP_LIST[i0:i1 + 1]


def run_workflow(ctx, steps, force=False):
    t0 = time.time()
    for step in steps:
        run_step(step, ctx, force=force)
    ctx.log(f"\nhotspotApp: {', '.join(steps)} done in {time.time() - t0:.1f} s "
            f"(work directory {ctx.workdir})")


def main_exit(func, *args, **kwargs):
    """Run func; print HotspotError as a one-line message and exit 1."""
    try:
        return func(*args, **kwargs)
    except HotspotError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        sys.exit(1)
