"""The one-glance figure (README picture): where the hotspots are and how they move."""
import textwrap

from hotspot.plots.common import (cluster_color, dates_axis, empty_message, format_date_axis,
                                  format_map_axes, new_figure, save_figure)
from hotspot.plots.maps import draw_hotspot_outlines, draw_velocity
from hotspot.plots.series import hotspot_series

MAX_SERIES = 8


def plot_summary(data, out):
    fig = new_figure(14, 6.2)
    ax_map, ax_ts = fig.subplots(1, 2, width_ratios=[1.15, 1])
    draw_velocity(fig, ax_map, data)
    ids = draw_hotspot_outlines(ax_map, data)
    format_map_axes(ax_map, data.geometry, "Where: ground velocity and hotspot outlines")
    rows = hotspot_series(data)
    shown = rows[:MAX_SERIES]
    if shown:
        dates = dates_axis(data.info.dates)
        for i, mean, p10, p90, vel, npx in shown:
            color = cluster_color(i)
            ax_ts.fill_between(dates, p10, p90, color=color, alpha=0.15, lw=0)
            ax_ts.plot(dates, mean, color=color, lw=2.2, label=f"H{i}: {vel:+.1f} mm/yr")
        ax_ts.axhline(0, color="0.5", lw=0.6)
        ax_ts.legend(fontsize="small", loc="best", title="hotspot: mean velocity")
        format_date_axis(ax_ts)
        ax_ts.set_ylabel("LOS displacement (mm)")
        more = f" (strongest {len(shown)} of {len(rows)})" if len(rows) > len(shown) else ""
        ax_ts.set_title(f"How: mean displacement of each hotspot{more}")
    else:
        empty_message(ax_ts, "no hotspot found")
        ax_ts.set_axis_off()
    n = len(ids)
    fig.suptitle(f"{n} deformation hotspot{'s' if n != 1 else ''} found", fontsize="x-large",
                 fontweight="bold")
    # supxlabel (unlike fig.text) gets room from constrained layout
    fig.supxlabel(textwrap.fill(
             "Colours: velocity along the satellite line of sight (LOS); red = moving away "
             "from the satellite (e.g. subsidence), blue = towards it. Outlines H1, H2, ...: "
             "compact areas whose motion differs from their surroundings. Bands: 10-90 % of "
             "the hotspot's pixels.", 170), fontsize="small", color="0.25")
    return save_figure(fig, out, data.dpi)
