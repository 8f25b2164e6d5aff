"""A randomized family of simulated InSAR scenes (issue 12): every parameter drawn per seed.

hotspot.simulation.scene writes a few fixed scene designs; the dispersion rules were fitted on them.
This module draws every nuisance and hotspot parameter from the ranges declared in RANGES
(and SIZES for the scene size), so that detection can be tuned on some seeds and measured on
others it never saw (docs/quality.md, "Scene family (issue 12)"):

    draw_parameters(seed, size="medium", null=False)   the drawn parameters (a dict, no I/O)
    simulate_family(outdir, seed, ...)                  the MintPy files + hotspotTruth.h5

Seed protocol: seeds < HELD_OUT_SEED tune, seeds >= HELD_OUT_SEED are held out.

Scene model, for each pixel and epoch (LOS, metres), all on a regular grid of ground
spacing dy x dx km (rows x columns):
  hotspots     profile(rho) x signal(t): profile 'gaussian' exp(-rho^2 / 2) cut at rho = 3,
               'cosine' 0.5 (1 + cos(pi rho)) for rho < 1, or 'plateau' (1 up to rho = p,
               then a raised-cosine taper to 0 at rho = 1); rho is the elliptical radius of
               an ellipse of aspect ratio 1-3 rotated by a random azimuth.  The size is the
               equivalent diameter 2 sqrt(a b) of the truth contour (the profile at
               TRUTH_LEVEL = 30 % of its peak).  signal(t) is one of SIGNALS (or a
               combination of two), scaled so that its peak max_t |s(t) - s(t0)| (the
               displacement relative to the first date, at the hotspot centre) is the drawn
               peak, 3-30 mm, subsidence (negative) in 70 % of the hotspots.
  turbulence   a new power-law field each epoch, 2-D power spectrum (1 + (k L)^2)^(-beta / 2)
               with scene-drawn slope beta and outer scale L; per-epoch std = scene level x
               Gamma(4, 1/4).
  troposphere  stratified: K(t) x (height - height of the reference pixel), with a per-epoch
               coefficient K(t) ~ N(0, k) mm/km and a random fractal DEM (power-law
               spectrum, slope 4) of drawn relief.
  seasonal     a background annual cosine whose amplitude varies in space (x (1 + 0.6 f),
               f a smooth 10 km field, clipped to [0, 2]), one phase per scene.
  ramps        a random plane per epoch of drawn spatial std, plus a slow drift.
  white noise  per pixel, from the temporal coherence (as hotspot.simulation.scene).
  unwrapping   connected patches (irregular blobs) and scattered single pixels that jump by
               n x lambda / 2 (n = +-1 or +-2) over an interval of epochs.
Pixel density: 'urban' (dense), 'mixed', 'vegetated' (scattered coherent pixels) set the
fraction and arrangement of pixels with temporal coherence >= 0.7 (the mask), plus holes
(connected masked areas: water, fields).  Geometry: 'geo' (a lat/lon grid,
inputs/geometryGeo.h5) or 'radar' (rows along a descending track, inputs/geometryRadar.h5
with latitude / longitude).  Sampling: regular 6 or 12 days, or irregular (6 / 12 / 24-day
revisits), with 0-2 gaps of months; ~3 % acquisitions missed.

Noise level (written to the truth as noiseLevel, metres; scene attribute
family.noiseLevelMm): the root mean square over the epochs of each epoch's turbulence
standard deviation, i.e. the per-epoch random noise a hotspot has to stand out of.  A
hotspot is 'eligible' when its peak signal >= ELIGIBLE_SNR (3) x the noise level.  The
whole nuisance (turbulence + troposphere + seasonal background + ramp + pixel noise, no
hotspot or unwrapping error) is recorded too, as family.nuisanceStdMm: the RMS over the
epochs of its spatial std over the measured pixels.  It is not the noise level because its
long-wavelength parts (ramps, a 10-km seasonal pattern) hardly hide a hotspot of a few km,
yet they would raise the bar to 3 x 6-14 mm: 18 % of the hotspots of seeds 0-19 eligible
(24 of 131), none in 12 of the 20 scenes; with the turbulence 33 % (43 of 131), none in 4.

hotspotTruth.h5 has the layout of hotspot.simulation.scene's (hotspot_score.py reads it), with
twinGroup all 0, 'behaviour' = the signal type, 'amplitude' = the signed peak, and per
hotspot: shape, aspectRatio, sizeKm, peakSignal (m, > 0), eligible (0/1); noiseLevel (m);
the drawn parameters as JSON in the root attribute family.parameters.

Randomness: each component draws from its own numpy Generator seeded with
(seed, FAMILY_KEY, component), so the same seed writes identical files, and a null scene
(null=True) has the parameters, mask and random fields of the scene of the same seed, without
its hotspots (the reference pixel and the unwrapping-error patches, which keep away from
hotspots, may lie elsewhere).
"""
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hotspot import products
from hotspot.simulation.fields import (FieldGenerator, Grid, choose_reference, rasterise_hotspots,
                                       scene_attributes, truth_labels, unwrap_patches)
from hotspot.simulation.presets import (KM_PER_DEG, MIN_TEMP_COH, TRUTH_LEVEL, WAVELENGTH,
                                        Preset)
from hotspot.simulation.mintpy_writer import write_mintpy_scene
from hotspot.utils.errors import HotspotError
from hotspot.utils.h5io import write_h5

