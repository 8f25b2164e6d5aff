"""The name of every file the workflow writes in WORKDIR, and their main datasets.

Renaming a product means changing it here only: steps, plots, exports, the CLI and the
benchmarks import these names.  See docs/architecture.md for which step writes and which
reads each file.
"""
# load_data
STACK = "hotspotStack.h5"             # the stack every later step reads (hotspot/utils/stack.py)
# covariogram
COVARIOGRAM = "covariogram.h5"        # root attribute CORRELATION_LENGTH_KM
# tskm
TSKM = "clusterTSKM.h5"               # temporal clusters (label file)
FILTERED = "hotspotFiltered.h5"       # band-passed copy of the stack
# dbscan
DBSCAN = "clusterDBSCAN.h5"           # spatio-temporal clusters (label file)
# train_lstm
TRAIN = "trainLSTM.h5"                # training history, confusion matrices, scores
MODEL_DIR = "model"                   # model/<name>.keras + model/<name>.json (sidecar)
MODEL_SUFFIX = ".keras"
SIDECAR_SUFFIX = ".json"
# predict
LSTM = "clusterLSTM.h5"
LSTMP = "clusterLSTMP.h5"
PREDICT = {"lstm": LSTM, "lstmPerceptron": LSTMP}
# dispersion
DISPERSION = "dispersion.h5"          # per-cluster statistics and series
HOTSPOT = "hotspot.h5"                # the hotspots (label file)
# plot
PIC_DIR = "pic"
PLOT_MANIFEST = "plot.h5"
EXPORT_GEOJSON = "hotspot.geojson"
EXPORT_KMZ = "hotspot.kmz"
EXPORT_CSV = "hotspot.csv"
EXPORT_TIF = "hotspot.tif"
EXPORTS = (EXPORT_GEOJSON, EXPORT_KMZ, EXPORT_CSV, EXPORT_TIF)
# simulation (hotspot_simulate.py)
TRUTH = "hotspotTruth.h5"

# Main datasets.  Every label file holds PIXEL_LABEL (stack order) and its map dataset.
PIXEL_LABEL = "pixelLabel"
LABEL_MAP = "label"                   # map dataset of clusterTSKM / clusterDBSCAN / clusterLSTM*
HOTSPOT_MAP = "hotspot"               # map dataset of hotspot.h5

# Label files in workflow order, for plotting and scoring.
LABEL_FILES = (TSKM, DBSCAN, LSTM, LSTMP, HOTSPOT)
# dispersion.input = auto: the first of these that exists.
DISPERSION_INPUTS = (LSTMP, LSTM, DBSCAN)


def model_file(name):
    """model/<name>.keras, relative to WORKDIR."""
    return f"{MODEL_DIR}/{name}{MODEL_SUFFIX}"


def sidecar_file(name):
    """model/<name>.json, relative to WORKDIR (see hotspot.steps.lstm_models)."""
    return f"{MODEL_DIR}/{name}{SIDECAR_SUFFIX}"
