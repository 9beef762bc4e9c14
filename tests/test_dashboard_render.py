"""ops/grafana/render_panels.py: the parts that turn the dashboard into queries and boxes.

Plain Python, no matplotlib and no Prometheus: the picture itself comes from
``scripts/render_dashboard`` (minutes long, a real fleet), not from the suite.
"""

from __future__ import annotations

import json
import math
import sys
from itertools import combinations

import pytest

from .support import REPO

sys.path.insert(0, str(REPO / "ops" / "grafana"))
import render_panels as rp  # noqa: E402 - a script's module, found by path

DASHBOARD = json.loads((REPO / "ops" / "grafana" / "token_worker.json").read_text())
VARIABLES = {"profile": ".*", "window": "30s", "datasource": "prometheus"}


def test_every_panel_is_planned_with_its_queries_and_no_variable_left() -> None:
    planned = rp.plan(DASHBOARD, VARIABLES)
    ids = [p["id"] for raw in DASHBOARD["panels"] for p in [raw, *raw.get("panels", [])]]
    assert [p.id for p in planned] == ids
    assert {p.kind for p in planned} <= rp.DRAWN
    for panel in planned:
        assert "$" not in panel.title, panel.title
        assert (panel.kind == "row") == (not panel.queries), panel.title
        for q in panel.queries:
            assert "$" not in q.expr and "token_worker_" in q.expr, q.expr
    by_id = {p.id: p for p in planned}
    assert by_id[10].title == "Refresh outcomes (per minute, over 30s)"
    assert '{profile=~".*"}[30s]' in by_id[10].queries[0].expr
    # stats are asked for one instant; graphs and state timelines for the range
    assert {p.kind for p in planned for q in p.queries if q.instant} == {"stat"}


def test_a_panel_type_the_renderer_cannot_draw_is_refused() -> None:
    dashboard = {"panels": [{"id": 1, "type": "gauge", "title": "g",
                             "gridPos": {"x": 0, "y": 0, "w": 6, "h": 4}, "targets": []}]}
    panels = rp.plan(dashboard, VARIABLES)
    with pytest.raises(ValueError, match="cannot draw a gauge"):
        rp.draw(dashboard, panels, {}, rp.Run("", 0, 1, []), VARIABLES, REPO / "unused.png")


def test_panels_sit_at_their_grid_positions_without_overlapping() -> None:
    planned = rp.plan(DASHBOARD, VARIABLES)
    rows = max(p.grid["y"] + p.grid["h"] for p in planned)
    boxes = {p.id: rp.box(p.grid, rows, top=0.04) for p in planned}
    for left, bottom, width, height in boxes.values():
        assert 0 <= left < left + width <= 1 and 0 <= bottom < bottom + height <= 0.96
    for (a, (al, ab, aw, ah)), (b, (bl, bb, bw, bh)) in combinations(boxes.items(), 2):
        apart = al + aw <= bl or bl + bw <= al or ab + ah <= bb or bb + bh <= ab
        assert apart, (a, b)
    # the first Overview panel is at the top left, the two Tokens graphs side by side
    assert boxes[2][0] < 0.01 and boxes[6][1] == pytest.approx(boxes[7][1])
    assert boxes[6][0] + boxes[6][2] < boxes[7][0]


def test_variables_are_substituted_as_grafana_does_and_others_kept() -> None:
    assert rp.substitute('x{p=~"$profile"}[${window}] $__rate_interval $other',
                         VARIABLES) == 'x{p=~".*"}[30s] $__rate_interval $other'


def test_series_are_named_by_the_legend_format() -> None:
    labels = {"profile": "payments", "le": "1"}
    assert rp.legend("{{profile}} margin", labels) == "payments margin"
    assert rp.legend("p99 {{ profile }}", labels) == "p99 payments"
    assert rp.legend("{{missing}}x", labels) == "x"
    assert rp.legend(None, {"b": "2", "a": "1"}) == '{a="1", b="2"}'


def test_values_are_shown_in_the_panel_unit() -> None:
    assert [rp.fmt_value(v, "s") for v in (0, 0.012, 4.2, 90, 7200, -30)] == \
        ["0 s", "12 ms", "4.2 s", "1.5 min", "2 hour", "-30 s"]
    assert rp.fmt_value(12.5, "opm") == "12.5 opm"
    assert rp.fmt_value(3, "none") == "3"
    assert rp.fmt_value(math.inf, "s") == "+Inf" and rp.fmt_value(math.nan, None) == "NaN"


def test_mappings_thresholds_and_overrides_come_from_the_panel() -> None:
    by_id = {p.id: p for p in rp.plan(DASHBOARD, VARIABLES)}
    assert rp.mapping(by_id[8].defaults)["2"] == ("expired", "red")
    assert rp.mapping(by_id[2].defaults) == {"1": ("up", "green"), "0": ("down", "red")}
    failures = by_id[11].defaults
    assert [rp.threshold_color(failures, v) for v in (0, 1, 2.5, 3, 99)] == \
        ["green", "yellow", "yellow", "red", "red"]
    assert rp.override(by_id[6], "payments margin", "custom.lineStyle")["fill"] == "dash"
    assert rp.override(by_id[6], "payments", "custom.lineStyle") is None
    assert rp.override(by_id[10], "failed", "color")["fixedColor"] == "red"


def test_a_missing_sample_breaks_the_line_and_ends_a_state() -> None:
    step = rp.SCRAPE
    points = [(0.0, 1.0), (0.5, 1.0), (1.0, 0.0), (3.0, 0.0), (3.5, 1.0)]
    assert rp.segments(points, step) == [points[:3], points[3:]]
    assert rp.spans(points, step) == [(0.0, 1.0, 1.0), (1.0, 1.5, 0.0), (3.0, 3.5, 0.0),
                                      (3.5, 4.0, 1.0)]
    assert rp.segments([], step) == [] and rp.spans([], step) == []


def test_time_ticks_are_round_and_keep_off_the_edges() -> None:
    run = rp.Run("", 1000.0, 1160.0, [])
    ticks = rp.ticks(run)
    assert ticks == [1020.0, 1050.0, 1080.0, 1110.0, 1140.0]
    assert len(rp.ticks(rp.Run("", 0.0, 86400.0, []))) <= 7
    assert rp.lighter("#000000") == "#808080" and rp.lighter("#ffffff") == "#ffffff"