HELD_OUT_SEED = 1000         # seeds >= this are the held-out test set
ELIGIBLE_SNR = 3.0           # eligible hotspot: peak >= 3 x noise level
FAMILY_KEY = 12              # random stream namespace (issue 12), apart from hotspot.simulation.scene's

SHAPES = ("gaussian", "cosine", "plateau")
SIGNALS = ("linear", "seasonal", "step", "decay", "acceleration", "pulse", "combination")
BASE_SIGNALS = SIGNALS[:-1]
DENSITIES = ("urban", "mixed", "vegetated")
SAMPLINGS = ("regular6", "regular12", "irregular")
GEOMETRIES = ("geo", "radar")

# Declared ranges: (low, high) drawn uniformly unless noted; tuples of names are drawn
# uniformly among the names.  The same table is in docs/quality.md.
RANGES = {
    # layout
    "pixel_km": (0.05, 0.12),              # ground spacing of rows and of columns, each drawn
    "grid_aspect": (0.7, 1.4),             # WIDTH / LENGTH
    "geometry": GEOMETRIES,
    "density": DENSITIES,
    "valid_fraction": {"urban": (0.85, 0.97), "mixed": (0.6, 0.85), "vegetated": (0.3, 0.6)},
    "hole_fraction": (0.0, 0.15),          # of the grid, connected masked areas
    "sampling": SAMPLINGS,
    "num_gap": (0, 2),                     # integer
    "gap_days": (60, 180),
    "start_year": (2015, 2020),            # integer
    "lat0": (-60.0, 60.0),                 # first pixel's latitude
    "lon0": (-180.0, 180.0),               # first pixel's longitude, clipped at 178
    # hotspots
    "shape": SHAPES,
    "plateau_fraction": (0.3, 0.7),        # rho where the plateau ends
    "aspect": (1.0, 3.0),                  # log-uniform
    "size_km": (0.3, 6.0),                 # log-uniform, truth-contour equivalent diameter
    "signal": SIGNALS,
    "peak_mm": (3.0, 30.0),                # log-uniform
    "subsidence_probability": 0.7,
    # signal timing, as fractions of the time span (tau_yr in years)
    "step_at": (0.2, 0.8),
    "decay_onset": (0.1, 0.6), "decay_tau_yr": (0.1, 1.0),
    "accel_power": (2.0, 4.0),
    "pulse_center": (0.25, 0.75), "pulse_width": (0.03, 0.15),
    "season_phase": (0.0, 1.0),            # fraction of a year
    "combination_weight": (0.3, 1.0),      # weight of the second component
    # nuisances
    "turbulence_mm": (2.0, 8.0),
    "turbulence_slope": (2.0, 3.7),        # beta of the 2-D power spectrum k^-beta
    "turbulence_km": (2.0, 12.0),          # outer scale L
    "relief_m": (50.0, 1000.0),
    "base_height_m": (0.0, 500.0),
    "strat_mm_per_km": (0.0, 6.0),         # std of the per-epoch coefficient K(t)
    "season_bg_mm": (0.0, 5.0),
    "ramp_mm": (0.0, 6.0),
    "ramp_drift_mm_per_yr": (0.0, 2.0),
    "white_mm": (1.0, 3.0),
    "unwrap_patch_per_1000km2": (0.0, 15.0),
    "unwrap_patch_km": (0.2, 1.5),         # patch radius
    "unwrap_scatter_fraction": (0.0, 0.005),   # of the measured pixels
    "unwrap_cycles": (1, 2),               # integer, n of n x lambda / 2, random sign
}


@dataclass(frozen=True)
class Size:
    valid_pixel: tuple      # target number of measured pixels (low, high)
    num_date: tuple         # integer range
    num_hotspot: tuple      # integer range
    size_km: tuple          # hotspot size range (within RANGES['size_km'])
    min_pixel: int          # fewest measured pixels in a truth footprint


SIZES = {
    # tests: a few thousand pixels, a few dozen epochs
    "small": Size((2500, 5000), (24, 40), (1, 3), (0.3, 1.5), 8),
    # the benchmark scene: ~2-3 min of load_data -> dbscan + dispersion on 2 cores
    "medium": Size((60000, 150000), (100, 150), (3, 10), RANGES["size_km"], 12),
}

# random stream ids of the components
(_S_LAYOUT, _S_DATES, _S_HOTSPOT, _S_NOISE, _S_COH, _S_DEM, _S_PLACE, _S_UNWRAP, _S_REF,
 _S_BPERP, _S_SEASON) = range(1, 12)
_S_EPOCH = 100


def _rng(seed, *key):
    return np.random.default_rng([int(seed), FAMILY_KEY, *key])


def _uniform(rng, name):
    lo, hi = RANGES[name]
    return float(rng.uniform(lo, hi))


def _log_uniform(rng, lo, hi):
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _integer(rng, lo, hi):
    return int(rng.integers(lo, hi + 1))


def _choice(rng, names):
    return str(names[int(rng.integers(len(names)))])


# ---------------------------------------------------------------- parameters

def _signal_parameters(rng, kind):
    """Timing parameters of one base signal (fractions of the span, years for tau)."""
    if kind == "step":
        return {"at": _uniform(rng, "step_at")}
    if kind == "decay":
        return {"onset": _uniform(rng, "decay_onset"), "tau_yr": _uniform(rng, "decay_tau_yr")}
    if kind == "acceleration":
        return {"power": _uniform(rng, "accel_power")}
    if kind == "pulse":
        return {"center": _uniform(rng, "pulse_center"), "width": _uniform(rng, "pulse_width")}
    if kind == "seasonal":
        return {"phase": _uniform(rng, "season_phase")}
    return {}


