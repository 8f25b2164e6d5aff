"""The pixel stack (hotspotStack.h5) that every step after load_data reads.

Layout (N pixels, T epochs):
  displacement    N x T float32, metres, referenced to the first epoch
  date            T     bytes YYYYMMDD
  latitude        N     float64, degrees
  longitude       N     float64, degrees
  velocity        N     float32, m/yr
  velocityStd     N     float32, m/yr
  coherence       N     float32 (NaN where unknown)
  incidenceAngle  N     float32, degrees (NaN where unknown)
  row, col        N     int32, position in the source raster (-1 for points)
Root attributes: the source grid (MintPy LENGTH, WIDTH, X_FIRST, ...) when
GRID == 'yes', plus NUM_PIXEL, NUM_DATE, PROCESSOR, and the load config keys.
"""
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hotspot import products
from hotspot.utils.errors import HotspotError
from hotspot.utils.h5io import _attr_value, atomic_path, open_h5, read_attrs, require_dataset

STACK_FILE = products.STACK
# temporal moving-average window of the band-pass (tskm) and of the fragment test
# (dispersion): the atmosphere is white in time
SMOOTH_DAYS = 100.0
PIXEL_DATASETS = {
    "latitude": np.float64,
    "longitude": np.float64,
    "velocity": np.float32,
    "velocityStd": np.float32,
    "coherence": np.float32,
    "incidenceAngle": np.float32,
    "row": np.int32,
    "col": np.int32,
}


@dataclass
class StackInfo:
    """What a step needs to know about a stack without reading the time series."""
    path: Path
    num_pixel: int
    num_date: int
    dates: list
    attrs: dict

    @property
    def is_grid(self):
        return str(self.attrs.get("GRID", "no")).lower() == "yes"

    @property
    def shape(self):
        """(LENGTH, WIDTH) of the source grid, or None for point inputs."""
        if not self.is_grid:
            return None
        return int(self.attrs["LENGTH"]), int(self.attrs["WIDTH"])


