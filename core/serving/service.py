"""The scoring service: FastAPI on uvicorn, answering score and explain requests for one model.

``python -m core serve --model DIR`` runs :func:`serve`; :func:`create_app` builds the app (what the
tests drive with FastAPI's TestClient). Routes:

* ``POST /v1/score``: a body of one of three forms (:class:`ScoreRequest`): ``{"user_id": ...,
  "dataset": ...}`` (a user of the store, scored at T = the dataset's last event, as
  :func:`core.insight.cohorts.predict_at` scores everyone), ``{"events": [...], "cutoff": ...}``
  (a user's recent events given inline, scored at ``cutoff``, default their newest event), or
  ``{"batch": [...]}`` (up to :data:`MAX_BATCH_USERS` of either). Answer: the calibrated
  probability (``LoadedModel.predict``), the band of the Cohorts page
  (:data:`core.insight.cohorts.DEFAULT_BAND_EDGES`), the horizon of the model's label and its id.
* ``POST /v1/explain``: one user in either form -> per-event integrated-gradients attributions and
  the one-sentence summary of :func:`core.insight.explain.explain_user` (tree SHAP on the features
  for a gbdt model; 422 for a model kind with neither).
* ``GET /health`` (open even with an API key), ``GET /metrics`` (Prometheus text: requests by route,
  method and status, errors by kind, a latency histogram, the model as an info metric), ``/docs``.

A user's inline events score exactly as the same events stored do, and as batch scoring does. Stored
users' events are read with one query per request (``user_id = ?`` for one user). ``path`` (in each
score answer) says how the inputs were built: ``fast`` for a transformer of scope ``any`` (it needs
sequences only): :func:`core.modeling.sequences.sequences_from_events` builds the rows and arrays in
numpy, equal byte for byte to the SQL path's, with no DuckDB round trip; ``sql`` for every other model
(feature kinds, ensembles, scope ``category``): the request's events are copied into a private
in-memory DuckDB store under a name of their own,
:func:`core.modeling.labels.scoring_examples`, :func:`core.modeling.sequences.build_sequences` and
:func:`core.modeling.features.build_features` run there, and the events are deleted again. Either way
``LoadedModel.predict`` scores (ONNX Runtime when the model has an export; torch in eval mode under
``inference_mode`` otherwise). The model is loaded
once per app; explanations use :func:`core.modeling.model_store.load_model_cached`'s copy (Captum
hooks the explained model's layers, so it must not be the copy that scores concurrent requests),
one explanation at a time. The store is opened read-only on first use.

Every request is checked: the body size (:data:`MAX_BODY_BYTES`, 413), its JSON and every field
(422 naming the field, e.g. ``batch.3.events.0.behavior``), events per user
(:data:`MAX_EVENTS_PER_USER`), users per batch, the API key when one is set (argument or
``INTENTLENS_API_KEY``; header ``X-API-Key``: 401 missing, 403 wrong). A user the store lacks is a
404 naming the id; no store or dataset, 503 / 404 saying which. An exception in a handler is a 500
with an error id (the traceback goes to the ``intentlens.service`` logger); the service keeps
answering. Each request writes one line to the request log (:mod:`core.serving.requestlog`).
"""
from __future__ import annotations

import contextlib
import hmac
import itertools
import logging
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import pandas as pd
from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, Info, generate_latest
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.data.ingest import EARLIEST, MAX_ID_LEN
from core.errors import (
    ConflictError,
    DataError,
    EligibilityError,
    IntentLensError,
    ModelError,
    NotFoundError,
    ReadOnlyError,
    StoreError,
)
from core.insight.cohorts import DEFAULT_BAND_EDGES
from core.serving.requestlog import RequestLog, default_log_path
from core.settings import get_settings

if TYPE_CHECKING:
    from core.data.store import Store
    from core.modeling.sequences import SequenceBatch
    from models.artifact import LoadedModel