def _draw_hotspot(rng, size):
    shape = _choice(rng, SHAPES)
    signal = _choice(rng, SIGNALS)
    if signal == "combination":
        first, second = rng.choice(len(BASE_SIGNALS), size=2, replace=False)
        parts = [{"kind": BASE_SIGNALS[int(first)], "weight": 1.0},
                 {"kind": BASE_SIGNALS[int(second)],
                  "weight": _uniform(rng, "combination_weight")}]
    else:
        parts = [{"kind": signal, "weight": 1.0}]
    for part in parts:
        part.update(_signal_parameters(rng, part["kind"]))
    return {
        "shape": shape,
        "plateau_fraction": _uniform(rng, "plateau_fraction") if shape == "plateau" else None,
        "aspect": _log_uniform(rng, *RANGES["aspect"]),
        "azimuth_deg": float(rng.uniform(0, 180)),
        "size_km": _log_uniform(rng, *size.size_km),
        "signal": signal,
        "components": parts,
        "peak_mm": _log_uniform(rng, *RANGES["peak_mm"]),
        "sign": -1 if rng.random() < RANGES["subsidence_probability"] else 1,
    }


def draw_parameters(seed, size="medium", null=False, geometry=None):
    """Every drawn parameter of family scene `seed` (a JSON-serialisable dict, no I/O).

    geometry: 'geo' / 'radar' to override the drawn one.  Hotspot positions are drawn when
    the scene is built (they depend on the mask); a hotspot that finds no room is dropped.
    """
    if size not in SIZES:
        raise HotspotError(f"family: size = {size!r}; expected one of {', '.join(SIZES)}")
    if int(seed) < 0:
        raise HotspotError(f"family: seed = {seed}; expected an integer >= 0")
    if geometry is not None and geometry not in GEOMETRIES:
        raise HotspotError(f"family: geometry = {geometry!r}; expected geo or radar")
    sz = SIZES[size]
    rng = _rng(seed, _S_LAYOUT)
    density = _choice(rng, DENSITIES)
    layout = {
        "valid_pixel": _integer(rng, *sz.valid_pixel),
        "dy_km": _uniform(rng, "pixel_km"), "dx_km": _uniform(rng, "pixel_km"),
        "grid_aspect": _uniform(rng, "grid_aspect"),
        "geometry": _choice(rng, GEOMETRIES),
        "density": density,
        "valid_fraction": float(rng.uniform(*RANGES["valid_fraction"][density])),
        "hole_fraction": _uniform(rng, "hole_fraction"),
        # the scene (< 1 deg wide) must not cross the antimeridian
        "lat0": _uniform(rng, "lat0"), "lon0": min(_uniform(rng, "lon0"), 178.0),
    }
    if geometry is not None:
        layout["geometry"] = geometry
    rng = _rng(seed, _S_DATES)
    sampling = {
        "num_date": _integer(rng, *sz.num_date),
        "sampling": _choice(rng, SAMPLINGS),
        "num_gap": _integer(rng, *RANGES["num_gap"]),
        "start_year": _integer(rng, *RANGES["start_year"]),
    }
    sampling["gap_days"] = [_integer(rng, *RANGES["gap_days"])
                            for _ in range(sampling["num_gap"])]
    rng = _rng(seed, _S_NOISE)
    noise = {name: _uniform(rng, name) for name in (
        "turbulence_mm", "turbulence_slope", "turbulence_km", "relief_m", "base_height_m",
        "strat_mm_per_km", "season_bg_mm", "ramp_mm", "ramp_drift_mm_per_yr", "white_mm",
        "unwrap_patch_per_1000km2", "unwrap_scatter_fraction")}
    noise["season_bg_phase"] = _uniform(rng, "season_phase")
    rng = _rng(seed, _S_HOTSPOT)
    num_hotspot = 0 if null else _integer(rng, *sz.num_hotspot)
    hotspots = [_draw_hotspot(rng, sz) for _ in range(num_hotspot)]
    return {"seed": int(seed), "size": size, "null": bool(null), "layout": layout,
            "sampling": sampling, "noise": noise, "hotspots": hotspots}


# ---------------------------------------------------------------- dates and signals

