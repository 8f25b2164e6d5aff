"""MintPy products: timeseries*.h5 + velocity.h5 + geometry + temporalCoherence.h5 + mask.

Pixels are read in blocks of raster rows, so the memory used is one block of
the time series whatever the scene size; output order is the row-major order
of the unmasked pixels.
"""
from pathlib import Path

import numpy as np

from hotspot.readers import KEY, Block, configured_unit, file_option, unit_scale, unused_keys
from hotspot.utils.errors import HotspotError
from hotspot.utils.h5io import open_h5, require_dataset
from hotspot.utils.stack import block_size, check_dates

# Attributes of timeseries.h5 that describe that file, not the grid; the stack sets its own.
_NOT_COPIED = {"FILE_TYPE", "UNIT", "DATA_TYPE", "NUM_PIXEL", "NUM_DATE", "REF_DATE",
               "START_DATE", "END_DATE", "FILE_PATH", "PROCESSOR_HOTSPOT"}
# A block's raw read and its pixel-major copy, plus load_data's temporaries and cache.
_BLOCK_COPIES = 6


def find_timeseries(workdir):
    """MintPy time-series files in WORKDIR, the most corrected first.

    smallbaselineApp appends one suffix per correction (timeseries_ERA5_ramp_demErr.h5),
    so the longest name is the last product of the chain.
    """
    workdir = Path(workdir)
    files = [p for p in workdir.glob("timeseries*.h5")
             if p.name == "timeseries.h5" or p.name.startswith("timeseries_")]
    return sorted(files, key=lambda p: (-len(p.stem), p.name))


def _read(path, name, box):
    """readfile.read of one dataset block, with errors naming the file."""
    from mintpy.utils import readfile
    try:
        return readfile.read(str(path), datasetName=name, box=box, print_msg=False)[0]
    except (OSError, KeyError, ValueError, IndexError) as exc:
        raise HotspotError(f"{path}: cannot read dataset '{name}' rows {box[1]}-{box[3]} "
                           f"({exc}); the file may be corrupt") from None


def _read_attrs(path):
    from mintpy.utils import readfile
    try:
        return readfile.read_attribute(str(path))
    except (OSError, KeyError, ValueError) as exc:
        raise HotspotError(f"{path}: cannot read the MintPy attributes ({exc})") from None


