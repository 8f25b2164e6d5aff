"""What the figure functions read: work-directory files, loaded lazily and once."""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hotspot import products
from hotspot.plots.common import M_TO_MM, read_geometry
from hotspot.utils.errors import HotspotError
from hotspot.utils.labels import read_pixel_label
from hotspot.utils.stack import STACK_FILE, read_info, read_pixels

COVARIOGRAM_FILE = products.COVARIOGRAM
TSKM_FILE = products.TSKM
DBSCAN_FILE = products.DBSCAN
TRAIN_FILE = products.TRAIN
LSTM_FILE = products.LSTM
LSTMP_FILE = products.LSTMP
DISPERSION_FILE = products.DISPERSION
HOTSPOT_FILE = products.HOTSPOT
INPUT_FILES = (STACK_FILE, COVARIOGRAM_FILE, TSKM_FILE, DBSCAN_FILE, TRAIN_FILE, LSTM_FILE,
               LSTMP_FILE, DISPERSION_FILE, HOTSPOT_FILE)


@dataclass
class PlotData:
    """Shared, cached access to the step outputs a figure needs."""
    workdir: Path
    dpi: int = 150
    seed: int = 0
    max_memory: float = 4.0
    log: object = print
    _cache: dict = field(default_factory=dict, repr=False)

    def path(self, name):
        return Path(self.workdir) / name

    @property
    def stack_file(self):
        return self.path(STACK_FILE)

    @property
    def info(self):
        if "info" not in self._cache:
            self._cache["info"] = read_info(self.stack_file)
        return self._cache["info"]

    @property
    def geometry(self):
        if "geom" not in self._cache:
            self._cache["geom"] = read_geometry(self.stack_file, seed=self.seed)
        return self._cache["geom"]

    @property
    def velocity_mm(self):
        """Per-pixel velocity in mm/yr (N floats: small enough to hold)."""
        if "vel" not in self._cache:
            vel = read_pixels(self.stack_file, ["velocity"])["velocity"]
            self._cache["vel"] = vel.astype(np.float32) * M_TO_MM
        return self._cache["vel"]

    @property
    def hotspot_polygons(self):
        """{hotspot id: lon/lat polygon} as hotspot.steps.export draws them for the GIS files."""
        if "polygons" not in self._cache:
            from hotspot.steps.export import grid_georef, hotspot_polygons
            geom = self.geometry
            self._cache["polygons"] = hotspot_polygons(
                self.pixel_label(HOTSPOT_FILE), geom.lon, geom.lat, geom.row, geom.col,
                grid_georef(self.info.attrs))
        return self._cache["polygons"]

    def pixel_label(self, name):
        key = f"label:{name}"
        if key not in self._cache:
            labels = read_pixel_label(self.path(name))
            if labels.shape[0] != self.info.num_pixel:
                raise HotspotError(f"{self.path(name)}: pixelLabel has {labels.shape[0]} values "
                                   f"but {self.stack_file.name} has {self.info.num_pixel} pixels; "
                                   "the file is from another stack: re-run the step that wrote it")
            self._cache[key] = labels
        return self._cache[key]