def make_family_dates(sampling, rng):
    """YYYYMMDD dates: regular 6 / 12-day or irregular 6 / 12 / 24-day revisits, gaps of
    months at random places, ~3 % of the acquisitions missed."""
    from datetime import datetime, timedelta
    n = sampling["num_date"]
    kind = sampling["sampling"]
    if kind == "regular6":
        steps = np.full(n - 1, 6)
    elif kind == "regular12":
        steps = np.full(n - 1, 12)
    else:
        steps = rng.choice([6, 12, 24], size=n - 1, p=[0.3, 0.5, 0.2])
    steps = steps * (1 + (rng.random(n - 1) < 0.03))           # missed acquisitions
    for gap in sampling["gap_days"]:
        steps[int(rng.integers(n // 10, n - n // 10))] = gap
    start = datetime(sampling["start_year"], 1, 1) + timedelta(days=int(rng.integers(0, 365)))
    days = np.concatenate([[0], np.cumsum(steps)])
    return [(start + timedelta(days=int(d))).strftime("%Y%m%d") for d in days]


def _base_signal(part, years):
    t = years - years[0]
    span = max(float(t[-1]), 1e-6)
    kind = part["kind"]
    if kind == "linear":
        return t / span
    if kind == "seasonal":
        return np.cos(2 * np.pi * (years - part["phase"]))
    if kind == "step":
        return (t >= part["at"] * span).astype(np.float64)
    if kind == "decay":
        dt = np.clip(t - part["onset"] * span, 0, None)
        return np.where(t >= part["onset"] * span, 1 - np.exp(-dt / part["tau_yr"]), 0.0)
    if kind == "acceleration":
        return (t / span) ** part["power"]
    if kind == "pulse":
        return np.exp(-0.5 * ((t / span - part["center"]) / part["width"]) ** 2)
    raise ValueError(f"unknown signal {kind}")


def signal_series(hotspot, years):
    """Signed signal at the hotspot centre (m), referenced to the first date, whose peak
    max_t |s(t) - s(t0)| is peak_mm."""
    years = np.asarray(years, dtype=np.float64)
    g = sum(p["weight"] * _base_signal(p, years) for p in hotspot["components"])
    g = g - g[0]
    top = float(np.abs(g).max())
    if top > 0:
        g = g / top
    return hotspot["sign"] * hotspot["peak_mm"] * 1e-3 * g


# ---------------------------------------------------------------- grids and fields

class PowerLawField(FieldGenerator):
    """FieldGenerator with a chosen slope: 2-D power spectrum (1 + (k L)^2)^(-beta / 2).

    The padding against FFT wrap-around is 4 L capped at the scene size, so a long outer
    scale does not blow up the FFT grid.
    """

    def __init__(self, shape, dy_km, dx_km, corr_km, beta):
        from scipy import fft
        self.shape = shape
        pad_y = min(int(math.ceil(4 * corr_km / dy_km)), shape[0])
        pad_x = min(int(math.ceil(4 * corr_km / dx_km)), shape[1])
        self.ny = fft.next_fast_len(shape[0] + pad_y, real=True)
        self.nx = fft.next_fast_len(shape[1] + pad_x, real=True)
        fy = fft.fftfreq(self.ny, d=dy_km)
        fx = fft.rfftfreq(self.nx, d=dx_km)
        k2 = (2 * np.pi) ** 2 * (fy[:, None] ** 2 + fx[None, :] ** 2)
        self.amp = ((1 + k2 * corr_km ** 2) ** (-beta / 4)).astype(np.float32)


class RadarGrid(Grid):
    """A radar-coded grid: rows along a descending track, columns in range (looking west),
    no X_FIRST / Y_FIRST; latitude / longitude per pixel in geometryRadar.h5."""

    heading = -167.0

    def __init__(self, preset, lat0, lon0):
        super().__init__(preset)
        self.lat0, self.lon0 = lat0, lon0
        self._dy, self._dx = abs(preset.y_step), abs(preset.x_step)   # km here

    @property
    def dy_km(self):
        return self._dy

    @property
    def dx_km(self):
        return self._dx

    def lat_lon(self, row, col):
        h = math.radians(self.heading)
        along = (math.sin(h), math.cos(h))            # (east, north) of increasing rows
        rng_dir = (math.cos(h), -math.sin(h))         # right-looking: increasing columns
        row = np.asarray(row, dtype=np.float64)
        col = np.asarray(col, dtype=np.float64)
        east = row * self.dy_km * along[0] + col * self.dx_km * rng_dir[0]
        north = row * self.dy_km * along[1] + col * self.dx_km * rng_dir[1]
        lat = self.lat0 + north / KM_PER_DEG
        lon = self.lon0 + east / (KM_PER_DEG * math.cos(math.radians(self.lat0)))
        return lat, lon

    def attributes(self):
        return {"LENGTH": self.preset.length, "WIDTH": self.preset.width}


def make_grid(layout):
    """Grid (geo) or RadarGrid of the drawn layout, sized for the target pixel count."""
    cells = layout["valid_pixel"] / (layout["valid_fraction"] * (1 - layout["hole_fraction"]))
    length = max(16, int(round(math.sqrt(cells / layout["grid_aspect"]))))
    width = max(16, int(round(cells / length)))
    dy, dx = layout["dy_km"], layout["dx_km"]
    if layout["geometry"] == "radar":
        preset = Preset(length, width, 0.0, 0.0, dx, dy, 0, "", False, 0, (0, 0), 1.0)
        return RadarGrid(preset, layout["lat0"], layout["lon0"])
    lat0 = layout["lat0"]
    y_step = -dy / KM_PER_DEG
    x_step = dx / (KM_PER_DEG * math.cos(math.radians(lat0)))
    preset = Preset(length, width, round(layout["lon0"], 6), round(lat0, 6), x_step, y_step,
                    0, "", False, 0, (0, 0), 1.0)
    return Grid(preset)


def make_dem(grid, noise, rng):
    """Random fractal topography (m): power-law field of slope 4, scaled to the relief."""
    ext = max(grid.extent_km)
    field = PowerLawField(grid.shape, grid.dy_km, grid.dx_km, ext, 4.0).draw(rng)
    lo, hi = float(field.min()), float(field.max())
    norm = (field - lo) / max(hi - lo, 1e-6)
    return (noise["base_height_m"] + noise["relief_m"] * norm).astype(np.float32)


def make_density(grid, layout, rng):
    """Temporal coherence with the drawn density: urban (coherent almost everywhere),
    mixed, vegetated (scattered coherent pixels); plus connected holes."""
    shape = grid.shape
    land = PowerLawField(shape, grid.dy_km, grid.dx_km, 1.5, 3.0).draw(rng)
    # the weight of per-pixel noise decides whether the valid pixels clump or scatter
    speckle = {"urban": 0.4, "mixed": 0.8, "vegetated": 2.0}[layout["density"]]
    score = land + speckle * rng.standard_normal(shape, dtype=np.float32)
    valid = score >= np.quantile(score, 1 - layout["valid_fraction"])
    holes = PowerLawField(shape, grid.dy_km, grid.dx_km, 2.0, 3.0).draw(rng)
    if layout["hole_fraction"] > 0:
        valid &= holes > np.quantile(holes, layout["hole_fraction"])
    coh = np.where(valid, rng.uniform(MIN_TEMP_COH + 0.02, 0.99, shape),
                   rng.uniform(0.2, MIN_TEMP_COH - 0.02, shape))
    return coh.astype(np.float32)


def make_geometry(grid, height):
    """Height, incidence / azimuth angles, slant range; latitude / longitude when radar."""
    length, width = grid.shape
    x, _ = grid.xy_km()
    inc = np.broadcast_to(37.5 - x * (17.0 / 250.0), (length, width)).astype(np.float32)
    from mintpy.utils import utils0
    az0 = float(utils0.heading2azimuth_angle(RadarGrid.heading))
    geom = {"height": height,
            "incidenceAngle": inc,
            "azimuthAngle": np.full((length, width), az0, dtype=np.float32),
            "slantRangeDistance": (693000.0 / np.cos(np.deg2rad(inc))).astype(np.float32)}
    if isinstance(grid, RadarGrid):
        rows, cols = np.mgrid[0:length, 0:width]
        lat, lon = grid.lat_lon(rows, cols)
        geom["latitude"] = lat.astype(np.float32)
        geom["longitude"] = lon.astype(np.float32)
    return geom


# ---------------------------------------------------------------- hotspots

def _profile(shape, rho, plateau=None):
    if shape == "gaussian":
        return np.where(rho < 3, np.exp(-0.5 * rho ** 2), 0.0)
    if shape == "cosine":
        return np.where(rho < 1, 0.5 * (1 + np.cos(np.pi * np.minimum(rho, 1))), 0.0)
    u = np.clip((rho - plateau) / (1 - plateau), 0, 1)
    return np.where(rho < 1, 0.5 * (1 + np.cos(np.pi * u)), 0.0)


def _rho_truth(shape, plateau=None):
    """rho of the TRUTH_LEVEL contour, and of the support's edge."""
    cosine = math.acos(2 * TRUTH_LEVEL - 1) / math.pi
    if shape == "gaussian":
        return math.sqrt(2 * math.log(1 / TRUTH_LEVEL)), 3.0
    if shape == "cosine":
        return cosine, 1.0
    return plateau + (1 - plateau) * cosine, 1.0


@dataclass
class FamilyHotspot:
    hid: int
    params: dict
    row: float
    col: float

    @property
    def axes_truth_km(self):
        """Semi-axes (major, minor) of the truth contour."""
        q = self.params["aspect"]
        half = self.params["size_km"] / 2
        return half * math.sqrt(q), half / math.sqrt(q)

    @property
    def support_km(self):
        rho_t, rho_s = _rho_truth(self.params["shape"], self.params["plateau_fraction"])
        return self.axes_truth_km[0] / rho_t * rho_s

    def profile(self, grid):
        """(row slice, col slice, profile values) over the support's bounding box."""
        length, width = grid.shape
        rho_t, _ = _rho_truth(self.params["shape"], self.params["plateau_fraction"])
        a, b = (s / rho_t for s in self.axes_truth_km)
        sup = self.support_km
        ry, rx = int(math.ceil(sup / grid.dy_km)) + 1, int(math.ceil(sup / grid.dx_km)) + 1
        r0, r1 = max(0, int(self.row) - ry), min(length, int(self.row) + ry + 2)
        c0, c1 = max(0, int(self.col) - rx), min(width, int(self.col) + rx + 2)
        north = (self.row - np.arange(r0, r1))[:, None] * grid.dy_km
        east = (np.arange(c0, c1) - self.col)[None, :] * grid.dx_km
        theta = math.radians(self.params["azimuth_deg"])
        u = east * math.sin(theta) + north * math.cos(theta)
        v = east * math.cos(theta) - north * math.sin(theta)
        rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        values = _profile(self.params["shape"], rho, self.params["plateau_fraction"])
        return slice(r0, r1), slice(c0, c1), values.astype(np.float32)


def place_hotspots(grid, drawn, mask, valid_fraction, min_pixel, rng, max_try=400):
    """Hotspots at random places: supports >= 0.5 km apart and inside the scene, each truth
    footprint with >= min_pixel measured pixels and a measured fraction >= half the scene's.
    A hotspot that finds no such place is dropped (its parameters stay in the JSON)."""
    ext_y, ext_x = grid.extent_km
    placed = []
    for params in drawn:
        hot = FamilyHotspot(len(placed) + 1, params, 0.0, 0.0)
        sup = hot.support_km
        # the support may leave the scene, the truth contour may not
        margin = hot.axes_truth_km[0] + 0.2
        if 2 * margin >= min(ext_y, ext_x):
            continue
        for _ in range(max_try):
            cy, cx = rng.uniform(margin, ext_y - margin), rng.uniform(margin, ext_x - margin)
            if any(math.hypot(cy - h.row * grid.dy_km, cx - h.col * grid.dx_km)
                   < sup + h.support_km + 0.5 for h in placed):
                continue
            hot.row, hot.col = cy / grid.dy_km - 0.5, cx / grid.dx_km - 0.5
            rs, cs, values = hot.profile(grid)
            inside = values >= TRUTH_LEVEL
            measured = mask[rs, cs][inside]
            if measured.sum() >= min_pixel and measured.mean() >= 0.5 * valid_fraction:
                placed.append(hot)
                break
    return placed


# ---------------------------------------------------------------- unwrapping errors

def make_unwrap(grid, num_date, noise, support, mask, ref_yx, rng):
    """Connected patches (away from the hotspots) and scattered pixels that jump by
    n x lambda / 2 over an interval of epochs: (flat indices, start, stop, jump) arrays."""
    ext_y, ext_x = grid.extent_km
    lo, hi = RANGES["unwrap_cycles"]
    n_patch = int(rng.poisson(noise["unwrap_patch_per_1000km2"] * ext_x * ext_y / 1000))
    blob = PowerLawField(grid.shape, grid.dy_km, grid.dx_km, 0.5, 3.0).draw(rng)
    ref_flat = ref_yx[0] * grid.shape[1] + ref_yx[1]
    # an irregular blob: the disc's edge moves with a small-scale field
    patches = unwrap_patches(grid, num_date, n_patch, support, rng, RANGES["unwrap_patch_km"],
                             (lo, hi), tries_per_patch=20, edge=0.35 * blob, avoid=ref_flat)
    idx, start, stop, jump = [], [], [], []
    patch_mask = np.zeros(grid.shape, dtype=np.int8)
    for flat, t0, t1, step in patches:
        idx.append(flat)
        start.append(np.full(flat.size, t0))
        stop.append(np.full(flat.size, t1))
        jump.append(np.full(flat.size, step))
        patch_mask.flat[flat] = 1
    num_patch = len(patches)
    measured = np.flatnonzero(mask.ravel())
    n_scatter = int(round(noise["unwrap_scatter_fraction"] * measured.size))
    if n_scatter:
        flat = rng.choice(measured[measured != ref_flat], size=n_scatter, replace=False)
        t0 = rng.integers(1, num_date, size=n_scatter)
        t1 = np.minimum(num_date, t0 + rng.integers(1, max(2, num_date // 2), size=n_scatter))
        cyc = rng.integers(lo, hi + 1, size=n_scatter) * rng.choice([-1, 1], size=n_scatter)
        idx.append(flat)
        start.append(t0)
        stop.append(t1)
        jump.append(cyc * WAVELENGTH / 2)
        patch_mask.flat[flat] = np.maximum(patch_mask.flat[flat], 2)
    if not idx:
        empty = np.zeros(0, dtype=np.int64)
        return (empty, empty, empty, np.zeros(0)), patch_mask, 0
    idx, start, stop, jump = (np.concatenate(a) for a in (idx, start, stop, jump))
    return ((idx.astype(np.int64), start.astype(np.int64), stop.astype(np.int64),
             jump.astype(np.float64)), patch_mask, num_patch)


# ---------------------------------------------------------------- the scene

class FamilyScene:
    """Static layout of one family scene and the synthesis of each epoch."""

    def __init__(self, seed, size="medium", null=False, geometry=None):
        from mintpy.utils import ptime
        self.params = draw_parameters(seed, size, null, geometry)
        self.seed = int(seed)
        p = self.params
        self.grid = make_grid(p["layout"])
        self.dates = make_family_dates(p["sampling"], _rng(seed, _S_DATES, 1))
        self.years = np.asarray(ptime.date_list2vector(self.dates)[1], dtype=np.float64)
        self.bperp = _rng(seed, _S_BPERP).normal(0, 50, self.num_date).astype(np.float32)
        self.bperp -= self.bperp[0]
        self.coherence = make_density(self.grid, p["layout"], _rng(seed, _S_COH))
        self.mask = self.coherence >= MIN_TEMP_COH
        self.height = make_dem(self.grid, p["noise"], _rng(seed, _S_DEM))
        self.geometry = make_geometry(self.grid, self.height)
        sz = SIZES[size]
        self.hotspots = place_hotspots(self.grid, p["hotspots"], self.mask,
                                       float(self.mask.mean()), sz.min_pixel,
                                       _rng(seed, _S_PLACE))
        self.profile, self.profile_id = rasterise_hotspots(
            self.grid, self.hotspots, footprint=lambda hot, grid: hot.profile(grid))
        support = self.profile > 0
        self.ref_yx = choose_reference(self.grid, self.coherence, self.mask, support,
                                       _rng(seed, _S_REF))
        self.unwrap, self.unwrap_mask, self.num_patch = make_unwrap(
            self.grid, self.num_date, p["noise"], support, self.mask, self.ref_yx,
            _rng(seed, _S_UNWRAP))
        self._init_nuisance()

    @property
    def num_date(self):
        return len(self.dates)

    def _init_nuisance(self):
        n = self.params["noise"]
        grid = self.grid
        x, y = grid.xy_km()
        self.x_km, self.y_km = x.astype(np.float32), y.astype(np.float32)
        ext_y, ext_x = grid.extent_km
        rng = _rng(self.seed, _S_SEASON)
        # gradient (m/km) whose plane has a spatial std of ramp_mm over the scene
        self.ramp_sigma = n["ramp_mm"] * 1e-3 / math.sqrt((ext_x ** 2 + ext_y ** 2) / 12)
        angle = rng.uniform(0, 2 * np.pi)
        drift = n["ramp_drift_mm_per_yr"] * 1e-3 / math.sqrt((ext_x ** 2 + ext_y ** 2) / 12)
        self.ramp_drift = (drift * math.cos(angle), drift * math.sin(angle))
        season = PowerLawField(grid.shape, grid.dy_km, grid.dx_km, 10.0, 3.0).draw(rng)
        self.season_amp = (n["season_bg_mm"] * 1e-3
                           * np.clip(1 + 0.6 * season, 0, 2)).astype(np.float32)
        ratio = np.log(np.clip(self.coherence, 0.05, 0.999)) / math.log(0.93)
        self.white_std = (n["white_mm"] * 1e-3 * np.sqrt(ratio)).astype(np.float32)
        self.turbulence = PowerLawField(grid.shape, grid.dy_km, grid.dx_km, n["turbulence_km"],
                                        n["turbulence_slope"])
        self.dh_km = ((self.height - self.height[self.ref_yx]) / 1000).astype(np.float32)
        self.hot_flat = np.flatnonzero(self.profile > 0)
        self.hot_value = self.profile.flat[self.hot_flat]
        self.hot_idx = self.profile_id.flat[self.hot_flat] - 1
        self.hot_series = (np.stack([signal_series(h.params, self.years) for h in self.hotspots])
                           if self.hotspots else np.zeros((0, self.num_date)))

    def nuisance_epoch(self, t):
        """Nuisance displacement of epoch t (float64, m, unreferenced) and the std of its
        turbulence (m; the field has unit std over the scene before scaling)."""
        n = self.params["noise"]
        rng = _rng(self.seed, _S_EPOCH, t)
        out = self.turbulence.draw(rng).astype(np.float64)
        turb_std = n["turbulence_mm"] * 1e-3 * rng.gamma(4.0, 0.25)
        out *= turb_std
        out += self.white_std * rng.standard_normal(self.grid.shape, dtype=np.float32)
        out += (rng.normal(0, n["strat_mm_per_km"]) * 1e-3) * self.dh_km
        dt = self.years[t] - self.years[0]
        gx = rng.normal(0, self.ramp_sigma) + self.ramp_drift[0] * dt
        gy = rng.normal(0, self.ramp_sigma) + self.ramp_drift[1] * dt
        out += gx * self.x_km[None, :]
        out += gy * self.y_km[:, None]
        out += self.season_amp * math.cos(2 * math.pi * (self.years[t] - n["season_bg_phase"]))
        return out, turb_std

    def epochs(self):
        """Yield (t, referenced displacement float64 LENGTH x WIDTH, (turbulence std,
        std of the whole nuisance over the measured pixels) of epoch t)."""
        ry, rx = self.ref_yx
        first = None
        idx, start, stop, jump = self.unwrap
        for t in range(self.num_date):
            raw, turb_std = self.nuisance_epoch(t)
            stats = (turb_std, float(raw[self.mask].std()))
            flat = raw.reshape(-1)
            if self.hotspots:
                flat[self.hot_flat] += self.hot_value * self.hot_series[self.hot_idx, t]
            active = (start <= t) & (t < stop)
            np.add.at(flat, idx[active], jump[active])
            raw -= raw[ry, rx]
            if first is None:
                first = raw.copy()
            raw -= first
            yield t, raw, stats

    def truth_raster(self):
        return truth_labels(self.profile, self.profile_id, self.mask)

    def attributes(self):
        return scene_attributes(self.grid, self.ref_yx, self.dates)


# ---------------------------------------------------------------- writing

def write_family_truth(path, scene, noise_level, nuisance_std):
    """hotspotTruth.h5 in hotspot.simulation.scene's layout plus the family's per-hotspot fields."""
    grid = scene.grid
    truth = scene.truth_raster()
    hot = scene.hotspots
    lat, lon = grid.lat_lon([h.row for h in hot], [h.col for h in hot])
    peaks = np.array([h.params["peak_mm"] * 1e-3 for h in hot], dtype=np.float64)
    n = scene.params["noise"]
    attrs = {**scene.attributes(), "FILE_TYPE": "mask", "UNIT": "1", "NO_DATA_VALUE": -1,
             "DATA_TYPE": "int32",
             "simulate.preset": f"family-{scene.params['size']}",
             "simulate.difficulty": "null" if scene.params["null"] else "family",
             "simulate.seed": scene.seed, "simulate.numDate": scene.num_date,
             "simulate.numHotspot": len(hot),
             "simulate.truthRule": f"measured pixel in hotspot k where its profile >= "
                                   f"{TRUTH_LEVEL:g} x peak",
             "family.noiseLevelMm": round(noise_level * 1e3, 4),
             "family.noiseLevelRule": "RMS over epochs of the std of each epoch's turbulence",
             "family.nuisanceStdMm": round(nuisance_std * 1e3, 4),
             "family.nuisanceStdRule": "RMS over epochs of the spatial std (measured pixels) of "
                                       "one epoch's nuisance (no hotspot, no unwrapping error)",
             "family.eligibleRule": f"peakSignal >= {ELIGIBLE_SNR:g} x noiseLevel",
             "family.turbulenceMm": round(n["turbulence_mm"], 4),
             "family.geometry": scene.params["layout"]["geometry"],
             "family.density": scene.params["layout"]["density"],
             "family.sampling": scene.params["sampling"]["sampling"],
             "family.numUnwrapPatch": scene.num_patch,
             "family.parameters": json.dumps(scene.params, sort_keys=True)}
    axes = [h.axes_truth_km for h in hot]
    datasets = {
        "hotspot": truth,
        "pixelTruth": truth[scene.mask],
        "hotspotId": np.array([h.hid for h in hot], dtype=np.int32),
        "behaviour": np.array([h.params["signal"] for h in hot], dtype="S16"),
        "shape": np.array([h.params["shape"] for h in hot], dtype="S16"),
        "twinGroup": np.zeros(len(hot), dtype=np.int32),
        "amplitude": np.array([h.params["sign"] for h in hot], dtype=np.float64) * peaks,
        "peakSignal": peaks,
        "eligible": (peaks >= ELIGIBLE_SNR * noise_level).astype(np.int8),
        "noiseLevel": np.float64(noise_level),
        "centerLat": np.asarray(lat, dtype=np.float64),
        "centerLon": np.asarray(lon, dtype=np.float64),
        "sizeKm": np.array([h.params["size_km"] for h in hot], dtype=np.float64),
        "aspectRatio": np.array([h.params["aspect"] for h in hot], dtype=np.float64),
        "radiusKm": np.array([h.params["size_km"] / 2 for h in hot], dtype=np.float64),
        "semiMajorKm": np.array([a for a, _ in axes], dtype=np.float64),
        "semiMinorKm": np.array([b for _, b in axes], dtype=np.float64),
        "azimuthDeg": np.array([h.params["azimuth_deg"] for h in hot], dtype=np.float64),
        "numPixel": np.array([int((truth == h.hid).sum()) for h in hot], dtype=np.int64),
        "hotspotTimeseries": scene.hot_series.astype(np.float32),
        "date": np.array(scene.dates, dtype="S8"),
        "unwrapError": scene.unwrap_mask,
    }
    return write_h5(path, datasets, attrs, compression="gzip")


def simulate_family(outdir, seed, size="medium", null=False, geometry=None, print_msg=True):
    """Write family scene `seed` (MintPy products and hotspotTruth.h5) into outdir.

    Returns a dict name -> Path.  The truth is written last: it holds the noise level
    measured while the epochs are synthesised.
    """
    vprint = print if print_msg else (lambda *a, **k: None)
    outdir = Path(outdir)
    scene = FamilyScene(seed, size, null, geometry)
    grid, mask = scene.grid, scene.mask
    length, width = grid.shape
    num_date = scene.num_date
    lay = scene.params["layout"]
    vprint(f"family: seed {seed} ({size}{', null' if null else ''}): {lay['geometry']} "
           f"{length} x {width} grid, {int(mask.sum())} measured pixels ({lay['density']}), "
           f"{num_date} dates ({scene.params['sampling']['sampling']}), "
           f"{len(scene.hotspots)} hotspots")
    turb_var, nuisance_var = [], []

    def epochs():
        # the noise statistics of each epoch go to the truth, written last
        for t, disp, (turb_std, nuisance_std) in scene.epochs():
            turb_var.append(turb_std ** 2)
            nuisance_var.append(nuisance_std ** 2)
            yield t, disp

    geom_name = "geometryRadar.h5" if isinstance(grid, RadarGrid) else "geometryGeo.h5"
    paths, _, _ = write_mintpy_scene(outdir, scene, geom_name, epochs(), print_msg=print_msg)
    paths["truth"] = write_family_truth(outdir / products.TRUTH, scene,
                                        math.sqrt(float(np.mean(turb_var))),
                                        math.sqrt(float(np.mean(nuisance_var))))
    for key, path in paths.items():
        vprint(f"  {key:<18} {path}")
    return paths


def family_summary(path):
    """A readable table of the hotspots of a family truth file."""
    import h5py
    with h5py.File(path, "r") as f:
        atr = dict(f.attrs)
        rows = []
        names = ("hotspotId", "behaviour", "shape", "sizeKm", "aspectRatio", "peakSignal",
                 "eligible", "numPixel")
        cols = {n: f[n][()] for n in names}
    noise = float(atr["family.noiseLevelMm"])
    lines = [f"truth: {path}  (seed {atr['simulate.seed']}, {atr['family.geometry']}, "
             f"{atr['family.density']}, {atr['family.sampling']}; noise level {noise:.2f} mm)",
             f"{'id':>3}  {'signal':<13} {'shape':<9} {'size':>7} {'aspect':>6} {'peak':>8} "
             f"{'pixels':>7}  eligible"]
    for i, hid in enumerate(cols["hotspotId"]):
        rows.append(f"{hid:>3}  {cols['behaviour'][i].decode():<13} "
                    f"{cols['shape'][i].decode():<9} {cols['sizeKm'][i]:>5.2f}km "
                    f"{cols['aspectRatio'][i]:>6.2f} {cols['peakSignal'][i] * 1e3:>5.1f} mm "
                    f"{cols['numPixel'][i]:>7d}  {'yes' if cols['eligible'][i] else 'no'}")
    return "\n".join(lines + rows)
