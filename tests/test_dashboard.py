"""ops/grafana/token_worker.json: importable, and querying only series the exporters serve.

Names and labels are checked against real scrapes, never against a list typed here: a
private redis-server, refreshes against the emulator (so the worker's counter and
histogram have samples), then both exporters scraped over HTTP: the worker's ``/metrics``
and the ``token-worker metrics`` sidecar.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from token_worker import metrics
from token_worker.config import Config, load_config
from token_worker.refresh import Refresher
from token_worker.testing.emulator import Emulator

from .support import REPO, free_port, wait_until

DASHBOARD = REPO / "ops" / "grafana" / "token_worker.json"
DATASOURCE = "${datasource}"
# Prometheus attaches these to every series it scrapes; no exporter serves them
TARGET_LABELS = frozenset({"instance", "job"})
# which family types a sample suffix belongs to (a gauge may well end in _count)
SUFFIX_TYPES = {"_bucket": {"histogram"}, "_count": {"histogram", "summary"},
                "_sum": {"histogram", "summary"}, "_total": {"counter"},
                "_created": {"counter", "histogram", "summary"}}

_STRING_OR_COMMENT = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`|#[^\n]*')
_NAME = re.compile(r"(?<![\w:$])token_worker_[a-z0-9_]+(?![\w:])")
_NAME_MATCHER = re.compile(r'__name__\s*=\s*"([^"]*)"')
_SELECTOR = re.compile(r'(?<![\w:$])(token_worker_[a-z0-9_]+)\s*\{((?:"(?:[^"\\]|\\.)*"|[^}"])*)\}')
_MATCHER = re.compile(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_BY = re.compile(r"\bby\s*\(([^)]*)\)")
_LABEL_VALUES = re.compile(r"label_values\(\s*(token_worker_[a-z0-9_]+)\s*,\s*(\w+)\s*\)")


# -- reading PromQL ----------------------------------------------------------------------
def _blank(expr: str) -> str:
    """``expr`` with string literals emptied and comments dropped (same length kept)."""
    return _STRING_OR_COMMENT.sub(
        lambda m: " " * len(m[0]) if m[0][0] == "#" else m[0][0] * 2 + " " * (len(m[0]) - 2),
        expr)


def series_names(expr: str) -> set[str]:
    """The token_worker series an expression selects (never label values or strings)."""
    return set(_NAME.findall(_blank(expr))) | {
        n for n in _NAME_MATCHER.findall(expr) if n.startswith("token_worker_")}


def _group(text: str, start: int, step: int) -> str | None:
    """The balanced parenthesised text opening (step 1) or closing (step -1) at ``start``."""
    opening, closing = ("(", ")") if step == 1 else (")", "(")
    if start < 0 or start >= len(text) or text[start] != opening:
        return None
    depth, i = 0, start
    while 0 <= i < len(text):
        depth += (text[i] == opening) - (text[i] == closing)
        if depth == 0:
            return text[min(start, i):max(start, i) + 1]
        i += step
    return None


def groupings(expr: str) -> list[tuple[set[str], set[str] | None]]:
    """(labels, the series aggregated) for each ``by (...)``; None: its argument not found.

    Both forms: ``sum by (x) (expr)`` and ``sum(expr) by (x)``. ``label_values(m, l)``
    counts as grouping ``m`` by ``l``.
    """
    text = _blank(expr)
    found: list[tuple[set[str], set[str] | None]] = []
    for m in _BY.finditer(text):
        labels = {label.strip() for label in m[1].split(",") if label.strip()}
        rest = text[m.end():]
        after = m.end() + len(rest) - len(rest.lstrip())      # sum by (x) (expr)
        before = len(text[:m.start()].rstrip()) - 1           # sum(expr) by (x)
        arg = _group(text, after, 1) or _group(text, before, -1)
        found.append((labels, series_names(arg) if arg is not None else None))
    for m in _LABEL_VALUES.finditer(text):
        found.append(({m[2]}, {m[1]}))
    return found


def matchers(expr: str) -> Iterator[tuple[str, str, str, str]]:
    """(series, label, operator, value) for each label matcher on a token_worker series."""
    for sel in _SELECTOR.finditer(expr):
        for m in _MATCHER.finditer(sel[2]):
            yield sel[1], m[1], m[2], m[3]


# -- the dashboard -----------------------------------------------------------------------
def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows and the panels inside collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield f"panel {panel['id']} {panel.get('title')!r} {target['refId']}", \
                    target["expr"]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            for expr in {query, var.get("definition") or query}:
                yield f"variable {var['name']}", expr


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


# -- what the exporters serve ------------------------------------------------------------
@dataclass
class Exposition:
    types: dict[str, str] = field(default_factory=dict)  # family -> type
    labels: dict[str, set[str]] = field(default_factory=dict)  # sample name -> label names
    values: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    def add(self, text: str) -> Exposition:
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for s in family.samples:
                self.labels.setdefault(s.name, set()).update(s.labels)
                for label, value in s.labels.items():
                    self.values.setdefault((s.name, label), set()).add(value)
        return self

    def family_of(self, sample: str) -> str:
        """The family a sample name belongs to: a suffix is stripped only when it is that
        family type's own (``x_total`` of a counter, never ``x_count`` of a gauge)."""
        for suffix, types in SUFFIX_TYPES.items():
            base = sample.removesuffix(suffix)
            if base != sample and self.types.get(base) in types:
                return base
        return sample


