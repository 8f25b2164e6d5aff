"""Pieces every figure shares: cluster colours, map geometry, axes, units, saving.

Figures are built on matplotlib.figure.Figure directly (Agg canvas, no
pyplot): no global figure registry, so nothing leaks between figures and no
display backend is ever touched.
"""
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap, to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from hotspot.steps.export import grid_georef
from hotspot.utils.errors import HotspotError
from hotspot.utils.h5io import atomic_path, open_h5
from hotspot.utils.labels import NO_DATA
from hotspot.utils.stack import read_info, read_pixels

M_TO_MM = 1000.0
NOISE_COLOR = "#d0d0d0"
KM_PER_DEG = 111.195
# A figure stays readable (and fast) with this many map cells / markers; the
# screen has fewer pixels than that anyway.
MAX_IMAGE_SIDE = 2000
MAX_SCATTER_POINTS = 200_000
MAX_LEGEND_ENTRIES = 20


def cluster_color(cluster_id):
    """RGBA of a cluster id: the same id gets the same colour in every figure.

    tab20 with the dark shades first (even indices) so that ids 1-10 are the
    strong tab10-like colours; ids beyond 20 repeat the cycle.
    """
    cid = int(cluster_id)
    if cid <= 0:
        return to_rgba(NOISE_COLOR)
    from matplotlib import colormaps
    tab20 = colormaps["tab20"].colors
    order = list(range(0, 20, 2)) + list(range(1, 20, 2))
    return to_rgba(tab20[order[(cid - 1) % 20]])


def label_colormap(ids):
    """(cmap, norm) drawing each id in `ids` with cluster_color; no-data transparent."""
    ids = sorted(int(i) for i in ids)
    if not ids:
        ids = [0]
    colors = [cluster_color(i) for i in ids]
    bounds = [ids[0] - 0.5] + [i + 0.5 for i in ids]
    cmap = ListedColormap(colors).with_extremes(bad=(0, 0, 0, 0), under=(0, 0, 0, 0))
    return cmap, BoundaryNorm(bounds, cmap.N)


def label_legend(fig, ids, counts=None, noise_text="0: measured, no cluster", prefix=""):
    """Categorical legend right of the map, limited to MAX_LEGEND_ENTRIES entries.

    A figure legend at an 'outside' location is the one constrained layout
    reserves room for; an axes legend anchored outside a fixed-aspect map gets
    clipped.
    """
    handles = []
    ids = sorted(int(i) for i in ids if int(i) >= 0)
    shown = [i for i in ids if i > 0][:MAX_LEGEND_ENTRIES]
    if 0 in ids:
        handles.append(Patch(facecolor=NOISE_COLOR, edgecolor="none", label=noise_text))
    for i in shown:
        text = f"{prefix}{i}"
        if counts is not None:
            text += f" ({counts.get(i, 0):,} px)"
        handles.append(Patch(facecolor=cluster_color(i), edgecolor="none", label=text))
    more = len([i for i in ids if i > 0]) - len(shown)
    if more > 0:
        handles.append(Patch(facecolor="white", edgecolor="none",
                             label=f"... {more} more (colours repeat)"))
    if handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize="small", frameon=False)


