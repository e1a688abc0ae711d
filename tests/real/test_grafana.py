"""The Grafana dashboard asks only for what a real daemon exports, in valid PromQL.

The metric names are checked against a live /metrics scrape; the queries (Grafana's
variables substituted) are checked by the real `promtool check rules`, which, like
tests/real/test_alerts.py, fails when CI is set and promtool is missing, and is skipped
otherwise.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.real.test_alerts import daemon, output, promtool, run  # noqa: F401 (fixtures)
from tests.real.test_http import fetch, samples

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "kanban-watchers.json"
DATASOURCE = "${datasource}"
BOARD_QUERY = "label_values(watchers_last_success_timestamp_seconds, board)"

# Every family the dashboard is meant to show (the sample names a scrape carries).
SHOWN = (
    "watchers_actions_total",
    "watchers_ticks_total",
    "watchers_tick_duration_seconds_bucket",
    "watchers_last_success_timestamp_seconds",
    "watchers_running_workers",
    "watchers_board_tasks",
    "watchers_open_distress_cards",
    "watchers_provider_cooling",
    "watchers_provider_cooldown_until_timestamp_seconds",
    "watchers_guard_trips_total",
    "watchers_board_read_error",
    "watchers_ready_oldest_age_seconds",
    "watchers_dispatcher_last_claim_timestamp_seconds",
)
TICK_OUTCOMES = ("ok", "error", "skipped", "unchanged")

# What Grafana replaces before a query reaches Prometheus, and what it becomes here.
GRAFANA_VARIABLES = (
    (re.compile(r"\$\{board(?::[a-z]+)?\}|\$board\b"), ".*"),
    (re.compile(r"\$__rate_interval\b|\$__interval\b|\$__range\b"), "5m"),
)
PROMQL_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
    | {"and", "or", "unless", "offset", "atan2", "inf", "nan"}
)


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panels(within: list[dict[str, Any]] | None = None) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included (a collapsed row holds its own)."""
    for panel in dashboard()["panels"] if within is None else within:
        yield panel
        yield from panels(panel.get("panels", []))


def targets() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query in the dashboard."""
    return [(p, t) for p in panels() for t in p.get("targets", [])]


def variable(name: str) -> dict[str, Any]:
    (var,) = [v for v in dashboard()["templating"]["list"] if v["name"] == name]
    return var


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for m in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", text):
        word = m.group()
        if word.lower() in PROMQL_KEYWORDS or text[m.end() :].lstrip().startswith("("):
            continue  # a keyword, or a function / aggregation
        names.add(word)
    return names


def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric name, its label matchers as written, "" if none) for each selector."""
    return [
        (m.group(1), m.group(2) or "")
        for m in re.finditer(r"(?<![\w.:])([A-Za-z_:][\w:]*)\s*(\{[^}]*\})?", expr)
        if m.group(1) in metric_names(expr)
    ]


def substituted(expr: str) -> str:
    for pattern, value in GRAFANA_VARIABLES:
        expr = pattern.sub(value, expr)
    return expr


# -- the dashboard alone ---------------------------------------------------------------


def test_the_dashboard_has_a_stable_uid_and_a_current_schema():
    d = dashboard()
    assert d["uid"] == "kanban-watchers"
    assert d["title"]
    assert 36 <= d["schemaVersion"] <= 41
    assert d.get("id") is None  # importable into any Grafana


def test_the_datasource_is_a_prometheus_variable_used_everywhere():
    """One `datasource` variable of type Prometheus; every panel and query goes through it."""
    var = variable("datasource")
    assert var["type"] == "datasource"
    assert var["query"] == "prometheus"
    for panel, target in targets():
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE}, panel["title"]
        assert target["datasource"] == {"type": "prometheus", "uid": DATASOURCE}, panel["title"]


