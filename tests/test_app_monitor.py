"""AppTest of the Monitor page through app.py on the tiny synthetic installation: the drift section
with its charts, cohort stability (empty with one scoring run, a chart with two) and the service
panel (empty without a request log, traffic and latency charts with one)."""
from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.data.ingest import ingest_file
from core.data.store import Store
from core.insight.cohorts import score_dataset
from core.serving.monitor import drift_report
from pages.shared import cached
from tests.app_util import open_app_page, point_app_at, tiny_app_env

TIMEOUT = 120
PAGE = "pages/views/monitor.py"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def app_env(tmp_path_factory, tmp_path, monkeypatch) -> Path:
    return tiny_app_env(tmp_path_factory, tmp_path, monkeypatch)


def titles(at: AppTest) -> dict[str, dict]:
    out = {}
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        out[spec["layout"].get("title", {}).get("text", "")] = spec
    return out


def array(values) -> np.ndarray:
    """A trace's values from the figure JSON (plotly writes numeric arrays as base64 typed arrays)."""
    if isinstance(values, dict) and "bdata" in values:
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
    return np.asarray(values)


def texts(at: AppTest) -> str:
    return " ".join(e.value for kind in ("info", "success", "warning", "error", "markdown", "caption")
                    for e in at.get(kind))


def test_monitor_page_sections_and_empty_states(app_env):
    at = open_app_page(PAGE, TIMEOUT)
    assert [h.value for h in at.subheader] == ["Drift since training", "Cohort stability",
                                                "Did the predicted buyers buy?", "Scoring service", "Resources"]
    charts = titles(at)
    psi = charts["Feature drift (PSI, training window → latest)"]
    # the page's store is the process-wide one AppTest's run opened (one connection per file)
    report = drift_report(cached.get_store(), Path(at.session_state["model_picker"]), "synth")
    assert psi["data"][0]["type"] == "bar" and len(psi["data"][0]["y"]) == min(20, len(report.features))
    assert {"Behaviour mix (share of events)", "Events per user in the window",
            "Model scores of the window's users"} <= set(charts)
    words = texts(at)
    assert "0.25" in words and "0.1" in words and "population stability index" in words
    assert report.headline() in words
    assert "stability needs two" in words                      # one scoring run so far
    assert "No request log yet" in words and "python -m core serve" in words
    # the only error box is a drift verdict (the tiny log is noisy), never a failure
    assert [e.value for e in at.error] in ([], [report.headline()])


def test_monitor_page_with_two_runs_and_a_request_log(app_env):
    at = open_app_page(PAGE, TIMEOUT)
    model_dir = Path(at.session_state["model_picker"])
    score_dataset(cached.get_store(), model_dir, "synth")
    t0 = datetime(2024, 5, 1, 12)
    log = app_env.parent / "logs" / "service.log"
    log.parent.mkdir(exist_ok=True)         # the app's resource sampler may have made it already
    log.write_text("".join(json.dumps({"time": (t0 + timedelta(seconds=7 * i)).isoformat() + "Z",
                                       "route": "/v1/score", "method": "POST", "status": 200 if i % 5 else 422,
                                       "latency_ms": 2.0 + i % 7, "model_id": "m", "n_users": 1,
                                       "n_events": 12, "error": None if i % 5 else "validation"}) + "\n"
                           for i in range(60)), encoding="utf-8")
    at.run()
    assert not at.exception, at.exception
    charts = titles(at)
    overlap = charts["Top 10 % from one scoring run to the next"]
    assert array(overlap["data"][0]["y"]).tolist() == [1.0]     # the same data scored twice: the same top
    latency = charts["Latency percentiles (ms)"]
    assert [t["name"] for t in latency["data"]] == ["p50", "p95", "p99"]
    assert "Requests per second and error rate" in charts
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Requests"] == "60" and metrics["Error rate"] == "20.0%"
    assert metrics["Earlier top 10 % kept"] == "100.0%"


def test_monitor_page_without_a_model(tmp_path, monkeypatch):
    db = tmp_path / "app.duckdb"
    with Store(db) as store:          # a dataset already there: no first-start loading
        ingest_file(store, ROOT / "sample_data" / "taobao" / "UserBehavior_head.csv", dataset="head")
    (tmp_path / "models").mkdir()
    point_app_at(monkeypatch, db, tmp_path / "models")
    at = open_app_page(PAGE, TIMEOUT)
    assert "No trained model yet" in texts(at)
    assert not at.get("plotly_chart")


def test_monitor_page_realized_accuracy_and_resources(app_env):
    """A scoring run recorded one horizon and an hour before the data's end (the latest run's scores
    copied) has realized: the section shows its figures; resource lines of the service are charted."""
    from core.insight.realized import realized_runs

    at = open_app_page(PAGE, TIMEOUT)
    model_dir = Path(at.session_state["model_picker"])
    store = cached.get_store()
    (ts_max,) = store.fetchone("SELECT ts_max FROM datasets WHERE name = 'synth'")
    (run_id, model_id) = store.fetchone("SELECT run_id, model_id FROM score_runs WHERE dataset = 'synth'")
    with store.write("synth", "test: an old run") as w:
        w.add("score_runs", "SELECT 'old', model_id, dataset, ?, scored_at - INTERVAL 1 DAY, n_users "
              "FROM score_runs WHERE run_id = ?", [ts_max - timedelta(days=1, hours=1), run_id], key="old")
        w.add("score_history", "SELECT 'old', user_id, category, score FROM score_history WHERE run_id = ?",
              [run_id], key="old")
    path = app_env.parent / "logs" / "resources.log"
    path.parent.mkdir(exist_ok=True)
    t0 = datetime(2024, 5, 1, 12)
    with open(path, "a", encoding="utf-8") as handle:
        for i in range(5):
            handle.write(json.dumps({"time": (t0 + timedelta(seconds=5 * i)).isoformat() + "Z", "source": "service",
                                     "pid": 1, "cpu_percent": 10.0 * i, "rss_mb": 300.0 + i, "processes": 1}) + "\n")
    at.run()
    assert not at.exception, at.exception
    report = realized_runs(store, model_dir, "synth", top_percent=5)
    assert report.runs["run_id"].tolist() == ["old"] and len(report.pending) == 1
    charts = titles(at)
    realized = charts["Did the top 5 % buy? Realized precision per scoring run"]
    assert array(realized["data"][-1]["y"]).tolist() == pytest.approx(report.runs["precision"].tolist())
    assert "Calibration: predicted vs actual buyers per run" in charts
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Top 5 % bought"] == f"{100 * report.runs['precision'].iloc[0]:.1f}%"
    assert report.headline() in texts(at) and model_id
    cpu = charts["CPU by process (100 % = one core)"]
    service = next(t for t in cpu["data"] if t["name"] == "service")
    assert array(service["y"]).tolist() == [0.0, 10.0, 20.0, 30.0, 40.0]
    assert "Memory by process (resident)" in charts

