"""GIS exports of hotspot.h5: hotspot.geojson, hotspot.kmz, hotspot.csv and hotspot.tif.

Outlines are drawn from the hotspot's own pixels, never a convex hull around them:
  gridded (geocoded) input  the union of the pixel footprints, merged exactly on the
                            integer pixel grid (shapely.coverage_union_all), then moved
                            to map coordinates; every pixel centre lies inside.
  points / radar grid       a concave hull of the points (shapely.concave_hull, on local
                            km coordinates) buffered by half the typical point spacing.
Velocities are written in mm/yr, areas in km2 (geodesic, pyproj.Geod on WGS84).
Every file is written to a temporary name and renamed (hotspot.utils.h5io.atomic_path).
"""
import csv
import json
import math
import zipfile
from pathlib import Path

import h5py
import numpy as np
import shapely
from shapely import affinity

from hotspot import products
from hotspot.utils.errors import HotspotError
from hotspot.utils.geo import EARTH_RADIUS_KM, lonlat_to_xy_km
from hotspot.utils.h5io import atomic_path, open_h5, read_attrs
from hotspot.utils.stack import STACK_FILE, read_info, read_pixels

HOTSPOT_FILE = products.HOTSPOT
EXPORT_NAMES = products.EXPORTS
CONCAVE_RATIO = 0.2    # 0 = tightest (jagged), 1 = convex hull; 0.2 follows C-shaped clouds
KM_PER_DEG = np.deg2rad(1.0) * EARTH_RADIUS_KM
# (table dataset, export column, scale): the per-hotspot table in GIS units
COLUMNS = [
    ("hotspotId", "id", None),
    ("parentCluster", "parent_cluster", None),
    ("parentTemporalCluster", "parent_temporal_cluster", None),
    ("numMerged", "num_merged_clusters", None),
    ("numPixel", "num_pixel", None),
    ("areaKm2", "footprint_area_km2", None),
    ("standardDistance", "std_distance_km", None),
    ("ellipseCenterLon", "ellipse_center_lon", None),
    ("ellipseCenterLat", "ellipse_center_lat", None),
    ("ellipseSemiMajor", "ellipse_semi_major_km", None),
    ("ellipseSemiMinor", "ellipse_semi_minor_km", None),
    ("ellipseAngle", "ellipse_angle_deg_ccw_from_east", None),
    ("meanVelocity", "mean_velocity_mm_yr", 1000.0),
    ("stdVelocity", "std_velocity_mm_yr", 1000.0),
    ("minVelocity", "min_velocity_mm_yr", 1000.0),
    ("maxVelocity", "max_velocity_mm_yr", 1000.0),
    ("meanCoherence", "mean_coherence", None),
    ("signalRms", "signal_rms_mm", 1000.0),
    ("noiseLevel", "noise_level_mm", 1000.0),
    ("pValue", "p_value", None),
    ("pValueVelocity", "p_value_velocity", None),
    ("pValueSpatial", "p_value_spatial", None),
    ("qValue", "q_value", None),
    ("clusterVelocity", "velocity_mm_yr", 1000.0),
    ("ringVelocity", "ring_velocity_mm_yr", 1000.0),
    ("velocityContrast", "velocity_contrast_mm_yr", 1000.0),
]
# unit and meaning of every exported field (the README's output table; hotspot.geojson
# carries it as the foreign member "fields")
FIELDS = {
    "id": ("1", "hotspot id, as in hotspot.h5 (H1, H2, ... in the figures)"),
    "parent_cluster": ("1", "cluster id of the label file dispersion read"),
    "parent_temporal_cluster": ("1", "tskm cluster most of its pixels belong to"),
    "num_merged_clusters": ("1", "clusters merged into this hotspot (1 = none)"),
    "num_pixel": ("1", "pixels (grids) or points in the hotspot"),
    "footprint_area_km2": ("km2", "sum of the pixels' own footprints: pixel count x cell area "
                           "(grids), or point count x (median point spacing)^2 (points): the "
                           "area measured. For persistent scatterers crowded along buildings "
                           "(median spacing 3 m) it can be tens of times below area_km2"),
    "std_distance_km": ("km", "standard distance S_d of the pixel positions (paper, eq. 7)"),
    "ellipse_center_lon": ("degrees", "deviational ellipse centre, longitude (WGS84)"),
    "ellipse_center_lat": ("degrees", "deviational ellipse centre, latitude (WGS84)"),
    "ellipse_semi_major_km": ("km", "deviational ellipse semi-major axis (1 sigma)"),
    "ellipse_semi_minor_km": ("km", "deviational ellipse semi-minor axis (1 sigma)"),
    "ellipse_angle_deg_ccw_from_east": ("degrees", "major axis angle, counter-clockwise from "
                                        "east"),
    "mean_velocity_mm_yr": ("mm/year", "mean LOS velocity of its pixels (negative = away from "
                            "the satellite)"),
    "std_velocity_mm_yr": ("mm/year", "standard deviation of its pixels' LOS velocity"),
    "min_velocity_mm_yr": ("mm/year", "lowest LOS velocity of its pixels"),
    "max_velocity_mm_yr": ("mm/year", "highest LOS velocity of its pixels"),
    "mean_coherence": ("1", "mean temporal coherence of its pixels (empty: not in the input)"),
    "signal_rms_mm": ("mm", "RMS of the fitted signal of its contrast to the surroundings"),
    "noise_level_mm": ("mm", "noise level of that contrast"),
    "p_value": ("1", "significance of the signal (F-test; dispersion step)"),
    "p_value_velocity": ("1", "z-test of the mean velocity against 0 (information only)"),
    "p_value_spatial": ("1", "p-value of its contrast against the same footprint moved to random "
                        "places of the scene (spatial null, dispersion step)"),
    "q_value": ("1", "Benjamini-Hochberg q-value of p_value_spatial over the compact candidates "
                "(decides: q <= hotspot.dispersion.falseDiscoveryRate, 0.05 by default)"),
    "velocity_mm_yr": ("mm/year", "linear LOS rate of the hotspot's mean series"),
    "ring_velocity_mm_yr": ("mm/year", "linear LOS rate of its surroundings (ring background)"),
    "velocity_contrast_mm_yr": ("mm/year", "velocity_mm_yr - ring_velocity_mm_yr: how much it "
                                "moves against its surroundings"),
    "area_km2": ("km2", "geodesic area (WGS84) inside the hotspot's outline polygon: the union "
                 "of the pixel footprints (grids) or the buffered concave hull of the points, "
                 "gaps between points included"),
}


