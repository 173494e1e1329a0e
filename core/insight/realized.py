"""Realized accuracy: did the predicted buyers buy?

Every scoring run is kept (``score_runs`` / ``score_history``: model, cutoff T, one score per user or
per user and category). Once the run's horizon has passed in the data (``T + H <= ts_max`` of the
dataset, after new events were appended), the labels of its rows are known: computed by the same
SQL as the training labels (:func:`core.modeling.labels.labels_at`: a buy in (T, T + H], in the
row's category for scope ``category``). :func:`realized_runs` then measures, per run:

* the top ``top_percent`` % of the run's rows (ranked by score, ties by user id as the Cohorts page
  ranks them): ``precision`` (share that bought) with its 95 % Wilson interval, ``recall`` (their
  share of every buyer) and ``lift`` (precision / base rate);
* every cohort exported from the run (``exports`` / ``export_rows``, written by
  :func:`core.insight.cohorts.export_cohort` with its audit stamp): precision, recall and lift of the
  exact rows exported, linked by ``export_id`` and ``run_id``;
* calibration: predicted buyers (the sum of the scores) against actual buyers, with the
  Poisson-binomial 95 % range of the actual count if the scores were true probabilities
  (``sum p +- 1.96 sqrt(sum p (1 - p))``, the normal approximation);
* ROC-AUC and PR-AUC (scikit-learn) of the run's scores against what happened.

**The promise and the flag.** The model card's evaluation rows of its test window
(:func:`core.modeling.pipeline.load_evaluation`) give the precision of the same top ``top_percent`` %
there, ``p0`` over ``k0`` rows. If the model still performed as on its test window, a run's top
``k`` rows would buy at ``p0`` give or take ``1.96 * sqrt(p0 (1 - p0) (1 / k0 + 1 / k))`` (sampling
noise of both windows; the "+- 4 %" of the message). A run whose realized precision falls below that
range is flagged in plain words: "the top 5 % of the run of 2017-12-02 bought at 31 %, the model
promised 46 +- 4 %".
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from core.errors import DataError, ModelError, NotFoundError
from core.insight.cohorts import CohortSpec, measured_at_cut

if TYPE_CHECKING:
    from core.data.store import Store
    from core.modeling.labels import LabelSpec

DEFAULT_TOP_PERCENT = 5.0     # the cut measured on every run (and the promise's), in % of rows
MAX_RUNS = 20                 # realized runs measured at most (the most recent ones)
Z95 = 1.959963984540054       # two-sided 95 % normal quantile
EXIT_FLAGGED = 3              # `python -m core realized` exit code when a run is flagged

RUN_COLUMNS = ("run_id", "cutoff", "horizon_end", "scored_at", "n_users", "rows", "buyers", "base_rate",
               "top_rows", "precision", "precision_low", "precision_high", "recall", "lift",
               "predicted_buyers", "predicted_low", "predicted_high", "calibrated", "roc_auc", "pr_auc",
               "promised", "promised_margin", "flagged", "message")
EXPORT_COLUMNS = ("export_id", "run_id", "cutoff", "cut", "exported_at", "path", "rows", "buyers",
                  "precision", "precision_low", "precision_high", "recall", "lift")
PENDING_COLUMNS = ("run_id", "cutoff", "scored_at", "n_users", "due")


def resolve_model_dir(model: str | Path, root: str | Path | None = None) -> Path:
    """A model directory from a directory (with ``card.json``) or a model id of the models root."""
    from core.modeling.model_store import list_models
    from models.artifact import CARD_FILE

    path = Path(model)
    if (path / CARD_FILE).exists():
        return path
    listing = list_models(root)
    hit = listing[(listing["model_id"] == str(model)) | (listing["path"].map(lambda p: Path(p).name) == str(model))]
    if hit.empty:
        raise NotFoundError(f"no model directory or model id {str(model)!r}.",
                            hint="Pass the model's folder (--model models/saved/NAME) or an id from `python -m "
                                 "core models`.")
    return Path(str(hit["path"].iloc[0]))


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (NaN, NaN for n = 0)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def predicted_range(scores: np.ndarray, z: float = Z95) -> tuple[float, float, float]:
    """(expected buyers, low, high): the sum of the probabilities and its Poisson-binomial range
    ``sum p +- z sqrt(sum p (1 - p))`` (normal approximation), clipped to [0, rows]."""
    p = np.asarray(scores, dtype=float)
    mean = float(p.sum())
    sd = float(np.sqrt((p * (1 - p)).sum()))
    return mean, max(0.0, mean - z * sd), min(float(len(p)), mean + z * sd)


@dataclass
class Promise:
    """What the model's test window says about the top ``top_percent`` %: precision over ``rows``."""

    top_percent: float
    precision: float
    rows: int
    base_rate: float
    window: str                    # test, or valid for models trained before the test window

    def margin(self, realized_rows: int, z: float = Z95) -> float:
        """Half-width of the range a run of ``realized_rows`` top rows lands in if nothing changed."""
        p = self.precision
        if not realized_rows or not self.rows or math.isnan(p):
            return float("nan")
        return z * math.sqrt(p * (1 - p) * (1 / self.rows + 1 / realized_rows))

    def to_dict(self) -> dict[str, Any]:
        return {"top_percent": self.top_percent, "precision": self.precision, "rows": self.rows,
                "base_rate": self.base_rate, "window": self.window}


