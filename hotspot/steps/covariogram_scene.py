"""Covariogram range, bins and fallback correlation length from the scene (auto values).

maxDistance auto = min(1/2 of the diagonal of the pixels' bounding box, 30 km); binSize auto
= max(maxDistance / 60, the median nearest-neighbour pixel spacing): scenes of 60 km and more
keep the paper's 0.5 km bins over 30 km, a 4 x 3 km EGMS burst gets 45 m bins over 2.7 km.
numPair auto = min(10^7, the number of distinct pairs of the sampled pixels).  When the
covariogram resolves no correlation length, the length falls back to max(1/10 of the longer
side of the bounding box, 4 pixel spacings) (2 x that is train_lstm's blockSize fallback, 1/5
of the extent), and CORRELATION_LENGTH_SOURCE says why.
"""
import math

import numpy as np

from hotspot.utils.errors import HotspotError
from hotspot.utils.geo import lonlat_to_xy_km, pixel_spacing

KEYS = {k: f"hotspot.covariogram.{k}" for k in ("numPair", "binSize", "maxDistance", "model",
                                                "deramp")}
# Auto range and bins (module docstring): today's 0.5 km bins over 30 km on large scenes.
MAX_DISTANCE_KM = 30.0
MAX_DISTANCE_FRACTION = 0.5
NUM_BIN_AUTO = 60
NUM_PAIR_AUTO = 10_000_000
# Fallback correlation length: 1/10 of the longer side, at least 4 pixel spacings.
FALLBACK_EXTENT_FRACTION = 0.1
FALLBACK_MIN_SPACING = 4
MAX_DISTANCE_RULE = (f"min({MAX_DISTANCE_FRACTION:g} x the scene's bounding-box diagonal, "
                     f"{MAX_DISTANCE_KM:g} km)")
BIN_SIZE_RULE = f"max(maxDistance / {NUM_BIN_AUTO}, the median pixel spacing)"
NUM_PAIR_RULE = f"min({NUM_PAIR_AUTO}, number of distinct pairs of the sampled pixels)"
FALLBACK_RULE = (f"max({FALLBACK_EXTENT_FRACTION:g} x the longer side of the scene's bounding "
                 f"box, {FALLBACK_MIN_SPACING} x the median pixel spacing)")


def check_range(bin_size, max_distance, source, auto=""):
    """maxDistance must hold at least one bin and at most 100000 (auto names the computed key)."""
    if not max_distance > bin_size:
        raise HotspotError(f"{source}: {KEYS['maxDistance']} = {max_distance:g}{auto} is not "
                           f"valid; expected a distance (km) larger than {KEYS['binSize']} "
                           f"= {bin_size:g}")
    if max_distance / bin_size > 100_000:
        raise HotspotError(f"{source}: {KEYS['maxDistance']} / {KEYS['binSize']} = "
                           f"{max_distance / bin_size:.0f} bins{auto}; expected at most 100000 bins")


def scene_geometry(lon, lat, seed=0):
    """Extent and median nearest-neighbour spacing (km) of the pixels with a position."""
    ok = np.isfinite(lon) & np.isfinite(lat)
    x, y = lonlat_to_xy_km(np.asarray(lon)[ok], np.asarray(lat)[ok])
    if x.size < 2:
        raise HotspotError("fewer than 2 pixels with a position; cannot compute a covariogram")
    width, height = float(np.ptp(x)), float(np.ptp(y))
    return {"width_km": width, "height_km": height, "diagonal_km": math.hypot(width, height),
            "side_km": max(width, height), "spacing_km": pixel_spacing(x, y, seed)}


def auto_range(geometry, bin_size=None, max_distance=None, source="template"):
    """(binSize, maxDistance, how each was set): the values given, or the auto rule
    (module docstring) for those that are None."""
    how = {}
    if max_distance is None:
        max_distance = min(MAX_DISTANCE_FRACTION * geometry["diagonal_km"], MAX_DISTANCE_KM)
        how["maxDistance"] = f"auto: {MAX_DISTANCE_RULE}"
        if not max_distance > 0:
            raise HotspotError(f"{source}: {KEYS['maxDistance']} = auto: all pixels share one "
                               "position; set it (km) or give pixels at several positions")
    else:
        how["maxDistance"] = "template"
    if bin_size is None:
        bin_size = max(max_distance / NUM_BIN_AUTO, geometry["spacing_km"])
        how["binSize"] = f"auto: {BIN_SIZE_RULE}"
    else:
        how["binSize"] = "template"
    auto = " (auto)" if how["maxDistance"] != "template" else ""
    check_range(bin_size, max_distance, source, auto)
    return bin_size, max_distance, how


def auto_num_pair(num_sample_pixel):
    """numPair auto: 10^7, or the number of distinct pixel pairs when fewer."""
    return int(max(1, min(NUM_PAIR_AUTO, num_sample_pixel * (num_sample_pixel - 1) // 2)))


def fallback_length(geometry):
    """Correlation length (km) used when the covariogram cannot resolve one (FALLBACK_RULE)."""
    return max(FALLBACK_EXTENT_FRACTION * geometry["side_km"],
               FALLBACK_MIN_SPACING * geometry["spacing_km"])


def resolve_length(result, geometry):
    """Set result['length'] / ['length_source']: the fit, or the fallback with its reason.

    The fitted length is kept in result['length_fit'] (NaN when the fit failed).
    """
    result.setdefault("length_fit", float(result["length"]))
    reason = None if result["status"] == "ok" else result["status"]
    if reason is None:
        note = result.get("fit_note", "")
        result["length_source"] = f"fit ({note})" if note else "fit"
        return result
    result["length"] = fallback_length(geometry)
    result["length_std"] = np.nan
    result["length_std_method"] = "none (fallback)"
    result["length_source"] = f"fallback: {reason}"
    return result
