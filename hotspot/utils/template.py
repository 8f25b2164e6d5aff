"""Template handling: defaults + user template -> typed configuration.

The template format, reader and comment-preserving update are MintPy's own
(readfile.read_template, utils.update_template_file), so a hotspot template
reads and behaves like smallbaselineApp.cfg.
"""
import difflib
import math
import tempfile
import warnings
from pathlib import Path

from hotspot.utils.errors import HotspotError

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "defaults"
DEFAULT_TEMPLATE = DEFAULT_DIR / "hotspotApp.cfg"
AUTO_TEMPLATE = DEFAULT_DIR / "hotspotApp_auto.cfg"
TEMPLATE_NAME = "hotspotApp.cfg"

# The template prefix of each step's keys (load_data keeps MintPy's short "load").
STEP_PREFIX = {
    "load_data": "hotspot.load.",
    "covariogram": "hotspot.covariogram.",
    "tskm": "hotspot.tskm.",
    "dbscan": "hotspot.dbscan.",
    "train_lstm": "hotspot.train_lstm.",
    "predict": "hotspot.predict.",
    "dispersion": "hotspot.dispersion.",
    "plot": "hotspot.plot.",
}
GLOBAL_KEYS = ("hotspot.randomSeed",)
# numpy's SeedSequence / legacy RandomState take seeds in [0, 2**32)
MAX_SEED = 2 ** 32 - 1


def read_template(path):
    """Read a key = value template (MintPy format) into an ordered dict of strings."""
    from mintpy.utils import readfile
    path = Path(path)
    if not path.is_file():
        raise HotspotError(f"{path}: template file not found")
    check_lines(path)
    try:
        values = readfile.read_template(str(path))
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise HotspotError(f"{path}: cannot parse template ({exc}); "
                           "expected lines of the form 'key = value  # comment'") from None
    return {k: str(v).strip() for k, v in values.items()}


def check_lines(path):
    """Every non-comment line must be 'key = value': MintPy's reader drops others silently."""
    try:
        lines = Path(path).read_text().splitlines()
    except UnicodeDecodeError as exc:
        raise HotspotError(f"{path}: cannot parse template ({exc}); expected a text file of "
                           "lines 'key = value  # comment'") from None
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith(("#", "%", "!")):
            continue
        key = text.split("=", 1)[0].strip()
        if "=" not in text or not key:
            raise HotspotError(f"{path}, line {number}: {text[:60]!r} is not a 'key = value' "
                               "line; expected 'key = value  # comment' or a comment line "
                               "starting with #")


def default_values():
    return read_template(DEFAULT_TEMPLATE)


def check_keys(user, source="template"):
    """Unknown hotspot.* keys are an error, other unknown keys a warning; both name the
    closest valid key.

    A typo in a hotspot key would otherwise silently run with the default value; keys of
    other MintPy apps (smallbaselineApp's mintpy.*) may share a template with hotspot.
    """
    valid = list(default_values())
    unknown = {}
    for key in user:
        if key in valid:
            continue
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        unknown[key] = close[0] if close else None
        if key.lower().startswith("hotspot."):
            raise HotspotError(f"{source}: unknown key '{key}'{hint} (hotspotApp.py -H lists "
                               "every key)")
        warnings.warn(f"{source}: unknown key '{key}' is ignored{hint}", stacklevel=2)
    return unknown


def merge_template(user_template, workdir):
    """Write WORKDIR/hotspotApp.cfg = defaults updated with the user's values (comments kept).

    Returns (merged raw values, path of the merged template).
    """
    from mintpy.utils import utils as ut
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    user = read_template(user_template) if user_template else {}
    check_keys(user, str(user_template))
    out = workdir / TEMPLATE_NAME
    user_is_out = user_template is not None and Path(user_template).resolve() == out.resolve()
    if not user_is_out:
        from hotspot.utils.h5io import atomic_path
        text = DEFAULT_TEMPLATE.read_text()
        known = {k: v for k, v in user.items() if k in default_values()}
        if known:
            # MintPy's comment-preserving update works on a file: a scratch copy, so that
            # nothing is written to WORKDIR unless the merged template changes
            with tempfile.TemporaryDirectory(prefix="hotspot_template_") as scratch:
                draft = Path(scratch) / TEMPLATE_NAME
                draft.write_text(text)
                ut.update_template_file(str(draft), known)
                text = draft.read_text()
        # an unchanged template is not rewritten: an up-to-date run in a read-only
        # work directory then writes nothing
        if not (out.is_file() and _read_text(out) == text):
            with atomic_path(out) as tmp:
                tmp.write_text(text)
    merged = default_values()
    merged.update({k: v for k, v in user.items() if k in merged})
    return merged, out


def _read_text(path):
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return None


def resolve_auto(values):
    """Replace 'auto' by hotspotApp_auto.cfg's value; 'auto' there means computed by the step."""
    auto = read_template(AUTO_TEMPLATE)
    out = dict(values)
    for key, value in values.items():
        if value.lower() == "auto" and key in auto:
            out[key] = auto[key]
    # numWorker follows MintPy: a job-queue cluster gets more workers by default.
    if (values.get("mintpy.compute.numWorker", "auto").lower() == "auto"
            and out.get("mintpy.compute.cluster", "none").lower() not in ("none", "local", "no")):
        out["mintpy.compute.numWorker"] = "40"
    return out


