"""Monitoring: drift between a model's training window and the latest data, the stability of its
top cohort across scoring runs, and the scoring service's health from its request log.

Drift compares two windows of the same length ``L``:

* the **reference** window ``(valid_cutoff - L, valid_cutoff]`` of the dataset the model was trained
  on (its card's ``dataset`` and ``cutoffs``), where ``L`` is the span of the model's training
  windows (first training cutoff to validation cutoff; one horizon when it had a single window);
* the **latest** window ``(ts_max - L, ts_max]`` of the dataset being monitored.

Four measures, each a population stability index (PSI) between the two windows:

* every aggregate feature of :mod:`core.modeling.features`, computed from each window's events only
  (the users active in the window, as of its end), so both sides describe the same length of history;
* the behaviour mix: the share of each behaviour among the window's events;
* the sequence length: events per active user (with a two-sample Kolmogorov-Smirnov test beside it);
* the model's score distribution on the active users of each window, as of the window's end.

``PSI = sum over bins of (latest share - reference share) * ln(latest share / reference share)``;
numeric values are cut into :data:`PSI_BINS` bins at the reference window's quantiles (equal edges
merged), categories are their own bins, and an empty bin counts as :data:`PSI_EPSILON` so the sum
stays finite. The conventional reading: under 0.1 the population is stable, 0.1 to 0.25 it has
shifted enough to watch, 0.25 and over it has moved enough to act (look at the data, retrain).
Everything that reads events runs in DuckDB; only small per-bin tables come back.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from core.data.schema import behavior_code_sql
from core.errors import DataError, ModelError, NotFoundError

if TYPE_CHECKING:
    from core.data.store import Store
    from core.modeling.labels import LabelSpec
    from models.artifact import LoadedModel

WATCH_PSI = 0.1               # PSI at or over this: shifted enough to watch
ACT_PSI = 0.25                # PSI at or over this: moved enough to act (the default threshold)
PSI_BINS = 10                 # numeric measures: bins at the reference window's deciles
PSI_EPSILON = 1e-4            # share an empty bin counts as, so ln() stays finite
DRIFT_SAMPLE_USERS = 20_000   # users per window whose features and scores are compared (a fixed sample)
STATUSES = ("ok", "watch", "drift")
EXIT_DRIFT = 3                # `python -m core drift` exit code when a measure is over its threshold

_SIDES = ("reference", "latest")
_REF_VIEW, _LATEST_VIEW = "il_drift_reference", "il_drift_latest"   # registered frames (constants)


# -- population stability index ----------------------------------------------------------------
# ``{source}``: a relation with columns measure, side ('reference' | 'latest'), value (DOUBLE); a
# code constant. Parameters: the bin quantiles (DOUBLE[]), then PSI_EPSILON four times.
_PSI_SQL = """
WITH src AS (SELECT measure, side, value::DOUBLE AS value FROM ({source})
             WHERE value IS NOT NULL AND isfinite(value::DOUBLE)),
edges AS (SELECT measure, list_sort(list_distinct(quantile_cont(value, ?::DOUBLE[]))) AS e
          FROM src WHERE side = 'reference' GROUP BY measure),
binned AS (SELECT s.measure, s.side, len(list_filter(d.e, lambda x: x < s.value)) AS bin, count(*) AS n
           FROM src s JOIN edges d USING (measure) GROUP BY ALL),
grid AS (SELECT measure, e, unnest(range(len(e) + 1)) AS bin FROM edges),
totals AS (SELECT measure, sum(n) FILTER (side = 'reference') AS ref_total,
                  sum(n) FILTER (side = 'latest') AS latest_total FROM binned GROUP BY measure),
shares AS (
    SELECT g.measure, g.bin,
           CASE WHEN g.bin = 0 THEN NULL ELSE g.e[g.bin] END AS lower,
           CASE WHEN g.bin = len(g.e) THEN NULL ELSE g.e[g.bin + 1] END AS upper,
           coalesce(sum(b.n) FILTER (b.side = 'reference'), 0) / any_value(t.ref_total) AS reference,
           coalesce(sum(b.n) FILTER (b.side = 'latest'), 0) / any_value(t.latest_total) AS latest
    FROM grid g JOIN totals t USING (measure)
    LEFT JOIN binned b ON b.measure = g.measure AND b.bin = g.bin
    WHERE t.latest_total > 0
    GROUP BY g.measure, g.bin, g.e)
