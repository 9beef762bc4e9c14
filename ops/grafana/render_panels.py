"""The dashboard as queries and boxes, and the picture of it (see render.py).

Everything but :func:`draw` is plain Python; matplotlib is imported inside it.
"""

from __future__ import annotations

import datetime
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DRAWN = frozenset({"row", "timeseries", "state-timeline", "stat"})  # panel types drawn
Series = tuple[dict[str, str], list[tuple[float, float]]]  # labels, (time, value)
SCRAPE = 0.5  # seconds between scrapes, and the query step


# -- the dashboard as queries and boxes ---------------------------------------------
def substitute(text: str, variables: dict[str, str]) -> str:
    """``$name`` and ``${name}`` replaced as Grafana does for a single value; others kept."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)",
                  lambda m: variables.get(m[1] or m[2], m[0]), text)


def legend(fmt: str | None, labels: dict[str, str]) -> str:
    """A series' name from its ``legendFormat`` (``{{label}}`` filled in)."""
    if not fmt:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m[1], ""), fmt).strip()


@dataclass
class Query:
    ref: str
    expr: str
    legend: str | None
    instant: bool


@dataclass
class Panel:
    id: int
    kind: str
    title: str
    grid: dict[str, int]
    queries: list[Query]
    defaults: dict[str, Any] = field(default_factory=dict)
    overrides: list[dict[str, Any]] = field(default_factory=list)


def plan(dashboard: dict[str, Any], variables: dict[str, str]) -> list[Panel]:
    """Every panel (those in collapsed rows too), its variables substituted."""
    out = []
    for raw in dashboard["panels"]:
        for p in [raw, *raw.get("panels", [])]:
            config = p.get("fieldConfig", {})
            out.append(Panel(
                p["id"], p["type"], substitute(p["title"], variables), p["gridPos"],
                [Query(t["refId"], substitute(t["expr"], variables), t.get("legendFormat"),
                       bool(t.get("instant")) and not t.get("range"))
                 for t in p.get("targets", [])],
                config.get("defaults", {}), config.get("overrides", [])))
    return out


def box(grid: dict[str, int], rows: int, top: float = 0.0) -> tuple[float, float, float, float]:
    """(left, bottom, width, height) in figure fractions of a ``gridPos`` on a dashboard
    ``rows`` grid units tall, below a header ``top`` (a fraction) tall; 24 columns."""
    gap = 0.003
    scale = (1 - top) / rows
    return (grid["x"] / 24 + gap, 1 - top - (grid["y"] + grid["h"]) * scale + gap,
            grid["w"] / 24 - 2 * gap, grid["h"] * scale - 2 * gap)


