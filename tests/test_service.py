"""The scoring service (core.serving.service) through FastAPI's TestClient, on the shipped demo
models and a store holding 12 users of the demo log: inline events score exactly as the same events
stored and as batch scoring (predict_at) does; every bad request gets a 4xx naming its field; the
API key; a failing handler is a 500 and the service goes on; /metrics counts exactly what happened;
the request log has one line per request, no payloads, and rotates."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import get_args

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from core.data.ingest import ingest_file
from core.data.schema import BEHAVIORS
from core.data.store import Store
from core.insight.cohorts import predict_at
from core.serving import service as svc
from core.serving.requestlog import LOG_COLUMNS, RequestLog, read_request_log
from core.serving.service import MAX_BATCH_USERS, MAX_EVENTS_PER_USER, band_of, create_app
from models.artifact import load_model
from tests.event_rows import insert_events

ROOT = Path(__file__).resolve().parents[1]
TRANSFORMER = ROOT / "models" / "saved" / "demo"
GBDT = ROOT / "models" / "saved" / "demo-gbdt"
DATASET = "small"
N_USERS = 12


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # as a serving process runs (`serve --threads 1`)


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    """The demo log, and a dataset ``small`` holding its 12 busiest users' events."""
    path = tmp_path_factory.mktemp("service") / "store.duckdb"
    with Store(path) as store:
        ingest_file(store, ROOT / "sample_data" / "demo" / "events.csv.gz", dataset="demo")
        with store.write(DATASET, "test dataset") as w:
            insert_events(w, "SELECT ? AS dataset, * EXCLUDE (dataset) FROM events WHERE dataset = 'demo' "
                          "AND user_id IN (SELECT user_id FROM events WHERE dataset = 'demo' "
                          "GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT ?)", [DATASET, N_USERS],
                          layout="taobao")
    return path


def stored(db: Path) -> tuple[list[str], object, dict[str, list[dict[str, object]]]]:
    """User ids of ``small``, its last event time, and each user's events as request JSON."""
    with Store(db, read_only=True) as store:
        events = store.df("SELECT user_id, item_id, category, behavior::VARCHAR AS behavior, ts FROM events "
                          "WHERE dataset = ? ORDER BY user_id, ts", [DATASET])
        cutoff = store.dataset(DATASET)["ts_max"]
    by_user = {str(u): [{"behavior": r.behavior, "item_id": r.item_id, "category": r.category,
                         "ts": r.ts.isoformat()} for r in frame.itertuples()]
               for u, frame in events.groupby("user_id")}
    return sorted(by_user), cutoff, by_user