# Bounds of one request.
MAX_BODY_BYTES = 8 * 2**20          # a request body; larger: 413
MAX_EVENTS_PER_USER = 2_000         # inline events of one user
MAX_BATCH_USERS = 1_000             # users in one batch
MAX_REQUEST_EVENTS = 50_000         # inline events over a whole batch
MAX_QUERY_CHARS = 1_000             # a search event's query text
API_KEY_HEADER = "X-API-Key"
OPEN_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# HTTP status of each typed error a request can cause.
ERROR_STATUS: dict[type[IntentLensError], int] = {
    NotFoundError: 404, DataError: 422, ModelError: 422, EligibilityError: 422, ConflictError: 409,
    ReadOnlyError: 403, StoreError: 503}
# Short kind of each error status, for the request log and the errors metric (when the handler
# did not name one).
STATUS_KINDS = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 409: "conflict", 413: "too_large", 422: "validation",
                503: "unavailable"}
_EVENT_COLUMNS = ("user_id", "item_id", "category", "behavior", "ts", "session_id", "price", "brand", "query")
_STAGED = "il_service_events"       # the staged request events (a view on the scratch store's cursor)
_INSERT_SQL = ("INSERT INTO events (dataset, " + ", ".join(_EVENT_COLUMNS) + ") SELECT ?, "
               + ", ".join(_EVENT_COLUMNS) + " FROM " + _STAGED)
_STORED_COLUMNS = "user_id, item_id, category, behavior::VARCHAR AS behavior, ts, session_id, price, brand, query"
_STORED_SQL = (f"SELECT {_STORED_COLUMNS} FROM events WHERE dataset = ? AND ts <= ? "
               "AND user_id IN (SELECT unnest(?::VARCHAR[]))")
_STORED_ONE_SQL = f"SELECT {_STORED_COLUMNS} FROM events WHERE dataset = ? AND ts <= ? AND user_id = ?"
_INLINE_DATASET_SQL = "INSERT INTO datasets (name, layout, ts_min, ts_max) VALUES (?, 'inline', ?, ?)"
_log = logging.getLogger("intentlens.service")

ScorePath = Literal["fast", "sql"]
Behavior = Literal["view", "cart", "fav", "buy", "remove_from_cart", "search"]   # core.data.schema.BEHAVIORS
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LEN)]


def band_of(probability: float, edges: tuple[float, float] = DEFAULT_BAND_EDGES) -> str:
    """The Cohorts page's band: ``high`` >= edges[1] > ``medium`` >= edges[0] > ``low``."""
    low, high = edges
    return "high" if probability >= high else "medium" if probability >= low else "low"


def _naive_utc(value: datetime) -> datetime:
    """An aware time converted to UTC, a naive one taken as UTC; both returned naive (the store's)."""
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo is not None else value


# -- request and response bodies ---------------------------------------------------------------
class Event(BaseModel):
    """One behaviour event, as the ``events`` table holds it (ids are text, exactly as stored)."""

    model_config = ConfigDict(extra="forbid")

    behavior: Behavior
    item_id: Id | None = None                    # required except for a search
    category: Id | None = None
    ts: datetime                                 # ISO 8601; without an offset it is UTC
    query: str | None = Field(default=None, max_length=MAX_QUERY_CHARS)
    session_id: Id | None = None
    price: float | None = Field(default=None, allow_inf_nan=False)
    brand: Id | None = None

    @field_validator("ts")
    @classmethod
    def _plausible_time(cls, value: datetime) -> datetime:
        value = _naive_utc(value)
        latest = datetime.now(UTC).replace(tzinfo=None) + timedelta(days=1)
        if not EARLIEST <= value <= latest:
            raise ValueError(f"must lie between {EARLIEST:%Y-%m-%d} and a day from now (UTC)")
        return value

    @model_validator(mode="after")
    def _item_needed(self) -> Event:
        if self.item_id is None and self.behavior != "search":
            raise ValueError(f"item_id is required for a {self.behavior} event (only a search may lack it)")
        return self