def test_the_board_variable_lists_every_board_and_allows_several():
    var = variable("board")
    assert var["type"] == "query"
    assert var["datasource"] == {"type": "prometheus", "uid": DATASOURCE}
    assert var["definition"] == BOARD_QUERY
    query = var["query"]
    assert query["query"] == BOARD_QUERY
    # Grafana >= 10 builds the query from these fields when qryType is "label values".
    assert query["qryType"] == 1
    assert (query["metric"], query["label"]) == ("watchers_last_success_timestamp_seconds", "board")
    assert var["multi"] is True
    assert var["includeAll"] is True
    assert var["allValue"] == ".*"  # boards that appear later are included too
    assert var["refresh"] in (1, 2)  # refreshed on load or on time-range change


def test_every_panel_has_a_place_and_queries():
    """Unique ids, on the 24-column grid, and every non-row panel has an expr per target."""
    seen = set()
    for panel in panels():
        assert panel["id"] not in seen
        seen.add(panel["id"])
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        assert pos["h"] > 0 and pos["y"] >= 0
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat", "table", "bargauge"}, panel["type"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]


def test_the_dashboard_shows_every_family_it_is_meant_to():
    """Heals, ticks and their durations, last successes, boards, distress, providers, guard."""
    used = set().union(*(metric_names(t["expr"]) for _, t in targets()))
    assert set(SHOWN) <= used, set(SHOWN) - used
    exprs = " ".join(t["expr"] for _, t in targets())
    assert "histogram_quantile(" in exprs
    assert "time() - " in exprs  # last success age
    assert re.search(r"by \(watcher, action\)", exprs)
    assert re.search(r"by \(watcher, outcome\)", exprs)


def test_the_parser_finds_metric_names_only():
    """The helper the live checks rely on: no functions, labels, keywords or durations."""
    expr = (
        "histogram_quantile(0.95, sum by (watcher, le) "
        '(rate(a_bucket{board=~"$board", x="y(z)"}[$__rate_interval])))'
        " / on (watcher) group_left b offset 5m > bool 1e9 or time() - c:rec"
    )
    assert metric_names(expr) == {"a_bucket", "b", "c:rec"}
    assert selectors(expr) == [
        ("a_bucket", '{board=~"$board", x="y(z)"}'),
        ("b", ""),
        ("c:rec", ""),
    ]


# -- against a live daemon and promtool --------------------------------------------------


def test_every_query_uses_only_metrics_a_live_daemon_exports(daemon):
    """Each name in each expr is a sample name of a real scrape; `board` is always filtered."""
    status, _, body = fetch(daemon + "/metrics")
    assert status == 200
    scraped = samples(body)
    names = {name for name, _ in scraped}
    with_board = {name for name, labels in scraped if "board" in dict(labels)}
    assert set(SHOWN) <= names, set(SHOWN) - names

    for panel, target in targets():
        expr = target["expr"]
        unknown = metric_names(expr) - names
        assert not unknown, f"{panel['title']}: {sorted(unknown)} not exported"
        for name, matchers in selectors(expr):
            if name in with_board:
                assert 'board=~"$board"' in matchers, f"{panel['title']}: {name}{matchers}"
            else:
                assert "board" not in matchers, f"{panel['title']}: {name} has no board label"

    # The board variable's metric carries the label it lists.
    assert "watchers_last_success_timestamp_seconds" in with_board
    values = {
        dict(labels)["board"]
        for name, labels in scraped
        if name == "watchers_last_success_timestamp_seconds"
    }
    assert values  # the daemon's board is listed
    outcomes = {
        dict(labels)["outcome"] for name, labels in scraped if name == "watchers_ticks_total"
    }
    assert outcomes == set(TICK_OUTCOMES)


def test_every_query_is_valid_promql(promtool, tmp_path):
    """Each expr, with Grafana's variables substituted, passes `promtool check rules`."""
    rules = []
    for panel, target in targets():
        expr = substituted(target["expr"])
        assert "$" not in expr, f"{panel['title']}: unsubstituted variable in {expr}"
        rules.append({"record": f"grafana:panel_{panel['id']}:{target['refId']}", "expr": expr})
    assert len({r["record"] for r in rules}) == len(rules)
    path = tmp_path / "grafana-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "grafana", "rules": rules}]}))
    proc = run(promtool, "check", "rules", str(path))
    assert proc.returncode == 0, output(proc) + path.read_text()
    assert f"SUCCESS: {len(rules)} rules found" in output(proc), output(proc)