def problems(dashboard: dict[str, Any], served: Exposition) -> list[str]:
    """Every way the dashboard's queries disagree with what is served; [] when none."""
    found: list[str] = []
    for where, expr in expressions(dashboard):
        names = series_names(expr)
        if not names:
            found.append(f"{where}: queries no token_worker series: {expr}")
        for name in sorted(names - served.labels.keys()):
            hint = (f" ({name} is a {served.types[name]} family: query its series)"
                    if name in served.types else "")
            found.append(f"{where}: {name} is not served{hint}")
        for name in sorted(names & served.labels.keys()):
            if served.family_of(name) not in metrics.METRIC_NAMES:
                found.append(f"{where}: {name} is not in metrics.METRIC_NAMES")
        for labels, grouped in groupings(expr):
            if grouped is None:
                found.append(f"{where}: cannot tell what by ({', '.join(labels)}) aggregates")
                continue
            for name in sorted(grouped & served.labels.keys()):
                if missing := labels - served.labels[name] - TARGET_LABELS:
                    found.append(f"{where}: {name} has no label {sorted(missing)} to group by")
                if name.endswith("_bucket") and "le" not in labels:
                    found.append(f"{where}: {name} aggregated without le: no quantile left")
        for name, label, op, value in matchers(expr):
            if name not in served.labels:
                continue  # reported above
            if label not in served.labels[name] | TARGET_LABELS:
                found.append(f"{where}: {name} has no label {label!r}")
            elif op == "=" and "$" not in value and label not in TARGET_LABELS and \
                    value not in served.values.get((name, label), set()):
                found.append(f"{where}: {name} never has {label}={value!r}")
        for name in sorted(names & served.labels.keys() if where.startswith("panel") else ()):
            picked = [v for n, label, _, v in matchers(expr) if n == name and label == "profile"]
            if "profile" in served.labels[name] and not any("$profile" in v for v in picked):
                found.append(f"{where}: {name} ignores the $profile variable")
    return found


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text: str = resp.read().decode()
        return text


def serve_both(config: Config, emulator: Emulator) -> Exposition:
    """Run refreshes with every outcome the dashboard shows, then scrape both exporters."""
    handle = metrics.start_worker_metrics(config, port=free_port(), host="127.0.0.1")
    assert handle is not None
    stop = threading.Event()
    sidecar_port = free_port()
    sidecar = threading.Thread(target=metrics.serve_sidecar,
                               args=(config, "127.0.0.1", sidecar_port, stop), daemon=True)
    sidecar.start()
    refresher = Refresher.from_config(config)
    try:
        refresher.refresh_profile("payments")               # refreshed
        refresher.refresh_profile("payments")               # not_due
        emulator.set_faults([{"mode": "oauth_error", "error": "invalid_scope", "count": 1}])
        refresher.refresh_profile("refunds", force=True)    # failed
        assert wait_until(lambda: _try_scrape(sidecar_port), 10), "the sidecar did not serve"
        return Exposition().add(_scrape(handle.port)).add(_scrape(sidecar_port))
    finally:
        refresher.close()
        stop.set()
        sidecar.join(10)
        handle.close()


def _try_scrape(port: int) -> bool:
    try:
        _scrape(port)
        return True
    except OSError:
        return False


# -- the tests ---------------------------------------------------------------------------
def test_every_query_selects_series_and_labels_the_exporters_really_serve(
        config_path: Path, emulator: Emulator) -> None:
    served = serve_both(load_config(config_path), emulator)
    assert {"token_worker_refresh_total", "token_worker_token_request_duration_seconds_bucket",
            "token_worker_token_expires_in_seconds", "token_worker_up"} <= served.labels.keys()
    dashboard = load_dashboard()
    assert problems(dashboard, served) == []
    used = {n for _, expr in expressions(dashboard) for n in series_names(expr)}
    assert {"token_worker_refresh_total",
            "token_worker_token_request_duration_seconds_bucket"} <= used


