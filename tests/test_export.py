"""GIS exports: GeoJSON (validated, polygons contain their pixels), KMZ, CSV, GeoTIFF."""
import csv
import json
import zipfile

import jsonschema
import numpy as np
import pytest
import shapely
import tifffile
from lxml import etree
from pyproj import Transformer

from hotspot.hotspotApp import StepContext
from hotspot.steps import export
from hotspot.utils.errors import HotspotError
from hotspot.utils.labels import write_label_file
from hotspot.utils.stack import write_stack
from hotspot.utils.template import config_from_dict

DATES = ["20200101", "20200113", "20200125", "20200206"]
# RFC 7946 subset the exports must satisfy (FeatureCollection of (Multi)Polygons, lon/lat)
POSITION = {"type": "array", "minItems": 2, "maxItems": 3,
            "prefixItems": [{"type": "number", "minimum": -180, "maximum": 180},
                            {"type": "number", "minimum": -90, "maximum": 90}]}
RING = {"type": "array", "minItems": 4, "items": POSITION}
POLYGON = {"type": "array", "minItems": 1, "items": RING}
GEOJSON_SCHEMA = {
    "type": "object", "required": ["type", "features"],
    "properties": {
        "type": {"const": "FeatureCollection"},
        "features": {"type": "array", "items": {
            "type": "object", "required": ["type", "geometry", "properties"],
            "properties": {
                "type": {"const": "Feature"},
                "properties": {"type": "object", "required": ["id", "num_pixel", "area_km2"]},
                "geometry": {"oneOf": [
                    {"type": "object", "required": ["type", "coordinates"],
                     "properties": {"type": {"const": "Polygon"}, "coordinates": POLYGON}},
                    {"type": "object", "required": ["type", "coordinates"],
                     "properties": {"type": {"const": "MultiPolygon"},
                                    "coordinates": {"type": "array", "items": POLYGON}}}]}}}}}}


def _table(ids, velocity_m_yr):
    n = len(ids)
    return {"hotspotId": np.asarray(ids, dtype=np.int32),
            "parentCluster": np.asarray(ids, dtype=np.int32) + 10,
            "numPixel": np.zeros(n, dtype=np.int32),
            "standardDistance": np.full(n, 0.3), "ellipseAngle": np.full(n, 45.0),
            "meanVelocity": np.asarray(velocity_m_yr, dtype=np.float64),
            "meanCoherence": np.full(n, np.nan),
            "meanTimeseries": np.zeros((n, len(DATES)), dtype=np.float32),
            "date": np.array(DATES, dtype="S8")}


def make_grid(workdir, label_2d, attrs_extra=None):
    """Stack of every pixel of a grid + hotspot.h5 with label_2d (-1 no data, 0, ids)."""
    length, width = label_2d.shape
    rows, cols = np.mgrid[0:length, 0:width]
    valid = label_2d.ravel() >= 0
    r, c = rows.ravel()[valid], cols.ravel()[valid]
    attrs = {"GRID": "yes", "LENGTH": length, "WIDTH": width, "X_FIRST": -118.5,
             "Y_FIRST": 34.2, "X_STEP": 0.001, "Y_STEP": -0.0008, "X_UNIT": "degrees"}
    attrs.update(attrs_extra or {})
    geo = export.grid_georef(attrs)
    x = geo["x_first"] + (c + 0.5) * geo["x_step"]
    y = geo["y_first"] + (r + 0.5) * geo["y_step"]
    if not geo["geographic"]:
        x, y = Transformer.from_crs(geo["epsg"], 4326, always_xy=True).transform(x, y)
    stack = workdir / "hotspotStack.h5"
    write_stack(stack, np.zeros((r.size, len(DATES))), DATES, y, x, attrs=attrs, row=r, col=c)
    label = label_2d.ravel()[valid]
    ids = sorted(set(label[label > 0].tolist()))
    table = _table(ids, [-0.02 * (i % 2) + 0.01 * ((i + 1) % 2) for i in ids])
    table["numPixel"] = np.array([(label == i).sum() for i in ids], dtype=np.int32)
    write_label_file(workdir / "hotspot.h5", label, stack, name="hotspot", datasets=table)
    return x, y, label


