"""The pieces of a simulated scene: its grid and sensor attributes, correlated random fields,
coherence and geometry, the placed hotspots, unwrapping-error patches and the reference point.
"""
import math
from dataclasses import dataclass

import numpy as np

from hotspot.simulation.presets import (CATALOGUE, HEADING, KM_PER_DEG, MIN_TEMP_COH, TRUTH_LEVEL,
                                        WAVELENGTH, Preset)
from hotspot.utils.errors import HotspotError


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


def rasterise_hotspots(grid, hotspots, footprint=None):
    """Bowl values and hotspot ids on the grid (bowls never overlap).

    footprint(hot, grid) -> (row slice, col slice, values); default hot.bowl(grid)."""
    footprint = footprint or (lambda hot, g: hot.bowl(g))
    bowl = np.zeros(grid.shape, dtype=np.float32)
    ids = np.zeros(grid.shape, dtype=np.int32)
    for hot in hotspots:
        rs, cs, values = footprint(hot, grid)
        sub = values > 0
        bowl[rs, cs][sub] = values[sub]
        ids[rs, cs][sub] = hot.hid
    return bowl, ids


def make_unwrap_patches(grid, num_date, difficulty, support, rng):
    """Small patches that jump by +-lambda/2 (or twice that) from one epoch on."""
    ext_y, ext_x = grid.extent_km
    n = max(1, int(round(difficulty["unwrap_per_1000km2"] * ext_x * ext_y / 1000)))
    return unwrap_patches(grid, num_date, n, support, rng, radius_km=(0.15, 0.6),
                          cycles=(1, difficulty["max_cycles"]), tries_per_patch=50)


def unwrap_patches(grid, num_date, num_patch, support, rng, radius_km, cycles, tries_per_patch,
                   edge=None, avoid=None):
    """Up to num_patch discs of random radius in radius_km, clear of `support`, whose pixels
    jump by n x lambda / 2 (n in cycles, random sign) from a random epoch to the last one or
    to a random later one.  Returns a list of (flat indices, start, stop, jump in m).

    edge: an optional LENGTH x WIDTH field e that moves the disc's edge to radius x (1 + e),
    for irregular blobs; avoid: a flat index (the reference pixel) no patch may cover.
    A place that fails is redrawn, at most tries_per_patch x num_patch draws in all.
    """
    x, y = grid.xy_km()
    patches = []
    for _ in range(tries_per_patch * num_patch):
        if len(patches) == num_patch:
            break
        row, col = int(rng.integers(grid.shape[0])), int(rng.integers(grid.shape[1]))
        radius = float(rng.uniform(*radius_km))
        ry, rx = int(radius / grid.dy_km) + 1, int(radius / grid.dx_km) + 1
        rs = slice(max(0, row - ry), row + ry + 1)
        cs = slice(max(0, col - rx), col + rx + 1)
        if support[rs, cs].any():
            continue
        dist = np.hypot((y[rs] - y[row])[:, None], (x[cs] - x[col])[None, :])
        limit = radius if edge is None else radius * (1 + edge[rs, cs])
        rr, cc = np.nonzero(dist <= limit)
        flat = (rr + rs.start) * grid.shape[1] + cc + cs.start
        if flat.size == 0 or (avoid is not None and avoid in flat):
            continue
        start = int(rng.integers(1, num_date))
        stop = num_date if rng.random() < 0.5 else int(rng.integers(start + 1, num_date + 1))
        step = int(rng.integers(cycles[0], cycles[1] + 1)) * int(rng.choice([-1, 1]))
        patches.append((flat, start, stop, step * WAVELENGTH / 2))
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


def truth_labels(profile, ids, mask):
    """Truth raster: hotspot id where the profile reaches TRUTH_LEVEL, 0 elsewhere, -1 masked."""
    truth = np.where(profile >= TRUTH_LEVEL, ids, 0).astype(np.int32)
    truth[~mask] = -1
    return truth


def scene_attributes(grid, ref_yx, dates):
    """MintPy attributes of a simulated scene: sensor, grid, reference pixel and dates."""
    ry, rx = ref_yx
    lat, lon = grid.lat_lon(ry, rx)
    atr = {**sensor_attributes(), **grid.attributes()}
    first, last = dates[0], dates[-1]
    atr.update({"REF_Y": ry, "REF_X": rx, "REF_LAT": round(float(lat), 9),
                "REF_LON": round(float(lon), 9), "REF_DATE": first, "START_DATE": first,
                "END_DATE": last, "DATE12": f"{first[2:]}_{last[2:]}"})
    return atr