# ---------------------------------------------------------------------------- georeference
def grid_georef(attrs):
    """Affine georeference of a geocoded grid from MintPy attributes, or None.

    None for point inputs and radar-coded grids (no X_FIRST/Y_FIRST). Returns
    dict(x_first, y_first, x_step, y_step, epsg, geographic); X_FIRST/Y_FIRST are the
    outer corner of the first pixel (MintPy convention = GeoTIFF PixelIsArea).
    """
    if str(attrs.get("GRID", "yes")).lower() != "yes":
        return None
    try:
        geo = {k.lower(): float(attrs[k.upper()])
               for k in ("x_first", "y_first", "x_step", "y_step")}
    except (KeyError, TypeError, ValueError):
        return None
    unit = str(attrs.get("X_UNIT", "")).lower()
    epsg = attrs.get("EPSG")
    zone = str(attrs.get("UTM_ZONE", "")).strip().upper()
    if epsg is None and zone[:-1].isdigit() and zone[-1:] in ("N", "S"):
        epsg = (32600 if zone.endswith("N") else 32700) + int(zone[:-1])
    try:
        epsg = int(float(epsg)) if epsg is not None else None
    except (TypeError, ValueError):
        epsg = None
    if unit.startswith("deg"):
        geographic = True
    elif unit.startswith("m"):
        geographic = False
    else:
        geographic = epsg in (None, 4326)
    if geographic:
        epsg = 4326
    elif epsg is None:
        return None      # metric grid without a CRS: cannot be placed on the map
    geo.update({"epsg": epsg, "geographic": geographic})
    return geo