def model_promise(model_dir: str | Path, top_percent: float = DEFAULT_TOP_PERCENT) -> Promise | None:
    """Precision of the top ``top_percent`` % on the model's test window (its validation window for
    models older than the test window); None when the model has no saved evaluation rows."""
    from core.modeling.pipeline import load_evaluation

    try:
        try:
            rows = load_evaluation(model_dir, "test")
        except ModelError:
            rows = load_evaluation(model_dir)
    except ModelError:
        return None
    measured = measured_at_cut(rows, CohortSpec(mode="top", top_percent=float(top_percent)))
    return Promise(top_percent=float(top_percent), precision=measured["precision"], rows=int(measured["rows"]),
                   base_rate=measured["base_rate"], window=str(rows.attrs.get("split", "test")))


@dataclass
class RealizedReport:
    """Realized accuracy of a model's scoring runs on one dataset.

    runs: one row per run whose horizon has passed (:data:`RUN_COLUMNS`), oldest first.
    exports: one row per export of those runs (:data:`EXPORT_COLUMNS`).
    pending: runs whose horizon has not passed yet (:data:`PENDING_COLUMNS`; ``due`` = T + H).
    """

    model_id: str
    dataset: str
    horizon: str
    scope: str
    top_percent: float
    ts_max: datetime
    runs: pd.DataFrame
    exports: pd.DataFrame
    pending: pd.DataFrame
    promise: Promise | None
    notes: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return bool(self.runs["flagged"].any()) if not self.runs.empty else False

    def headline(self) -> str:
        """One sentence: the latest realized run, or why there is none yet."""
        if self.runs.empty:
            next_due = pd.Timestamp(self.pending["due"].min()) if not self.pending.empty else None
            due = f" The next run is due once the data reaches {next_due:%Y-%m-%d %H:%M} UTC." if next_due else ""
            return (f"No scoring run of {self.model_id} on {self.dataset!r} has reached the end of its "
                    f"{self.horizon} horizon in the data yet.{due}")
        flagged = self.runs[self.runs["flagged"]]
        latest = flagged.iloc[-1] if not flagged.empty else self.runs.iloc[-1]
        return str(latest["message"])

    def to_dict(self) -> dict[str, Any]:
        def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = json.loads(frame.to_json(orient="records", date_format="iso"))
            return rows

        return {"model_id": self.model_id, "dataset": self.dataset, "horizon": self.horizon, "scope": self.scope,
                "top_percent": self.top_percent, "ts_max": pd.Timestamp(self.ts_max).isoformat(),
                "flagged": self.flagged, "headline": self.headline(),
                "promise": None if self.promise is None else self.promise.to_dict(),
                "runs": records(self.runs), "exports": records(self.exports), "pending": records(self.pending),
                "notes": list(self.notes)}


