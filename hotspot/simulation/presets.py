"""What a simulated scene is made of: the scene presets, difficulties, hotspot catalogue and the
sensor constants.
"""
import math
from dataclasses import dataclass

from hotspot.utils.geo import EARTH_RADIUS_KM

TRUTH_LEVEL = 0.3            # truth footprint: bowl >= 30 % of its peak
MIN_TEMP_COH = 0.7           # MintPy's default mintpy.networkInversion.minTempCoh
WAVELENGTH = 0.05546576      # Sentinel-1 C band, m
ATMO_CORR_KM = 5.0
HEADING = -167.0             # Sentinel-1 descending track over Los Angeles
SEASON_PEAK_HOTSPOT = 0.27   # aquifer recharge: uplift peaks in early April
SEASON_PEAK_BACKGROUND = 0.60  # thermal / residual troposphere: peaks in August
KM_PER_DEG = math.pi / 180.0 * EARTH_RADIUS_KM

# Catalogue of hotspots: (behaviour, amplitude easy (m), amplitude hard (m), twin group).
# Twins share behaviour and amplitude; they are placed far apart.  For 'seasonal' the
# amplitude is that of the annual sinusoid; otherwise the change over the whole period.
CATALOGUE = [
    ("subsidence", -0.060, -0.020, 1),
    ("subsidence", -0.060, -0.020, 1),
    ("seasonal", 0.015, 0.005, 2),
    ("seasonal", 0.015, 0.005, 2),
    ("step", -0.040, -0.015, 0),
    ("creep", -0.060, -0.020, 0),
    ("uplift", 0.040, 0.012, 0),
    ("postseismic", -0.050, -0.015, 0),
    ("subsidence_seasonal", -0.040, -0.015, 0),
    ("transient", -0.040, -0.012, 0),
]


@dataclass(frozen=True)
class Preset:
    length: int
    width: int
    x_first: float          # degrees, west edge of the first column
    y_first: float          # degrees, north edge of the first row
    x_step: float
    y_step: float
    num_date: int
    start_date: str
    six_day: bool           # Sentinel-1A+B era with extra 6-day acquisitions
    num_hotspot: int        # the first entries of CATALOGUE
    radius_km: tuple        # range of the 30 % contour mean radius
    valid_fraction: float   # target fraction of mask-valid pixels


PRESETS = {
    # ~40 x 30 km at ~500 m: tests
    "small": Preset(60, 80, -118.40, 34.20, 0.0054, -0.0045, 60, "20170104", False, 6,
                    (1.3, 2.0), 0.85),
    # ~45 x 45 km at ~150 m: the quality / benchmark scene
    "medium": Preset(300, 300, -118.45, 34.20, 0.0016, -0.00135, 120, "20160105", False, 10,
                     (0.6, 2.0), 0.85),
    # ~111 x 100 km at ~55 m, ~3.04 million valid pixels: Los Angeles scale
    "la": Preset(1800, 2000, -118.70, 34.35, 0.0006, -0.0005, 247, "20150107", True, 10,
                 (0.5, 2.0), 3.04e6 / 3.6e6),
}

DIFFICULTIES = {
    # amplitude column of CATALOGUE, noise levels in metres
    "easy": dict(amp_col=1, atmo=0.0025, white=0.0015, ramp=0.001, ramp_trend=0.0005,
                 seasonal=0.0015, unwrap_per_1000km2=2.5, max_cycles=1),
    "hard": dict(amp_col=2, atmo=0.0045, white=0.003, ramp=0.004, ramp_trend=0.002,
                 seasonal=0.003, unwrap_per_1000km2=7.0, max_cycles=2),
}
