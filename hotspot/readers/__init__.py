"""Readers of the processors' products for the load_data step.

Each reader (mintpy, wabinsar, egms) turns its processor's files into blocks
of pixels in a common form, so load_data only filters, references and writes:

  reader.dates      list of YYYYMMDD strings (checked: sorted, unique)
  reader.attrs      root attributes of hotspotStack.h5 (source grid or GRID='no')
  reader.inputs     the files read (update mode)
  reader.iter_blocks(max_memory) -> Block(data, num_masked)
      data: 'displacement' (n x T float32, metres) and per-pixel arrays
      ('latitude', 'longitude', optional 'velocity', 'velocityStd' in m/yr,
      'coherence', 'incidenceAngle', 'row', 'col'), in output order;
      num_masked: pixels the reader left out by the input's own mask.

Readers never hold more than one block of the time series; they may be
iterated twice (load_data counts the valid pixels before writing).
"""
from dataclasses import dataclass
from pathlib import Path

from hotspot.utils.errors import HotspotError

PROCESSORS = ("mintpy", "wabinsar", "egms")
KEY = "hotspot.load."
UNIT_SCALE = {"m": 1.0, "cm": 0.01, "mm": 0.001}


@dataclass
class Block:
    data: dict
    num_masked: int = 0


def unit_scale(unit, source):
    """Metres per unit for 'm' / 'cm' / 'mm' (also 'm/year', 'mm/yr', ...)."""
    base = str(unit).strip().lower().split("/")[0]
    if base not in UNIT_SCALE:
        raise HotspotError(f"{source}: unit '{unit}' is not supported; expected m, cm or mm "
                           f"(set {KEY}unit)")
    return UNIT_SCALE[base]


def configured_unit(config):
    """The user's hotspot.load.unit, or None for auto (processor default)."""
    value = config.get_choice(KEY + "unit", ["auto", "m", "cm", "mm"])
    return None if value == "auto" else value


def file_option(config, name, workdir, candidates=(), required=False, what=None):
    """Resolve hotspot.load.<name>: explicit path (must exist), 'no', or auto.

    Auto takes the first existing candidate; returns None when there is none
    (or raises when `required`, listing where it looked).
    """
    key = KEY + name
    value = config.get_str(key)
    if value.lower() in ("no", "none", "false"):
        if required:
            raise HotspotError(f"{config.source}: {key} = {value} but {what or name} is required")
        return None
    path = config.get_path(key, workdir)
    if path is not None:
        if not path.is_file():
            raise HotspotError(f"{path}: file not found (set by {key}); expected "
                               f"{what or 'an existing file'}")
        return path
    for cand in candidates:
        if Path(cand).is_file():
            return Path(cand)
    if required:
        looked = ", ".join(str(c) for c in candidates) or "nothing"
        raise HotspotError(f"{key} = auto: no {what or name} found (looked for {looked}); "
                           f"name the file with {key}")
    return None


def detect_processor(config, workdir):
    """The processor: the template's choice, the main file's extension, or WORKDIR's files."""
    processor = config.get_choice(KEY + "processor", ("auto",) + PROCESSORS)
    if processor != "auto":
        return processor
    ts_file = config.get_path(KEY + "timeseriesFile", workdir)
    if ts_file is not None:
        suffix = ts_file.suffix.lower()
        by_ext = {".h5": "mintpy", ".he5": "mintpy", ".mat": "wabinsar",
                  ".csv": "egms", ".zip": "egms"}
        if suffix not in by_ext:
            raise HotspotError(f"{KEY}timeseriesFile = {ts_file}: cannot tell the processor from "
                               f"the extension '{suffix}'; expected .h5 (MintPy), .mat "
                               f"(WabInSAR) or .csv/.zip (EGMS), or set {KEY}processor")
        return by_ext[suffix]
    from hotspot.readers import egms, mintpy, wabinsar
    for name, module in (("mintpy", mintpy), ("wabinsar", wabinsar), ("egms", egms)):
        if module.find_timeseries(workdir):
            return name
    raise HotspotError(f"{KEY}processor = auto: no input found in {workdir}; expected MintPy "
                       "timeseries*.h5, WabInSAR R_TS_den.mat or an EGMS *.csv / *.zip "
                       f"(or set {KEY}processor and {KEY}timeseriesFile)")


def open_reader(config, workdir, log=print):
    """The reader of the configured (or detected) processor, with its inputs checked."""
    processor = detect_processor(config, workdir)
    if processor == "mintpy":
        from hotspot.readers.mintpy import MintpyReader as reader_class
    elif processor == "wabinsar":
        from hotspot.readers.wabinsar import WabinsarReader as reader_class
    else:
        from hotspot.readers.egms import EgmsReader as reader_class
    return reader_class(config, Path(workdir), log)


def unused_keys(config, names, processor, log):
    """Note the keys a processor ignores, so a set value is not silently dropped."""
    for name in names:
        value = config.get_str(KEY + name)
        if value.lower() not in ("auto", "no", "none"):
            log(f"note: {KEY}{name} = {value} is not used for {processor} input")