class Config:
    """Typed, validated access to the resolved template values.

    Every getter raises HotspotError naming the key, the value found and what
    was expected, so a template typo never surfaces as a numpy traceback.
    """

    def __init__(self, values, raw=None, source="template"):
        self.values = dict(values)
        self.raw = dict(raw if raw is not None else values)
        self.source = source

    def __contains__(self, key):
        return key in self.values

    def _get(self, key):
        if key not in self.values:
            raise HotspotError(f"{self.source}: missing key '{key}'")
        return str(self.values[key]).strip()

    def _bad(self, key, value, expected):
        return HotspotError(f"{self.source}: {key} = {value!r} is not valid; expected {expected}")

    def is_auto(self, key):
        return self._get(key).lower() == "auto"

    def is_none(self, key):
        return self._get(key).lower() in ("none", "no", "false", "")

    def get_str(self, key):
        return self._get(key)

    def get_choice(self, key, choices):
        value = self._get(key)
        lookup = {c.lower(): c for c in choices}
        if value.lower() not in lookup:
            raise self._bad(key, value, "one of " + " / ".join(choices))
        return lookup[value.lower()]

    def get_int(self, key, min_value=None, max_value=None, allow_none=False):
        value = self._get(key)
        if allow_none and value.lower() in ("none", "no"):
            return None
        try:
            number = int(float(value))
            if float(value) != number:
                raise ValueError
        except (ValueError, OverflowError):     # OverflowError: inf
            raise self._bad(key, value, "an integer" + _range_text(min_value, max_value)) \
                from None
        self._check_range(key, value, number, min_value, max_value)
        return number

    def get_float(self, key, min_value=None, max_value=None, allow_none=False):
        value = self._get(key)
        if allow_none and value.lower() in ("none", "no"):
            return None
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        # float() takes 'nan' and 'inf': no key of the workflow means them
        if not math.isfinite(number):
            raise self._bad(key, value, "a finite number" + _range_text(min_value, max_value))
        self._check_range(key, value, number, min_value, max_value)
        return number

    def _check_range(self, key, value, number, min_value, max_value):
        if ((min_value is not None and number < min_value)
                or (max_value is not None and number > max_value)):
            raise self._bad(key, value, "a value" + _range_text(min_value, max_value))

    def get_bool(self, key):
        value = self._get(key).lower()
        if value in ("yes", "true", "1", "on"):
            return True
        if value in ("no", "false", "0", "off", "none"):
            return False
        raise self._bad(key, value, "yes or no")

    def get_list(self, key, cast=float, min_value=None):
        """Comma/space separated list, e.g. 'hotspot.dbscan.eps = 2, 1, 5'."""
        value = self._get(key)
        items = [v for v in value.replace(",", " ").split() if v]
        if not items:
            raise self._bad(key, value, "a list of values")
        try:
            out = [cast(float(v)) if cast is int else cast(v) for v in items]
            if any(isinstance(v, float) and not math.isfinite(v) for v in out):
                raise ValueError
        except (ValueError, OverflowError):
            raise self._bad(key, value, f"a comma-separated list of finite {cast.__name__}") \
                from None
        if min_value is not None and any(v < min_value for v in out):
            raise self._bad(key, value, f"values >= {min_value}")
        return out

    def get_range(self, key):
        """'2-10' -> (2, 10)."""
        value = self._get(key)
        parts = value.replace(" ", "").split("-")
        try:
            lo, hi = (int(p) for p in parts)
        except ValueError:
            raise self._bad(key, value, "a range like 2-10") from None
        if not 2 <= lo <= hi:
            raise self._bad(key, value, "a range lo-hi with 2 <= lo <= hi")
        return lo, hi

    def get_path(self, key, workdir):
        """Path value relative to WORKDIR; None for auto/no/none."""
        value = self._get(key)
        if value.lower() in ("auto", "no", "none", ""):
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else Path(workdir) / path

    def step_values(self, step):
        """Raw (unresolved) values of a step's keys: stored in outputs for update mode."""
        prefix = STEP_PREFIX[step]
        return {k: v for k, v in self.raw.items()
                if k.startswith(prefix) or k in GLOBAL_KEYS}

    @property
    def max_memory(self):
        return self.get_float("mintpy.compute.maxMemory", min_value=0.01)

    @property
    def seed(self):
        return self.get_int("hotspot.randomSeed", min_value=0, max_value=MAX_SEED)


def _range_text(min_value, max_value):
    if min_value is not None and max_value is not None:
        return f" in [{min_value}, {max_value}]"
    if min_value is not None:
        return f" >= {min_value}"
    if max_value is not None:
        return f" <= {max_value}"
    return ""


def config_from_dict(overrides=None, source="template"):
    """A Config of the defaults updated with `overrides` (tests, library use)."""
    raw = default_values()
    for key, value in (overrides or {}).items():
        if key not in raw:
            raise HotspotError(f"{source}: unknown key '{key}'")
        raw[key] = str(value)
    return Config(resolve_auto(raw), raw=raw, source=source)