def scene_label():
    label = np.zeros((40, 50), dtype=np.int32)
    rows, cols = np.mgrid[0:40, 0:50]
    label[(rows - 12) ** 2 + (cols - 12) ** 2 <= 36] = 1                  # disc
    ring = ((rows - 25) ** 2 + (cols - 35) ** 2)
    label[(ring <= 64) & (ring >= 9)] = 2                                  # annulus: a hole
    label[30:32, 5:7] = 3                                                  # 2 x 2 ...
    label[34:36, 9:11] = 3                                                 # ... in two parts
    label[:3, 45:] = -1
    return label


def test_grid_exports_validate_and_contain_their_pixels(tmp_path):
    lon, lat, label = make_grid(tmp_path, scene_label())
    written = export.write_exports(None, workdir=tmp_path, log=lambda *_: None)
    assert [p.name for p in written] == list(export.EXPORT_NAMES)

    doc = json.loads((tmp_path / "hotspot.geojson").read_text())
    jsonschema.validate(doc, GEOJSON_SCHEMA)
    assert [f["properties"]["id"] for f in doc["features"]] == [1, 2, 3]
    pixel_km2 = 0.001 * 0.0008 * (np.deg2rad(1) * 6371.0088) ** 2 * np.cos(np.deg2rad(34.18))
    for feat in doc["features"]:
        shape = shapely.geometry.shape(feat["geometry"])
        hid = feat["properties"]["id"]
        assert shape.is_valid
        polys = getattr(shape, "geoms", [shape])
        assert all(shapely.is_ccw(p.exterior) for p in polys)            # RFC 7946 winding
        inside = shapely.contains_xy(shape, lon, lat)
        assert np.array_equal(inside, label == hid), hid                 # exactly its pixels
        assert feat["properties"]["area_km2"] == pytest.approx(
            (label == hid).sum() * pixel_km2, rel=0.01)
        assert feat["properties"]["parent_cluster"] == hid + 10
        assert feat["properties"]["mean_coherence"] is None              # NaN -> null
    assert len(shapely.geometry.shape(doc["features"][1]["geometry"]).interiors) == 1
    assert doc["features"][2]["geometry"]["type"] == "MultiPolygon"
    assert doc["features"][0]["properties"]["mean_velocity_mm_yr"] == pytest.approx(-20.0)

    with zipfile.ZipFile(tmp_path / "hotspot.kmz") as z:
        kml = etree.fromstring(z.read("doc.kml"))
    ns = {"k": "http://www.opengis.net/kml/2.2"}
    marks = kml.findall(".//k:Placemark", ns)
    assert [m.findtext("k:name", namespaces=ns) for m in marks] == [
        "hotspot 1", "hotspot 2", "hotspot 3"]
    assert len(marks[1].findall(".//k:innerBoundaryIs", ns)) == 1
    coords = marks[0].findtext(".//k:coordinates", namespaces=ns).split()
    kml_poly = shapely.Polygon([tuple(map(float, c.split(","))) for c in coords])
    assert shapely.contains_xy(kml_poly, lon[label == 1], lat[label == 1]).all()

    with open(tmp_path / "hotspot.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["id"]) for r in rows] == [1, 2, 3]
    assert float(rows[1]["mean_velocity_mm_yr"]) == pytest.approx(10.0)
    assert rows[0]["mean_coherence"] == ""

    with tifffile.TiffFile(tmp_path / "hotspot.tif") as tif:
        raster = tif.asarray()
        geo = tif.geotiff_metadata
        tags = tif.pages[0].tags
    expected = scene_label()
    assert np.array_equal(raster, expected)
    assert geo["GeographicTypeGeoKey"] == 4326
    assert list(geo["ModelTiepoint"])[3:5] == pytest.approx([-118.5, 34.2])
    assert list(geo["ModelPixelScale"])[:2] == pytest.approx([0.001, 0.0008])
    assert tags["GDAL_NODATA"].value.strip("\x00") == "-1"


def test_utm_grid_outline_and_geotiff(tmp_path):
    label = np.zeros((20, 20), dtype=np.int32)
    label[5:12, 4:9] = 1
    attrs = {"X_FIRST": 400000.0, "Y_FIRST": 3780000.0, "X_STEP": 30.0, "Y_STEP": -30.0,
             "X_UNIT": "meters", "EPSG": 32611}
    lon, lat, flat = make_grid(tmp_path, label, attrs)
    written = export.write_exports(None, workdir=tmp_path, log=lambda *_: None)
    doc = json.loads((tmp_path / "hotspot.geojson").read_text())
    shape = shapely.geometry.shape(doc["features"][0]["geometry"])
    assert np.array_equal(shapely.contains_xy(shape, lon, lat), flat == 1)
    assert doc["features"][0]["properties"]["area_km2"] == pytest.approx(35 * 0.0009, rel=0.01)
    with tifffile.TiffFile(written[-1]) as tif:
        assert tif.geotiff_metadata["ProjectedCSTypeGeoKey"] == 32611


def test_point_outline_is_concave_and_contains_points(tmp_path):
    rng = np.random.default_rng(0)
    theta = rng.uniform(0.4, 2 * np.pi - 0.4, 800)                       # a C-shaped cloud
    radius = rng.uniform(1.5, 2.0, 800)                                   # km
    lat = 34.0 + radius * np.sin(theta) / 111.2
    lon = -118.0 + radius * np.cos(theta) / (111.2 * np.cos(np.deg2rad(34)))
    lon = np.r_[lon, -117.9]                                              # + a measured non-hotspot
    lat = np.r_[lat, 34.0]
    label = np.r_[np.ones(800, dtype=np.int32), 0]
    stack = tmp_path / "hotspotStack.h5"
    write_stack(stack, np.zeros((label.size, 4)), DATES, lat, lon)
    write_label_file(tmp_path / "hotspot.h5", label, stack, name="hotspot",
                     datasets=_table([1], [-0.01]))
    written = export.write_exports(None, workdir=tmp_path, log=lambda *_: None)
    assert [p.name for p in written] == ["hotspot.geojson", "hotspot.kmz", "hotspot.csv"]
    doc = json.loads((tmp_path / "hotspot.geojson").read_text())
    jsonschema.validate(doc, GEOJSON_SCHEMA)
    shape = shapely.geometry.shape(doc["features"][0]["geometry"])
    assert shapely.contains_xy(shape, lon[:800], lat[:800]).all()
    assert not shapely.contains_xy(shape, -118.0, 34.0)                   # the C's opening
    hull = shapely.convex_hull(shapely.multipoints(np.c_[lon[:800], lat[:800]]))
    assert shape.area < 0.7 * hull.area


def test_export_no_and_missing_input(tmp_path):
    ctx = StepContext(workdir=tmp_path, config=config_from_dict({"hotspot.plot.export": "no"}))
    assert export.write_exports(ctx) == []
    assert not list(tmp_path.iterdir())
    ctx = StepContext(workdir=tmp_path, config=config_from_dict())
    with pytest.raises(HotspotError, match="hotspot.h5: file not found; run the dispersion"):
        export.write_exports(ctx)


def test_no_hotspot_gives_empty_products(tmp_path):
    label = np.zeros((10, 10), dtype=np.int32)
    make_grid(tmp_path, label)
    export.write_exports(None, workdir=tmp_path, log=lambda *_: None)
    doc = json.loads((tmp_path / "hotspot.geojson").read_text())
    jsonschema.validate(doc, GEOJSON_SCHEMA)
    assert doc["features"] == []
    lines = (tmp_path / "hotspot.csv").read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("id,")
    assert not list(tmp_path.glob("*.tmp*"))


def test_grid_georef_variants():
    assert export.grid_georef({"GRID": "no", "X_FIRST": 1}) is None
    assert export.grid_georef({"GRID": "yes", "LENGTH": 3}) is None       # radar-coded grid
    utm = export.grid_georef({"X_FIRST": 5e5, "Y_FIRST": 4e6, "X_STEP": 30, "Y_STEP": -30,
                              "X_UNIT": "m", "UTM_ZONE": "33S"})
    assert utm["epsg"] == 32733 and not utm["geographic"]
    assert export.grid_georef({"X_FIRST": 1, "Y_FIRST": 2, "X_STEP": 0.1,
                               "Y_STEP": -0.1})["epsg"] == 4326