# ---------------------------------------------------------------------------- polygons
def grid_outline(row, col, georef):
    """Union of the pixel footprints (row, col) as a lon/lat (multi)polygon."""
    row = np.asarray(row, dtype=np.float64)
    col = np.asarray(col, dtype=np.float64)
    boxes = shapely.box(col, row, col + 1, row + 1)
    # adjacent pixel boxes share whole edges: a valid coverage, merged exactly and fast
    shape = shapely.simplify(shapely.coverage_union_all(boxes), 0)
    shape = affinity.affine_transform(shape, [georef["x_step"], 0, 0, georef["y_step"],
                                              georef["x_first"], georef["y_first"]])
    if not georef["geographic"]:
        from pyproj import Transformer
        to_ll = Transformer.from_crs(georef["epsg"], 4326, always_xy=True)
        shape = shapely.transform(shape, lambda xy: np.column_stack(to_ll.transform(*xy.T)))
    return shapely.orient_polygons(shape, exterior_cw=False)


def point_outline(lon, lat, spacing_km=None):
    """Concave hull of points buffered by half their typical spacing, in lon/lat."""
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    lon0, lat0 = float(lon.mean()), float(lat.mean())
    x, y = lonlat_to_xy_km(lon, lat, lon0, lat0)
    if spacing_km is None:
        spacing_km = point_spacing(x, y)
    hull = shapely.concave_hull(shapely.multipoints(np.c_[x, y]), ratio=CONCAVE_RATIO)
    shape = shapely.buffer(hull, spacing_km / 2, quad_segs=4)
    kx = KM_PER_DEG * math.cos(math.radians(lat0))
    shape = affinity.affine_transform(shape, [1 / kx, 0, 0, 1 / KM_PER_DEG, lon0, lat0])
    return shapely.orient_polygons(shape, exterior_cw=False)


def point_spacing(x, y):
    """Median nearest-neighbour distance (km) of points; 0.1 km for a single point."""
    from scipy.spatial import cKDTree
    xy = np.unique(np.c_[x, y], axis=0)
    if xy.shape[0] < 2:
        return 0.1
    dist = cKDTree(xy).query(xy, k=2)[0][:, 1]
    return float(np.median(dist))


def hotspot_polygons(pixel_label, lon, lat, row=None, col=None, georef=None):
    """{hotspot id: lon/lat (multi)polygon} from the per-pixel hotspot label (N)."""
    pixel_label = np.asarray(pixel_label)
    ids = np.unique(pixel_label[pixel_label > 0])
    order = np.argsort(pixel_label, kind="stable")
    bounds = np.searchsorted(pixel_label[order], np.r_[ids, ids[-1] + 1] if ids.size else [])
    out = {}
    for k, hid in enumerate(ids):
        members = order[bounds[k]:bounds[k + 1]]
        if georef is not None and row is not None:
            out[int(hid)] = grid_outline(row[members], col[members], georef)
        else:
            out[int(hid)] = point_outline(lon[members], lat[members])
    return out


def geodesic_area_km2(shape):
    from pyproj import Geod
    return abs(Geod(ellps="WGS84").geometry_area_perimeter(shape)[0]) / 1e6


# ---------------------------------------------------------------------------- records
def hotspot_records(table, polygons):
    """One dict per hotspot: the table's columns in GIS units, plus the polygon's area."""
    ids = np.asarray(table["hotspotId"])
    records = []
    for i, hid in enumerate(ids):
        rec = {}
        for name, column, scale in COLUMNS:
            if name not in table:
                continue
            value = np.asarray(table[name])[i].item()
            if scale is not None:
                value = value * scale
            rec[column] = _clean(value)
        shape = polygons.get(int(hid))
        rec["area_km2"] = round(geodesic_area_km2(shape), 6) if shape else None
        records.append(rec)
    return records


def _clean(value):
    """JSON/CSV-safe scalar: NaN -> None, floats rounded to what the data supports."""
    if isinstance(value, float):
        return None if not math.isfinite(value) else float(f"{value:.7g}")
    return value


