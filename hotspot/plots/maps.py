"""Map figures: velocity with hotspot outlines, categorical label maps, dispersion ellipses."""
import math

import numpy as np
from matplotlib.lines import Line2D

from hotspot import products
from hotspot.plots.common import (KM_PER_DEG, cluster_color, draw_values, format_map_axes,
                                  label_colormap, label_counts, label_legend, new_figure,
                                  read_datasets, save_figure)
from hotspot.utils.labels import NO_DATA

VELOCITY_CMAP = "RdBu"   # negative (away from the satellite, e.g. subsidence) in red


def velocity_limit(vel_mm):
    """Symmetric colour limit: 98th percentile of |v| so a few outliers don't wash out the map."""
    finite = np.abs(vel_mm[np.isfinite(vel_mm)])
    if finite.size == 0:
        return 1.0
    lim = float(np.percentile(finite, 98))
    return lim if lim > 0 else max(float(finite.max()), 1.0)


def draw_velocity(fig, ax, data, alpha=1.0):
    vel = data.velocity_mm
    lim = velocity_limit(vel)
    im = draw_values(ax, data.geometry, vel, VELOCITY_CMAP, vmin=-lim, vmax=lim, alpha=alpha)
    cbar = fig.colorbar(im, ax=ax, shrink=0.85, extend="both")
    cbar.set_label("LOS velocity (mm/yr)")
    return im


def hotspot_centres(geom, hot_label, ids):
    """Mean lon/lat of each hotspot's pixels, for the H<id> tags."""
    lab = np.asarray(hot_label)
    ok = (lab > 0) & np.isfinite(geom.lon) & np.isfinite(geom.lat)
    n = int(lab.max(initial=0)) + 1
    cnt = np.bincount(lab[ok], minlength=n)
    lon = np.bincount(lab[ok], weights=geom.lon[ok], minlength=n)
    lat = np.bincount(lab[ok], weights=geom.lat[ok], minlength=n)
    return {i: (lon[i] / cnt[i], lat[i] / cnt[i]) for i in ids if cnt[i] > 0}


def draw_hotspot_outlines(ax, data, annotate=True, linewidth=1.4):
    """Outline every hotspot in its colour, with a black halo that shows on any background.

    The outlines are hotspot.steps.export's polygons (pixel footprints for grids, buffered
    concave hulls for points), so the figure matches hotspot.geojson / .kmz; only the
    exteriors are drawn: holes left by masked pixels would clutter the map.
    """
    polygons = data.hotspot_polygons
    for i, shape in polygons.items():
        parts = getattr(shape, "geoms", [shape])
        for part in parts:
            if part.is_empty or part.geom_type != "Polygon":
                continue
            xy = np.asarray(part.exterior.coords)
            for color, lw in (("black", linewidth + 1.2), (cluster_color(i), linewidth)):
                ax.plot(xy[:, 0], xy[:, 1], color=color, lw=lw)
    if annotate:
        labels = data.pixel_label(products.HOTSPOT)
        for i, (x, y) in hotspot_centres(data.geometry, labels, list(polygons)).items():
            ax.annotate(f"H{i}", (x, y), xytext=(4, 4), textcoords="offset points",
                        fontsize="small", fontweight="bold", color="black",
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": cluster_color(i),
                              "alpha": 0.85})
    return list(polygons)


def plot_velocity_hotspots(data, out):
    fig = new_figure(7.5, 6)
    ax = fig.add_subplot()
    draw_velocity(fig, ax, data)
    title = "LOS velocity (no hotspot.h5 yet)"
    if data.path(products.HOTSPOT).is_file():
        n = len(draw_hotspot_outlines(ax, data))
        title = f"LOS velocity with {n} hotspot outline{'s' if n != 1 else ''}"
    format_map_axes(ax, data.geometry, title)
    return save_figure(fig, out, data.dpi)


LABEL_TITLES = {   # file: (what made the labels, what they are)
    products.TSKM: ("Time-series k-means", "temporal cluster"),
    products.DBSCAN: ("DBSCAN", "spatio-temporal cluster"),
    products.LSTM: ("LSTM prediction", "cluster"),
    products.LSTMP: ("LSTM + perceptron prediction", "cluster"),
    products.HOTSPOT: ("Deformation hotspots", "hotspot"),
}