def mapping(defaults: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Value mappings: value text (``"1"``) -> (display text, Grafana colour name)."""
    out: dict[str, tuple[str, str]] = {}
    for m in defaults.get("mappings") or []:
        if m.get("type") == "value":
            for value, to in m["options"].items():
                out[value] = (to.get("text", value), to.get("color", "text"))
    return out


def fmt_value(value: float, unit: str | None) -> str:
    """A value the way the panel's unit shows it (``s``, ``opm``, ``none``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if unit == "s":
        for size, name in ((86400, "day"), (3600, "hour"), (60, "min")):
            if abs(value) >= size:
                return f"{value / size:.3g} {name}"
        return f"{value:.3g} s" if abs(value) >= 0.1 or value == 0 else f"{value * 1e3:.3g} ms"
    text = f"{value:.3g}"
    return f"{text} opm" if unit == "opm" else text



@dataclass
class Episode:
    name: str
    start: float  # wall clock
    end: float


@dataclass
class Run:
    prometheus: str
    start: float
    end: float
    episodes: list[Episode]


def threshold_color(defaults: dict[str, Any], value: float) -> str:
    """The Grafana colour name of the threshold step ``value`` falls in."""
    steps = (defaults.get("thresholds") or {}).get("steps") or [{"color": "text", "value": None}]
    color = steps[0]["color"]
    for step in steps:
        if step["value"] is None or value >= step["value"]:
            color = step["color"]
    return str(color)


def override(panel: Panel, name: str, prop: str) -> Any:
    """The value of property ``prop`` an override gives the series ``name``, else None."""
    found = None
    for o in panel.overrides:
        matcher = o["matcher"]
        if (matcher["id"] == "byName" and matcher["options"] == name) or (
                matcher["id"] == "byRegexp" and re.fullmatch(matcher["options"], name)):
            for p in o["properties"]:
                if p["id"] == prop:
                    found = p["value"]
    return found


def segments(points: list[tuple[float, float]], step: float) -> list[list[tuple[float, float]]]:
    """``points`` cut where a sample is missing (no line across a gap: ``spanNulls``
    false), each run as (start, value) pairs."""
    runs: list[list[tuple[float, float]]] = []
    for t, v in points:
        if runs and t - runs[-1][-1][0] <= 1.5 * step:
            runs[-1].append((t, v))
        else:
            runs.append([(t, v)])
    return runs


def spans(points: list[tuple[float, float]], step: float) -> list[tuple[float, float, float]]:
    """(start, end, value) of each stretch of one value, as a state timeline shows it
    (``mergeValues``); a missing sample ends a stretch."""
    out: list[tuple[float, float, float]] = []
    for run in segments(points, step):
        for t, v in run:
            if out and out[-1][2] == v and abs(t - out[-1][1]) < step / 2:
                out[-1] = (out[-1][0], t + step, v)
            else:
                out.append((t, t + step, v))
    return out


# -- the picture ----------------------------------------------------------------------------
# Grafana's dark theme and named colours
BG, PANEL, BORDER, TEXT, DIM, GRID = \
    "#111217", "#181b1f", "#2c3235", "#ccccdc", "#8e8e9e", "#2a2d33"
COLORS = {"green": "#73bf69", "red": "#f2495c", "blue": "#5794f2", "yellow": "#fade2a",
          "orange": "#ff9830", "purple": "#b877d9", "dark-red": "#c4162a", "text": TEXT}
PALETTE = ["#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9"]
WIDTH_PX, ROW_PX, HEADER_PX, DPI = 1600, 32, 64, 100


def color(name: str) -> str:
    return COLORS.get(name, name)


def lighter(hex_color: str, by: float = 0.5) -> str:
    """``#rrggbb`` mixed with white (``by`` of the way)."""
    rgb = [int(hex_color[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(c + (255 - c) * by):02x}" for c in rgb)


def ticks(run: Run, most: int = 7) -> list[float]:
    """Round clock times for the time axis, none at the very edges (a label would be cut)."""
    span = run.end - run.start
    step = next((s for s in (5, 10, 15, 20, 30, 60, 120, 300, 600, 1800, 3600)
                 if span / s <= most), 3600 * math.ceil(span / 3600 / most))
    first = math.ceil((run.start + 0.04 * span) / step) * step
    return [float(t) for t in range(first, int(run.end - 0.04 * span) + 1, step)]


def draw(dashboard: dict[str, Any], panels: list[Panel],
         data: dict[tuple[int, str], list[Series]], run: Run, variables: dict[str, str],
         out: Path) -> None:
    """Draw ``panels`` (their query results in ``data``) into the PNG ``out``.

    Raises:
        ValueError: a panel of a type not in :data:`DRAWN` (before matplotlib is loaded).
    """
    for panel in panels:
        if panel.kind not in DRAWN:
            raise ValueError(f"panel {panel.id} {panel.title!r}: cannot draw a {panel.kind}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(p.grid["y"] + p.grid["h"] for p in panels)
    height_px = HEADER_PX + rows * ROW_PX
    fig = plt.figure(figsize=(WIDTH_PX / DPI, height_px / DPI), dpi=DPI, facecolor=BG)
    px_x, px_y = 1 / WIDTH_PX, 1 / height_px
    profiles = sorted({s[0]["profile"] for series in data.values() for s in series
                       if "profile" in s[0]})
    shade = ["#5794f2", "#f2495c", "#ff9830"]

    def when(t: float) -> str:
        return time.strftime("%H:%M:%S", time.localtime(t))

    fig.text(8 * px_x, 1 - 10 * px_y, dashboard["title"], color=TEXT, fontsize=15,
             va="top", weight="bold")
    chosen = "   ".join(f"{k} = {'All' if v == '.*' else v}" for k, v in variables.items()
                        if k != "datasource")
    x = 8 * px_x
    words = [(f"{chosen}   {when(run.start)} to {when(run.end)}   shaded:", DIM)]
    words += [(e.name, shade[i % len(shade)]) for i, e in enumerate(run.episodes)]
    words += [("  drawn with matplotlib from Prometheus queries over a real run, not by "
               "Grafana (ops/grafana/render.py)", DIM)]
    for text, tint in words:
        label = fig.text(x, 1 - 36 * px_y, text, color=tint, fontsize=10, va="top",
                         weight="normal" if tint == DIM else "bold")
        x += (label.get_window_extent().width + 8) * px_x

    def series_color(index: int, name: str, labels: dict[str, str], panel: Panel) -> str:
        fixed = override(panel, name, "color")
        if fixed:
            return color(fixed.get("fixedColor", "text"))
        if "profile" in labels and labels["profile"] in profiles:
            return PALETTE[profiles.index(labels["profile"]) % len(PALETTE)]
        return PALETTE[(index + len(profiles)) % len(PALETTE)]

    def time_axis(ax: Any) -> None:
        import matplotlib.dates as mdates
        import matplotlib.ticker as mticker

        ax.set_xlim(run.start / 86400, run.end / 86400)
        ax.xaxis.set_major_locator(mticker.FixedLocator([t / 86400 for t in ticks(run)]))
        ax.xaxis.set_major_formatter(mdates.DateFormatter(  # type: ignore[no-untyped-call]
            "%H:%M:%S", tz=datetime.datetime.now().astimezone().tzinfo))
        for i, e in enumerate(run.episodes):
            ax.axvspan(e.start / 86400, e.end / 86400, color=shade[i % len(shade)],
                       alpha=0.13, lw=0, zorder=0)

    def style(ax: Any) -> None:
        ax.set_facecolor(PANEL)
        ax.tick_params(colors=DIM, labelsize=10, length=0)
        for side in ax.spines.values():
            side.set_visible(False)
        ax.grid(True, color=GRID, lw=0.8)

    for panel in panels:
        left, bottom, width, height = box(panel.grid, rows, HEADER_PX * px_y)
        if panel.kind == "row":
            fig.text(left, bottom + height / 2, "\u2304  " + panel.title, color=TEXT,
                     fontsize=12, weight="bold", va="center")
            continue
        frame = fig.add_axes((left, bottom, width, height))
        frame.set_facecolor(PANEL)
        frame.set_xticks([])
        frame.set_yticks([])
        for side in frame.spines.values():
            side.set_color(BORDER)
        fig.text(left + 10 * px_x, bottom + height - 8 * px_y, panel.title, color=TEXT,
                 fontsize=12, weight="bold", va="top")
        unit = panel.defaults.get("unit")
        named = [(q, labels, points) for q in panel.queries
                 for labels, points in data.get((panel.id, q.ref), [])]
        inner = (left + 62 * px_x, bottom + 40 * px_y, width - 74 * px_x,
                 height - 72 * px_y)
        if not named:
            fig.text(left + width / 2, bottom + height / 2, "No data", color=DIM,
                     fontsize=12, ha="center", va="center")
        elif panel.kind == "timeseries":
            _timeseries(fig, panel, named, inner, unit, series_color, style, time_axis,
                        (left + 10 * px_x, bottom + 6 * px_y))
        elif panel.kind == "state-timeline":
            inner = (left + 160 * px_x, bottom + 24 * px_y, width - 172 * px_x,
                     height - 56 * px_y)
            _state_timeline(fig, panel, named, inner, style, time_axis)
        elif panel.kind == "stat":
            _stat(fig, panel, named, (left, bottom, width, height - 30 * px_y), unit)

    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, facecolor=BG)
    plt.close(fig)


Named = list[tuple[Query, dict[str, str], list[tuple[float, float]]]]


def _timeseries(fig: Any, panel: Panel, named: Named, inner: tuple[float, ...],
                unit: str | None, series_color: Any, style: Any, time_axis: Any,
                legend_at: tuple[float, float]) -> None:
    import matplotlib.ticker as mticker

    ax = fig.add_axes(inner)
    style(ax)
    time_axis(ax)
    custom = panel.defaults.get("custom", {})
    steps = custom.get("lineInterpolation") == "stepAfter"
    handles = []
    for index, (q, labels, points) in enumerate(named):
        name = legend(q.legend, labels)
        dash = override(panel, name, "custom.lineStyle")
        line = None
        for run in segments(points, SCRAPE):
            xs = [t / 86400 for t, _ in run]
            ys = [v for _, v in run]
            tint = series_color(index, name, labels, panel)
            if q is not panel.queries[0] and not dash:  # p99 beside p50: a lighter shade
                tint = lighter(tint)
            (line,) = ax.plot(xs, ys, color=tint,
                              lw=1.6, ls="--" if dash else "-",
                              drawstyle="steps-post" if steps else "default", label=name)
        if line is not None:
            handles.append(line)
    if (custom.get("thresholdsStyle") or {}).get("mode") == "dashed":
        for step in (panel.defaults.get("thresholds") or {}).get("steps", []):
            if step["value"] is not None:
                ax.axhline(step["value"], color=color(step["color"]), ls="--", lw=0.9,
                           alpha=0.8)
    if panel.defaults.get("min") is not None:
        ax.set_ylim(bottom=panel.defaults["min"])
    ax.yaxis.set_major_locator(mticker.MaxNLocator(
        5, steps=[1, 2, 5, 10], integer=panel.defaults.get("decimals") == 0))
    ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: fmt_value(v, unit)))
    # as many legend columns as fit the panel; the plot sits above the legend's rows
    room = (inner[2] + 50 / WIDTH_PX) * fig.bbox.width
    for ncol in range(len(handles), 0, -1):
        rows = -(-len(handles) // ncol)  # matplotlib fills columns first; Grafana rows
        order = [handles[r * ncol + c] for c in range(ncol) for r in range(rows)
                 if r * ncol + c < len(handles)]
        box_ = fig.legend(handles=order, loc="lower left", bbox_to_anchor=legend_at,
                          ncol=ncol, frameon=False, fontsize=10, labelcolor=TEXT,
                          handlelength=1.6, borderaxespad=0, columnspacing=1.4)
        extent = box_.get_window_extent()
        if extent.width <= room or ncol == 1:
            break
        box_.remove()
    top = extent.y1 / fig.bbox.height + 22 / fig.bbox.height  # the time labels between
    ax.set_position((inner[0], top, inner[2], inner[1] + inner[3] - top))


def _state_timeline(fig: Any, panel: Panel, named: Named, inner: tuple[float, ...],
                    style: Any, time_axis: Any) -> None:
    ax = fig.add_axes(inner)
    style(ax)
    ax.grid(False)
    time_axis(ax)
    texts = mapping(panel.defaults)
    low, high = ax.get_xlim()
    px_per_second = inner[2] * fig.bbox.width / ((high - low) * 86400)
    names = []
    for lane, (q, labels, points) in enumerate(named):
        names.append(legend(q.legend, labels))
        for start, end, value in spans(points, SCRAPE):
            text, name = texts.get(f"{value:g}", (f"{value:g}", "text"))
            ax.broken_barh([(start / 86400, (end - start) / 86400)], (lane - 0.42, 0.84),
                           facecolor=color(name), alpha=0.8, lw=0)
            middle = (start + end) / 2 / 86400
            if (end - start) * px_per_second >= 8 * len(text) + 8:  # showValue auto
                ax.text(middle, lane, text, color="#111217", fontsize=10, ha="center",
                        va="center", weight="bold")
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.tick_params(axis="y", labelsize=10, labelcolor=TEXT)


def _stat(fig: Any, panel: Panel, named: Named, area: tuple[float, ...],
          unit: str | None) -> None:
    left, bottom, width, height = area
    cell = width / len(named)
    show_name = len(named) > 1 or panel.queries[0].legend
    for i, (q, labels, points) in enumerate(named):
        value = points[-1][1]
        x = left + cell * (i + 0.5)
        colored = panel.defaults.get("color", {}).get("mode") == "thresholds" and \
            bool(panel.defaults.get("thresholds"))
        tint = color(threshold_color(panel.defaults, value)) if colored else TEXT
        if show_name:
            fig.text(x, bottom + height * 0.72, legend(q.legend, labels), color=TEXT,
                     fontsize=11, ha="center", va="center")
        fig.text(x, bottom + height * (0.38 if show_name else 0.5), fmt_value(value, unit),
                 color=tint, fontsize=26 if len(named) < 4 else 20, ha="center",
                 va="center", weight="bold")
