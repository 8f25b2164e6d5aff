"""Simulated InSAR scenes with known deformation hotspots.

simulate_scene(outdir, preset, difficulty, seed) writes one scene twice, as
MintPy products and as a WabInSAR export, plus the truth used by hotspot.score:

  OUTDIR/timeseries.h5            timeseries (T x LENGTH x WIDTH, m), date, bperp
  OUTDIR/velocity.h5              velocity, velocityStd (m/year, linear fit of the time series)
  OUTDIR/temporalCoherence.h5     temporalCoherence
  OUTDIR/maskTempCoh.h5           mask (temporalCoherence >= 0.7, MintPy's default minTempCoh)
  OUTDIR/inputs/geometryGeo.h5    height, incidenceAngle, azimuthAngle, slantRangeDistance
  OUTDIR/hotspotTruth.h5          the truth (below)
  OUTDIR/wabinsar/                the N mask-valid pixels in row-major order (stack order):
      R_TS_den.mat        R_TS_den   N x T single, mm (same values as timeseries.h5 x 1000)
      elpx_ll.mat         elpx_ll    N x 3 double: longitude, latitude, height (m)
      MVel.mat            MVel       N x 1 single, mm/yr;  MVelq.mat  MVelq  N x 1, mm/yr std
      Pco_m.mat           Pco_m      N x 1 single, temporal coherence
      incidenceAngle.mat  incidenceAngle  N x 1 single, degrees
      dates.txt           one YYYYMMDD per line
    The variable inside each .mat is named like the file stem.  mat_format='v73' (default)
    writes MATLAB v7.3 files as MATLAB does: HDF5 with a 512-byte MAT header and column-major
    storage, so h5py sees the N x T matrix as T x N (a reader must transpose) and N x 1
    vectors as 1 x N.  mat_format='v5' writes scipy.io.savemat files (N x T as loadmat
    returns it); MAT v5 holds at most 2 GB per variable, so it is refused for larger scenes.

All time series (both exports) are referenced like a MintPy product: to the first date
and to the reference pixel REF_Y/REF_X, whose series is exactly zero.  Pixels outside the
mask keep values (noisier, low temporal coherence), as in MintPy.

Scene model, for each pixel and epoch (LOS, metres):
  hotspots     elliptical raised-cosine bowls, 0.5 (1 + cos(pi rho)) for rho < 1, zero
               outside, times a temporal behaviour (BEHAVIOURS) times a signed amplitude.
               At least two pairs of twins (same behaviour and amplitude) lie far apart.
  atmosphere   a new random field each epoch, power-law spectrum (1 + (k L)^2)^(-3/2),
               whose covariance is exp(-r / L) with L = 5 km; per-epoch std drawn around
               the difficulty's level (several mm).
  white noise  per pixel, the phase noise implied by the temporal coherence (std
               proportional to sqrt(-ln coherence)): masked pixels are noisier.
  nuisances    a residual ramp per epoch (random part + slow trend), a weak widespread
               seasonal signal (peak in August, unlike the seasonal hotspots' April), and
               a few small patches with unwrapping jumps of +-lambda/2 over some epochs.
The truth rule: a measured pixel belongs to hotspot k where the spatial bowl of k is at
least TRUTH_LEVEL (30 %) of its peak; hotspot bowls never overlap and never touch the
reference pixel.

hotspotTruth.h5 (MintPy grid attributes, so view.py shows it; generation parameters as
'simulate.*' root attributes):
  hotspot            LENGTH x WIDTH int32: 0 background, k >= 1 hotspot id, -1 masked
  pixelTruth         N int32, hotspot[mask] in row-major order (the stack / WabInSAR order)
  hotspotId, behaviour, twinGroup (0 = no twin), amplitude (m, signed), centerLat,
  centerLon, radiusKm (mean radius of the 30 % contour), semiMajorKm, semiMinorKm,
  azimuthDeg, numPixel (measured truth pixels): one row per hotspot
  hotspotTimeseries  K x T, m: the signal at each hotspot's peak (referenced to date 1)
  date               T bytes YYYYMMDD;   unwrapError  LENGTH x WIDTH int8 (1 in the patches)

Randomness: every component draws from its own numpy Generator seeded with (seed,
component), and each epoch from (seed, epoch), so the same seed writes identical files
and the easy and hard scenes of one seed share their layout (mask, hotspot positions,
noise patterns) and differ in amplitudes and noise levels.

Memory: 2-D fields are held whole (LENGTH x WIDTH); the 3-D cube is synthesised one epoch
at a time (the atmosphere is a whole-scene FFT field per epoch) and written in slabs of
as many epochs as one HDF5 chunk of timeseries.h5 holds, so memory does not grow with
the number of epochs: the 'la' preset (~3 million pixels x 247 epochs, 6.4 GB of files)
peaks below 1 GB and takes ~3.5 min on 2 shared cores.
"""
import contextlib
import io
import math
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from hotspot.utils.errors import HotspotError
from hotspot.utils.geo import EARTH_RADIUS_KM
from hotspot.utils.h5io import atomic_path, write_h5

TRUTH_LEVEL = 0.3            # truth footprint: bowl >= 30 % of its peak
MIN_TEMP_COH = 0.7           # MintPy's default mintpy.networkInversion.minTempCoh
WAVELENGTH = 0.05546576      # Sentinel-1 C band, m
ATMO_CORR_KM = 5.0
HEADING = -167.0             # Sentinel-1 descending track over Los Angeles
SEASON_PEAK_HOTSPOT = 0.27   # aquifer recharge: uplift peaks in early April
SEASON_PEAK_BACKGROUND = 0.60  # thermal / residual troposphere: peaks in August
MAT73_HEADER_SIZE = 512
V5_MAX_BYTES = 2 ** 31 - 1024   # MAT v5 stores sizes in 32 bits
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

