"""HDF5 helpers shared by every step: atomic outputs and friendly reading.

Outputs are written to a temporary file beside the target and renamed only
when complete, so a crash never leaves a half-written product and a re-run
after a crash starts clean.
"""
import contextlib
import os
import re
import shutil
from pathlib import Path

import h5py
import numpy as np

from hotspot.utils.errors import HotspotError


# Free space kept beyond an output's estimated size (HDF5 metadata, chunk padding).
FREE_SPACE_MARGIN = 256 * 1024
FREE_SPACE_FACTOR = 1.05


def temp_path(path):
    """The temporary name of `path` while it is written: ``x.tmp<pid>.h5``.

    The real extension stays last because mintpy.utils.writefile (and keras) choose the
    format from it; temp_files() finds these names again.
    """
    path = Path(path)
    return path.with_name(f"{path.stem}.tmp{os.getpid()}{path.suffix}")


def temp_files(path):
    """Temporary files of `path` left by killed runs (any process id)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(re.escape(path.stem) + r"\.tmp\d+" + re.escape(path.suffix) + "$")
    return sorted(p for p in path.parent.iterdir() if pattern.match(p.name) and p.is_file())


def remove_temp_files(paths):
    """Remove the temporary files of `paths` that killed runs left; returns them."""
    removed = []
    for path in paths:
        for tmp in temp_files(path):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def check_free_space(path, nbytes):
    """HotspotError naming `path` unless its file system has room for `nbytes` more.

    HDF5 does not report a full disk as an error one can recover from: h5py raises from
    its destructors and the interpreter may crash at exit, so big writes are checked first.
    """
    path = Path(path)
    if not nbytes:
        return
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return
    need = int(nbytes * FREE_SPACE_FACTOR) + FREE_SPACE_MARGIN
    if free < need:
        raise HotspotError(f"{path}: not enough free disk space to write it ({need / 1e6:.1f} "
                           f"MB needed, {free / 1e6:.1f} MB free in {path.parent}); free some "
                           "space or use another work directory")


@contextlib.contextmanager
def atomic_path(path, nbytes=0):
    """Yield a temporary path beside `path` (temp_path); rename it to `path` on success.

    nbytes: the expected size of the file, checked against the free disk space first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise HotspotError(f"{path}: is a directory; expected the output file of this name "
                           "(rename or remove the directory)")
    check_free_space(path, nbytes)
    tmp = temp_path(path)
    if tmp.exists():
        tmp.unlink()
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _attr_value(value):
    """Convert a value to something h5py stores as a readable attribute."""
    if value is None:
        return "None"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, (int, float, str, np.integer, np.floating)):
        return value
    return str(value)


def write_h5(path, datasets, attrs=None, compression=None, units=None):
    """Atomically write a dict of arrays (and root attributes) to an HDF5 file.

    Strings are stored as fixed-length byte strings (readable by MintPy's
    readfile); nested dicts become groups. Every dataset gets its UNIT attribute
    (hotspot.utils.units; `units` = {name: unit} for names whose unit depends on the file).
    """
    from hotspot.utils.units import set_units
    with atomic_path(path, nbytes=_nbytes(datasets)) as tmp:
        with h5py.File(tmp, "w") as f:
            for key, value in (attrs or {}).items():
                f.attrs[key] = _attr_value(value)
            _write_group(f, datasets, compression)
            set_units(f, units)
    return Path(path)


def _nbytes(datasets):
    return sum(_nbytes(v) if isinstance(v, dict) else np.asarray(v).nbytes
               for v in datasets.values())


def _write_group(group, datasets, compression):
    for name, data in datasets.items():
        if isinstance(data, dict):
            _write_group(group.require_group(name), data, compression)
            continue
        arr = np.asarray(data)
        if arr.dtype.kind == "U":
            arr = np.char.encode(arr, "utf-8")
        kw = {}
        if compression and arr.ndim > 0 and arr.size > 1000:
            kw = {"compression": compression}
        group.create_dataset(name, data=arr, **kw)


def read_attrs(path):
    """Root attributes of an HDF5 file as a dict of str/number."""
    with open_h5(path) as f:
        return {k: _decode(v) for k, v in f.attrs.items()}


def _decode(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.dtype.kind == "S":
        return [v.decode("utf-8") for v in value]
    return value


def open_h5(path, mode="r"):
    """h5py.File with an error naming the file when it is missing or corrupt."""
    path = Path(path)
    if mode == "r" and not path.is_file():
        raise HotspotError(f"{path}: file not found")
    try:
        return h5py.File(path, mode)
    except OSError as exc:
        raise HotspotError(f"{path}: cannot be opened as HDF5 ({exc}); "
                           "the file may be corrupt or still being written") from None


def require_dataset(h5file, name, path=None):
    """Return h5file[name] or raise an error listing the datasets that exist."""
    if name not in h5file:
        where = path or h5file.filename
        have = ", ".join(sorted(h5file.keys())) or "none"
        raise HotspotError(f"{where}: dataset '{name}' not found (datasets present: {have})")
    return h5file[name]
