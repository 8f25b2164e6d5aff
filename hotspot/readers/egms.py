"""European Ground Motion Service (EGMS) point CSV, plain or zipped.

Layout of L2a / L2b: one row per point with latitude, longitude,
mean_velocity, mean_velocity_std (mm/yr), temporal_coherence,
incidence_angle (deg) among the leading columns, then one YYYYMMDD column
per epoch in mm.  L3 (ortho) files have easting / northing in EPSG:3035
instead of latitude / longitude; they are converted with pyproj.
The file is parsed in chunks (pandas chunksize) so a large burst stays
within mintpy.compute.maxMemory.
"""
import contextlib
import csv
import io
import zipfile
from pathlib import Path

import numpy as np

from hotspot.readers import Block, configured_unit, file_option, unit_scale, unused_keys
from hotspot.utils.errors import HotspotError
from hotspot.utils.stack import block_size, check_dates

# EGMS column -> stack dataset, and whether the value is a displacement rate to scale.
PIXEL_COLUMNS = {"mean_velocity": ("velocity", True),
                 "mean_velocity_std": ("velocityStd", True),
                 "temporal_coherence": ("coherence", False),
                 "incidence_angle": ("incidenceAngle", False)}
EGMS_CRS = "EPSG:3035"


def find_timeseries(workdir):
    """EGMS files in WORKDIR; only EGMS_* names, so exports such as hotspot.csv never match."""
    workdir = Path(workdir)
    return sorted(list(workdir.glob("EGMS_*.csv")) + list(workdir.glob("EGMS_*.zip")))


@contextlib.contextmanager
def open_csv_text(path):
    """Text stream of the CSV itself, or of the one CSV inside a zip archive."""
    path = Path(path)
    if path.suffix.lower() != ".zip":
        with open(path, newline="", encoding="utf-8") as stream:
            yield stream
        return
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise HotspotError(f"{path}: not a readable zip archive ({exc})") from None
    with archive:
        members = [m for m in archive.namelist() if m.lower().endswith(".csv")]
        if len(members) != 1:
            raise HotspotError(f"{path}: expected exactly one .csv inside the zip archive, found "
                               f"{len(members)} ({', '.join(members[:5]) or 'none'})")
        with archive.open(members[0]) as raw:
            yield io.TextIOWrapper(raw, encoding="utf-8", newline="")


def is_date_column(name):
    return len(name) == 8 and name.isdigit()