# Random stream ids of the layout components (fixed so that adding one keeps the others).
_RNG_DATES, _RNG_COH, _RNG_HEIGHT, _RNG_HOTSPOT, _RNG_UNWRAP, _RNG_REF, _RNG_RAMP, \
    _RNG_BPERP, _RNG_SEASON = range(1, 10)
_RNG_EPOCH = 100


def _rng(seed, *key):
    return np.random.default_rng([int(seed), *key])


# ---------------------------------------------------------------- temporal behaviours

def behaviour_series(name, years):
    """Normalised temporal behaviour g(t) at decimal years; the amplitude multiplies it.

    Trend-like behaviours go from 0 at the first date to 1 at the last.
    """
    years = np.asarray(years, dtype=np.float64)
    t = years - years[0]
    span = max(t[-1], 1e-6)
    season = np.cos(2 * np.pi * (years - SEASON_PEAK_HOTSPOT))
    if name in ("subsidence", "uplift"):
        return t / span
    if name == "seasonal":
        return season
    if name == "step":
        return (t >= 0.45 * span).astype(np.float64)
    if name == "postseismic":
        t0, tau = 0.3 * span, 0.15 * span
        g = np.where(t >= t0, 1 - np.exp(-np.clip(t - t0, 0, None) / tau), 0.0)
        return g / (1 - math.exp(-(span - t0) / tau))
    if name == "creep":
        tau = span / 3
        return np.expm1(t / tau) / math.expm1(span / tau)
    if name == "subsidence_seasonal":
        return t / span + 0.25 * season
    if name == "transient":
        return np.exp(-0.5 * ((t - 0.5 * span) / (0.12 * span)) ** 2)
    raise ValueError(f"unknown behaviour {name}")


BEHAVIOURS = ("subsidence", "uplift", "seasonal", "step", "postseismic", "creep",
              "subsidence_seasonal", "transient")


# ---------------------------------------------------------------- dates and grid

def make_dates(num_date, start_date, six_day, rng):
    """Sentinel-1-like acquisition dates: 12-day repeat, ~3 % missed acquisitions and,
    with six_day, extra acquisitions 6 days later in 2017-2021 (Sentinel-1B era)."""
    from datetime import datetime, timedelta
    day = datetime.strptime(start_date, "%Y%m%d")
    dates = [day]
    s1b = (datetime(2016, 10, 1), datetime(2021, 12, 23))
    while len(dates) < num_date:
        if six_day and s1b[0] <= day < s1b[1] and rng.random() < 0.3:
            dates.append(day + timedelta(days=6))
        day += timedelta(days=12)
        if rng.random() >= 0.03:
            dates.append(day)
    return [d.strftime("%Y%m%d") for d in dates[:num_date]]


@dataclass
class Grid:
    preset: Preset

    @property
    def shape(self):
        return self.preset.length, self.preset.width

    @property
    def lat_center(self):
        p = self.preset
        return p.y_first + p.y_step * p.length / 2

    @property
    def dy_km(self):
        return abs(self.preset.y_step) * KM_PER_DEG

    @property
    def dx_km(self):
        return abs(self.preset.x_step) * KM_PER_DEG * math.cos(math.radians(self.lat_center))

    @property
    def extent_km(self):
        """(north-south, east-west) size in km."""
        return self.preset.length * self.dy_km, self.preset.width * self.dx_km

    def xy_km(self):
        """East (W,) and north (L,) pixel-centre positions in km from the scene centre."""
        length, width = self.shape
        x = (np.arange(width) - (width - 1) / 2) * self.dx_km
        y = ((length - 1) / 2 - np.arange(length)) * self.dy_km
        return x, y

    def lat_lon(self, row, col):
        """Pixel-centre latitude / longitude (MintPy convention) of (fractional) row / col."""
        p = self.preset
        return p.y_first + p.y_step * (np.asarray(row) + 0.5), \
            p.x_first + p.x_step * (np.asarray(col) + 0.5)

    def attributes(self):
        p = self.preset
        return {
            "LENGTH": p.length, "WIDTH": p.width,
            "X_FIRST": p.x_first, "Y_FIRST": p.y_first, "X_STEP": p.x_step, "Y_STEP": p.y_step,
            "X_UNIT": "degrees", "Y_UNIT": "degrees", "EPSG": 4326,
        }


def sensor_attributes():
    """Sentinel-1 descending-track metadata like MintPy's products over Los Angeles."""
    return {
        "PROCESSOR": "isce", "PLATFORM": "Sen", "ORBIT_DIRECTION": "DESCENDING",
        "HEADING": HEADING,
        "WAVELENGTH": WAVELENGTH, "CENTER_LINE_UTC": 49800.0, "HEIGHT": 693000.0,
        "EARTH_RADIUS": 6371000.0, "STARTING_RANGE": 800000.0,
        "RANGE_PIXEL_SIZE": 2.329562, "AZIMUTH_PIXEL_SIZE": 13.9, "ALOOKS": 1, "RLOOKS": 1,
        "ANTENNA_SIDE": -1, "DATA_TYPE": "float32",
    }


# ---------------------------------------------------------------- random fields

