"""hotspotTruth.h5 of a simulated scene: write, read and summarise the known hotspots.
"""
import math

import numpy as np

from hotspot.utils.h5io import write_h5


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


def read_truth(path):
    """The truth file as a dict: pixelTruth, hotspot raster and the per-hotspot table."""
    from hotspot.utils.h5io import open_h5, read_attrs, require_dataset
    out = {}
    with open_h5(path) as f:
        for name in ("pixelTruth", "hotspot", "hotspotId", "behaviour", "twinGroup",
                     "amplitude", "centerLat", "centerLon", "radiusKm", "numPixel"):
            out[name] = require_dataset(f, name, path)[()]
    out["behaviour"] = [b.decode() if isinstance(b, bytes) else str(b) for b in out["behaviour"]]
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