def _labelled_run(store: Store, dataset: str, spec: LabelSpec, run_id: str,
                  labels: pd.DataFrame) -> pd.DataFrame:
    """The run's rows (user_id, category, score) with their realized label, ranked as the Cohorts
    page ranks them (score, then user id, then category). A scored row the label query does not
    return (its events were deleted) counts as not bought."""
    history = store.df("SELECT user_id, category, score FROM score_history WHERE run_id = ? "
                       "ORDER BY score DESC, user_id, category", [run_id])
    keys = ["user_id", "category"] if spec.scope == "category" else ["user_id"]
    merged = history.merge(labels[[*keys, "label"]], on=keys, how="left")
    merged["label"] = merged["label"].fillna(0).astype("int64")
    return merged


def _message(run: dict[str, Any], promise: Promise | None, top_percent: float) -> str:
    when = f"{pd.Timestamp(run['cutoff']):%Y-%m-%d %H:%M}"
    top = f"top {top_percent:g} %"
    bought = f"the {top} of the run of {when} UTC ({run['top_rows']:,} rows) bought at {100 * run['precision']:.0f} %"
    if promise is None or math.isnan(run["promised"]):
        return bought[0].upper() + bought[1:] + " (the model has no test-window figure to compare with)."
    promised = f"{100 * run['promised']:.0f} ± {100 * run['promised_margin']:.0f} %"
    if run["flagged"]:
        return (f"Realized precision dropped: {bought}, the model promised {promised} on its {promise.window} "
                "window. Check the data for a change in behaviour and consider retraining.")
    if run["precision"] > run["promised"] + run["promised_margin"]:
        return bought[0].upper() + bought[1:] + f", better than the {promised} the model promised."
    return bought[0].upper() + bought[1:] + f", as the model promised ({promised})."


def _run_metrics(rows: pd.DataFrame, top_percent: float, promise: Promise | None) -> dict[str, Any]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = rows["label"].to_numpy(dtype=int)
    p = rows["score"].to_numpy(dtype=float)
    top = measured_at_cut(rows, CohortSpec(mode="top", top_percent=float(top_percent)))
    k = int(top["rows"])
    hits = round(top["precision"] * k) if k else 0
    low, high = wilson_interval(hits, k)
    predicted, pred_low, pred_high = predicted_range(p)
    buyers = int(y.sum())
    both = 0 < buyers < len(y)
    promised = promise.precision if promise is not None else float("nan")
    margin = promise.margin(k) if promise is not None else float("nan")
    flagged = bool(not math.isnan(margin) and top["precision"] < promised - margin)
    return {"n_users": int(rows["user_id"].nunique()), "rows": len(rows), "buyers": buyers,
            "base_rate": top["base_rate"], "top_rows": k, "precision": top["precision"],
            "precision_low": low, "precision_high": high, "recall": top["recall"], "lift": top["lift"],
            "predicted_buyers": predicted, "predicted_low": pred_low, "predicted_high": pred_high,
            "calibrated": bool(pred_low <= buyers <= pred_high),
            "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
            "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
            "promised": promised, "promised_margin": margin, "flagged": flagged}


def _export_metrics(store: Store, export: dict[str, Any], rows: pd.DataFrame, scope: str) -> dict[str, Any]:
    keys = store.df("SELECT user_id, category FROM export_rows WHERE export_id = ?", [export["export_id"]])
    on = ["user_id", "category"] if scope == "category" else ["user_id"]
    picked = keys.drop_duplicates(on).merge(rows[[*on, "label"]], on=on, how="left")
    y = picked["label"].fillna(0).to_numpy(dtype=int)
    total = int(rows["label"].sum())
    base = float(rows["label"].mean()) if len(rows) else float("nan")
    precision = float(y.mean()) if len(y) else float("nan")
    low, high = wilson_interval(int(y.sum()), len(y))
    return {**export, "rows": len(y), "buyers": int(y.sum()), "precision": precision, "precision_low": low,
            "precision_high": high, "recall": float(y.sum() / total) if total else float("nan"),
            "lift": precision / base if len(y) and base > 0 else float("nan")}