class FieldGenerator:
    """Stationary Gaussian random fields with covariance exp(-r / corr_km).

    Spectral synthesis with the 2-D power spectrum (1 + (k L)^2)^(-3/2), a power law
    k^-3 above 1 / L (close to Kolmogorov turbulence's k^-8/3).  The FFT grid is padded
    by 4 L so the periodic wrap-around adds < 2 % correlation.
    """

    def __init__(self, shape, dy_km, dx_km, corr_km):
        from scipy import fft
        self.shape = shape
        pad_y = int(math.ceil(4 * corr_km / dy_km))
        pad_x = int(math.ceil(4 * corr_km / dx_km))
        self.ny = fft.next_fast_len(shape[0] + pad_y, real=True)
        self.nx = fft.next_fast_len(shape[1] + pad_x, real=True)
        fy = fft.fftfreq(self.ny, d=dy_km)
        fx = fft.rfftfreq(self.nx, d=dx_km)
        k2 = (2 * np.pi) ** 2 * (fy[:, None] ** 2 + fx[None, :] ** 2)
        self.amp = ((1 + k2 * corr_km ** 2) ** -0.75).astype(np.float32)

    def draw(self, rng):
        """One field on `shape`, zero mean and unit standard deviation (float32)."""
        from scipy import fft
        z = rng.standard_normal((self.ny, 2 * self.amp.shape[1]), dtype=np.float32)
        spec = z.view(np.complex64) * self.amp
        field = fft.irfft2(spec, s=(self.ny, self.nx))[:self.shape[0], :self.shape[1]]
        field = field - field.mean(dtype=np.float64)
        std = float(field.std(dtype=np.float64))
        return (field / std if std > 0 else field).astype(np.float32)


# ---------------------------------------------------------------- static layout

def make_coherence(grid, valid_fraction, rng):
    """Temporal coherence: high almost everywhere, decorrelated blobs (vegetation, water)
    and isolated pixels below MIN_TEMP_COH, so that ~valid_fraction of pixels pass."""
    shape = grid.shape
    iso_fraction = 0.04
    base = FieldGenerator(shape, grid.dy_km, grid.dx_km, 3.0).draw(rng)
    coh = 0.93 + 0.025 * base + 0.015 * rng.standard_normal(shape, dtype=np.float32)
    coh = np.clip(coh, MIN_TEMP_COH + 0.02, 0.995)
    blobs = FieldGenerator(shape, grid.dy_km, grid.dx_km, 2.0).draw(rng)
    gap_fraction = max(0.0, 1 - valid_fraction / (1 - iso_fraction))
    gap = blobs < np.quantile(blobs, gap_fraction)
    coh[gap] = rng.uniform(0.25, 0.65, size=int(gap.sum()))
    iso = rng.random(shape) < iso_fraction
    coh[iso] = rng.uniform(0.3, MIN_TEMP_COH - 0.01, size=int(iso.sum()))
    return coh.astype(np.float32)


def make_geometry(grid, rng):
    """Height (m), incidence and azimuth angles (deg) and slant range (m)."""
    length, width = grid.shape
    field = FieldGenerator(grid.shape, grid.dy_km, grid.dx_km, 8.0).draw(rng)
    height = np.clip(150 + 180 * field, 0, None)
    x, _ = grid.xy_km()
    # Sentinel-1 IW: 29-46 deg over a 250 km swath; a descending track looks west, so the
    # incidence grows towards the west.
    inc_row = 37.5 - x * (17.0 / 250.0)
    inc = np.broadcast_to(inc_row, (length, width)).astype(np.float32)
    from mintpy.utils import utils0
    az0 = float(utils0.heading2azimuth_angle(HEADING))
    az = np.broadcast_to(az0 + x * 0.004, (length, width)).astype(np.float32)
    slant = (693000.0 / np.cos(np.deg2rad(inc))).astype(np.float32)
    return {"height": height.astype(np.float32), "incidenceAngle": inc,
            "azimuthAngle": az, "slantRangeDistance": slant}


@dataclass
class Hotspot:
    hid: int
    behaviour: str
    amplitude: float
    twin: int
    row: float
    col: float
    a_km: float      # support semi-axes (the bowl is zero beyond)
    b_km: float
    theta: float     # major-axis azimuth, radians east of north

    @property
    def level_scale(self):
        """rho of the TRUTH_LEVEL contour: 0.5 (1 + cos(pi rho)) = TRUTH_LEVEL."""
        return math.acos(2 * TRUTH_LEVEL - 1) / math.pi

    @property
    def radius_km(self):
        return math.sqrt(self.a_km * self.b_km) * self.level_scale

    def bowl(self, grid):
        """(row slice, col slice, bowl values) over the support's bounding box."""
        length, width = grid.shape
        ry = int(math.ceil(self.a_km / grid.dy_km)) + 1
        rx = int(math.ceil(self.a_km / grid.dx_km)) + 1
        r0, r1 = max(0, int(self.row) - ry), min(length, int(self.row) + ry + 2)
        c0, c1 = max(0, int(self.col) - rx), min(width, int(self.col) + rx + 2)
        north = (self.row - np.arange(r0, r1))[:, None] * grid.dy_km
        east = (np.arange(c0, c1) - self.col)[None, :] * grid.dx_km
        u = east * math.sin(self.theta) + north * math.cos(self.theta)
        v = east * math.cos(self.theta) - north * math.sin(self.theta)
        rho = np.sqrt((u / self.a_km) ** 2 + (v / self.b_km) ** 2)
        values = np.where(rho < 1, 0.5 * (1 + np.cos(np.pi * np.minimum(rho, 1))), 0.0)
        return slice(r0, r1), slice(c0, c1), values


