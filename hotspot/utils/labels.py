"""Label files (clusterTSKM.h5, clusterDBSCAN.h5, clusterLSTM.h5, hotspot.h5, ...).

Convention: cluster ids start at 1; 0 = measured pixel with no cluster (noise);
-1 = no measurement (NO_DATA_VALUE = -1).  Every label file holds
  pixelLabel   N int32, in hotspotStack.h5 order (what later steps read)
  <name>       the map: LENGTH x WIDTH raster with the source grid's MintPy
               attributes for gridded inputs (so view.py overlays it on
               velocity.h5), or the N-vector for point inputs.
"""
import numpy as np

from hotspot.utils.errors import HotspotError
from hotspot.utils.h5io import open_h5, require_dataset, write_h5
from hotspot.utils.stack import read_info, read_pixels

NO_DATA = -1
# Attributes that describe the stack itself, not the grid a label map lives on.
_STACK_ONLY_ATTRS = {"FILE_TYPE", "NUM_PIXEL", "NUM_DATE", "UNIT", "DATA_TYPE", "PROCESSOR",
                     "GRID", "REF_DATE", "START_DATE", "END_DATE", "SOURCE_FILE",
                     "NUM_SOURCE_PIXEL", "NUM_MASKED", "NUM_NAN_DROPPED"}


def label_to_map(pixel_label, stack_file, fill=NO_DATA, dtype=np.int32):
    """Scatter per-pixel values into the source raster (grid) or return them as a vector."""
    info = read_info(stack_file)
    values = np.asarray(pixel_label)
    if values.shape[0] != info.num_pixel:
        raise HotspotError(f"{stack_file}: {info.num_pixel} pixels but {values.shape[0]} labels")
    if not info.is_grid:
        return values.astype(dtype)
    rc = read_pixels(stack_file, ["row", "col"])
    out = np.full(info.shape, fill, dtype=dtype)
    out[rc["row"], rc["col"]] = values
    return out


def grid_attrs(stack_file):
    """MintPy attributes for a map on the stack's grid (or point) geometry."""
    info = read_info(stack_file)
    attrs = {k: v for k, v in info.attrs.items() if k not in _STACK_ONLY_ATTRS
             and not k.startswith("hotspot.")}
    if not info.is_grid:
        attrs.update({"LENGTH": info.num_pixel, "WIDTH": 1})
    attrs["SOURCE_GRID"] = "yes" if info.is_grid else "no"
    return attrs


def write_label_file(path, pixel_label, stack_file, name="label", datasets=None, attrs=None,
                     units=None):
    """Atomically write a label file following the convention above.

    datasets: extra arrays (centroids, tables, ...); attrs: the step's config
    keys and anything else to keep as root attributes; units: {dataset: UNIT} where the
    name alone does not tell (hotspot.utils.units).
    """
    pixel_label = np.asarray(pixel_label, dtype=np.int32)
    if pixel_label.min(initial=0) < NO_DATA:
        raise ValueError("labels below -1 are not allowed")
    out_attrs = grid_attrs(stack_file)
    out_attrs.update({"FILE_TYPE": "mask", "UNIT": "1", "NO_DATA_VALUE": NO_DATA,
                      "DATA_TYPE": "int32",
                      "NUM_CLUSTER": int(pixel_label.max(initial=0))})
    out_attrs.update(attrs or {})
    data = {name: label_to_map(pixel_label, stack_file), "pixelLabel": pixel_label}
    data.update(datasets or {})
    return write_h5(path, data, out_attrs, units=units)


def read_pixel_label(path, name="pixelLabel"):
    """Per-pixel labels (stack order) of a label file."""
    with open_h5(path) as f:
        return require_dataset(f, name, path)[:].astype(np.int32)