def realized_runs(store: Store, model: str | Path, dataset: str, *, top_percent: float = DEFAULT_TOP_PERCENT,
                  max_runs: int = MAX_RUNS, models_root: str | Path | None = None) -> RealizedReport:
    """Realized accuracy of every scoring run of ``model`` (a directory or a model id) on ``dataset``
    whose horizon has passed in the data; see the module doc for each figure.

    Only the ``max_runs`` most recent realized runs are measured (each reads the labels of its
    cutoff once). NotFoundError for an unknown model or dataset; DataError for a bad ``top_percent``.
    """
    from core.modeling.labels import LabelSpec, labels_at
    from models.artifact import load_card

    if not 0 < float(top_percent) <= 100:
        raise DataError(f"top_percent must be in (0, 100]; got {top_percent}.", title="Bad cut",
                        hint="Pass --top between 0 and 100, e.g. 5.")
    model_dir = resolve_model_dir(model, models_root)
    card = load_card(model_dir)
    spec = LabelSpec.from_dict(card.get("label") or {})
    model_id = str(card["model_id"])
    info = store.dataset(dataset)
    ts_max = pd.Timestamp(info["ts_max"]).to_pydatetime()
    promise = model_promise(model_dir, top_percent)
    notes = [] if promise is not None else [
        f"{model_dir} has no saved test-window rows, so no run can be compared with a promise (retrain it)."]
    report = RealizedReport(model_id=model_id, dataset=dataset, horizon=spec.horizon, scope=spec.scope,
                           top_percent=float(top_percent), ts_max=ts_max, runs=pd.DataFrame(columns=RUN_COLUMNS),
                           exports=pd.DataFrame(columns=EXPORT_COLUMNS),
                           pending=pd.DataFrame(columns=PENDING_COLUMNS), promise=promise, notes=notes)
    runs = store.df("SELECT run_id, cutoff, scored_at, n_users FROM score_runs WHERE model_id = ? AND dataset = ? "
                    "ORDER BY cutoff, scored_at, run_id", [model_id, dataset])
    runs["due"] = pd.to_datetime(runs["cutoff"]) + spec.horizon_td
    done = runs[runs["due"] <= pd.Timestamp(ts_max)]
    report.pending = runs[runs["due"] > pd.Timestamp(ts_max)][list(PENDING_COLUMNS)].reset_index(drop=True)
    if len(done) > max_runs:
        notes.append(f"{len(done) - max_runs} older realized run(s) left out (the {max_runs} latest are measured).")
        done = done.tail(max_runs)
    if done.empty:
        return report
    exports = store.df("SELECT export_id, run_id, cutoff, cut, exported_at, path FROM exports WHERE model_id = ? "
                       "AND dataset = ? ORDER BY exported_at, export_id", [model_id, dataset])
    run_rows: list[dict[str, Any]] = []
    export_rows: list[dict[str, Any]] = []
    labels_by_cutoff: dict[pd.Timestamp, pd.DataFrame] = {}
    for run in done.itertuples(index=False):
        cutoff = pd.Timestamp(str(run.cutoff))
        if cutoff not in labels_by_cutoff:
            labels_by_cutoff[cutoff] = labels_at(store, dataset, spec, cutoff.to_pydatetime())
        rows = _labelled_run(store, dataset, spec, str(run.run_id), labels_by_cutoff[cutoff])
        if rows.empty:
            continue
        record: dict[str, Any] = {"run_id": run.run_id, "cutoff": cutoff, "horizon_end": run.due,
                                  "scored_at": run.scored_at, **_run_metrics(rows, top_percent, promise)}
        record["message"] = _message(record, promise, float(top_percent))
        run_rows.append(record)
        for export in exports[exports["run_id"] == run.run_id].to_dict(orient="records"):
            export_rows.append(_export_metrics(store, {str(k): v for k, v in export.items()}, rows, spec.scope))
    report.runs = pd.DataFrame(run_rows, columns=list(RUN_COLUMNS))
    report.runs["flagged"] = report.runs["flagged"].astype(bool)
    report.exports = pd.DataFrame(export_rows, columns=list(EXPORT_COLUMNS))
    return report