def test_the_checker_fails_a_query_on_a_series_or_label_that_is_not_served() -> None:
    served = Exposition().add(
        "# TYPE token_worker_refresh counter\n"
        'token_worker_refresh_total{profile="p",outcome="failed"} 1\n'
        "# TYPE token_worker_token_state gauge\n"
        'token_worker_token_state{profile="p",state="valid"} 1\n'
        "# TYPE token_worker_up gauge\ntoken_worker_up 1\n"
        "# TYPE token_worker_token_request_duration_seconds histogram\n"
        'token_worker_token_request_duration_seconds_bucket{profile="p",le="+Inf"} 1\n')
    queries = {
        "A": 'sum by (outcome) (rate(token_worker_refresh_total{profile=~"$profile"}[5m]))',
        "B": 'sum(rate(token_worker_refresh{profile=~"$profile"}[5m]))',
        "C": 'max(token_worker_token_expiry_seconds{profile=~"$profile"}) by (profile)',
        "D": 'sum by (result) (token_worker_refresh_total{profile=~"$profile"})',
        "E": 'token_worker_token_state{profile=~"$profile", state="stale"}',
        "F": "min(token_worker_token_state)",
        "G": 'min by (instance) (token_worker_up{job="token_worker_fake"})',
        "H": 'histogram_quantile(0.5, sum by (profile) '
             '(rate(token_worker_token_request_duration_seconds_bucket{profile=~"$profile"}[5m])))',
    }
    dashboard = {"panels": [{"id": 1, "title": "t", "targets": [
        {"refId": ref, "expr": expr} for ref, expr in queries.items()]}],
        "templating": {"list": [{"type": "query", "name": "profile",
                                 "query": "label_values(token_worker_up, profile)"}]}}
    assert problems(dashboard, served) == [
        "panel 1 't' B: token_worker_refresh is not served (token_worker_refresh is a "
        "counter family: query its series)",
        "panel 1 't' C: token_worker_token_expiry_seconds is not served",
        "panel 1 't' D: token_worker_refresh_total has no label ['result'] to group by",
        "panel 1 't' E: token_worker_token_state never has state='stale'",
        "panel 1 't' F: token_worker_token_state ignores the $profile variable",
        "panel 1 't' H: token_worker_token_request_duration_seconds_bucket aggregated "
        "without le: no quantile left",
        "variable profile: token_worker_up has no label ['profile'] to group by",
    ]


def test_the_extractor_reads_names_not_strings_and_finds_what_by_aggregates() -> None:
    expr = ('histogram_quantile(0.99, sum by (le) (rate(\n'
            '  token_worker_a_bucket{job="token_worker_b", x=~"${token_worker_c}"}[$window])))'
            ' # token_worker_d\n/ ignoring(le) sum(token_worker_e_total) by (profile)')
    assert series_names(expr) == {"token_worker_a_bucket", "token_worker_e_total"}
    assert series_names('{__name__="token_worker_f"}') == {"token_worker_f"}
    assert groupings(expr) == [({"le"}, {"token_worker_a_bucket"}),
                               ({"profile"}, {"token_worker_e_total"})]
    assert groupings("sum by (x) 1") == [({"x"}, None)]
    assert list(matchers(expr)) == [("token_worker_a_bucket", "job", "=", "token_worker_b"),
                                    ("token_worker_a_bucket", "x", "=~", "${token_worker_c}")]
    gauge_count = Exposition().add("# TYPE token_worker_n_count gauge\ntoken_worker_n_count 1\n")
    assert gauge_count.family_of("token_worker_n_count") == "token_worker_n_count"


def test_the_dashboard_is_importable_json_without_export_placeholders() -> None:
    text = DASHBOARD.read_text()
    dashboard = json.loads(text)
    assert "__inputs" not in dashboard and "${DS_" not in text
    assert dashboard["id"] is None and dashboard["uid"] and dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    for panel in panels(dashboard):
        assert panel["type"] and panel["title"]
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys()
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]


def test_every_panel_and_query_uses_the_datasource_variable() -> None:
    dashboard = load_dashboard()
    (ds,) = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert (ds["type"], ds["query"]) == ("datasource", "prometheus")
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"])["uid"] == DATASOURCE
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            assert var["datasource"]["uid"] == DATASOURCE, var["name"]


def test_the_profile_variable_lists_profiles_and_allows_several() -> None:
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    profile = variables["profile"]
    assert profile["query"]["query"] == profile["definition"] == \
        "label_values(token_worker_token_expires_in_seconds, profile)"
    assert profile["multi"] is True and profile["includeAll"] is True


def test_panel_ids_are_unique() -> None:
    ids = [p["id"] for p in panels(load_dashboard())]
    assert all(isinstance(i, int) and i > 0 for i in ids)
    assert len(ids) == len(set(ids)), sorted(ids)
