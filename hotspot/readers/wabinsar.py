"""WabInSAR export (the authors' processor): MATLAB .mat files of point measurements.

  R_TS_den.mat   N x T time series (mm unless hotspot.load.unit says otherwise)
  elpx_ll.mat    N x 3: longitude, latitude, third column (not used)
  MVel.mat       N mean velocity (mm/yr), MVelq.mat its standard deviation
  Pco_m.mat      N coherence; incidenceAngle.mat optional, degrees
  dates.txt      one YYYYMMDD per line (hotspot.load.dateFile)

MATLAB v7.3 files are HDF5 and are read block by block with h5py; they store
arrays column-major, so h5py sees an N x T matrix as T x N, and the pixel axis
is found from the number of dates.  v5/v7 files (scipy.io.loadmat) cannot be
read partially, but MATLAB limits their variables to 2 GB.
"""
from pathlib import Path

import h5py
import numpy as np

from hotspot.readers import KEY, Block, configured_unit, file_option, unit_scale, unused_keys
from hotspot.utils.errors import HotspotError
from hotspot.utils.stack import block_size, check_dates

TS_NAME = "R_TS_den.mat"


def find_timeseries(workdir):
    path = Path(workdir) / TS_NAME
    return [path] if path.is_file() else []


def read_date_file(path):
    """YYYYMMDD dates, one per line (first token; blank and # lines skipped)."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise HotspotError(f"{path}: cannot read the date file ({exc})") from None
    dates = [line.split()[0] for line in lines if line.strip() and not line.startswith("#")]
    check_dates(dates, f"{path} (expected one YYYYMMDD date per line, sorted)")
    return dates


class MatVariable:
    """One array of a .mat file (v5 or v7.3), in the orientation h5py / scipy give."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise HotspotError(f"{self.path}: file not found")
        self.is_v73 = h5py.is_hdf5(self.path)
        if self.is_v73:
            self._open_v73()
        else:
            self._open_v5()
        if len(self.shape) not in (1, 2) or 0 in self.shape:
            raise HotspotError(f"{self.path}: variable '{self.name}' has shape {self.shape}; "
                               "expected a vector or a matrix")

    def _choose(self, names):
        names = list(names)
        if self.path.stem in names:
            return self.path.stem
        if len(names) == 1:
            return names[0]
        raise HotspotError(f"{self.path}: expected a variable named '{self.path.stem}' or a single "
                           f"variable; found {', '.join(names) or 'none'}")

    def _open_v73(self):
        try:
            with h5py.File(self.path, "r") as f:
                names = [k for k in f if not k.startswith("#")]
                self.name = self._choose(names)
                dset = f[self.name]
                if not isinstance(dset, h5py.Dataset) or dset.dtype.kind not in "fiu":
                    raise HotspotError(f"{self.path}: variable '{self.name}' is not a numeric "
                                       "array (cell / struct / complex are not supported)")
                self.shape = dset.shape
        except OSError as exc:
            raise HotspotError(f"{self.path}: cannot be opened as a MATLAB v7.3 (HDF5) file "
                               f"({exc}); the file may be corrupt") from None

    def _open_v5(self):
        import scipy.io
        from scipy.io.matlab import MatReadError
        try:
            info = scipy.io.whosmat(self.path)
        except (ValueError, TypeError, OSError, NotImplementedError, EOFError, IndexError,
                MatReadError) as exc:
            raise HotspotError(f"{self.path}: cannot be read as a MATLAB .mat file ({exc}); "
                               "expected MATLAB v5/v7 or v7.3 format") from None
        self.name = self._choose(n for n, _, _ in info)
        shape, mclass = next((s, c) for n, s, c in info if n == self.name)
        if mclass not in ("double", "single") and not mclass.startswith(("int", "uint")):
            raise HotspotError(f"{self.path}: variable '{self.name}' is a MATLAB {mclass}; "
                               "expected a numeric array")
        self.shape = tuple(shape)
        self._data = None

    def _load_v5(self):
        """The whole variable: v5 files cannot be read in parts (loaded at the first read)."""
        import scipy.io
        from scipy.io.matlab import MatReadError
        if self._data is None:
            try:
                self._data = scipy.io.loadmat(self.path, variable_names=[self.name])[self.name]
            except (ValueError, TypeError, OSError, NotImplementedError, EOFError, IndexError,
                    MatReadError) as exc:
                raise HotspotError(f"{self.path}: cannot read '{self.name}' ({exc}); "
                                   "the file may be corrupt") from None
        return self._data

    def pixel_axis(self, other_len=None, num_pixel=None):
        """Axis of the pixels: the one that is not `other_len` long, or is `num_pixel` long."""
        if len(self.shape) == 1:
            return 0
        default = 1 if self.is_v73 else 0     # the MATLAB N x k layout as each reader sees it
        if num_pixel is not None:
            fits = [a for a in (0, 1) if self.shape[a] == num_pixel]
        else:
            fits = [a for a in (0, 1) if self.shape[1 - a] == other_len]
        if not fits:
            return None
        return default if len(fits) == 2 else fits[0]

    def read(self, axis, start, stop):
        """Pixels start:stop as a pixel-major array (n,) or (n, k)."""
        sl = [slice(None)] * len(self.shape)
        sl[axis] = slice(start, stop)
        if not self.is_v73:
            block = self._load_v5()[tuple(sl)]
        else:
            try:
                with h5py.File(self.path, "r") as f:
                    block = f[self.name][tuple(sl)]
            except OSError as exc:
                raise HotspotError(f"{self.path}: cannot read '{self.name}' ({exc}); "
                                   "the file may be corrupt") from None
        return block.T if axis == 1 else block


