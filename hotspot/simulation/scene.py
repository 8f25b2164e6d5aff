"""Simulated InSAR scenes with known deformation hotspots.

simulate_scene(outdir, preset, difficulty, seed) writes one scene twice, as
MintPy products and as a WabInSAR export, plus the truth used by hotspot.simulation.score:

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
import math
from pathlib import Path

import numpy as np

from hotspot import products
from hotspot.simulation.fields import (FieldGenerator, Grid, choose_reference, make_coherence,
                                       make_geometry, make_unwrap_patches, place_hotspots,
                                       rasterise_hotspots, scene_attributes, truth_labels)
from hotspot.simulation.matfile import MatWriter, _TimeseriesMat
from hotspot.simulation.mintpy_writer import write_mintpy_scene
from hotspot.simulation.presets import (ATMO_CORR_KM, DIFFICULTIES, MIN_TEMP_COH, PRESETS,
                                        SEASON_PEAK_BACKGROUND, SEASON_PEAK_HOTSPOT, TRUTH_LEVEL)
from hotspot.simulation.truth import write_truth
from hotspot.utils.errors import HotspotError
from hotspot.utils.h5io import atomic_path

# Random stream ids of the layout components (fixed so that adding one keeps the others).
_RNG_DATES, _RNG_COH, _RNG_HEIGHT, _RNG_HOTSPOT, _RNG_UNWRAP, _RNG_REF, _RNG_RAMP, \
    _RNG_BPERP, _RNG_SEASON = range(1, 10)
_RNG_EPOCH = 100


def _rng(seed, *key):
    return np.random.default_rng([int(seed), *key])


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
        return truth_labels(self.bowl, self.bowl_id, self.mask)

    def attributes(self):
        return scene_attributes(self.grid, self.ref_yx, self.dates)

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


def simulate_scene(outdir, preset="small", difficulty="easy", seed=0, num_date=None,
                   wabinsar=True, mat_format="v73", print_msg=True):
    """Write a simulated scene (MintPy products, WabInSAR export, truth) into outdir.

    Returns a dict name -> Path of the files written.
    """
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

    wab_dir = outdir / "wabinsar"
    with contextlib.ExitStack() as stack:
        on_block = None
        if wabinsar:
            wab_tmp = stack.enter_context(atomic_path(wab_dir / "R_TS_den.mat"))
            wab = stack.enter_context(_TimeseriesMat(wab_tmp, num_pixel, num_date, mat_format,
                                                     mat.created))

            # R_TS_den holds the mask pixels of each slab, in mm
            def on_block(t0, block):
                wab.write(t0, block[:, mask] * np.float32(1000))
        paths, velocity, velocity_std = write_mintpy_scene(outdir, scene, "geometryGeo.h5",
                                                           scene.epochs(), on_block, print_msg)
    paths["truth"] = write_truth(outdir / products.TRUTH, scene)

    if wabinsar:
        paths["wabinsar_timeseries"] = wab_dir / "R_TS_den.mat"
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