def place_hotspots(grid, preset, amp_col, mask, rng, max_try=20000):
    """Non-overlapping bowls inside the scene, twins >= 40 % of the diagonal apart, each
    with >= 75 % of its truth footprint measured."""
    ext_y, ext_x = grid.extent_km
    diag = math.hypot(ext_y, ext_x)
    scale = 1 / math.acos(2 * TRUTH_LEVEL - 1) * math.pi
    placed = []
    for hid, (behaviour, amp_easy, amp_hard, twin) in enumerate(
            CATALOGUE[:preset.num_hotspot], start=1):
        amplitude = amp_easy if amp_col == 1 else amp_hard
        for _ in range(max_try):
            radius = rng.uniform(*preset.radius_km)
            ratio = rng.uniform(0.6, 1.0)
            a = radius / math.sqrt(ratio) * scale
            b = radius * math.sqrt(ratio) * scale
            margin = a + 1.0
            cy = rng.uniform(margin, ext_y - margin)
            cx = rng.uniform(margin, ext_x - margin)
            ok = all(math.hypot(cy - h.row * grid.dy_km, cx - h.col * grid.dx_km)
                     >= a + h.a_km + 2.0 for h in placed)
            twins = [h for h in placed if twin and h.twin == twin]
            ok = ok and all(math.hypot(cy - h.row * grid.dy_km, cx - h.col * grid.dx_km)
                            >= 0.4 * diag for h in twins)
            if not ok:
                continue
            hot = Hotspot(hid, behaviour, amplitude, twin, cy / grid.dy_km - 0.5,
                          cx / grid.dx_km - 0.5, a, b, rng.uniform(0, math.pi))
            rs, cs, bowl = hot.bowl(grid)
            inside = bowl >= TRUTH_LEVEL
            if inside.sum() >= 8 and mask[rs, cs][inside].mean() >= 0.75:
                placed.append(hot)
                break
        else:
            raise HotspotError(f"simulate: cannot place hotspot {hid} ({behaviour}) in the "
                               f"{ext_x:.0f} x {ext_y:.0f} km scene; use a larger preset")
    return placed


def rasterise_hotspots(grid, hotspots):
    """Bowl values and hotspot ids on the grid (bowls never overlap)."""
    bowl = np.zeros(grid.shape, dtype=np.float32)
    ids = np.zeros(grid.shape, dtype=np.int32)
    for hot in hotspots:
        rs, cs, values = hot.bowl(grid)
        sub = values > 0
        bowl[rs, cs][sub] = values[sub]
        ids[rs, cs][sub] = hot.hid
    return bowl, ids


def make_unwrap_patches(grid, num_date, difficulty, support, rng):
    """Small patches that jump by +-lambda/2 (or twice that) from one epoch on."""
    ext_y, ext_x = grid.extent_km
    n = max(1, int(round(difficulty["unwrap_per_1000km2"] * ext_x * ext_y / 1000)))
    x, y = grid.xy_km()
    patches = []
    for _ in range(50 * n):
        if len(patches) == n:
            break
        row, col = int(rng.integers(grid.shape[0])), int(rng.integers(grid.shape[1]))
        radius = rng.uniform(0.15, 0.6)
        ry, rx = int(radius / grid.dy_km) + 1, int(radius / grid.dx_km) + 1
        rs = slice(max(0, row - ry), row + ry + 1)
        cs = slice(max(0, col - rx), col + rx + 1)
        if support[rs, cs].any():
            continue
        dist = np.hypot((y[rs] - y[row])[:, None], (x[cs] - x[col])[None, :])
        rr, cc = np.nonzero(dist <= radius)
        flat = (rr + rs.start) * grid.shape[1] + cc + cs.start
        start = int(rng.integers(1, num_date))
        stop = num_date if rng.random() < 0.5 else int(rng.integers(start + 1, num_date + 1))
        cycles = int(rng.integers(1, difficulty["max_cycles"] + 1)) * int(rng.choice([-1, 1]))
        patches.append((flat, start, stop, cycles * WAVELENGTH / 2))
    return patches


def choose_reference(grid, coh, mask, support, rng):
    """A coherent pixel away from every hotspot (MintPy picks a high-coherence pixel)."""
    from scipy import ndimage
    gap_km = 3.0
    iterations = max(1, int(round(gap_km / min(grid.dy_km, grid.dx_km))))
    near = ndimage.binary_dilation(support, iterations=iterations)
    interior = np.zeros_like(mask)
    my, mx = grid.shape[0] // 10, grid.shape[1] // 10
    interior[my:grid.shape[0] - my, mx:grid.shape[1] - mx] = True
    cand = np.flatnonzero(mask & (coh >= 0.9) & ~near & interior)
    if cand.size == 0:
        cand = np.flatnonzero(mask & ~support)
    flat = int(rng.choice(cand))
    return divmod(flat, grid.shape[1])


# ---------------------------------------------------------------- MATLAB files

def _mat73_header(created):
    text = (f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {created} "
            "HDF5 schema 1.00 .")
    return text.ljust(116).encode("ascii") + b" " * 8 + b"\x00\x02IM"


def _matlab_class(dtype):
    return {np.dtype(np.float64): "double", np.dtype(np.float32): "single",
            np.dtype(np.int32): "int32"}[np.dtype(dtype)]