# ---------------------------------------------------------------------------- writers
def write_geojson(path, records, polygons):
    """RFC 7946 FeatureCollection (WGS84 lon/lat, counter-clockwise exteriors)."""
    features = [{"type": "Feature", "id": rec["id"],
                 "geometry": _rounded(shapely.geometry.mapping(polygons[rec["id"]])),
                 "properties": rec} for rec in records]
    fields = {name: {"unit": unit, "description": text} for name, (unit, text) in FIELDS.items()}
    doc = {"type": "FeatureCollection", "name": "hotspot", "fields": fields,
           "features": features}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    return Path(path)


def _rounded(geometry, digits=8):
    """GeoJSON mapping with coordinates rounded to 1e-8 deg (1 mm): no 118.02100000000001."""
    def walk(c):
        if isinstance(c, (list, tuple)) and c and isinstance(c[0], (int, float)):
            return [round(float(v), digits) for v in c]
        return [walk(v) for v in c]
    return {**geometry, "coordinates": walk(geometry["coordinates"])}


def write_csv(path, records):
    """The per-hotspot table, one row per hotspot (header only when there is none)."""
    header = [c for _, c, _ in COLUMNS] + ["area_km2"]
    if records:
        header = [c for c in header if c in records[0]]
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
            writer.writeheader()
            for rec in records:
                writer.writerow({k: ("" if v is None else v) for k, v in rec.items()})
    return Path(path)


def kml_document(records, polygons, name="hotspot"):
    """KML Document (lxml element, pykml factory): one styled placemark per hotspot."""
    from pykml.factory import KML_ElementMaker as KML
    # KML colours are aabbggrr: red outline / fill for subsidence (velocity < 0), blue else
    styles = {"down": ("ff0000ff", "660000ff"), "up": ("ffff0000", "66ff0000")}
    doc = KML.Document(KML.name(name))
    for key, (line, fill) in styles.items():
        doc.append(KML.Style(KML.LineStyle(KML.color(line), KML.width(2)),
                             KML.PolyStyle(KML.color(fill)), id=key))
    folder = KML.Folder(KML.name("hotspots"))
    for rec in records:
        velocity = rec.get("mean_velocity_mm_yr")
        style = "down" if velocity is not None and velocity < 0 else "up"
        data = KML.ExtendedData(*[KML.Data(KML.value("" if v is None else str(v)), name=k)
                                  for k, v in rec.items()])
        text = f"{velocity:.1f} mm/yr" if velocity is not None else ""
        folder.append(KML.Placemark(KML.name(f"hotspot {rec['id']}"),
                                    KML.description(text), KML.styleUrl(f"#{style}"), data,
                                    _kml_geometry(KML, polygons[rec["id"]])))
    doc.append(folder)
    return KML.kml(doc)


def _kml_geometry(KML, shape):
    def ring(coords):
        return KML.LinearRing(KML.coordinates(" ".join(f"{x:.7f},{y:.7f}" for x, y in coords)))

    def polygon(p):
        parts = [KML.outerBoundaryIs(ring(p.exterior.coords))]
        parts += [KML.innerBoundaryIs(ring(r.coords)) for r in p.interiors]
        return KML.Polygon(KML.tessellate(1), *parts)

    if shape.geom_type == "Polygon":
        return polygon(shape)
    return KML.MultiGeometry(*[polygon(p) for p in shape.geoms])


def write_kmz(path, records, polygons):
    """hotspot.kmz = zipped doc.kml of kml_document (Google Earth)."""
    from lxml import etree
    text = etree.tostring(kml_document(records, polygons), pretty_print=True,
                          xml_declaration=True, encoding="UTF-8")
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            # a fixed member time (zip's epoch): same input, same bytes
            member = zipfile.ZipInfo("doc.kml", date_time=(1980, 1, 1, 0, 0, 0))
            z.writestr(member, text, compress_type=zipfile.ZIP_DEFLATED)
    return Path(path)