class WabinsarReader:
    processor = "wabinsar"

    def __init__(self, config, workdir, log=print):
        self.log = log
        workdir = Path(workdir)
        unused_keys(config, ("geometryFile", "maskFile"), "WabInSAR", log)
        self.ts_file = file_option(config, "timeseriesFile", workdir, [workdir / TS_NAME],
                                   required=True, what="WabInSAR time series R_TS_den.mat")
        here = list(dict.fromkeys([self.ts_file.parent, workdir]))

        def cands(name):
            return [d / name for d in here]

        date_file = file_option(config, "dateFile", workdir, cands("dates.txt"), required=True,
                                what="date file (one YYYYMMDD per line)")
        self.dates = read_date_file(date_file)
        num_date = len(self.dates)

        self.ts = MatVariable(self.ts_file)
        self.ts_axis = (self.ts.pixel_axis(other_len=num_date) if len(self.ts.shape) == 2
                        else None)
        if self.ts_axis is None:
            raise HotspotError(f"{self.ts_file}: '{self.ts.name}' has shape {self.ts.shape}; "
                               f"expected N x {num_date} (the {num_date} dates of {date_file})")
        self.num_raw = self.ts.shape[self.ts_axis]

        ll_file = file_option(config, "lonLatFile", workdir, cands("elpx_ll.mat"), required=True,
                              what="longitude / latitude file elpx_ll.mat")
        self.lonlat = MatVariable(ll_file)
        self.ll_axis = self.lonlat.pixel_axis(num_pixel=self.num_raw)
        if (self.ll_axis is None or len(self.lonlat.shape) != 2
                or self.lonlat.shape[1 - self.ll_axis] < 2):
            raise HotspotError(f"{ll_file}: '{self.lonlat.name}' has shape {self.lonlat.shape}; "
                               f"expected {self.num_raw} x 3 (lon, lat, ...) to match the "
                               f"{self.num_raw} points of {self.ts_file.name}")

        unit = configured_unit(config) or "mm"
        scale = unit_scale(unit, KEY + "unit")
        self.ts_scale = scale
        self.vectors = {}
        for name, key, default, vscale in (("velocity", "velocityFile", "MVel.mat", scale),
                                           ("velocityStd", "velocityStdFile", "MVelq.mat", scale),
                                           ("coherence", "coherenceFile", "Pco_m.mat", 1.0),
                                           ("incidenceAngle", "incidenceAngleFile",
                                            "incidenceAngle.mat", 1.0)):
            path = file_option(config, key, workdir, cands(default), what=f"{name} .mat file")
            if path is None:
                continue
            var = MatVariable(path)
            if int(np.prod(var.shape)) != self.num_raw or (len(var.shape) == 2
                                                           and min(var.shape) != 1):
                raise HotspotError(f"{path}: '{var.name}' has shape {var.shape}; expected a "
                                   f"vector of {self.num_raw} values (one per point of "
                                   f"{self.ts_file.name})")
            self.vectors[name] = (var, vscale)
        self.inputs = [self.ts_file, date_file, ll_file] + [v.path for v, _ in
                                                             self.vectors.values()]
        log(f"WabInSAR: {self.num_raw} points x {num_date} dates, unit {unit}; "
            f"{', '.join(self.vectors) or 'no per-point files'} loaded")
        self.attrs = {"GRID": "no", "PROCESSOR": "wabinsar", "SOURCE_FILE": str(self.ts_file),
                      "REF_DATE": self.dates[0], "START_DATE": self.dates[0],
                      "END_DATE": self.dates[-1]}

    def iter_blocks(self, max_memory):
        size = block_size(len(self.dates), max_memory, bytes_per_value=8, copies=4)
        for start in range(0, self.num_raw, size):
            stop = min(start + size, self.num_raw)
            disp = self.ts.read(self.ts_axis, start, stop).astype(np.float32)
            disp *= self.ts_scale
            ll = self.lonlat.read(self.ll_axis, start, stop)
            data = {"displacement": disp, "longitude": ll[:, 0].astype(np.float64),
                    "latitude": ll[:, 1].astype(np.float64)}
            for name, (var, scale) in self.vectors.items():
                values = var.read(0 if len(var.shape) == 1 else int(np.argmax(var.shape)),
                                  start, stop)
                data[name] = np.ravel(values).astype(np.float64) * scale
            yield Block(data)