class MatWriter:
    """Write MATLAB .mat variables like MATLAB: v7.3 (HDF5) or v5 (scipy.io.savemat).

    Variables are given in MATLAB orientation (N x k); v7.3 stores the transpose, as
    MATLAB's column-major layout appears to HDF5.  `created` goes into the v7.3 header
    (a fixed value keeps same-seed files byte-identical).
    """

    def __init__(self, mat_format, created):
        if mat_format not in ("v73", "v5"):
            raise HotspotError(f"mat_format = {mat_format!r}; expected 'v73' or 'v5'")
        self.mat_format = mat_format
        self.created = created

    def write(self, path, name, array):
        array = np.asarray(array)
        if array.ndim == 1:
            array = array[:, None]
        with atomic_path(path) as tmp:
            if self.mat_format == "v5":
                import scipy.io
                scipy.io.savemat(tmp, {name: array}, format="5", do_compression=False)
            else:
                with h5py.File(tmp, "w", userblock_size=MAT73_HEADER_SIZE) as f:
                    f.create_dataset(name, data=np.ascontiguousarray(array.T))
                    f[name].attrs["MATLAB_class"] = np.bytes_(_matlab_class(array.dtype))
                self._stamp(tmp)
        return Path(path)

    def _stamp(self, tmp):
        with open(tmp, "r+b") as fid:
            fid.write(_mat73_header(self.created))

    @staticmethod
    def check_v5_size(num_pixel, num_date):
        nbytes = num_pixel * num_date * 4
        if nbytes > V5_MAX_BYTES:
            raise HotspotError(
                f"mat_format = 'v5': R_TS_den would be {nbytes / 1024 ** 3:.1f} GB but MAT v5 "
                "holds at most 2 GB per variable; use mat_format='v73' (--mat-format v73)")


class _TimeseriesMat:
    """R_TS_den.mat written in slabs of epochs (context manager).

    v7.3: an HDF5 dataset T x N filled slab by slab, the MAT header stamped on success.
    v5: held as N x T in memory (checked to be < 2 GB) and saved by scipy on success.
    """

    def __init__(self, tmp, num_pixel, num_date, mat_format, created, name="R_TS_den"):
        self.tmp, self.name, self.created = tmp, name, created
        self.file = self.data = None
        if mat_format == "v73":
            self.file = h5py.File(tmp, "w", userblock_size=MAT73_HEADER_SIZE)
            self.dset = self.file.create_dataset(name, shape=(num_date, num_pixel),
                                                 dtype=np.float32)
            self.dset.attrs["MATLAB_class"] = np.bytes_("single")
        else:
            self.data = np.empty((num_pixel, num_date), dtype=np.float32)

    def __enter__(self):
        return self

    def write(self, t0, block):
        """block: epochs t0.. x N pixels (mm)."""
        if self.file is not None:
            self.dset[t0:t0 + block.shape[0]] = block
        else:
            self.data[:, t0:t0 + block.shape[0]] = block.T

    def __exit__(self, exc_type, exc, tb):
        if self.file is not None:
            self.file.close()
            if exc_type is None:
                with open(self.tmp, "r+b") as fid:
                    fid.write(_mat73_header(self.created))
        elif exc_type is None:
            import scipy.io
            scipy.io.savemat(self.tmp, {self.name: self.data}, format="5",
                             do_compression=False)
        return False


# ---------------------------------------------------------------- the scene