def write_geotiff(path, raster, georef, nodata=-1):
    """Single-band GeoTIFF (tifffile + GeoTIFF 1.0 tags; no GDAL needed).

    ModelPixelScale/ModelTiepoint place the outer corner of pixel (0, 0) at
    (X_FIRST, Y_FIRST) with RasterPixelIsArea, as GDAL does for MintPy grids.
    """
    import tifffile
    raster = np.asarray(raster)
    if raster.ndim != 2:
        raise ValueError("write_geotiff needs a 2-D raster")
    if raster.dtype.kind in "iu" and raster.min(initial=0) >= -32768 and raster.max(initial=0) < 32768:
        raster = raster.astype(np.int16)
    if georef["geographic"]:
        keys = [1024, 0, 1, 2, 1025, 0, 1, 1, 2048, 0, 1, 4326]     # geographic, WGS84
    else:
        keys = [1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, int(georef["epsg"])]
    geokeys = [1, 1, 0, len(keys) // 4] + keys
    tags = [(33550, 12, 3, (abs(georef["x_step"]), abs(georef["y_step"]), 0.0), True),
            (33922, 12, 6, (0.0, 0.0, 0.0, georef["x_first"], georef["y_first"], 0.0), True),
            (34735, 3, len(geokeys), geokeys, True),
            (42113, 2, 0, str(nodata), True)]                      # GDAL_NODATA
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, raster, extratags=tags, compression="deflate",
                         photometric="minisblack", metadata=None)
    return Path(path)


# ---------------------------------------------------------------------------- entry point
def read_hotspot_table(path):
    """The per-hotspot datasets (1-D / 2-D, first axis = hotspot) of hotspot.h5."""
    table = {}
    with open_h5(path) as f:
        if "hotspotId" not in f or "pixelLabel" not in f:
            raise HotspotError(f"{path}: not a hotspot file (datasets hotspotId and pixelLabel "
                               "expected); re-run the dispersion step")
        num = f["hotspotId"].shape[0]
        for name, dset in f.items():
            if (isinstance(dset, h5py.Dataset) and dset.ndim >= 1 and dset.shape[0] == num
                    and name not in ("pixelLabel", "hotspot", "date")):
                table[name] = dset[:]
        table["pixelLabel"] = f["pixelLabel"][:]
        table["hotspot"] = f["hotspot"][:]
    return table


def write_exports(ctx, workdir=None, enabled=None, log=print):
    """Write hotspot.geojson, .kmz, .csv and (geocoded grids) .tif into WORKDIR.

    ctx: a hotspot.hotspotApp.StepContext (uses ctx.workdir, hotspot.plot.export and
    ctx.log), or None with `workdir` given. Returns the written paths ([] when the
    template says hotspot.plot.export = no).
    """
    if ctx is not None:
        workdir = ctx.workdir
        log = ctx.log
        if enabled is None:
            enabled = ctx.config.get_bool("hotspot.plot.export")
    if workdir is None:
        raise ValueError("write_exports needs ctx or workdir")
    if enabled is False:
        log("hotspot.plot.export = no: skip GIS exports")
        return []
    workdir = Path(workdir)
    hot_file = workdir / HOTSPOT_FILE
    if not hot_file.is_file():
        raise HotspotError(f"{hot_file}: file not found; run the dispersion step first")
    stack_file = workdir / STACK_FILE
    info = read_info(stack_file)
    table = read_hotspot_table(hot_file)
    label = table.pop("pixelLabel")
    raster = table.pop("hotspot")
    if label.shape != (info.num_pixel,):
        raise HotspotError(f"{hot_file}: {label.size} pixel labels but {stack_file} has "
                           f"{info.num_pixel} pixels; re-run the dispersion step")
    georef = grid_georef(info.attrs)
    px = read_pixels(stack_file, ["longitude", "latitude", "row", "col"])
    polygons = hotspot_polygons(label, px["longitude"], px["latitude"], px["row"], px["col"],
                                georef)
    records = hotspot_records(table, polygons)
    written = [write_geojson(workdir / products.EXPORT_GEOJSON, records, polygons),
               write_kmz(workdir / products.EXPORT_KMZ, records, polygons),
               write_csv(workdir / products.EXPORT_CSV, records)]
    if georef is not None and raster.ndim == 2:
        nodata = read_attrs(hot_file).get("NO_DATA_VALUE", -1)
        written.append(write_geotiff(workdir / products.EXPORT_TIF, raster, georef, nodata=nodata))
    else:
        log("hotspot.tif skipped: the input is not a geocoded grid")
    log(f"GIS exports ({len(records)} hotspots): " + ", ".join(p.name for p in written))
    return written