@pytest.fixture
def client(db, tmp_path):
    """A factory of TestClients, each on a fresh app (own metrics, log in tmp_path)."""
    made = []

    def make(model: Path = TRANSFORMER, **kwargs: object) -> TestClient:
        options = {"db_path": db, "dataset": DATASET, "log_path": tmp_path / "service.log", **kwargs}
        app = create_app(model, **options)
        made.append(app)
        return TestClient(app)

    yield make
    for app in made:
        app.state.service.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page: (name, sorted labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


# -- scoring ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", [TRANSFORMER, GBDT], ids=["transformer", "gbdt"])
def test_inline_events_score_as_stored_events_and_batch_scoring(db, client, model):
    users, cutoff, events = stored(db)
    loaded = load_model(model)
    with Store(db, read_only=True) as store:
        batch = predict_at(store, loaded, DATASET, cutoff).set_index("user_id")["score"]
    api = client(model)
    picked = users[:2]
    for user in picked:
        by_id = api.post("/v1/score", json={"user_id": user})
        inline = api.post("/v1/score", json={"events": events[user], "cutoff": cutoff.isoformat()})
        assert by_id.status_code == inline.status_code == 200, (by_id.text, inline.text)
        a, b = by_id.json(), inline.json()
        assert a["probability"] == pytest.approx(batch[user], abs=1e-6)
        assert b["probability"] == pytest.approx(batch[user], abs=1e-6)
        assert a["band"] == b["band"] == band_of(batch[user])
        assert a["path"] == b["path"] == ("fast" if model == TRANSFORMER else "sql")   # numpy / DuckDB inputs
        assert a["model_id"] == loaded.card["model_id"] and a["horizon"] == "1d" and a["scope"] == "any"
        assert a["user_id"] == user and b["user_id"] is None
        assert a["n_events"] == b["n_events"] == len(events[user])
    mixed = api.post("/v1/score", json={"batch": [{"user_id": u} for u in picked]
                                        + [{"events": events[u], "cutoff": cutoff.isoformat(), "user_id": u}
                                           for u in picked]})
    assert mixed.status_code == 200, mixed.text
    got = [r["probability"] for r in mixed.json()["results"]]
    assert got == pytest.approx([batch[u] for u in picked] * 2, abs=1e-6)
    assert [r["user_id"] for r in mixed.json()["results"]] == picked * 2


def test_inline_cutoff_defaults_to_the_newest_event_and_drops_later_ones(db, client):
    users, _, events = stored(db)
    user = users[0]
    api = client(GBDT)
    newest = events[user][-1]["ts"]
    plain = api.post("/v1/score", json={"events": events[user]}).json()
    assert plain["cutoff"] == newest
    # an event after the cutoff is not read, so it cannot move the score
    later = {"behavior": "buy", "item_id": "x", "category": "c", "ts": "2017-12-04T06:00:00"}
    moved = api.post("/v1/score", json={"events": events[user] + [later], "cutoff": newest}).json()
    assert moved["probability"] == pytest.approx(plain["probability"], abs=1e-12)
    assert moved["n_events"] == len(events[user])


@pytest.mark.parametrize("model", [TRANSFORMER, GBDT], ids=["fast", "sql"])
def test_events_only_after_the_cutoff_are_a_422_on_both_paths(client, model):
    events = [{"behavior": "view", "item_id": "1", "category": "2", "ts": "2017-12-01T10:00:00"}]
    api = client(model)
    answer = api.post("/v1/score", json={"batch": [{"events": events}, {"events": events,
                                                                         "cutoff": "2017-11-30T00:00:00"}]})
    assert answer.status_code == 422 and "batch entry 1 has no event at or before 2017-11-30" in answer.text
    assert api.post("/v1/score", json={"events": events}).json()["n_events"] == 1


def test_bands_and_behaviours_follow_the_project():
    assert [band_of(p) for p in (0.5, 0.4999, 0.2, 0.1999, 0.0, 1.0)] == ["high", "medium", "medium", "low",
                                                                           "low", "high"]
    assert get_args(svc.Behavior) == BEHAVIORS


# -- bad requests ------------------------------------------------------------------------------------
def fields(response) -> list[str]:
    return [f["field"] for f in response.json()["fields"]]


def test_malformed_json_and_wrong_types_name_the_field(client):
    api = client(GBDT)
    bad = api.post("/v1/score", content=b'{"user_id": ', headers={"content-type": "application/json"})
    assert bad.status_code == 422 and fields(bad) == ["body"] and "malformed JSON" in bad.json()["message"]
    event = {"behavior": "view", "item_id": "1", "ts": "2017-12-01T10:00:00"}
    cases = {
        "events": {"events": "view"},
        "events.0.behavior": {"events": [{**event, "behavior": "jump"}]},
        "events.0.item_id": {"events": [{**event, "item_id": 17}]},
        "events.0.ts": {"events": [{**event, "ts": "yesterday"}]},
        "events.1.price": {"events": [event, {**event, "price": "cheap"}]},
        "batch.1.user_id": {"batch": [{"user_id": "1"}, {"user_id": 5}]},
        "user_id": {"user_id": ["a"]},
        "events.0.colour": {"events": [{**event, "colour": "red"}]},
    }
    for field, body in cases.items():
        response = api.post("/v1/score", json=body)
        assert response.status_code == 422, (field, response.text)
        assert field in fields(response), (field, response.json())
        assert response.json()["message"].startswith(fields(response)[0])
    for body, words in [({}, "give user_id"), ({"user_id": "1", "cutoff": "2017-12-01T00:00:00"}, "cutoff"),
                        ({"events": [event], "dataset": "demo"}, "dataset"),
                        ({"batch": [{"user_id": "1"}], "user_id": "1"}, "batch cannot"),
                        ({"events": [{**event, "ts": "1999-12-31T00:00:00"}]}, "2000-01-01"),
                        ({"events": [{k: v for k, v in event.items() if k != "item_id"}]}, "item_id is required")]:
        response = api.post("/v1/score", json=body)
        assert response.status_code == 422 and words in response.json()["message"], response.text
    search = {"behavior": "search", "query": "red shoes", "ts": "2017-12-01T10:00:00"}
    assert api.post("/v1/score", json={"events": [search]}).status_code == 200


def test_sizes_are_bounded(client, monkeypatch):
    api = client(GBDT)
    event = {"behavior": "view", "item_id": "1", "ts": "2017-12-01T10:00:00"}
    many = api.post("/v1/score", json={"events": [event] * (MAX_EVENTS_PER_USER + 1)})
    assert many.status_code == 422 and fields(many) == ["events"]
    assert f"at most {MAX_EVENTS_PER_USER}" in many.json()["message"]
    assert api.post("/v1/score", json={"events": [event] * MAX_EVENTS_PER_USER}).status_code == 200
    crowd = api.post("/v1/score", json={"batch": [{"user_id": "1"}] * (MAX_BATCH_USERS + 1)})
    assert crowd.status_code == 422 and fields(crowd) == ["batch"]
    monkeypatch.setattr(svc, "MAX_BODY_BYTES", 1000)
    body = json.dumps({"events": [event] * 20}).encode()
    assert len(body) > 1000
    declared = api.post("/v1/score", content=body, headers={"content-type": "application/json"})
    assert declared.status_code == 413 and declared.json()["error"] == "too_large"
    streamed = api.post("/v1/score", content=iter([body[:600], body[600:]]),     # chunked: no length
                        headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert api.get("/health").status_code == 200


def test_unknown_user_dataset_and_store(client, tmp_path):
    api = client(GBDT)
    nobody = api.post("/v1/score", json={"user_id": "no-such-user"})
    assert nobody.status_code == 404 and "'no-such-user'" in nobody.json()["message"]
    some = api.post("/v1/score", json={"batch": [{"user_id": "no-such-user"}, {"user_id": "also-missing"}]})
    assert some.status_code == 404 and "'also-missing'" in some.json()["message"]
    elsewhere = api.post("/v1/score", json={"user_id": "1", "dataset": "nope"})
    assert elsewhere.status_code == 404 and "'nope'" in elsewhere.json()["message"]
    assert "small" in elsewhere.json()["message"]                 # the datasets that exist
    storeless = client(GBDT, db_path=tmp_path / "absent.duckdb")
    gone = storeless.post("/v1/score", json={"user_id": "1"})
    assert gone.status_code == 503 and "absent.duckdb" in gone.json()["message"]
    assert storeless.post("/v1/score", json={"events": [{"behavior": "cart", "item_id": "1",
                                                         "ts": "2017-12-01T10:00:00"}]}).status_code == 200


def test_api_key(client, monkeypatch):
    api = client(GBDT, api_key="s3cret")
    body = {"user_id": stored_first(api)}
    missing = api.post("/v1/score", json=body)
    assert missing.status_code == 401 and "X-API-Key" in missing.json()["message"]
    assert api.post("/v1/score", json=body, headers={"X-API-Key": "guess"}).status_code == 403
    assert api.post("/v1/score", json=body, headers={"X-API-Key": "s3cret"}).status_code == 200
    assert api.get("/metrics").status_code == 401
    assert api.get("/health").status_code == 200                  # open: load balancers probe it
    monkeypatch.setenv("INTENTLENS_API_KEY", "from-env")
    env = client(GBDT)
    assert env.post("/v1/score", json=body).status_code == 401
    assert env.post("/v1/score", json=body, headers={"X-API-Key": "from-env"}).status_code == 200


def stored_first(api: TestClient) -> str:
    service = api.app.state.service
    return str(service.store().fetchone("SELECT min(user_id) FROM events WHERE dataset = ?", [DATASET])[0])


def test_a_failing_handler_is_a_500_and_the_service_goes_on(client, monkeypatch, caplog):
    api = client(GBDT)
    service = api.app.state.service

    def broken(subjects):
        raise RuntimeError("boom")

    monkeypatch.setattr(service, "score", broken)
    failed = api.post("/v1/score", json={"user_id": stored_first(api)})
    assert failed.status_code == 500 and failed.json()["error"] == "internal"
    error_id = failed.json()["error_id"]
    assert error_id in failed.json()["message"] and "boom" not in failed.text
    assert any(error_id in r.getMessage() for r in caplog.records)
    monkeypatch.undo()
    assert api.post("/v1/score", json={"user_id": stored_first(api)}).status_code == 200
    assert api.get("/health").json()["ok"] is True


# -- metrics and the request log --------------------------------------------------------------------
def test_metrics_count_exactly_what_happened(client, tmp_path):
    api = client(GBDT)
    user = stored_first(api)
    for _ in range(2):
        assert api.post("/v1/score", json={"user_id": user}).status_code == 200
    assert api.post("/v1/score", json={"events": "x"}).status_code == 422
    assert api.post("/v1/score", json={"user_id": "nobody"}).status_code == 404
    assert api.get("/health").status_code == 200
    assert api.get("/nowhere").status_code == 404
    first = samples(api.get("/metrics").text)
    counts = {labels: value for (name, labels), value in first.items() if name == "intentlens_requests_total"}
    assert counts == {
        (("method", "POST"), ("route", "/v1/score"), ("status", "200")): 2,
        (("method", "POST"), ("route", "/v1/score"), ("status", "422")): 1,
        (("method", "POST"), ("route", "/v1/score"), ("status", "404")): 1,
        (("method", "GET"), ("route", "/health"), ("status", "200")): 1,
        (("method", "GET"), ("route", "unmatched"), ("status", "404")): 1}
    errors = {labels: value for (name, labels), value in first.items() if name == "intentlens_errors_total"}
    assert errors == {(("kind", "validation"),): 1, (("kind", "not_found"),): 2}
    assert first[("intentlens_request_latency_seconds_count", (("route", "/v1/score"),))] == 4
    assert first[("intentlens_request_latency_seconds_bucket", (("le", "+Inf"), ("route", "/v1/score")))] == 4
    assert first[("intentlens_scored_users_total", ())] == 2
    model_id = api.app.state.service.model_id
    assert first[("intentlens_model_info", (("horizon", "1d"), ("kind", "gbdt"), ("model_id", model_id),
                                            ("scope", "any")))] == 1
    second = samples(api.get("/metrics").text)      # the first scrape is counted once it is answered
    assert second[("intentlens_requests_total", (("method", "GET"), ("route", "/metrics"), ("status", "200")))] == 1


def test_request_log_has_one_line_per_request_and_no_payloads(db, client, tmp_path):
    users, cutoff, events = stored(db)
    api = client(GBDT, log_path=tmp_path / "logs" / "service.log")
    user = users[1]
    api.post("/v1/score", json={"events": events[user], "cutoff": cutoff.isoformat(), "user_id": user})
    api.post("/v1/score", json={"batch": [{"user_id": users[0]}, {"user_id": users[2]}]})
    api.post("/v1/score", json={"events": [{"behavior": "fly", "item_id": "1", "ts": "2017-12-01T00:00:00"}]})
    api.get("/health")
    raw = (tmp_path / "logs" / "service.log").read_text()
    assert len(raw.splitlines()) == 4 and all(set(json.loads(line)) == set(LOG_COLUMNS) for line in raw.splitlines())
    for secret in (user, users[0], events[user][0]["item_id"], "fly"):
        assert f'"{secret}"' not in raw
    log = read_request_log(tmp_path / "logs" / "service.log")
    assert list(log.columns) == list(LOG_COLUMNS) and len(log) == 4
    assert log["status"].tolist() == [200, 200, 422, 200]
    assert log["route"].tolist() == ["/v1/score"] * 3 + ["/health"]
    assert log["n_users"].tolist() == [1, 2, 0, 0]
    assert log["n_events"].iloc[0] == len(events[user])
    assert log["error"].tolist() == [None, None, "validation", None]
    assert (log["model_id"] == api.app.state.service.model_id).all()
    assert str(log["time"].dtype) == "datetime64[ns]" and log["time"].is_monotonic_increasing
    assert (log["latency_ms"] > 0).all()


def test_request_log_rotates_and_reads_back_oldest_first(tmp_path):
    path = tmp_path / "service.log"
    log = RequestLog(path, max_bytes=400, backups=50)
    for i in range(40):
        log.write({"time": f"2026-01-01T00:00:{i:02d}+00:00", "route": "/v1/score", "method": "POST",
                   "status": 200, "latency_ms": float(i), "model_id": "m", "n_users": 1, "n_events": i,
                   "error": None, "events": ["never logged"]})
    log.close()
    assert (tmp_path / "service.log.1").exists() and (tmp_path / "service.log.2").exists()
    assert "never logged" not in "".join(p.read_text() for p in tmp_path.iterdir())
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"time": "2026-01-01T00:01:00Z", "route": "/v1/sc')          # a line cut short
    frame = read_request_log(path)
    assert frame["n_events"].tolist() == list(range(40))
    assert frame["time"].iloc[0].isoformat() == "2026-01-01T00:00:00" and frame["time"].is_monotonic_increasing
    assert read_request_log(tmp_path / "nothing.log").empty


# -- explanations, health, CLI ---------------------------------------------------------------------
def test_explain_stored_and_inline_users(db, client):
    users, cutoff, events = stored(db)
    user = users[0]
    api = client(TRANSFORMER)
    score = api.post("/v1/score", json={"user_id": user}).json()["probability"]
    by_id = api.post("/v1/explain", json={"user_id": user})
    assert by_id.status_code == 200, by_id.text
    got = by_id.json()
    assert got["method"] == "ig" and got["probability"] == pytest.approx(score, abs=1e-6)
    assert got["summary"].startswith(f"{score:.2f}")
    max_len = load_model(TRANSFORMER).spec.max_len
    assert len(got["events"]) == min(max_len, len(events[user]))
    assert all(math.isfinite(e["attribution"]) for e in got["events"])
    inline = api.post("/v1/explain", json={"events": events[user], "cutoff": cutoff.isoformat(), "user_id": user})
    assert inline.status_code == 200, inline.text
    assert [e["attribution"] for e in inline.json()["events"]] == pytest.approx(
        [e["attribution"] for e in got["events"]], abs=1e-6)
    assert inline.json()["summary"] == got["summary"]
    assert api.post("/v1/explain", json={"batch": [{"user_id": user}]}).status_code == 422
    assert api.post("/v1/explain", json={"user_id": "nobody"}).status_code == 404


def test_explain_a_gbdt_model_with_tree_shap(db, client):
    users, _, _ = stored(db)
    got = client(GBDT).post("/v1/explain", json={"user_id": users[0]}).json()
    assert got["method"] == "tree_shap" and got["features"] and "top features" in got["summary"]
    assert all(e["attribution"] is None for e in got["events"])


def test_health_and_docs(client):
    api = client(TRANSFORMER)
    health = api.get("/health").json()
    assert health["ok"] is True and health["kind"] == "transformer" and health["model_id"].startswith("demo")
    assert api.get("/docs").status_code == 200
    assert "/v1/score" in api.get("/openapi.json").json()["paths"]


def test_serve_command(monkeypatch, tmp_path):
    from core.cli import main

    seen: dict[str, object] = {}
    monkeypatch.setattr(svc, "serve", lambda model, **kw: seen.update(model=model, **kw))
    assert main(["serve", "--model", str(GBDT), "--port", "8123", "--db", str(tmp_path / "x.duckdb")]) == 0
    assert seen == {"model": str(GBDT), "host": "127.0.0.1", "port": 8123, "db_path": str(tmp_path / "x.duckdb"),
                    "dataset": None, "threads": None}
    assert main(["serve", "--model", str(GBDT), "--threads", "1", "--dataset", "small"]) == 0
    assert seen["threads"] == 1 and seen["dataset"] == "small"