SELECT measure, bin, lower, upper, reference, latest,
       (greatest(latest, ?) - greatest(reference, ?)) * ln(greatest(latest, ?) / greatest(reference, ?))
           AS psi_term
FROM shares ORDER BY measure, bin
"""


def _quantiles(bins: int) -> list[float]:
    if int(bins) < 2:
        raise DataError(f"PSI needs at least 2 bins; got {bins}.", title="Bad bins")
    return [k / int(bins) for k in range(1, int(bins))]


def _psi_query(source: str) -> str:
    return _PSI_SQL.format(source=source)


def _psi_params(bins: int) -> list[Any]:
    return [_quantiles(bins), PSI_EPSILON, PSI_EPSILON, PSI_EPSILON, PSI_EPSILON]


def _psi_summary(bins: pd.DataFrame) -> pd.DataFrame:
    """measure -> psi (the sum of its bins' terms), in first-seen order."""
    if bins.empty:
        return pd.DataFrame({"measure": pd.Series([], dtype=object), "psi": pd.Series([], dtype=float)})
    return bins.groupby("measure", sort=False)["psi_term"].sum().rename("psi").reset_index()


def population_stability(store: Store, reference: pd.DataFrame, latest: pd.DataFrame, *,
                         bins: int = PSI_BINS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """PSI of every numeric column shared by ``reference`` and ``latest`` (one row per value).

    Edges: the reference column's quantiles at 1/bins ... (bins-1)/bins, duplicates merged; bin k
    holds values v with e[k-1] < v <= e[k]. Missing and infinite values are left out. Returns
    ``(summary, bins)``: ``summary`` has ``measure, psi``; ``bins`` has ``measure, bin, lower,
    upper, reference, latest`` (shares) and ``psi_term``. Computed in DuckDB.
    """
    columns = [c for c in reference.columns if c in set(latest.columns)]
    if not columns:
        raise DataError("the two frames share no column to compare.", title="Nothing to compare")
    source = ("SELECT measure, 'reference' AS side, value FROM (UNPIVOT " + _REF_VIEW
              + " ON COLUMNS(*) INTO NAME measure VALUE value) UNION ALL "
              "SELECT measure, 'latest', value FROM (UNPIVOT " + _LATEST_VIEW
              + " ON COLUMNS(*) INTO NAME measure VALUE value)")
    with store.cursor() as cur:
        store.register_df(cur, _REF_VIEW, _as_doubles(reference[columns]))
        store.register_df(cur, _LATEST_VIEW, _as_doubles(latest[columns]))
        table = cur.execute(_psi_query(source), _psi_params(bins)).df()
        cur.unregister(_REF_VIEW)
        cur.unregister(_LATEST_VIEW)
    order = {name: i for i, name in enumerate(columns)}
    table = table.sort_values(["measure", "bin"], key=lambda s: s.map(order) if s.name == "measure" else s)
    table = table.reset_index(drop=True)
    return _psi_summary(table), table


def _as_doubles(frame: pd.DataFrame) -> pa.Table:
    return pa.table({str(c): pa.array(frame[c].to_numpy(dtype=np.float64, na_value=np.nan))
                     for c in frame.columns})


# -- statuses and plain words ------------------------------------------------------------------
def status_of(psi: float, threshold: float = ACT_PSI) -> str:
    """``ok`` under :data:`WATCH_PSI`, ``watch`` under ``threshold``, ``drift`` at or over it."""
    if not math.isfinite(psi):
        return "ok"
    if psi >= threshold:
        return "drift"
    return "watch" if psi >= min(WATCH_PSI, threshold) else "ok"


def describe_psi(label: str, psi: float, threshold: float = ACT_PSI) -> str:
    """One sentence: ``carts per user (whole window) moved: PSI 0.31, over the 0.25 action threshold``."""
    status = status_of(psi, threshold)
    watch = min(WATCH_PSI, threshold)
    if status == "drift":
        return f"{label} moved: PSI {psi:.2f}, over the {threshold:g} action threshold"
    if status == "watch":
        return (f"{label} shifted a little: PSI {psi:.2f}, over the {watch:g} watch threshold "
                f"(action at {threshold:g})")
    return f"{label} is stable: PSI {psi:.2f}, under the {watch:g} watch threshold"


_PLURALS = {"view": "views", "cart": "carts", "fav": "favourites", "buy": "buys",
            "remove_from_cart": "cart removals", "search": "searches", "events": "events"}
_WINDOW_WORDS = {"h1": "last horizon", "h4": "last 4 horizons", "h16": "last 16 horizons",
                 "all": "whole window"}
_FEATURE_WORDS = {
    "log_secs_since_first": "time since the first event (log)",
    "log_secs_since_session_start": "time since the session started (log)",
    "n_items": "distinct items per user", "n_categories": "distinct categories per user",
    "open_carts": "open carts per user",
    "open_carts_top_category_h1": "open carts in the most viewed category (last horizon)",
    "cart_per_view": "carts per view", "buy_per_cart": "buys per cart",
    "n_sessions": "sessions per user", "events_per_session": "events per session",
    "cat_share": "share of events in the category", "cat_open_carts": "open carts in the category",
    "log_secs_since_cat_touch": "time since the category was last touched (log)",
}


def feature_label(name: str) -> str:
    """Plain words for a feature name: ``n_cart_all`` -> ``carts per user (whole window)``."""
    if name in _FEATURE_WORDS:
        return _FEATURE_WORDS[name]
    for prefix, where in (("n_cat_", " in the category"), ("n_", " per user")):
        if name.startswith(prefix):
            what, _, window = name[len(prefix):].rpartition("_")
            if what in _PLURALS and window in _WINDOW_WORDS:
                return f"{_PLURALS[what]}{where} ({_WINDOW_WORDS[window]})"
    for prefix, where in (("log_secs_since_cat_", " in the category"), ("log_secs_since_", "")):
        if name.startswith(prefix) and name[len(prefix):] in _PLURALS:
            return f"time since the last {name[len(prefix):].replace('_', ' ')}{where} (log)"
    if name.startswith("share_hours_"):
        lo, hi = name[len("share_hours_"):].split("_")
        return f"share of events {lo}:00-{hi}:00 UTC"
    return name.replace("_", " ")


# -- windows -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DriftWindows:
    """The two windows drift compares, each ``(start, end]``, of the same length."""

    reference_dataset: str
    reference_start: datetime
    reference_end: datetime
    dataset: str
    latest_start: datetime
    latest_end: datetime

    @property
    def length(self) -> timedelta:
        return self.reference_end - self.reference_start

    def describe(self) -> str:
        days = self.length.total_seconds() / 86400
        span = f"{days:g} days" if days >= 1 else f"{days * 24:g} hours"
        return (f"training window {self.reference_start:%Y-%m-%d %H:%M} → {self.reference_end:%Y-%m-%d %H:%M} "
                f"of {self.reference_dataset!r} against the latest {span} "
                f"({self.latest_start:%Y-%m-%d %H:%M} → {self.latest_end:%Y-%m-%d %H:%M}) of {self.dataset!r}, UTC")


def drift_windows(store: Store, card: dict[str, Any], dataset: str, *,
                  window: str | None = None) -> DriftWindows:
    """The reference and latest windows for a model card and the dataset to monitor.

    ``window`` (duration text such as ``7d``) overrides the length; by default it is the span of
    the model's training windows (first training cutoff to validation cutoff), or one horizon.
    The reference data is the card's dataset when the store holds it, else ``dataset`` itself.
    """
    from core.modeling.labels import CutoffPlan, LabelSpec, parse_duration

    try:
        plan = CutoffPlan.from_dict(card["cutoffs"])
        spec = LabelSpec.from_dict(card["label"])
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(f"the model card has no usable training windows ({err}).",
                         hint="Train the model again with this IntentLens.") from err
    info = store.dataset(dataset)          # NotFoundError names the datasets that exist
    if window is not None:
        length = parse_duration(window)
    elif plan.train_cutoffs:
        length = plan.valid_cutoff - min(plan.train_cutoffs)
    else:
        length = spec.horizon_td
    ref_dataset = str(card.get("dataset") or dataset)
    if ref_dataset not in store.dataset_names():
        ref_dataset = dataset
    latest_end = pd.Timestamp(info["ts_max"]).to_pydatetime()
    windows = DriftWindows(reference_dataset=ref_dataset, reference_start=plan.valid_cutoff - length,
                           reference_end=plan.valid_cutoff, dataset=dataset,
                           latest_start=latest_end - length, latest_end=latest_end)
    row = store.fetchone("SELECT count(*) FROM events WHERE dataset = ? AND ts > ? AND ts <= ?",
                         [ref_dataset, windows.reference_start, windows.reference_end])
    if not row or not row[0]:
        raise DataError(f"dataset {ref_dataset!r} has no events in the model's training window "
                        f"({windows.reference_start:%Y-%m-%d %H:%M} → {windows.reference_end:%Y-%m-%d %H:%M} UTC).",
                        title="No reference data",
                        hint="Ingest the dataset the model was trained on, or monitor a model trained on this one.")
    return windows


# -- the report --------------------------------------------------------------------------------
@dataclass
class DriftReport:
    """Drift of one model on one dataset.

    measures: one row per measure (``measure``, ``kind`` = feature | behavior_mix | sequence_length
        | score, ``label`` in plain words, ``psi``, ``status`` = ok | watch | drift, ``message``),
        worst first.
    features: ``feature``, ``label``, ``psi``, ``status``, ``reference_mean``, ``latest_mean``.
    behaviors: ``behavior``, ``reference_share``, ``latest_share``, ``change``, ``psi_term``.
    bins: the PSI bins of the numeric measures (``measure``, ``bin``, ``lower``, ``upper``,
        ``reference``, ``latest``, ``psi_term``; measure ``events_per_user``, ``score`` or a
        feature name) for plots.
    ks: two-sample Kolmogorov-Smirnov test of events per user: ``statistic``, ``pvalue``.
    counts: users and events in each window.
    """

    model_id: str
    windows: DriftWindows
    threshold: float
    measures: pd.DataFrame
    features: pd.DataFrame
    behaviors: pd.DataFrame
    bins: pd.DataFrame
    ks: dict[str, float]
    counts: dict[str, int]
    sample_users: int = DRIFT_SAMPLE_USERS
    notes: list[str] = field(default_factory=list)

    @property
    def watch(self) -> float:
        return min(WATCH_PSI, self.threshold)

    @property
    def status(self) -> str:
        """The worst status of any measure."""
        present = set(self.measures["status"]) if not self.measures.empty else set()
        return max(present, key=STATUSES.index) if present else "ok"

    @property
    def drifted(self) -> bool:
        return self.status == "drift"

    def headline(self) -> str:
        """One paragraph: the overall verdict and the measures over a threshold."""
        over = self.measures[self.measures["status"] != "ok"]
        verdict = {"ok": "No drift: every measure is under the watch threshold",
                   "watch": "Some measures shifted enough to watch, none over the action threshold",
                   "drift": "Drift: at least one measure is over the action threshold"}[self.status]
        text = (f"{verdict} (PSI watch {self.watch:g}, action {self.threshold:g}; "
                f"{self.windows.describe()}).")
        if not over.empty:
            text += " " + "; ".join(over["message"].head(5)) + "."
            if len(over) > 5:
                text += f" And {len(over) - 5} more."
        return text

    def to_dict(self) -> dict[str, Any]:
        w = self.windows
        return {
            "model_id": self.model_id, "status": self.status, "threshold": self.threshold,
            "watch_threshold": self.watch, "headline": self.headline(),
            "windows": {"reference_dataset": w.reference_dataset, "reference_start": w.reference_start.isoformat(),
                        "reference_end": w.reference_end.isoformat(), "dataset": w.dataset,
                        "latest_start": w.latest_start.isoformat(), "latest_end": w.latest_end.isoformat()},
            "counts": self.counts, "sample_users": self.sample_users, "ks": self.ks,
            "measures": self.measures.to_dict(orient="records"),
            "behaviors": self.behaviors.to_dict(orient="records"),
            "features": self.features.to_dict(orient="records"),
            "notes": self.notes,
        }


# Events per active user in each window (the relation the PSI query and the KS test read).
# Parameters: reference dataset, start, end, then the latest dataset, start, end.
_LENGTHS_SQL = """
SELECT 'events_per_user' AS measure, 'reference' AS side, count(*)::DOUBLE AS value
FROM events WHERE dataset = ? AND ts > ? AND ts <= ? GROUP BY user_id
UNION ALL
SELECT 'events_per_user', 'latest', count(*)::DOUBLE
FROM events WHERE dataset = ? AND ts > ? AND ts <= ? GROUP BY user_id
"""

# Behaviour shares in each window; parameters as _LENGTHS_SQL, then PSI_EPSILON four times.
_BEHAVIOR_SQL = f"""
WITH counts AS (
    SELECT 'reference' AS side, behavior, count(*) AS n FROM events
    WHERE dataset = ? AND ts > ? AND ts <= ? GROUP BY behavior
    UNION ALL
    SELECT 'latest', behavior, count(*) FROM events
    WHERE dataset = ? AND ts > ? AND ts <= ? GROUP BY behavior),
shares AS (SELECT side, behavior, n / sum(n) OVER (PARTITION BY side) AS share FROM counts),
wide AS (SELECT behavior, coalesce(sum(share) FILTER (side = 'reference'), 0) AS reference_share,
                coalesce(sum(share) FILTER (side = 'latest'), 0) AS latest_share
         FROM shares GROUP BY behavior)
SELECT behavior::VARCHAR AS behavior, reference_share, latest_share, latest_share - reference_share AS change,
       (greatest(latest_share, ?) - greatest(reference_share, ?))
           * ln(greatest(latest_share, ?) / greatest(reference_share, ?)) AS psi_term
FROM wide ORDER BY {behavior_code_sql('wide.behavior')}
"""


def _window_params(w: DriftWindows) -> list[Any]:
    return [w.reference_dataset, w.reference_start, w.reference_end, w.dataset, w.latest_start, w.latest_end]


def _active_examples(store: Store, dataset: str, spec: LabelSpec, end: datetime, sample: int) -> pd.DataFrame:
    """Example rows at ``end`` for users active in the window (``spec.lookback`` = the window),
    a fixed pseudo-random sample of at most ``sample`` users."""
    from core.modeling.labels import scoring_examples

    rows = scoring_examples(store, dataset, spec, end)
    users = pd.Series(rows["user_id"].unique())
    if len(users) > sample:
        keep = set(users.sample(n=sample, random_state=0))
        rows = rows[rows["user_id"].isin(keep)]
    return rows.reset_index(drop=True)


def _covers_window(feature: str, horizon: timedelta, length: timedelta) -> bool:
    """True for a ``..._h4`` / ``..._h16`` count whose span (4 or 16 horizons) covers the whole window."""
    head, _, window = feature.rpartition("_h")
    return bool(head) and window.isdigit() and int(window) > 1 and int(window) * horizon >= length


def _scores(store: Store, model: LoadedModel, dataset: str, rows: pd.DataFrame) -> np.ndarray:
    """The model's scores of ``rows`` with its own inputs (its label spec: history and length)."""
    from core.modeling.features import build_features
    from core.modeling.sequences import build_sequences

    seq = (build_sequences(store, dataset, rows, model.vocab, model.spec)
           if model.vocab is not None and model.needs_sequences else None)
    feats = build_features(store, dataset, rows, model.spec) if model.needs_features else None
    return np.asarray(model.predict(seq, feats), dtype=np.float64)


def drift_report(store: Store, model_dir: str | Path, dataset: str, *, threshold: float = ACT_PSI,
                 window: str | None = None, sample_users: int = DRIFT_SAMPLE_USERS,
                 bins: int = PSI_BINS) -> DriftReport:
    """Drift of the model in ``model_dir`` between its training window and ``dataset``'s latest
    window of the same length (see the module docstring for the measures and thresholds).

    ``threshold``: the PSI at which a measure counts as drift (default 0.25; the watch level is
    0.1, or ``threshold`` when lower). ``sample_users``: users per window whose features and
    scores are compared (behaviour mix and events per user always use every event).
    """
    from scipy.stats import ks_2samp

    from core.modeling.features import build_features
    from core.modeling.model_store import load_model_cached

    if not 0 < float(threshold) <= 10:
        raise DataError(f"the drift threshold must be a PSI in (0, 10]; got {threshold}.", title="Bad threshold",
                        hint="The conventional action threshold is 0.25 (0.1 to only watch).")
    if int(sample_users) < 1:
        raise DataError(f"sample_users must be >= 1; got {sample_users}.", title="Bad sample size")
    threshold = float(threshold)
    model = load_model_cached(model_dir)
    windows = drift_windows(store, model.card, dataset, window=window)
    params = _window_params(windows)

    # behaviour mix and events per user: every event of both windows, in DuckDB
    behaviors = store.df(_BEHAVIOR_SQL, [*params, *[PSI_EPSILON] * 4])
    length_bins = store.df(_psi_query(_LENGTHS_SQL), [*params, *_psi_params(bins)])
    hist = store.df("SELECT side, value AS n_events, count(*) AS users FROM (" + _LENGTHS_SQL + ") "
                    "GROUP BY ALL ORDER BY side, n_events", params)
    per_side = {side: np.repeat(hist.loc[hist["side"] == side, "n_events"].to_numpy(),
                                hist.loc[hist["side"] == side, "users"].to_numpy()) for side in _SIDES}
    if not len(per_side["latest"]):
        raise DataError(f"dataset {dataset!r} has no events in its latest window "
                        f"({windows.latest_start:%Y-%m-%d %H:%M} → {windows.latest_end:%Y-%m-%d %H:%M} UTC).",
                        title="No recent data")
    ks = ks_2samp(per_side["reference"], per_side["latest"])
    counts = {"reference_users": len(per_side["reference"]), "latest_users": len(per_side["latest"]),
              "reference_events": int(per_side["reference"].sum()), "latest_events": int(per_side["latest"].sum())}

    # features and scores of the active users of each window, as of the window's end
    window_spec = dataclasses.replace(model.spec, lookback=f"{int(windows.length.total_seconds())}s")
    sides = {"reference": (windows.reference_dataset, windows.reference_end),
             "latest": (windows.dataset, windows.latest_end)}
    feats: dict[str, pd.DataFrame] = {}
    scores: dict[str, pd.DataFrame] = {}
    for side, (name, end) in sides.items():
        rows = _active_examples(store, name, window_spec, end, int(sample_users))
        feats[side] = build_features(store, name, rows, window_spec)
        scores[side] = pd.DataFrame({"score": _scores(store, model, name, rows)})
    # a count over the last 4 or 16 horizons equals the whole window's when the window is no longer
    keep = [name for name in feats["reference"].columns
            if not _covers_window(name, model.spec.horizon_td, windows.length)]
    feature_summary, feature_bins = population_stability(store, feats["reference"][keep], feats["latest"][keep],
                                                         bins=bins)
    score_summary, score_bins = population_stability(store, scores["reference"], scores["latest"], bins=bins)

    features = feature_summary.rename(columns={"measure": "feature"})
    features["label"] = features["feature"].map(feature_label)
    features["status"] = [status_of(p, threshold) for p in features["psi"]]
    features["reference_mean"] = features["feature"].map(feats["reference"].mean())
    features["latest_mean"] = features["feature"].map(feats["latest"].mean())
    features = features.sort_values(["psi", "feature"], ascending=[False, True]).reset_index(drop=True)

    length_psi = float(length_bins["psi_term"].sum())
    mix_psi = float(behaviors["psi_term"].sum())
    score_psi = float(score_summary["psi"].sum())
    headline = pd.DataFrame([
        {"measure": "behavior_mix", "kind": "behavior_mix", "label": "the behaviour mix", "psi": mix_psi},
        {"measure": "events_per_user", "kind": "sequence_length", "label": "events per user", "psi": length_psi},
        {"measure": "score", "kind": "score", "label": "the model's score distribution", "psi": score_psi},
    ])
    per_feature = pd.DataFrame({"measure": features["feature"], "kind": "feature", "label": features["label"],
                                "psi": features["psi"]})
    measures = pd.concat([headline, per_feature], ignore_index=True)
    measures["status"] = [status_of(p, threshold) for p in measures["psi"]]
    measures["message"] = [describe_psi(str(label), float(p), threshold)
                           for label, p in zip(measures["label"], measures["psi"], strict=True)]
    rank = measures["status"].map({s: i for i, s in enumerate(STATUSES)})
    measures = (measures.assign(_r=rank).sort_values(["_r", "psi"], ascending=[False, False], kind="stable")
                .drop(columns="_r").reset_index(drop=True))
    notes = []
    if windows.reference_dataset != windows.dataset:
        notes.append(f"The reference is the model's training dataset {windows.reference_dataset!r}.")
    overlap = windows.latest_start < windows.reference_end and windows.reference_dataset == windows.dataset
    if overlap:
        notes.append("The latest window overlaps the training window: the dataset has little data newer "
                     "than the model, so drift is diluted. Append new events (`update`) and check again.")
    return DriftReport(
        model_id=str(model.card.get("model_id") or Path(model_dir).name), windows=windows, threshold=threshold,
        measures=measures, features=features, behaviors=behaviors,
        bins=pd.concat([length_bins, score_bins, feature_bins], ignore_index=True),
        ks={"statistic": float(ks.statistic), "pvalue": float(ks.pvalue)}, counts=counts,
        sample_users=int(sample_users), notes=notes)


# -- cohort stability --------------------------------------------------------------------------
def score_runs(store: Store, model_id: str, dataset: str) -> pd.DataFrame:
    """Every recorded scoring run of a model on a dataset, oldest first: ``run_id, cutoff,
    scored_at, n_users`` (empty on a database without score history)."""
    return store.df("SELECT run_id, cutoff, scored_at, n_users FROM score_runs WHERE model_id = ? AND dataset = ? "
                    "ORDER BY scored_at, run_id", [model_id, dataset])


# Top ``?`` share of each run's rows (rank by score, then user and category, as the Cohorts page
# ranks), then per compared pair the sizes and the common rows. Parameters: model_id, dataset,
# the share, then the pair filter (earlier, later, earlier, later: NULLs = consecutive runs).
_STABILITY_SQL = """
WITH runs AS (
    SELECT run_id, scored_at, row_number() OVER (ORDER BY scored_at, run_id) AS k
    FROM score_runs WHERE model_id = ? AND dataset = ?),
ranked AS (
    SELECT h.run_id, h.user_id, coalesce(h.category, '') AS category,
           (row_number() OVER (PARTITION BY h.run_id ORDER BY h.score DESC, h.user_id, h.category) - 1)::DOUBLE
               / count(*) OVER (PARTITION BY h.run_id) AS score_rank
    FROM score_history h JOIN runs r USING (run_id)),
top AS (SELECT run_id, user_id, category FROM ranked WHERE score_rank < ?),
pairs AS (
    SELECT a.run_id AS earlier_run, b.run_id AS later_run, a.scored_at AS earlier_at, b.scored_at AS later_at
    FROM runs a JOIN runs b ON (? IS NULL AND b.k = a.k + 1) OR (a.run_id = ? AND b.run_id = ?)),
sizes AS (SELECT run_id, count(*) AS n FROM top GROUP BY run_id),
common AS (
    SELECT p.earlier_run, p.later_run, count(*) AS n
    FROM pairs p JOIN top x ON x.run_id = p.earlier_run
    JOIN top y ON y.run_id = p.later_run AND y.user_id = x.user_id AND y.category = x.category
    GROUP BY ALL)
SELECT p.earlier_run, p.later_run, p.earlier_at, p.later_at,
       coalesce(se.n, 0) AS earlier_size, coalesce(sl.n, 0) AS later_size, coalesce(c.n, 0) AS common,
       coalesce(c.n, 0) / nullif(coalesce(se.n, 0) + coalesce(sl.n, 0) - coalesce(c.n, 0), 0) AS jaccard,
       coalesce(c.n, 0) / nullif(se.n, 0) AS kept
FROM pairs p LEFT JOIN sizes se ON se.run_id = p.earlier_run LEFT JOIN sizes sl ON sl.run_id = p.later_run
LEFT JOIN common c ON c.earlier_run = p.earlier_run AND c.later_run = p.later_run
ORDER BY p.later_at, p.later_run
"""


def cohort_stability(store: Store, model_id: str, dataset: str, *, top_percent: float = 10.0,
                     runs: tuple[str, str] | None = None) -> pd.DataFrame:
    """How much of the top ``top_percent`` % stays in the top from one scoring run to the next.

    One row per compared pair of runs (each run against the one before it; only ``runs`` =
    (earlier, later) when given): ``earlier_run, later_run, earlier_at, later_at, earlier_size,
    later_size, common, jaccard`` (common / union) and ``kept`` (common / the earlier top's size).
    A run's top holds its ``ceil(rows * top_percent / 100)`` highest-scored rows (ties by user id).
    """
    if not 0 < float(top_percent) <= 100:
        raise DataError(f"top_percent must be in (0, 100]; got {top_percent}.", title="Bad cohort size")
    if runs is not None:
        known = set(score_runs(store, model_id, dataset)["run_id"])
        missing = [r for r in runs if r not in known]
        if missing:
            raise NotFoundError(f"no scoring run {missing[0]!r} of model {model_id!r} on dataset {dataset!r}.",
                                hint="Pick runs from the list of scoring runs.")
    earlier, later = runs if runs is not None else (None, None)
    return store.df(_STABILITY_SQL, [model_id, dataset, float(top_percent) / 100.0, earlier, earlier, later])


# -- the service's request log -----------------------------------------------------------------
# Bucket widths the service summary picks from: the narrowest giving at most MAX_BUCKETS buckets.
BUCKETS: tuple[tuple[str, float], ...] = (
    ("1s", 1), ("10s", 10), ("1min", 60), ("5min", 300), ("15min", 900), ("1h", 3600), ("6h", 21600), ("1D", 86400))
MAX_BUCKETS = 120
def pick_bucket(log: pd.DataFrame) -> str:
    """The narrowest bucket width of :data:`BUCKETS` that cuts the log's time span into at most
    :data:`MAX_BUCKETS` buckets."""
    if log.empty:
        return BUCKETS[2][0]
    span = (log["time"].max() - log["time"].min()).total_seconds()
    for name, seconds in BUCKETS:
        if span / seconds <= MAX_BUCKETS:
            return name
    return BUCKETS[-1][0]


def service_summary(log: pd.DataFrame, bucket: str | None = None) -> pd.DataFrame:
    """Per time bucket (``bucket`` a pandas frequency such as ``1min``; default :func:`pick_bucket`):
    ``time`` (bucket start, UTC), ``requests``, ``rate`` (requests per second), ``client_errors``
    (4xx), ``server_errors`` (5xx), ``error_rate`` ((4xx + 5xx) / requests), ``p50_ms``, ``p95_ms``,
    ``p99_ms`` (latency percentiles, linear interpolation as numpy's default). Empty buckets between
    busy ones are kept with zero requests."""
    columns = ["time", "requests", "rate", "client_errors", "server_errors", "error_rate",
               "p50_ms", "p95_ms", "p99_ms"]
    if log.empty:
        return pd.DataFrame(columns=columns)
    bucket = bucket or pick_bucket(log)
    seconds = pd.Timedelta(bucket).total_seconds()
    frame = log.assign(client=log["status"].between(400, 499), server=log["status"] >= 500)
    grouped = frame.groupby(pd.Grouper(key="time", freq=bucket))
    latency = grouped["latency_ms"]
    out = pd.DataFrame({
        "requests": grouped.size(),
        "client_errors": grouped["client"].sum(),
        "server_errors": grouped["server"].sum(),
        "p50_ms": latency.quantile(0.50),
        "p95_ms": latency.quantile(0.95),
        "p99_ms": latency.quantile(0.99),
    }).reset_index()
    out["rate"] = out["requests"] / seconds
    out["error_rate"] = (out["client_errors"] + out["server_errors"]) / out["requests"].replace(0, np.nan)
    return out[columns].astype({"requests": "int64", "client_errors": "int64", "server_errors": "int64"})


def service_totals(log: pd.DataFrame) -> dict[str, Any]:
    """The whole log in a few numbers: requests, first/last time, errors by kind, p50/p95/p99."""
    if log.empty:
        return {"requests": 0}
    latency = log["latency_ms"].to_numpy(dtype=float)
    status = log["status"].to_numpy()
    kinds = log.loc[log["error"].notna(), "error"].value_counts()
    return {"requests": len(log), "first": log["time"].min(), "last": log["time"].max(),
            "client_errors": int(((status >= 400) & (status < 500)).sum()),
            "server_errors": int((status >= 500).sum()),
            "error_rate": float((status >= 400).mean()),
            "errors_by_kind": {str(k): int(v) for k, v in kinds.items()},
            "p50_ms": float(np.percentile(latency, 50)), "p95_ms": float(np.percentile(latency, 95)),
            "p99_ms": float(np.percentile(latency, 99))}


def no_log_message(path: str | Path) -> str:
    """What the Monitor page says when the request log at ``path`` is empty or missing."""
    return (f"No request log yet at {path}: the scoring service has not answered a request. Start it with "
            "`python -m core serve --model DIR` (it logs one line per request there).")