def plot_label_map(data, label_file, out):
    """Categorical map of a label file: one colour per cluster id, noise grey, no data blank."""
    labels = data.pixel_label(label_file)
    counts = label_counts(labels)
    ids = sorted(counts)
    cmap, norm = label_colormap(ids)
    fig = new_figure(8, 6)
    ax = fig.add_subplot()
    values = np.where(labels == NO_DATA, np.nan, labels).astype(np.float32)
    draw_values(ax, data.geometry, values, cmap, norm=norm, order=labels)
    n = len([i for i in ids if i > 0])
    hot = label_file == products.HOTSPOT
    source, noun = LABEL_TITLES.get(label_file, (label_file, "cluster"))
    format_map_axes(ax, data.geometry, f"{source}: {n} {noun}{'s' if n != 1 else ''}")
    label_legend(fig, ids, counts, prefix="H" if hot else "cluster ",
                 noise_text="not a hotspot" if hot else "0: measured, no cluster")
    return save_figure(fig, out, data.dpi)


def ellipse_lonlat(lon_c, lat_c, semi_major_km, semi_minor_km, angle_deg, num=90):
    """Ellipse outline in lon/lat from km axes and an angle counter-clockwise from east."""
    t = np.linspace(0, 2 * np.pi, num)
    th = math.radians(angle_deg)
    x = semi_major_km * np.cos(t) * math.cos(th) - semi_minor_km * np.sin(t) * math.sin(th)
    y = semi_major_km * np.cos(t) * math.sin(th) + semi_minor_km * np.sin(t) * math.cos(th)
    coslat = max(math.cos(math.radians(lat_c)), 1e-3)
    return lon_c + x / (KM_PER_DEG * coslat), lat_c + y / KM_PER_DEG


ELLIPSE_DATASETS = ["clusterId", "ellipseCenterLon", "ellipseCenterLat", "ellipseSemiMajor",
                    "ellipseSemiMinor", "ellipseAngle"]


def plot_ellipses(data, out):
    d = read_datasets(data.path(products.DISPERSION), ELLIPSE_DATASETS,
                      optional=["isHotspot", "hotspotId", "standardDistance"])
    from hotspot.utils.h5io import read_attrs
    limit = read_attrs(data.path(products.DISPERSION)).get("MAX_STANDARD_DISTANCE_KM")
    fig = new_figure(8, 6)
    ax = fig.add_subplot()
    draw_velocity(fig, ax, data, alpha=0.55)
    n = d["clusterId"].size
    is_hot = d.get("isHotspot", np.zeros(n, bool)).astype(bool)
    hot_id = d.get("hotspotId", np.zeros(n, int)).astype(int)
    for k in range(n):
        if not np.isfinite(d["ellipseSemiMajor"][k]):
            continue
        lon, lat = ellipse_lonlat(d["ellipseCenterLon"][k], d["ellipseCenterLat"][k],
                                  d["ellipseSemiMajor"][k], d["ellipseSemiMinor"][k],
                                  d["ellipseAngle"][k])
        if is_hot[k]:
            color = cluster_color(hot_id[k] if hot_id[k] > 0 else d["clusterId"][k])
            ax.plot(lon, lat, color="black", lw=2.6)
            ax.plot(lon, lat, color=color, lw=1.6)
            tag = f"H{hot_id[k]}" if hot_id[k] > 0 else f"{d['clusterId'][k]}"
            ax.annotate(tag, (d["ellipseCenterLon"][k], d["ellipseCenterLat"][k]), ha="center",
                        va="center", fontsize="small", fontweight="bold")
        else:
            ax.plot(lon, lat, color="0.25", lw=0.9, ls="--")
            ax.annotate(str(d["clusterId"][k]), (d["ellipseCenterLon"][k],
                                                 d["ellipseCenterLat"][k]),
                        ha="center", va="center", fontsize="x-small", color="0.25")
    handles = [Line2D([], [], color=cluster_color(1), lw=1.6, label="hotspot (compact)"),
               Line2D([], [], color="0.25", lw=0.9, ls="--", label="other cluster")]
    ax.legend(handles=handles, loc="upper right", fontsize="small", framealpha=0.8)
    title = "Standard-deviational ellipses of the clusters"
    if limit is not None:
        title += f"\n(hotspot: standard distance ≤ {float(limit):.2f} km)"
    format_map_axes(ax, data.geometry, title)
    return save_figure(fig, out, data.dpi)
