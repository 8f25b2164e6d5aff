"""hotspot: deformation hotspots from InSAR displacement time series.

A MintPy plug-in implementing Tiwari & Shirzaei (2024, Int. J. Appl. Earth Obs.
Geoinf. 126, 103611): time-series k-means + DBSCAN + LSTM classifiers + a
dispersion test that keeps the compact clusters as hotspots.
"""
import os
import sys

__version__ = "0.1.0"


def _user_numba_cache():
    """Numba's cache=True kernels cache beside their module by default, i.e. inside the installed
    package: a non-editable install's site-packages/hotspot then survives an uninstall (pip
    removes only the files it installed) and shadows a later editable install. Send the cache
    to the user's cache directory instead, unless NUMBA_CACHE_DIR is set; this must happen
    before numba compiles anything, hence here."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "hotspot", "numba")
    os.environ["NUMBA_CACHE_DIR"] = path
    numba = sys.modules.get("numba")
    if numba is not None:       # imported before hotspot (e.g. by tslearn): config already read
        numba.config.CACHE_DIR = path


_user_numba_cache()

STEP_LIST = [
    "load_data",
    "covariogram",
    "tskm",
    "dbscan",
    "train_lstm",
    "predict",
    "dispersion",
    "plot",
]