class _UserFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Id | None = Field(default=None, description="a user of the store; with events, only a label")
    dataset: Id | None = Field(default=None, description="the stored user's dataset (default: the model's)")
    events: list[Event] | None = Field(default=None, min_length=1, max_length=MAX_EVENTS_PER_USER,
                                       description="the user's recent events, given inline")
    cutoff: datetime | None = Field(default=None, description="inline events: score as of this time "
                                                              "(default: the newest event)")

    def _check_user(self) -> None:
        if self.events is None and self.user_id is None:
            raise ValueError("give user_id (a stored user) or events (inline events)")
        if self.events is not None and self.dataset is not None:
            raise ValueError("dataset applies to a stored user (user_id without events), not to inline events")
        if self.events is None and self.cutoff is not None:
            raise ValueError("cutoff applies to inline events; a stored user is scored at the dataset's last event")


class UserInput(_UserFields):
    """One user: ``user_id`` (+ ``dataset``) of the store, or inline ``events`` (+ ``cutoff``)."""

    @model_validator(mode="after")
    def _one_form(self) -> UserInput:
        self._check_user()
        return self


class ScoreRequest(_UserFields):
    """One user (as :class:`UserInput`) or ``batch``: a list of them."""

    batch: list[UserInput] | None = Field(default=None, min_length=1, max_length=MAX_BATCH_USERS)

    @model_validator(mode="after")
    def _one_form(self) -> ScoreRequest:
        if self.batch is None:
            self._check_user()
            return self
        if any(v is not None for v in (self.user_id, self.dataset, self.events, self.cutoff)):
            raise ValueError("batch cannot be combined with user_id, dataset, events or cutoff")
        total = sum(len(u.events or ()) for u in self.batch)
        if total > MAX_REQUEST_EVENTS:
            raise ValueError(f"the batch holds {total:,} inline events; at most {MAX_REQUEST_EVENTS:,} per request")
        return self


class CategoryScore(BaseModel):
    category: str
    probability: float
    band: str


class ScoreResult(BaseModel):
    user_id: str | None          # the id sent (stored user, or the inline events' label)
    probability: float           # calibrated P(buy within the horizon after cutoff); the highest
                                 # candidate category's for a category-scope model
    band: str                    # high | medium | low (the Cohorts page's bands)
    cutoff: datetime             # T the user was scored at (naive UTC)
    n_events: int                # the user's events at or before T
    category: str | None = None  # category scope: the candidate with the highest probability
    categories: list[CategoryScore] | None = None   # category scope: every candidate


class _Answer(BaseModel):
    model_id: str
    horizon: str
    scope: str


class _ScoreAnswer(_Answer):
    path: ScorePath              # how the inputs were built: fast (numpy) or sql (DuckDB)


class ScoreResponse(ScoreResult, _ScoreAnswer):
    """The answer for one user."""


class BatchScoreResponse(_ScoreAnswer):
    """The answer for a batch: one result per entry, in order."""

    results: list[ScoreResult]


class EventAttribution(BaseModel):
    position: int                # L-1 = the newest event
    ts: datetime
    behavior: str
    item_id: str | None
    category: str | None
    gap_seconds: float | None
    attribution: float | None    # logit units; None for a model without per-event attribution


class FeatureAttribution(BaseModel):
    feature: str
    value: float
    shap: float


class ExplainResponse(_Answer):
    user_id: str | None
    probability: float
    raw_probability: float       # before the calibration map: what the attributions add up to
    band: str
    cutoff: datetime
    method: str                  # ig | attention (category scope) | tree_shap (gbdt: on features)
    summary: str
    events: list[EventAttribution]
    features: list[FeatureAttribution] | None = None
    ig_delta: float | None = None


class Health(BaseModel):
    ok: bool
    model_id: str
    kind: str
    horizon: str
    scope: str
    loaded_at: datetime


# -- the service's state -----------------------------------------------------------------------
@dataclass
class _Subject:
    """One user to score: their events (``_EVENT_COLUMNS``) and the time to score them at."""

    label: str | None
    events: pd.DataFrame
    cutoff: datetime