class Scene:
    """Static layout of a scene and the synthesis of each epoch."""

    def __init__(self, preset="small", difficulty="easy", seed=0, num_date=None):
        if preset not in PRESETS:
            raise HotspotError(f"simulate: preset = {preset!r}; expected one of "
                               f"{', '.join(PRESETS)}")
        if difficulty not in DIFFICULTIES:
            raise HotspotError(f"simulate: difficulty = {difficulty!r}; expected easy or hard")
        if num_date is not None and int(num_date) < 3:
            raise HotspotError(f"simulate: num_date = {num_date}; expected at least 3 dates")
        if int(seed) < 0:
            raise HotspotError(f"simulate: seed = {seed}; expected an integer >= 0")
        from mintpy.utils import ptime
        self.preset_name, self.difficulty_name = preset, difficulty
        self.preset, self.difficulty = PRESETS[preset], DIFFICULTIES[difficulty]
        self.seed = int(seed)
        self.grid = Grid(self.preset)
        num_date = int(num_date or self.preset.num_date)
        self.dates = make_dates(num_date, self.preset.start_date, self.preset.six_day,
                                _rng(seed, _RNG_DATES))
        self.years = np.asarray(ptime.date_list2vector(self.dates)[1], dtype=np.float64)
        self.bperp = _rng(seed, _RNG_BPERP).normal(0, 50, num_date).astype(np.float32)
        self.bperp -= self.bperp[0]

        self.coherence = make_coherence(self.grid, self.preset.valid_fraction,
                                        _rng(seed, _RNG_COH))
        self.mask = self.coherence >= MIN_TEMP_COH
        self.geometry = make_geometry(self.grid, _rng(seed, _RNG_HEIGHT))
        self.hotspots = place_hotspots(self.grid, self.preset, self.difficulty["amp_col"],
                                       self.mask, _rng(seed, _RNG_HOTSPOT))
        self.bowl, self.bowl_id = rasterise_hotspots(self.grid, self.hotspots)
        support = self.bowl > 0
        self.unwrap = make_unwrap_patches(self.grid, num_date, self.difficulty, support,
                                          _rng(seed, _RNG_UNWRAP))
        self.unwrap_mask = np.zeros(self.grid.shape, dtype=np.int8)
        for flat, _, _, _ in self.unwrap:
            self.unwrap_mask.flat[flat] = 1
            # unwrapping errors lower the temporal coherence, but most stay in the mask
            self.coherence.flat[flat] = np.minimum(self.coherence.flat[flat], 0.8)
        self.ref_yx = choose_reference(self.grid, self.coherence, self.mask,
                                       support | self.unwrap_mask.astype(bool),
                                       _rng(seed, _RNG_REF))
        self._init_nuisance()

    # -- nuisances shared by all epochs
    def _init_nuisance(self):
        d = self.difficulty
        rng = _rng(self.seed, _RNG_RAMP)
        x, y = self.grid.xy_km()
        self.x_km, self.y_km = x.astype(np.float32), y.astype(np.float32)
        ext_y, ext_x = self.grid.extent_km
        # gradient (m/km) whose plane has a spatial std of d['ramp'] over the scene
        self.ramp_sigma = d["ramp"] / math.sqrt((ext_x ** 2 + ext_y ** 2) / 12)
        angle = rng.uniform(0, 2 * np.pi)
        trend = d["ramp_trend"] / math.hypot(ext_x, ext_y)          # m/km/yr
        self.ramp_trend = (trend * math.cos(angle), trend * math.sin(angle))
        season = FieldGenerator(self.grid.shape, self.grid.dy_km, self.grid.dx_km,
                                20.0).draw(_rng(self.seed, _RNG_SEASON))
        self.season_amp = (d["seasonal"] * np.clip(1 + 0.3 * season, 0.3, 1.7)).astype(np.float32)
        # phase noise of std sqrt(-2 ln(coherence)) rad has |E exp(j phase)| = coherence,
        # so the noise grows as coherence drops; d["white"] is its level at coherence 0.93
        ratio = np.log(np.clip(self.coherence, 0.05, 0.999)) / math.log(0.93)
        self.white_std = (d["white"] * np.sqrt(ratio)).astype(np.float32)
        self.atmo = FieldGenerator(self.grid.shape, self.grid.dy_km, self.grid.dx_km,
                                   ATMO_CORR_KM)
        self.hot_flat = np.flatnonzero(self.bowl > 0)
        self.hot_bowl = self.bowl.flat[self.hot_flat]
        self.hot_idx = self.bowl_id.flat[self.hot_flat] - 1
        self.hot_series = np.stack([h.amplitude * behaviour_series(h.behaviour, self.years)
                                    for h in self.hotspots])

    @property
    def num_date(self):
        return len(self.dates)

    def hotspot_timeseries(self):
        """K x T signal at each hotspot's peak, referenced to the first date (m)."""
        return self.hot_series - self.hot_series[:, :1]

    def raw_epoch(self, t):
        """Unreferenced LOS displacement of epoch t (float64, m)."""
        rng = _rng(self.seed, _RNG_EPOCH, t)
        years = self.years[t]
        atmo_std = self.difficulty["atmo"] * rng.gamma(4.0, 0.25)
        out = self.atmo.draw(rng).astype(np.float64)
        out *= atmo_std
        out += self.white_std * rng.standard_normal(self.grid.shape, dtype=np.float32)
        dt = years - self.years[0]
        gx = rng.normal(0, self.ramp_sigma) + self.ramp_trend[0] * dt
        gy = rng.normal(0, self.ramp_sigma) + self.ramp_trend[1] * dt
        out += gx * self.x_km[None, :]
        out += gy * self.y_km[:, None]
        out += self.season_amp * math.cos(2 * math.pi * (years - SEASON_PEAK_BACKGROUND))
        flat = out.reshape(-1)
        flat[self.hot_flat] += self.hot_bowl * self.hot_series[self.hot_idx, t]
        for idx, start, stop, jump in self.unwrap:
            if start <= t < stop:
                flat[idx] += jump
        return out

    def epochs(self):
        """Yield (t, referenced displacement float64 LENGTH x WIDTH)."""
        ry, rx = self.ref_yx
        first = None
        for t in range(self.num_date):
            raw = self.raw_epoch(t)
            raw -= raw[ry, rx]
            if first is None:
                first = raw.copy()
            raw -= first
            yield t, raw

    # -- metadata
    def truth_raster(self):
        truth = np.where(self.bowl >= TRUTH_LEVEL, self.bowl_id, 0).astype(np.int32)
        truth[~self.mask] = -1
        return truth

    def attributes(self):
        grid = self.grid
        ry, rx = self.ref_yx
        lat, lon = grid.lat_lon(ry, rx)
        atr = {**sensor_attributes(), **grid.attributes()}
        first, last = self.dates[0], self.dates[-1]
        atr.update({"REF_Y": ry, "REF_X": rx, "REF_LAT": round(float(lat), 9),
                    "REF_LON": round(float(lon), 9), "REF_DATE": first, "START_DATE": first,
                    "END_DATE": last, "DATE12": f"{first[2:]}_{last[2:]}"})
        return atr

    def parameters(self):
        d = self.difficulty
        return {
            "simulate.preset": self.preset_name, "simulate.difficulty": self.difficulty_name,
            "simulate.seed": self.seed, "simulate.numDate": self.num_date,
            "simulate.numHotspot": len(self.hotspots),
            "simulate.truthRule": f"measured pixel in hotspot k where its bowl >= "
                                  f"{TRUTH_LEVEL:g} x peak",
            "simulate.atmoStd": d["atmo"], "simulate.atmoCorrelationKm": ATMO_CORR_KM,
            "simulate.whiteStd": d["white"], "simulate.rampStd": d["ramp"],
            "simulate.rampTrend": d["ramp_trend"], "simulate.backgroundSeasonal": d["seasonal"],
            "simulate.numUnwrapPatch": len(self.unwrap), "simulate.minTempCoh": MIN_TEMP_COH,
        }