class MintpyReader:
    processor = "mintpy"

    def __init__(self, config, workdir, log=print):
        self.log = log
        found = find_timeseries(workdir)
        self.ts_file = file_option(config, "timeseriesFile", workdir,
                                   found[:1] or [Path(workdir) / "timeseries.h5"], required=True,
                                   what="MintPy time series (timeseries*.h5)")
        unused_keys(config, ("lonLatFile", "incidenceAngleFile", "dateFile"), "MintPy", log)
        if config.is_auto(KEY + "timeseriesFile") and len(found) > 1:
            log(f"timeseries file: {self.ts_file.name} (most corrected of "
                f"{', '.join(p.name for p in found)}; set {KEY}timeseriesFile to choose)")
        self._check_timeseries()
        geocoded = "Y_FIRST" in self.meta
        self.shape = (int(self.meta["LENGTH"]), int(self.meta["WIDTH"]))

        prefix = "geo_" if self.ts_file.name.startswith("geo_") else ""
        dirs = list(dict.fromkeys([self.ts_file.parent, Path(workdir)]))

        def cands(*names):
            return [d / sub / (prefix + n) for d in dirs for sub in ("inputs", ".") for n in names]

        if geocoded:
            # geo/geo_geometryRadar.h5 is what geocode.py makes of geometryRadar.h5
            geom_cands = cands("geometryGeo.h5") + [self.ts_file.parent / "geo_geometryRadar.h5"]
        else:
            geom_cands = cands("geometryRadar.h5")
        self.geom_file = file_option(config, "geometryFile", workdir, geom_cands,
                                     required=not geocoded,
                                     what="geometry file with latitude / longitude "
                                          "(radar-coded time series)")
        self.vel_file = file_option(config, "velocityFile", workdir, cands("velocity.h5"),
                                    what="MintPy velocity file")
        self.coh_file = file_option(config, "coherenceFile", workdir,
                                    cands("temporalCoherence.h5"), what="coherence file")
        self.mask_file = file_option(config, "maskFile", workdir, cands("maskTempCoh.h5"),
                                     what="mask file")
        std_value = config.get_str(KEY + "velocityStdFile").lower()
        if std_value == "auto":
            self.std_file = self.vel_file
        else:
            self.std_file = file_option(config, "velocityStdFile", workdir,
                                        what="file with a 'velocityStd' dataset")

        unit = configured_unit(config)
        self.scale = unit_scale(unit or self.meta.get("UNIT", "m"), self.ts_file)
        self.datasets = self._check_pixel_files(geocoded, unit)
        if not geocoded:
            missing = [n for n in ("latitude", "longitude") if n not in self.datasets]
            if missing:
                raise HotspotError(f"{self.geom_file}: dataset(s) {', '.join(missing)} not found; "
                                   "a radar-coded time series needs latitude / longitude from "
                                   "geometryRadar.h5")
        self.inputs = [p for p in (self.ts_file, self.geom_file, self.vel_file, self.std_file,
                                   self.coh_file, self.mask_file) if p is not None]
        self.inputs = list(dict.fromkeys(self.inputs))
        for name, path in (("geometry", self.geom_file), ("velocity", self.vel_file),
                           ("coherence", self.coh_file), ("mask", self.mask_file)):
            log(f"{name + ' file:':16s}{path if path else 'none'}")
        self.attrs = {k: v for k, v in self.meta.items() if k not in _NOT_COPIED}
        self.attrs.update({"GRID": "yes", "PROCESSOR": "mintpy", "SOURCE_FILE": str(self.ts_file),
                           "REF_DATE": self.dates[0], "START_DATE": self.dates[0],
                           "END_DATE": self.dates[-1]})
        self.num_raw = self.shape[0] * self.shape[1]

    def _check_timeseries(self):
        path = self.ts_file
        with open_h5(path) as f:
            dset = require_dataset(f, "timeseries", path)
            dates = [d.decode() if isinstance(d, bytes) else str(d)
                     for d in require_dataset(f, "date", path)[:]]
            ts_shape = dset.shape
        self.meta = _read_attrs(path)
        check_dates(dates, f"{path}: dataset 'date'")
        if len(ts_shape) != 3 or ts_shape[0] != len(dates):
            raise HotspotError(f"{path}: dataset 'timeseries' has shape {ts_shape}; expected "
                               f"(num_date={len(dates)}, LENGTH, WIDTH)")
        for key in ("LENGTH", "WIDTH"):
            if key not in self.meta:
                raise HotspotError(f"{path}: attribute {key} missing; not a MintPy time series")
        expected = (int(self.meta["LENGTH"]), int(self.meta["WIDTH"]))
        if ts_shape[1:] != expected:
            raise HotspotError(f"{path}: dataset 'timeseries' is {ts_shape[1:]} but LENGTH, WIDTH "
                               f"attributes say {expected}")
        self.dates = dates

    def _dataset_name(self, path, names, fallback_single=False):
        """First of `names` in the file (or its only 2D dataset); None if absent."""
        with open_h5(path) as f:
            present = [n for n in names if n in f]
            if present:
                name = present[0]
            else:
                two_d = [k for k in f if getattr(f[k], "ndim", 0) == 2]
                if not (fallback_single and len(two_d) == 1):
                    return None
                name = two_d[0]
            shape = f[name].shape
        if shape != self.shape:
            raise HotspotError(f"{path}: dataset '{name}' is {shape}; expected {self.shape} "
                               f"(LENGTH, WIDTH of {self.ts_file.name})")
        return name

    def _require_name(self, path, names, fallback_single=False):
        name = self._dataset_name(path, names, fallback_single)
        if name is None:
            with open_h5(path) as f:
                have = ", ".join(sorted(f.keys())) or "none"
            raise HotspotError(f"{path}: dataset '{names[0]}' not found (datasets present: {have})")
        return name

    def _check_pixel_files(self, geocoded, unit):
        """{output name: (file, dataset, scale)} of every per-pixel raster to read."""
        out = {}
        if self.geom_file is not None:
            for name in ("latitude", "longitude", "incidenceAngle"):
                ds = self._dataset_name(self.geom_file, [name])
                if ds is not None and not (geocoded and name != "incidenceAngle"):
                    out[name] = (self.geom_file, ds, 1.0)
        if self.vel_file is not None:
            ds = self._require_name(self.vel_file, ["velocity"])
            scale = unit_scale(unit or _read_attrs(self.vel_file).get("UNIT", "m"), self.vel_file)
            out["velocity"] = (self.vel_file, ds, scale)
        if self.std_file is not None:
            explicit = self.std_file != self.vel_file
            ds = (self._require_name(self.std_file, ["velocityStd"]) if explicit
                  else self._dataset_name(self.std_file, ["velocityStd"]))
            if ds is not None:
                scale = unit_scale(unit or _read_attrs(self.std_file).get("UNIT", "m"),
                                   self.std_file)
                out["velocityStd"] = (self.std_file, ds, scale)
        if self.coh_file is not None:
            out["coherence"] = (self.coh_file, self._require_name(
                self.coh_file, ["temporalCoherence", "coherence"], fallback_single=True), 1.0)
        if self.mask_file is not None:
            self.mask_name = self._require_name(self.mask_file, ["mask"], fallback_single=True)
        return out

    def _read_series(self, y0, y1, keep):
        """Pixel-major (k x T) float32 series of rows y0:y1, only pixels `keep` (None: all).

        h5py slicing rather than readfile.read, whose boolean date selection copies the
        whole block once more; at most two copies of a block are alive here.
        """
        try:
            with open_h5(self.ts_file) as f:
                ts = f["timeseries"][:, y0:y1, :]
        except OSError as exc:
            raise HotspotError(f"{self.ts_file}: cannot read dataset 'timeseries' rows {y0}-{y1} "
                               f"({exc}); the file may be corrupt") from None
        flat = ts.reshape(ts.shape[0], -1)
        if keep is not None:
            flat = flat[:, keep]
            del ts
        disp = np.ascontiguousarray(flat.T, dtype=np.float32)
        del flat
        if self.scale != 1.0:
            disp *= self.scale
        return disp

    def row_blocks(self, max_memory):
        """(y0, y1) row ranges of about block_size pixels each."""
        length, width = self.shape
        rows = max(1, block_size(len(self.dates), max_memory, copies=_BLOCK_COPIES) // width)
        return [(y0, min(y0 + rows, length)) for y0 in range(0, length, rows)]

    def iter_blocks(self, max_memory):
        from mintpy.utils import utils as ut
        width = self.shape[1]
        for y0, y1 in self.row_blocks(max_memory):
            box = (0, y0, width, y1)
            if self.mask_file is not None:
                keep = _read(self.mask_file, self.mask_name, box) != 0
            else:
                keep = np.ones((y1 - y0, width), dtype=bool)
            rr, cc = np.nonzero(keep)
            disp = self._read_series(y0, y1, None if rr.size == keep.size else keep.ravel())
            data = {"displacement": disp, "row": rr + y0, "col": cc}
            if "latitude" in self.datasets:
                geom = str(self.geom_file)
            else:
                geom = None
            try:
                lat, lon = ut.get_lat_lon(self.meta, geom_file=geom, box=box)
            except (OSError, KeyError, ValueError) as exc:
                raise HotspotError(f"{geom or self.ts_file}: cannot get latitude / longitude "
                                   f"({exc})") from None
            data["latitude"], data["longitude"] = lat[rr, cc], lon[rr, cc]
            for name, (path, ds, scale) in self.datasets.items():
                if name in ("latitude", "longitude"):
                    continue
                data[name] = _read(path, ds, box)[rr, cc].astype(np.float64) * scale
            yield Block(data, num_masked=int(keep.size - rr.size))