@dataclass
class MapGeometry:
    """Where the stack's pixels are on the map, read once per plot step.

    mode 'image': a geocoded grid drawn with imshow (decimated by `stride`);
    mode 'scatter': point inputs (or a radar-coordinate grid) drawn as markers
    at their lon/lat, subsampled to `index`.
    """
    mode: str
    lon: np.ndarray
    lat: np.ndarray
    row: np.ndarray = None
    col: np.ndarray = None
    shape: tuple = None
    stride: int = 1
    extent: tuple = None
    index: np.ndarray = None

    @property
    def lat0(self):
        finite = self.lat[np.isfinite(self.lat)]
        return float(finite.mean()) if finite.size else 0.0

    def to_raster(self, values, fill=np.nan, dtype=np.float32):
        """Per-pixel values -> the decimated source raster (image mode).

        Equivalent to hotspot.utils.labels.label_to_map(values)[::stride, ::stride],
        without building the full-resolution raster.
        """
        values = np.asarray(values)
        length, width = self.shape
        s = self.stride
        out = np.full((math.ceil(length / s), math.ceil(width / s)), fill, dtype=dtype)
        keep = (self.row % s == 0) & (self.col % s == 0)
        out[self.row[keep] // s, self.col[keep] // s] = values[keep]
        return out


def read_geometry(stack_file, seed=0):
    """MapGeometry of hotspotStack.h5 (reads only per-pixel lon/lat/row/col)."""
    info = read_info(stack_file)
    names = ["longitude", "latitude", "row", "col"]
    px = read_pixels(stack_file, names)
    lon, lat = px["longitude"].astype(np.float64), px["latitude"].astype(np.float64)
    georef = grid_georef(info.attrs)
    # imshow with lon/lat axes needs a grid in degrees; projected (UTM) or radar grids are
    # drawn from the per-pixel lon/lat like points
    if georef is not None and georef["geographic"]:
        length, width = info.shape
        stride = max(1, math.ceil(max(length, width) / MAX_IMAGE_SIDE))
        x0, y0 = georef["x_first"], georef["y_first"]
        dx, dy = georef["x_step"], georef["y_step"]
        # MintPy X_FIRST/Y_FIRST are the outer corner of the first pixel.
        extent = (x0, x0 + width * dx, y0 + length * dy, y0)
        return MapGeometry(mode="image", lon=lon, lat=lat, row=px["row"], col=px["col"],
                           shape=(length, width), stride=stride, extent=extent)
    located = np.nonzero(np.isfinite(lon) & np.isfinite(lat))[0]
    if located.size == 0:
        raise HotspotError(f"{stack_file}: no pixel has a longitude/latitude, so no map can be "
                           "drawn; load the stack with a geometry file (hotspot.load.geometryFile)")
    rng = np.random.default_rng(seed)
    if located.size > MAX_SCATTER_POINTS:
        index = np.sort(rng.choice(located, MAX_SCATTER_POINTS, replace=False))
    else:
        index = located
    return MapGeometry(mode="scatter", lon=lon, lat=lat, row=px["row"], col=px["col"],
                       index=index)


def marker_size(num_points):
    """Marker area (pt^2) that fills a typical map without hiding neighbours."""
    return float(np.clip(3e4 / max(num_points, 1), 0.3, 30.0))


def draw_values(ax, geom, values, cmap, norm=None, vmin=None, vmax=None, order=None, alpha=1.0):
    """Draw per-pixel values as an image (grid) or scatter (points); returns the mappable.

    order: optional per-pixel drawing priority for scatter (higher on top), so
    that clusters are not hidden under noise points.
    """
    values = np.asarray(values)
    if geom.mode == "image":
        fill = np.nan
        data = geom.to_raster(values.astype(np.float32), fill=fill)
        data = np.ma.masked_invalid(data)
        return ax.imshow(data, extent=geom.extent, origin="upper", cmap=cmap, norm=norm,
                         vmin=None if norm else vmin, vmax=None if norm else vmax,
                         interpolation="nearest", alpha=alpha)
    idx = geom.index
    vals = values[idx].astype(np.float64)
    ok = np.isfinite(vals)
    idx, vals = idx[ok], vals[ok]
    if order is not None:
        srt = np.argsort(np.asarray(order)[idx], kind="stable")
        idx, vals = idx[srt], vals[srt]
    return ax.scatter(geom.lon[idx], geom.lat[idx], c=vals, s=marker_size(idx.size), cmap=cmap,
                      norm=norm, vmin=None if norm else vmin, vmax=None if norm else vmax,
                      linewidths=0, marker="s" if idx.size > 2000 else "o",
                      rasterized=True, alpha=alpha)


def nice_length(value):
    """Largest 1/2/5 x 10^n not above value."""
    if value <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for m in (5, 2, 1):
        if m * exp <= value:
            return m * exp
    return exp


def format_map_axes(ax, geom, title):
    """Lon/lat axes with true-to-scale aspect and a km scale bar."""
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar
    ax.set_xlabel("Longitude (°)")
    ax.set_ylabel("Latitude (°)")
    ax.set_title(title)
    coslat = max(math.cos(math.radians(geom.lat0)), 1e-3)
    ax.set_aspect(1.0 / coslat)
    if geom.mode == "image":
        x0, x1, y0, y1 = geom.extent
        ax.set_xlim(min(x0, x1), max(x0, x1))
        ax.set_ylim(min(y0, y1), max(y0, y1))
    else:
        lon, lat = geom.lon[geom.index], geom.lat[geom.index]
        pad_x = max(np.ptp(lon) * 0.03, 1e-4)
        pad_y = max(np.ptp(lat) * 0.03, 1e-4)
        ax.set_xlim(lon.min() - pad_x, lon.max() + pad_x)
        ax.set_ylim(lat.min() - pad_y, lat.max() + pad_y)
    xmin, xmax = ax.get_xlim()
    width_km = (xmax - xmin) * KM_PER_DEG * coslat
    length_km = nice_length(width_km / 5)
    text = f"{length_km:g} km"
    bar = AnchoredSizeBar(ax.transData, length_km / (KM_PER_DEG * coslat), text, "lower left",
                          pad=0.4, borderpad=0.5, sep=3, frameon=True, size_vertical=0,
                          fontproperties={"size": "small"})
    bar.patch.set_alpha(0.7)
    ax.add_artist(bar)
    from matplotlib.ticker import MaxNLocator
    ax.ticklabel_format(useOffset=False)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
    ax.tick_params(labelsize="small")


def new_figure(width=7.0, height=5.5):
    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig, path, dpi):
    """Write the figure through a temporary file so a crash leaves no broken PNG."""
    path = Path(path)
    with atomic_path(path) as tmp:
        # tight bbox: constrained layout misjudges fixed-aspect maps with outside legends
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", pad_inches=0.1)
    return path


def dates_axis(dates):
    """YYYYMMDD strings -> datetime list for the x axis (MintPy's converter)."""
    from mintpy.utils import ptime
    return ptime.date_list2vector([str(d) for d in dates])[0]


def format_date_axis(ax):
    import matplotlib.dates as mdates
    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel("Date")


def read_strings(dset):
    return [v.decode() if isinstance(v, bytes) else str(v) for v in dset[:]]


def read_datasets(path, names, optional=()):
    """{name: array} of an HDF5 file; optional names are left out when absent."""
    out = {}
    with open_h5(path) as f:
        for name in list(names) + list(optional):
            if name in f:
                out[name] = f[name][()]
            elif name not in optional:
                raise HotspotError(f"{path}: dataset '{name}' not found")
    return out


def label_counts(pixel_label):
    ids, counts = np.unique(np.asarray(pixel_label), return_counts=True)
    return {int(i): int(c) for i, c in zip(ids, counts) if i != NO_DATA}


def empty_message(ax, text):
    """Say on the figure itself why it is empty (e.g. no hotspot found)."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes,
            fontsize="large", color="0.3", wrap=True)