# ---------------------------------------------------------------- writers

def _write_mintpy(path, datasets, atr, units=None):
    from mintpy.utils import writefile
    with atomic_path(path) as tmp:
        # writefile.write prints the temporary name even with print_msg=False
        with contextlib.redirect_stdout(io.StringIO()):
            writefile.write(datasets, out_file=str(tmp), ds_unit_dict=units, print_msg=False,
                            metadata={k: str(v) for k, v in atr.items()})
    return Path(path)


def write_truth(path, scene):
    grid = scene.grid
    truth = scene.truth_raster()
    hot = scene.hotspots
    lat, lon = grid.lat_lon([h.row for h in hot], [h.col for h in hot])
    attrs = {**scene.attributes(), **scene.parameters(), "FILE_TYPE": "mask", "UNIT": "1",
             "NO_DATA_VALUE": -1, "DATA_TYPE": "int32"}
    datasets = {
        "hotspot": truth,
        "pixelTruth": truth[scene.mask],
        "hotspotId": np.array([h.hid for h in hot], dtype=np.int32),
        "behaviour": np.array([h.behaviour for h in hot]),
        "twinGroup": np.array([h.twin for h in hot], dtype=np.int32),
        "amplitude": np.array([h.amplitude for h in hot], dtype=np.float64),
        "centerLat": np.asarray(lat, dtype=np.float64),
        "centerLon": np.asarray(lon, dtype=np.float64),
        "radiusKm": np.array([h.radius_km for h in hot]),
        "semiMajorKm": np.array([h.a_km * h.level_scale for h in hot]),
        "semiMinorKm": np.array([h.b_km * h.level_scale for h in hot]),
        "azimuthDeg": np.array([math.degrees(h.theta) for h in hot]),
        "numPixel": np.array([int((truth == h.hid).sum()) for h in hot], dtype=np.int64),
        "hotspotTimeseries": scene.hotspot_timeseries().astype(np.float32),
        "date": np.array(scene.dates, dtype="S8"),
        "unwrapError": scene.unwrap_mask,
    }
    return write_h5(path, datasets, attrs, compression="gzip")


def _chunk_depth(path):
    with h5py.File(path, "r") as f:
        chunks = f["timeseries"].chunks
    return chunks[0] if chunks else 1


