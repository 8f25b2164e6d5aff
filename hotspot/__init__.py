"""hotspot: deformation hotspots from InSAR displacement time series.

A MintPy plug-in implementing Tiwari & Shirzaei (2024, Int. J. Appl. Earth Obs.
Geoinf. 126, 103611): time-series k-means + DBSCAN + LSTM classifiers + a
dispersion test that keeps the compact clusters as hotspots.
"""
__version__ = "0.1.0"

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