def block_size(num_date, max_memory_gb, bytes_per_value=4, copies=4, cap=None):
    """Pixels per block so that `copies` float arrays of a block fit in max_memory_gb.

    `copies` covers the read buffer plus the temporaries a step makes.
    """
    budget = float(max_memory_gb) * 1024 ** 3
    n = int(budget // (num_date * bytes_per_value * copies))
    n = max(1000, n)
    return min(n, cap) if cap else n


def iter_blocks(num_pixel, size):
    """Yield (start, stop) pairs covering range(num_pixel)."""
    for start in range(0, num_pixel, size):
        yield start, min(start + size, num_pixel)


class StackWriter:
    """Write a stack block by block into a temporary file, renamed on close.

    Usage:
        with StackWriter(path, num_pixel, dates, attrs) as w:
            w.write_block(start, displacement=..., latitude=..., ...)
    Any dataset of PIXEL_DATASETS not written stays NaN (or -1 for row/col).
    """

    def __init__(self, path, num_pixel, dates, attrs=None):
        self.path = Path(path)
        self.num_pixel = int(num_pixel)
        self.dates = [str(d) for d in dates]
        self.attrs = dict(attrs or {})
        self._ctx = None
        self._file = None

    def __enter__(self):
        if self.num_pixel <= 0:
            raise HotspotError(f"{self.path}: no valid pixel to write")
        check_dates(self.dates, str(self.path))
        self._ctx = atomic_path(self.path)
        tmp = self._ctx.__enter__()
        import h5py
        self._file = h5py.File(tmp, "w")
        n, t = self.num_pixel, len(self.dates)
        chunk_rows = max(1, min(n, (1 << 20) // (4 * t)))
        self._file.create_dataset("displacement", shape=(n, t), dtype=np.float32,
                                  chunks=(chunk_rows, t))
        self._file.create_dataset("date", data=np.array(self.dates, dtype="S8"))
        for name, dtype in PIXEL_DATASETS.items():
            fill = -1 if np.issubdtype(dtype, np.integer) else np.nan
            self._file.create_dataset(name, shape=(n,), dtype=dtype, fillvalue=fill)
        attrs = {"FILE_TYPE": "hotspotStack", "UNIT": "m", "NUM_PIXEL": n, "NUM_DATE": t,
                 "GRID": "no", **self.attrs}
        attrs.setdefault("DATA_TYPE", "float32")
        for key, value in attrs.items():
            self._file.attrs[key] = _attr_value(value)
        self._file["displacement"].attrs["UNIT"] = "m"
        return self

    def write_block(self, start, displacement=None, **pixel_data):
        stop = None
        if displacement is not None:
            displacement = np.asarray(displacement, dtype=np.float32)
            stop = start + displacement.shape[0]
            self._file["displacement"][start:stop] = displacement
        for name, values in pixel_data.items():
            if name not in PIXEL_DATASETS:
                raise ValueError(f"unknown stack dataset {name}")
            values = np.asarray(values, dtype=PIXEL_DATASETS[name])
            self._file[name][start:start + values.shape[0]] = values

    def __exit__(self, exc_type, exc, tb):
        self._file.close()
        return self._ctx.__exit__(exc_type, exc, tb)


def write_stack(path, displacement, dates, latitude, longitude, attrs=None, **pixel_data):
    """Write a whole in-memory stack (tests, small inputs)."""
    displacement = np.asarray(displacement, dtype=np.float32)
    with StackWriter(path, displacement.shape[0], dates, attrs) as w:
        w.write_block(0, displacement=displacement, latitude=latitude, longitude=longitude,
                      **pixel_data)
    return Path(path)


def check_dates(dates, source):
    """Dates must be YYYYMMDD, strictly increasing and unique."""
    if len(dates) < 2:
        raise HotspotError(f"{source}: need at least 2 acquisition dates, found {len(dates)}")
    for d in dates:
        if len(d) != 8 or not d.isdigit():
            raise HotspotError(f"{source}: date '{d}' is not in YYYYMMDD format")
    ints = np.array([int(d) for d in dates])
    dup = [dates[i] for i in np.nonzero(np.diff(ints) == 0)[0]]
    if dup:
        raise HotspotError(f"{source}: duplicated date(s) {', '.join(dup[:5])}")
    if np.any(np.diff(ints) < 0):
        i = int(np.nonzero(np.diff(ints) < 0)[0][0])
        raise HotspotError(f"{source}: dates are not sorted ({dates[i]} comes before {dates[i + 1]})")


def read_info(path):
    """StackInfo of an existing stack, with clear errors if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise HotspotError(f"{path}: pixel stack not found; run the load_data step first "
                           "(hotspotApp.py TEMPLATE --dostep load_data)")
    with open_h5(path) as f:
        disp = require_dataset(f, "displacement", path)
        dates = [d.decode() if isinstance(d, bytes) else str(d)
                 for d in require_dataset(f, "date", path)[:]]
        n, t = disp.shape
    return StackInfo(path=path, num_pixel=n, num_date=t, dates=dates, attrs=read_attrs(path))


def read_pixels(path, names, start=0, stop=None):
    """Read per-pixel datasets (or rows of displacement) [start:stop] as a dict."""
    out = {}
    with open_h5(path) as f:
        for name in names:
            out[name] = require_dataset(f, name, path)[start:stop]
    return out


def read_rows(path, index, name="displacement", chunk=200_000):
    """Rows `index` (any order, may repeat) of a stack dataset, read in sorted chunks."""
    index = np.asarray(index, dtype=np.int64)
    order = np.argsort(index, kind="stable")
    sorted_idx = index[order]
    with open_h5(path) as f:
        dset = require_dataset(f, name, path)
        out = np.empty((index.size,) + dset.shape[1:], dtype=dset.dtype)
        for s in range(0, sorted_idx.size, chunk):
            part = sorted_idx[s:s + chunk]
            uniq, inverse = np.unique(part, return_inverse=True)
            out[order[s:s + chunk]] = dset[uniq][inverse]
    return out


def decimal_years(dates):
    """YYYYMMDD strings -> decimal years (float64)."""
    from datetime import datetime
    out = []
    for d in dates:
        dt = datetime.strptime(str(d), "%Y%m%d")
        start = datetime(dt.year, 1, 1)
        days = (datetime(dt.year + 1, 1, 1) - start).days
        out.append(dt.year + (dt - start).days / days)
    return np.array(out)


def smooth_window(dates):
    """Odd number of epochs spanning about SMOOTH_DAYS at the median sampling interval."""
    years = decimal_years(dates)
    if years.size < 3:
        return 1
    step = float(np.median(np.diff(years))) * 365.25
    width = int(round(SMOOTH_DAYS / max(step, 1e-6)))
    width = max(1, min(width, years.size // 4))
    return width if width % 2 else width + 1


def num_blocks(num_pixel, size):
    return max(1, math.ceil(num_pixel / size))