class EgmsReader:
    processor = "egms"

    def __init__(self, config, workdir, log=print):
        self.log = log
        workdir = Path(workdir)
        unused_keys(config, ("velocityFile", "velocityStdFile", "geometryFile", "coherenceFile",
                             "maskFile", "lonLatFile", "incidenceAngleFile", "dateFile"),
                    "EGMS", log)
        found = find_timeseries(workdir)
        if config.is_auto("hotspot.load.timeseriesFile") and len(found) > 1:
            raise HotspotError(f"hotspot.load.timeseriesFile = auto: several EGMS files in "
                               f"{workdir} ({', '.join(p.name for p in found)}); name one")
        self.path = file_option(config, "timeseriesFile", workdir, found, required=True,
                                what="EGMS point file (EGMS_*.csv or .zip)")
        self.header = self._read_header()
        self.date_columns = [c for c in self.header if is_date_column(c)]
        check_dates(self.date_columns, f"{self.path}: date columns")
        self.dates = list(self.date_columns)
        if {"latitude", "longitude"} <= set(self.header):
            self.position = ("latitude", "longitude")
        elif {"easting", "northing"} <= set(self.header):
            self.position = ("easting", "northing")
        else:
            raise HotspotError(f"{self.path}: columns 'latitude' and 'longitude' (or L3 'easting' "
                               f"and 'northing') not found; columns present: "
                               f"{', '.join(c for c in self.header if not is_date_column(c))}")
        self.pixel_columns = [c for c in PIXEL_COLUMNS if c in self.header]
        self.scale = unit_scale(configured_unit(config) or "mm", "hotspot.load.unit")
        self.inputs = [self.path]
        self.num_raw = None
        log(f"EGMS: {self.path.name}, {len(self.dates)} dates "
            f"({self.dates[0]} - {self.dates[-1]}), columns used: "
            f"{', '.join(self.position + tuple(self.pixel_columns))}")
        self.attrs = {"GRID": "no", "PROCESSOR": "egms", "SOURCE_FILE": str(self.path),
                      "REF_DATE": self.dates[0], "START_DATE": self.dates[0],
                      "END_DATE": self.dates[-1]}

    def _read_header(self):
        if not self.path.is_file():
            raise HotspotError(f"{self.path}: file not found")
        try:
            with open_csv_text(self.path) as stream:
                header = next(csv.reader(stream), [])
        except (UnicodeDecodeError, csv.Error, OSError, zipfile.BadZipFile) as exc:
            raise HotspotError(f"{self.path}: cannot read the CSV header ({exc})") from None
        header = [h.strip() for h in header]
        dup = sorted({h for h in header if header.count(h) > 1})
        if dup:
            raise HotspotError(f"{self.path}: duplicated column(s) {', '.join(dup[:5])}; "
                               "expected one column per date")
        return header

    def _lat_lon(self, chunk):
        """Latitude, longitude of a chunk (from EPSG:3035 easting / northing for L3)."""
        first, second = (chunk[c].to_numpy(dtype=np.float64) for c in self.position)
        if self.position == ("latitude", "longitude"):
            return first, second
        from pyproj import Transformer
        lon, lat = Transformer.from_crs(EGMS_CRS, "EPSG:4326", always_xy=True).transform(first,
                                                                                         second)
        return lat, lon

    def iter_blocks(self, max_memory):
        import pandas as pd
        size = block_size(len(self.dates), max_memory, bytes_per_value=8, copies=8)
        columns = list(self.position) + self.pixel_columns + self.date_columns
        # the header's last column tells a row cut short (pandas pads it with NaN)
        last = self.header[-1]
        if last not in columns:
            columns.append(last)
        read = 0
        with open_csv_text(self.path) as stream:
            try:
                reader = pd.read_csv(stream, usecols=columns, dtype=np.float64, chunksize=size)
                for chunk in reader:
                    self._check_complete(chunk, read)
                    read += len(chunk)
                    yield self._block(chunk)
                    if read > size:
                        self.log(f"  EGMS: {read} points read")
            except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
                raise HotspotError(f"{self.path}: cannot parse the CSV after {read} points "
                                   f"({exc}); expected numeric values") from None

    def _check_complete(self, chunk, num_before):
        """A row whose fields stop before the header's last column is an error naming it:
        a truncated file (an interrupted download) would otherwise lose its last points
        silently as 'NaN in displacement'."""
        missing = chunk[self.header[-1]].isna().to_numpy()
        if not missing.any():
            return
        row = num_before + int(np.argmax(missing)) + 1
        raise HotspotError(f"{self.path}: data row {row} (line {row + 1}) has no value in the "
                           f"last column '{self.header[-1]}'; the file may be truncated or the "
                           f"row cut short: expected {len(self.header)} values per row")

    def _block(self, chunk):
        disp = chunk[self.date_columns].to_numpy(dtype=np.float32)
        disp *= self.scale
        lat, lon = self._lat_lon(chunk)
        data = {"displacement": disp, "latitude": np.asarray(lat, dtype=np.float64),
                "longitude": np.asarray(lon, dtype=np.float64)}
        for column in self.pixel_columns:
            name, is_rate = PIXEL_COLUMNS[column]
            values = chunk[column].to_numpy(dtype=np.float64)
            data[name] = values * self.scale if is_rate else values
        return Block(data)