class _Metrics:
    """Prometheus metrics in a registry of this app's own (two apps in a process never mix)."""

    def __init__(self, model: LoadedModel):
        self.registry = CollectorRegistry()
        self.requests = Counter("intentlens_requests", "Requests answered, by route, method and status.",
                                ["route", "method", "status"], registry=self.registry)
        self.errors = Counter("intentlens_errors", "Requests answered with an error, by kind.", ["kind"],
                              registry=self.registry)
        self.latency = Histogram("intentlens_request_latency_seconds", "Time to answer a request.", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.users = Counter("intentlens_scored_users", "Users scored.", registry=self.registry)
        info = Info("intentlens_model", "The model this service answers with.", registry=self.registry)
        info.info({"model_id": str(model.card.get("model_id")), "kind": model.kind,
                   "horizon": model.spec.horizon, "scope": model.spec.scope})


class ScoringService:
    """What one app holds: the loaded model, the store (opened on first use), a scratch store for
    the requests' events, the request log and the metrics."""

    def __init__(self, model_dir: str | Path, *, db_path: str | Path | None = None, dataset: str | None = None,
                 api_key: str | None = None, log_path: str | Path | None = None):
        from core.data.store import Store, resolve_db_path
        from models.artifact import load_model

        self.model_dir = Path(model_dir)
        self.model = load_model(self.model_dir)
        self.model_id = str(self.model.card.get("model_id", self.model_dir.name))
        self.loaded_at = datetime.now(UTC)
        self.db_path = resolve_db_path(db_path)
        self.dataset = dataset or self.model.card.get("dataset")
        self.api_key = api_key if api_key is not None else get_settings().api_key
        self.log = RequestLog(log_path or default_log_path(self.db_path))
        self.metrics = _Metrics(self.model)
        # inputs in numpy from the events in memory when the model needs sequences only (scope any)
        self.path: ScorePath = ("fast" if self.model.kind == "transformer" and self.model.vocab is not None
                                and self.model.spec.scope == "any" else "sql")
        self.scratch = Store(":memory:", threads=1)
        self._store: Store | None = None
        self._store_lock = threading.Lock()
        self._explain_lock = threading.Lock()
        self._names = itertools.count()

    def answer(self) -> dict[str, str]:
        return {"model_id": self.model_id, "horizon": self.model.spec.horizon, "scope": self.model.spec.scope}

    def close(self) -> None:
        self.log.close()
        self.scratch.close()
        if self._store is not None:
            self._store.close()

    # -- the store ---------------------------------------------------------------------------
    def store(self) -> Store:
        """The installation's store, opened read-only on first use; StoreError (503) when it cannot be."""
        from core.data.store import Store

        with self._store_lock:
            if self._store is None:
                try:
                    self._store = Store(self.db_path, read_only=True)
                except NotFoundError as err:
                    raise StoreError(f"there is no database at {self.db_path}, so stored users cannot be "
                                     f"scored.", title="No database",
                                     hint="Start the service with --db FILE (or INTENTLENS_DB), or send "
                                          "the user's events inline.") from err
            return self._store

    def _dataset(self, name: str | None) -> tuple[str, datetime]:
        from core.modeling.labels import _to_datetime

        dataset = name or self.dataset
        if not dataset:
            raise DataError("the model's card names no dataset; say which one holds the user.",
                            title="No dataset", hint='Add "dataset" to the request, or start with --dataset.')
        info = self.store().dataset(dataset)            # NotFoundError naming the datasets
        return dataset, _to_datetime(info["ts_max"])

    # -- subjects ----------------------------------------------------------------------------
    def subjects(self, users: list[UserInput]) -> list[_Subject]:
        """Each user's events and cutoff: inline ones as given, stored ones read from the store
        (one query per dataset); NotFoundError naming the ids the dataset lacks."""
        out: list[_Subject | None] = [None] * len(users)
        stored: dict[str | None, list[int]] = {}
        for i, user in enumerate(users):
            if user.events is None:
                stored.setdefault(user.dataset, []).append(i)
                continue
            frame = pd.DataFrame({"user_id": "", **{c: [getattr(e, c) for e in user.events]
                                                    for c in _EVENT_COLUMNS[1:]}})
            frame["ts"] = frame["ts"].astype("datetime64[us]")
            cutoff = _naive_utc(user.cutoff) if user.cutoff is not None else frame["ts"].max().to_pydatetime()
            out[i] = _Subject(user.user_id, frame, cutoff)
        for name, indexes in stored.items():
            dataset, cutoff = self._dataset(name)
            ids = sorted({str(users[i].user_id) for i in indexes})
            events = (self.store().df(_STORED_ONE_SQL, [dataset, cutoff, ids[0]]) if len(ids) == 1
                      else self.store().df(_STORED_SQL, [dataset, cutoff, ids]))
            groups = dict(tuple(events.groupby("user_id", sort=False)))
            missing = [u for u in ids if u not in groups]
            if missing:
                shown = ", ".join(repr(u) for u in missing[:5]) + (f" and {len(missing) - 5} more"
                                                                   if len(missing) > 5 else "")
                raise NotFoundError(f"user {shown} is not in dataset {dataset!r}.",
                                    hint="User ids are matched exactly as text, as in the source file.")
            for i in indexes:
                out[i] = _Subject(users[i].user_id, groups[str(users[i].user_id)], cutoff)
        return [s for s in out if s is not None]

    def _fast_inputs(self, subjects: list[_Subject],
                     keys: list[str]) -> tuple[pd.DataFrame, SequenceBatch | None, pd.DataFrame | None]:
        """Rows and sequences built in numpy (:func:`core.modeling.sequences.sequences_from_events`,
        equal to the SQL path's arrays byte for byte); no DuckDB."""
        from core.modeling.sequences import sequences_from_events

        frames = [s.events.assign(user_id=key) for s, key in zip(subjects, keys, strict=True)]
        frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        cutoffs = {key: s.cutoff for s, key in zip(subjects, keys, strict=True)}
        vocab = self.model.vocab
        assert vocab is not None        # the fast path is chosen only for a model with a vocabulary
        seq = sequences_from_events(frame, cutoffs, vocab, self.model.spec)
        _require_rows(seq.keys, subjects, keys, self.model.spec.lookback)
        return seq.keys, seq, None

    def _sql_inputs(self, subjects: list[_Subject],
                    keys: list[str]) -> tuple[pd.DataFrame, SequenceBatch | None, pd.DataFrame | None]:
        """Rows, sequences and features through the batch-scoring SQL: the subjects' events are
        staged in the scratch store under a name of their own, and deleted again."""
        from core.modeling.features import build_features
        from core.modeling.labels import scoring_examples
        from core.modeling.sequences import build_sequences

        model, spec = self.model, self.model.spec
        name = f"request-{next(self._names)}"
        self._stage(name, subjects, keys)
        try:
            by_cutoff: dict[datetime, list[str]] = {}
            for key, subject in zip(keys, subjects, strict=True):
                by_cutoff.setdefault(subject.cutoff, []).append(key)
            parts = []
            for cutoff, members in by_cutoff.items():
                rows = scoring_examples(self.scratch, name, spec, cutoff)
                parts.append(rows[rows["user_id"].isin(members)])
            examples = pd.concat(parts, ignore_index=True)
            _require_rows(examples, subjects, keys, spec.lookback)
            seq = build_sequences(self.scratch, name, examples, model.vocab, spec) if model.vocab is not None else None
            feats = build_features(self.scratch, name, examples, spec) if model.feature_names else None
        finally:
            self.scratch.execute("DELETE FROM events WHERE dataset = ?", [name])
        return examples, seq, feats

    def _stage(self, name: str, subjects: list[_Subject], keys: list[str]) -> None:
        frame = pd.concat([s.events.assign(user_id=key) for s, key in zip(subjects, keys, strict=True)],
                          ignore_index=True)
        frame["ts"] = frame["ts"].astype("datetime64[us]")
        with self.scratch.cursor() as cur:          # one INSERT statement: atomic on its own
            self.scratch.register_df(cur, _STAGED, frame[list(_EVENT_COLUMNS)])
            cur.execute(_INSERT_SQL, [name])

    # -- scoring -----------------------------------------------------------------------------
    def score(self, subjects: list[_Subject]) -> list[ScoreResult]:
        """Score each subject at its cutoff: through :meth:`_fast_inputs` (``path`` fast) or
        :meth:`_sql_inputs` (sql), then ``LoadedModel.predict`` (ONNX Runtime when exported)."""
        model, spec = self.model, self.model.spec
        keys = [str(i) for i in range(len(subjects))]
        if self.path == "fast":
            examples, seq, feats = self._fast_inputs(subjects, keys)
        else:
            examples, seq, feats = self._sql_inputs(subjects, keys)
        probabilities = np.asarray(model.predict(seq, feats), dtype=np.float64)
        # each subject's rows (one; one per candidate category), highest probability first
        by_key: dict[str, list[tuple[float, str]]] = {}
        categories = examples["category"].tolist() if spec.scope == "category" else [""] * len(examples)
        for key, category, p in zip(examples["user_id"].tolist(), categories, probabilities.tolist(), strict=True):
            by_key.setdefault(key, []).append((p, str(category)))
        results = []
        for key, subject in zip(keys, subjects, strict=True):
            rows = sorted(by_key[key], key=lambda row: row[0], reverse=True)      # stable: ties keep row order
            best = rows[0][0]
            result = ScoreResult(user_id=subject.label, probability=best, band=band_of(best), cutoff=subject.cutoff,
                                 n_events=int((subject.events["ts"] <= subject.cutoff).sum()))
            if spec.scope == "category":
                result.category = rows[0][1]
                result.categories = [CategoryScore(category=c, probability=p, band=band_of(p)) for p, c in rows]
            results.append(result)
        self.metrics.users.inc(len(results))
        return results

    # -- explaining --------------------------------------------------------------------------
    def explain(self, user: UserInput) -> ExplainResponse:
        """One user's explanation (:func:`core.insight.explain.explain_user`) at their cutoff."""
        from core.insight.drivers import user_methods
        from core.insight.explain import explain_user

        methods = user_methods(self.model_dir)
        method = "ig" if "ig" in methods else "attention"
        with self._explain_lock:
            if user.events is None:
                dataset, _ = self._dataset(user.dataset)
                result = explain_user(self.store(), self.model_dir, dataset, str(user.user_id), methods=(method,))
            else:
                subject = self.subjects([user])[0]
                label = user.user_id or "inline"
                name = f"request-{next(self._names)}"
                self._stage(name, [subject], [label])
                try:
                    self.scratch.execute(_INLINE_DATASET_SQL, [name, subject.events["ts"].min(), subject.cutoff])
                    result = explain_user(self.scratch, self.model_dir, name, label, methods=(method,))
                finally:
                    self.scratch.execute("DELETE FROM events WHERE dataset = ?", [name])
                    self.scratch.execute("DELETE FROM datasets WHERE name = ?", [name])
        column = method if method in result.methods else None
        events = [EventAttribution(position=int(r["position"]), ts=r["ts"], behavior=str(r["behavior"]),
                                   item_id=_text(r["item_id"]), category=_text(r["category"]),
                                   gap_seconds=_number(r["gap_seconds"]),
                                   attribution=_number(r[column]) if column else None)
                  for r in result.events.to_dict(orient="records")]
        features = None
        if result.features is not None:
            features = [FeatureAttribution(feature=str(r["feature"]), value=float(r["value"]), shap=float(r["shap"]))
                        for r in result.features.to_dict(orient="records")]
        return ExplainResponse(**self.answer(), user_id=user.user_id, probability=result.score,
                               raw_probability=result.raw_score, band=band_of(result.score), cutoff=result.cutoff,
                               method=column or "tree_shap", summary=result.summary, events=events,
                               features=features, ig_delta=result.ig_delta)


def _require_rows(examples: pd.DataFrame, subjects: list[_Subject], keys: list[str], lookback: str | None) -> None:
    """DataError (422) naming the first subject without a row: no event at or before its cutoff in the lookback."""
    present = set(examples["user_id"])
    empty = [k for k in keys if k not in present]
    if empty:
        i = int(empty[0])
        where = f"batch entry {i}" if len(subjects) > 1 else "the user"
        raise DataError(f"{where} has no event at or before {subjects[i].cutoff} within the model's "
                        f"lookback ({lookback or 'all history'}).", title="Nothing to score",
                        hint="Send events at or before the cutoff.")


def _text(value: object) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _number(value: object) -> float | None:
    number = float(value) if isinstance(value, (int, float, np.number)) else math.nan
    return None if math.isnan(number) else number


# -- the guard around every request ------------------------------------------------------------
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _TooLarge(HTTPException):
    def __init__(self) -> None:
        super().__init__(413, f"the request body is larger than {MAX_BODY_BYTES:,} bytes.")


class _Guard:
    """ASGI middleware around every request: body-size limit, API key, a 500 with an error id for
    any exception, then one request-log line and the metrics."""

    def __init__(self, app: ASGIApp, service: ScoringService, routes: frozenset[str]):
        self.app, self.service, self.routes = app, service, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        status = {"code": 500}

        async def send_and_watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    raise _TooLarge()
            return message

        try:
            refused = self._refuse(scope)
            if refused is not None:
                state["error_kind"] = refused[0]
                await _json(send_and_watch, refused[1], {"error": refused[0], "message": refused[2]})
            else:
                await self.app(scope, limited_receive, send_and_watch)
        except Exception:          # the service's last line: any failure is a 500, never a crash
            error_id = uuid.uuid4().hex[:12]
            _log.exception("request %s %s failed (error id %s)", scope.get("method"), scope.get("path"), error_id)
            state["error_kind"] = "internal"
            if status["code"] == 500:        # nothing sent yet
                await _json(send_and_watch, 500, {"error": "internal", "error_id": error_id,
                                                   "message": f"the service failed on this request (error id "
                                                              f"{error_id}); it is logged."})
        self._record(scope, state, status["code"], time.perf_counter() - started)

    def _refuse(self, scope: Scope) -> tuple[str, int, str] | None:
        """(kind, status, message) when the request is refused before routing."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return "too_large", 413, f"the request body is larger than {MAX_BODY_BYTES:,} bytes."
        key = self.service.api_key
        if key and scope.get("path") not in OPEN_PATHS:
            sent = headers.get(API_KEY_HEADER.lower())
            if not sent:
                return "unauthorized", 401, f"send the API key in the {API_KEY_HEADER} header."
            if not hmac.compare_digest(sent.encode(), key.encode()):
                return "forbidden", 403, f"the {API_KEY_HEADER} header holds a wrong key."
        return None

    def _record(self, scope: Scope, state: MutableMapping[str, Any], code: int, seconds: float) -> None:
        path = str(scope.get("path", ""))
        route = path if path in self.routes else "unmatched"
        method = str(scope.get("method", ""))
        kind = state.get("error_kind") or (STATUS_KINDS.get(code, "internal" if code >= 500 else "bad_request")
                                           if code >= 400 else None)
        metrics = self.service.metrics
        metrics.requests.labels(route=route, method=method, status=str(code)).inc()
        metrics.latency.labels(route=route).observe(seconds)
        if kind:
            metrics.errors.labels(kind=kind).inc()
        self.service.log.write({"route": route, "method": method, "status": code,
                                "latency_ms": round(seconds * 1000.0, 3), "model_id": self.service.model_id,
                                "n_users": int(state.get("n_users", 0)), "n_events": int(state.get("n_events", 0)),
                                "error": kind})


async def _json(send: Send, status: int, body: dict[str, Any]) -> None:
    await JSONResponse(body, status_code=status)({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


# -- the app -----------------------------------------------------------------------------------
def _field(loc: tuple[int | str, ...] | list[int | str]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "body"


def _count(request: Request, subjects: list[_Subject]) -> None:
    request.state.n_users = len(subjects)
    request.state.n_events = int(sum(len(s.events) for s in subjects))


def create_app(model_dir: str | Path, *, db_path: str | Path | None = None, dataset: str | None = None,
               api_key: str | None = None, log_path: str | Path | None = None) -> FastAPI:
    """The scoring service for the model in ``model_dir`` (loaded now: ModelError when it cannot be).

    db_path: the store holding stored users (default ``INTENTLENS_DB`` / ``data/intentlens.duckdb``;
    opened read-only on first use). dataset: where stored users are looked up when a request names
    none (default: the dataset on the model's card). api_key: required in ``X-API-Key`` on every
    route but /health and the docs (default ``INTENTLENS_API_KEY``; empty = open). log_path: the
    request log (default ``<db directory>/logs/service.log``). The service is ``app.state.service``.
    """
    service = ScoringService(model_dir, db_path=db_path, dataset=dataset, api_key=api_key, log_path=log_path)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        from core.serving.resources import start_sampler

        sampler = start_sampler(service.db_path, "service")   # CPU and memory beside the request log
        yield
        sampler.stop()
        service.close()

    app = FastAPI(title="IntentLens scoring service", version="1", lifespan=lifespan,
                  description=f"Purchase-intent scores and explanations from model {service.model_id}.")
    app.state.service = service

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        fields = [{"field": "body", "message": f"malformed JSON ({e.get('ctx', {}).get('error', 'cannot parse')} "
                                              f"at character {_field(e.get('loc', ()))})"}
                  if e.get("type") == "json_invalid" else
                  {"field": _field(e.get("loc", ())), "message": str(e.get("msg", ""))} for e in err.errors()]
        request.state.error_kind = "validation"
        first = fields[0] if fields else {"field": "body", "message": "invalid"}
        return JSONResponse({"error": "validation", "message": f"{first['field']}: {first['message']}",
                             "fields": jsonable_encoder(fields)}, status_code=422)

    @app.exception_handler(IntentLensError)
    async def refused(request: Request, err: IntentLensError) -> JSONResponse:
        status = next((code for cls, code in ERROR_STATUS.items() if isinstance(err, cls)), 400)
        request.state.error_kind = STATUS_KINDS.get(status, "bad_request") if status != 422 else (
            "model" if isinstance(err, ModelError) else "data")
        return JSONResponse({"error": request.state.error_kind, "title": err.title, "message": str(err)},
                            status_code=status)

    @app.post("/v1/score", response_model=ScoreResponse | BatchScoreResponse)
    def score(body: ScoreRequest, request: Request) -> ScoreResponse | BatchScoreResponse:
        """Score one user (stored ``user_id`` or inline ``events``) or a ``batch`` of them."""
        users = body.batch if body.batch is not None else [UserInput(
            user_id=body.user_id, dataset=body.dataset, events=body.events, cutoff=body.cutoff)]
        subjects = service.subjects(users)
        _count(request, subjects)
        results = service.score(subjects)
        if body.batch is not None:
            return BatchScoreResponse(**service.answer(), path=service.path, results=results)
        return ScoreResponse(**service.answer(), path=service.path, **results[0].model_dump())

    @app.post("/v1/explain", response_model=ExplainResponse)
    def explain(body: UserInput, request: Request) -> ExplainResponse:
        """Per-event attributions and a one-sentence summary for one user."""
        request.state.n_users = 1
        request.state.n_events = len(body.events or ())
        return service.explain(body)

    @app.get("/health", response_model=Health)
    def health() -> Health:
        """Liveness: the model this service answers with and when it was loaded."""
        return Health(ok=True, model_id=service.model_id, kind=service.model.kind, horizon=service.model.spec.horizon,
                      scope=service.model.spec.scope, loaded_at=service.loaded_at)

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus text: requests, errors by kind, latency histogram, model info."""
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(_Guard, service=service,
                       routes=frozenset(getattr(r, "path", "") for r in app.routes))
    return app


def serve(model_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000, db_path: str | Path | None = None,
          dataset: str | None = None, api_key: str | None = None, log_path: str | Path | None = None,
          threads: int | None = None) -> None:
    """Run :func:`create_app` on uvicorn until interrupted (access lines go to the request log).
    ``threads``: torch's (and ONNX Runtime's) intra-op threads per request; None = torch's choice."""
    import uvicorn

    if threads is not None:
        import torch

        torch.set_num_threads(int(threads))
    app = create_app(model_dir, db_path=db_path, dataset=dataset, api_key=api_key, log_path=log_path)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