# -- what to offer: top-category accuracy ------------------------------------------------------------
# Per user and cutoff: the categories bought in (T, T + H] and the k most-viewed categories at or
# before T (views, then the latest view, then category text). Parameters: dataset, dataset, k.
_OFFER_TRUTH_SQL = """
WITH c AS (SELECT DISTINCT user_id, cutoff, hi FROM il_offer_users),
bought AS (
    SELECT c.user_id, c.cutoff, list(DISTINCT e.category) AS bought
    FROM c JOIN events e ON e.dataset = ? AND e.user_id = c.user_id AND e.behavior = 'buy'
        AND e.category IS NOT NULL AND e.ts > c.cutoff AND e.ts <= c.hi
    GROUP BY ALL),
viewed AS (
    SELECT user_id, cutoff, list(category ORDER BY n DESC, last_ts DESC, category)[1:?] AS most_viewed
    FROM (SELECT c.user_id, c.cutoff, e.category, count(*) AS n, max(e.ts) AS last_ts
          FROM c JOIN events e ON e.dataset = ? AND e.user_id = c.user_id AND e.behavior = 'view'
              AND e.category IS NOT NULL AND e.ts <= c.cutoff
          GROUP BY ALL)
    GROUP BY ALL)
SELECT b.user_id, b.cutoff, b.bought, coalesce(v.most_viewed, []::VARCHAR[]) AS most_viewed
FROM bought b LEFT JOIN viewed v USING (user_id, cutoff)
"""


def offer_hit_rate(store: Store, dataset: str, rows: pd.DataFrame, horizon: str, k: int = 3) -> dict[str, float]:
    """Top-``k`` category accuracy of a category-scope model against a most-viewed baseline.

    rows: the model's scored rows at one or more cutoffs (``user_id, cutoff, category, score``; its
    test-window evaluation rows). Among the (user, cutoff) pairs of ``rows`` whose user bought in
    some category in (T, T + H] (``horizon``), ``model``: the share whose ``k`` highest-scored
    categories include a bought one; ``baseline``: the share whose ``k`` most-viewed categories at
    or before T include one. Returns ``users`` (pairs counted), ``model``, ``baseline``, ``k``.
    """
    from core.modeling.labels import parse_duration

    if int(k) < 1:
        raise DataError(f"k must be >= 1; got {k}.", title="Bad k")
    pairs = rows[["user_id", "cutoff"]].drop_duplicates().assign(
        cutoff=lambda f: pd.to_datetime(f["cutoff"]).astype("datetime64[us]"))
    pairs["hi"] = pairs["cutoff"] + parse_duration(horizon)
    with store.cursor() as cur:
        store.register_df(cur, "il_offer_users", pairs)
        truth = cur.execute(_OFFER_TRUTH_SQL, [dataset, int(k), dataset]).df()
    if truth.empty:
        return {"users": 0.0, "model": float("nan"), "baseline": float("nan"), "k": float(k)}
    ranked = rows.assign(cutoff=pd.to_datetime(rows["cutoff"]).astype("datetime64[us]"),
                         category=rows["category"].astype(str))
    ranked = ranked.sort_values(["user_id", "cutoff", "score", "category"], ascending=[True, True, False, True])
    top = ranked.groupby(["user_id", "cutoff"], sort=False)["category"].apply(lambda s: list(s.head(int(k))))
    truth["cutoff"] = pd.to_datetime(truth["cutoff"]).astype("datetime64[us]")
    truth = truth.merge(top.rename("offered").reset_index(), on=["user_id", "cutoff"], how="left")
    model_hits = [bool(set(map(str, b)) & set(o if isinstance(o, list) else []))
                  for b, o in zip(truth["bought"], truth["offered"], strict=True)]
    base_hits = [bool(set(map(str, b)) & set(map(str, v))) for b, v in zip(truth["bought"], truth["most_viewed"],
                                                                          strict=True)]
    return {"users": float(len(truth)), "model": float(np.mean(model_hits)), "baseline": float(np.mean(base_hits)),
            "k": float(k)}
