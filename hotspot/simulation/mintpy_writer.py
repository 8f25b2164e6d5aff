"""The MintPy products of a simulated scene, shared by the preset scenes (hotspot.simulation.scene)
and the scene family (hotspot.simulation.family):

  OUTDIR/inputs/GEOMETRY_NAME     the scene's geometry datasets
  OUTDIR/temporalCoherence.h5     temporalCoherence
  OUTDIR/maskTempCoh.h5           mask
  OUTDIR/timeseries.h5            timeseries (T x LENGTH x WIDTH, m), date, bperp
  OUTDIR/velocity.h5              velocity, velocityStd (m/year, linear fit of the time series)

The time series is streamed: epochs arrive one at a time and are written in slabs of one
HDF5 chunk depth, and the velocity is fitted from running sums, so memory does not grow with
the number of epochs.
"""
import contextlib
import io
from pathlib import Path

import h5py
import numpy as np

from hotspot.utils.h5io import atomic_path


def write_mintpy(path, datasets, atr, units=None):
    """One MintPy HDF5 file (mintpy.utils.writefile) written via a temporary name."""
    from mintpy.utils import writefile
    with atomic_path(path) as tmp:
        # writefile.write prints the temporary name even with print_msg=False
        with contextlib.redirect_stdout(io.StringIO()):
            writefile.write(datasets, out_file=str(tmp), ds_unit_dict=units, print_msg=False,
                            metadata={k: str(v) for k, v in atr.items()})
    return Path(path)


def _chunk_depth(path):
    with h5py.File(path, "r") as f:
        chunks = f["timeseries"].chunks
    return chunks[0] if chunks else 1


class _LinearFit:
    """Least-squares velocity and its standard error per pixel, from running sums over epochs."""

    def __init__(self, years, shape):
        self.tc = years - years.mean()
        self.stt = float((self.tc ** 2).sum())
        self.num_date = len(years)
        self.sum_d = np.zeros(shape)
        self.sum_d2 = np.zeros(shape)
        self.sum_td = np.zeros(shape)

    def add(self, t, disp):
        self.sum_d += disp
        self.sum_td += self.tc[t] * disp
        self.sum_d2 += disp * disp

    def result(self):
        velocity = self.sum_td / self.stt
        resid = self.sum_d2 - self.sum_d ** 2 / self.num_date - velocity ** 2 * self.stt
        velocity_std = np.sqrt(np.clip(resid, 0, None) / max(self.num_date - 2, 1) / self.stt)
        return velocity, velocity_std


def _write_timeseries(path, scene, atr, epochs, on_block, print_msg):
    """Stream epochs into timeseries.h5; returns the fitted (velocity, velocity_std)."""
    from mintpy.utils import writefile

    from hotspot.utils.progress import progress_bar
    length, width = scene.grid.shape
    num_date = len(scene.dates)
    fit = _LinearFit(scene.years, scene.grid.shape)
    with atomic_path(path) as tmp:
        ts_atr = {k: str(v) for k, v in {**atr, "FILE_TYPE": "timeseries", "UNIT": "m"}.items()}
        writefile.layout_hdf5(str(tmp), {
            "date": [np.dtype("S8"), (num_date,), np.array(scene.dates, dtype=np.bytes_)],
            "bperp": [np.float32, (num_date,), scene.bperp],
            "timeseries": [np.float32, (num_date, length, width)],
        }, metadata=ts_atr, print_msg=False)
        # whole chunks per write: a partial-chunk write would read-modify-write each chunk
        depth = _chunk_depth(tmp)
        buf = np.empty((depth, length, width), dtype=np.float32)
        prog = progress_bar(maxValue=num_date, prefix="epochs ", print_msg=print_msg)
        t0 = 0
        for t, disp in epochs:
            fit.add(t, disp)
            buf[t - t0] = disp
            if t - t0 + 1 == depth or t == num_date - 1:
                n = t - t0 + 1
                writefile.write_hdf5_block(str(tmp), buf[:n], "timeseries",
                                           block=[t0, t0 + n, 0, length, 0, width],
                                           print_msg=False)
                if on_block is not None:
                    on_block(t0, buf[:n])
                t0 = t + 1
            prog.update(t + 1, every=max(1, num_date // 25), suffix=scene.dates[t])
        prog.close()
    return fit.result()


def write_mintpy_scene(outdir, scene, geometry_name, epochs, on_block=None, print_msg=True):
    """Write the MintPy products of `scene` into outdir (see the module docstring).

    scene: grid (.shape), attributes(), geometry (dict of 2-D datasets), coherence, mask,
    dates, years, bperp.  epochs: (t, referenced displacement LENGTH x WIDTH, m) for
    t = 0 .. T-1 in order.  on_block(t0, block): called with each slab (float32, epochs
    t0.. x LENGTH x WIDTH) once written to timeseries.h5, for another export of the series.
    Returns (paths, velocity, velocity_std): a dict name -> Path, and the fitted velocity and
    its standard error (float64, m/year) before their float32 storage.
    """
    outdir = Path(outdir)
    atr = scene.attributes()
    paths = {}
    geo_atr = {k: v for k, v in atr.items() if not k.startswith("REF_") and k != "DATE12"}
    geo_atr.update({"FILE_TYPE": "geometry", "UNIT": "1"})
    paths["geometry"] = write_mintpy(outdir / "inputs" / geometry_name, scene.geometry, geo_atr)
    paths["temporalCoherence"] = write_mintpy(
        outdir / "temporalCoherence.h5", {"temporalCoherence": scene.coherence},
        {**atr, "FILE_TYPE": "temporalCoherence", "UNIT": "1"})
    paths["mask"] = write_mintpy(outdir / "maskTempCoh.h5", {"mask": scene.mask},
                                 {**atr, "FILE_TYPE": "mask", "UNIT": "1", "DATA_TYPE": "bool"})
    paths["timeseries"] = outdir / "timeseries.h5"
    velocity, velocity_std = _write_timeseries(paths["timeseries"], scene, atr, epochs, on_block,
                                               print_msg)
    paths["velocity"] = write_mintpy(
        outdir / "velocity.h5",
        {"velocity": velocity.astype(np.float32), "velocityStd": velocity_std.astype(np.float32)},
        {**atr, "FILE_TYPE": "velocity", "UNIT": "m/year"},
        units={"velocity": "m/year", "velocityStd": "m/year"})
    return paths, velocity, velocity_std
