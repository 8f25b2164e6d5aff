"""MATLAB files of the simulated WabInSAR export: a MAT v7.3 (HDF5) writer and the streamed
time-series .mat.
"""
from pathlib import Path

import h5py
import numpy as np

from hotspot.utils.errors import HotspotError
from hotspot.utils.h5io import atomic_path

MAT73_HEADER_SIZE = 512
V5_MAX_BYTES = 2 ** 31 - 1024   # MAT v5 stores sizes in 32 bits


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