def simulate_scene(outdir, preset="small", difficulty="easy", seed=0, num_date=None,
                   wabinsar=True, mat_format="v73", print_msg=True):
    """Write a simulated scene (MintPy products, WabInSAR export, truth) into outdir.

    Returns a dict name -> Path of the files written.
    """
    from mintpy.utils import ptime, writefile
    vprint = print if print_msg else (lambda *a, **k: None)
    outdir = Path(outdir)
    scene = Scene(preset, difficulty, seed, num_date)
    grid, mask = scene.grid, scene.mask
    length, width = grid.shape
    num_pixel, num_date = int(mask.sum()), scene.num_date
    if wabinsar and mat_format == "v5":
        MatWriter.check_v5_size(num_pixel, num_date)
    mat = MatWriter(mat_format, created=_created_stamp(scene.dates[-1]))
    vprint(f"simulate: {preset} / {difficulty} scene, seed {seed}: {length} x {width} grid, "
           f"{num_pixel} valid pixels, {num_date} dates, {len(scene.hotspots)} hotspots")

    atr = scene.attributes()
    paths = {}
    geo_atr = {k: v for k, v in atr.items() if not k.startswith("REF_") and k != "DATE12"}
    geo_atr.update({"FILE_TYPE": "geometry", "UNIT": "1"})
    paths["geometry"] = _write_mintpy(outdir / "inputs" / "geometryGeo.h5", scene.geometry,
                                      geo_atr)
    paths["temporalCoherence"] = _write_mintpy(
        outdir / "temporalCoherence.h5", {"temporalCoherence": scene.coherence},
        {**atr, "FILE_TYPE": "temporalCoherence", "UNIT": "1"})
    paths["mask"] = _write_mintpy(outdir / "maskTempCoh.h5", {"mask": mask},
                                  {**atr, "FILE_TYPE": "mask", "UNIT": "1", "DATA_TYPE": "bool"})
    paths["truth"] = write_truth(outdir / "hotspotTruth.h5", scene)

    # time series: one epoch at a time, flushed in slabs of one HDF5 chunk depth
    ts_path = outdir / "timeseries.h5"
    wab_dir = outdir / "wabinsar"
    years = scene.years
    tc = years - years.mean()
    stt = float((tc ** 2).sum())
    sum_d = np.zeros(grid.shape)
    sum_d2 = np.zeros(grid.shape)
    sum_td = np.zeros(grid.shape)
    with contextlib.ExitStack() as stack:
        ts_tmp = stack.enter_context(atomic_path(ts_path))
        ts_atr = {k: str(v) for k, v in {**atr, "FILE_TYPE": "timeseries", "UNIT": "m"}.items()}
        writefile.layout_hdf5(str(ts_tmp), {
            "date": [np.dtype("S8"), (num_date,), np.array(scene.dates, dtype=np.bytes_)],
            "bperp": [np.float32, (num_date,), scene.bperp],
            "timeseries": [np.float32, (num_date, length, width)],
        }, metadata=ts_atr, print_msg=False)
        wab = None
        if wabinsar:
            wab_tmp = stack.enter_context(atomic_path(wab_dir / "R_TS_den.mat"))
            wab = stack.enter_context(_TimeseriesMat(wab_tmp, num_pixel, num_date, mat_format,
                                                     mat.created))
        # whole chunks per write: a partial-chunk write would read-modify-write each chunk
        depth = _chunk_depth(ts_tmp)
        buf = np.empty((depth, length, width), dtype=np.float32)
        prog = ptime.progressBar(maxValue=num_date, prefix="epochs ", print_msg=print_msg)
        t0 = 0
        for t, disp in scene.epochs():
            sum_d += disp
            sum_td += tc[t] * disp
            sum_d2 += disp * disp
            buf[t - t0] = disp
            if t - t0 + 1 == depth or t == num_date - 1:
                n = t - t0 + 1
                writefile.write_hdf5_block(str(ts_tmp), buf[:n], "timeseries",
                                           block=[t0, t0 + n, 0, length, 0, width],
                                           print_msg=False)
                if wab is not None:
                    wab.write(t0, buf[:n][:, mask] * np.float32(1000))
                t0 = t + 1
            prog.update(t + 1, every=max(1, num_date // 25), suffix=scene.dates[t])
        prog.close()
    paths["timeseries"] = ts_path
    if wabinsar:
        paths["wabinsar_timeseries"] = wab_dir / "R_TS_den.mat"

    velocity = sum_td / stt
    resid = sum_d2 - sum_d ** 2 / num_date - velocity ** 2 * stt
    velocity_std = np.sqrt(np.clip(resid, 0, None) / max(num_date - 2, 1) / stt)
    paths["velocity"] = _write_mintpy(
        outdir / "velocity.h5",
        {"velocity": velocity.astype(np.float32), "velocityStd": velocity_std.astype(np.float32)},
        {**atr, "FILE_TYPE": "velocity", "UNIT": "m/year"},
        units={"velocity": "m/year", "velocityStd": "m/year"})

    if wabinsar:
        lat, lon = grid.lat_lon(*np.nonzero(mask))
        elpx = np.column_stack([lon, lat, scene.geometry["height"][mask].astype(np.float64)])
        for name, value in (("elpx_ll", elpx),
                            ("MVel", (velocity[mask] * 1000).astype(np.float32)),
                            ("MVelq", (velocity_std[mask] * 1000).astype(np.float32)),
                            ("Pco_m", scene.coherence[mask]),
                            ("incidenceAngle", scene.geometry["incidenceAngle"][mask])):
            paths[f"wabinsar_{name}"] = mat.write(wab_dir / f"{name}.mat", name, value)
        with atomic_path(wab_dir / "dates.txt") as tmp:
            Path(tmp).write_text("\n".join(scene.dates) + "\n")
        paths["wabinsar_dates"] = wab_dir / "dates.txt"
    for key, path in paths.items():
        vprint(f"  {key:<26} {path}")
    return paths


def _created_stamp(last_date):
    from datetime import datetime
    return datetime.strptime(last_date, "%Y%m%d").strftime("%a %b %d %H:%M:%S %Y")


# ---------------------------------------------------------------- reading the truth

FAMILY_TRUTH = ("shape", "sizeKm", "aspectRatio", "peakSignal", "eligible", "noiseLevel")


def read_truth(path):
    """The truth file as a dict: pixelTruth, hotspot raster and the per-hotspot table."""
    from hotspot.utils.h5io import open_h5, read_attrs, require_dataset
    out = {}
    with open_h5(path) as f:
        for name in ("pixelTruth", "hotspot", "hotspotId", "behaviour", "twinGroup",
                     "amplitude", "centerLat", "centerLon", "radiusKm", "numPixel"):
            out[name] = require_dataset(f, name, path)[()]
        # scene-family truths (hotspot.simulation.family) describe each hotspot further
        for name in FAMILY_TRUTH:
            if name in f:
                out[name] = f[name][()]
    for name in ("behaviour", "shape"):
        if name in out:
            out[name] = [b.decode() if isinstance(b, bytes) else str(b) for b in out[name]]
    out["attrs"] = read_attrs(path)
    return out


def truth_summary(path):
    """A readable table of the hotspots of a truth file."""
    truth = read_truth(path)
    atr = truth["attrs"]
    lines = [f"truth: {path}  ({atr.get('simulate.preset')} / {atr.get('simulate.difficulty')}, "
             f"seed {atr.get('simulate.seed')}; {atr.get('simulate.truthRule')})",
             f"{'id':>3}  {'behaviour':<20} {'twin':>4} {'amplitude':>10} {'lat':>9} "
             f"{'lon':>10} {'radius':>7} {'pixels':>7}"]
    for i, hid in enumerate(truth["hotspotId"]):
        twin = truth["twinGroup"][i]
        lines.append(f"{hid:>3}  {truth['behaviour'][i]:<20} {twin if twin else '-':>4} "
                     f"{truth['amplitude'][i] * 100:>7.1f} cm {truth['centerLat'][i]:>9.4f} "
                     f"{truth['centerLon'][i]:>10.4f} {truth['radiusKm'][i]:>5.2f}km "
                     f"{truth['numPixel'][i]:>7d}")
    measured = truth["pixelTruth"]
    lines.append(f"{int((measured > 0).sum())} hotspot pixels of {measured.size} measured pixels")
    return "\n".join(lines)
