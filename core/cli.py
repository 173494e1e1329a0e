"""`python -m core ...`: the same functions the pages call, for pipelines.

Exit codes: 0 success, 2 a user error (bad file, unknown dataset, incompatible model: the
project's message is printed on stderr), 1 an unexpected failure, 130 cancelled; `drift` exits 3
when a drift measure is over its threshold (so a scheduler can alert).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import DataError, IntentLensError, NotFoundError
from core.progress import ProgressFn

if TYPE_CHECKING:
    from tqdm import tqdm

    from core.data.store import Store

LAYOUTS = ("auto", "taobao", "tianchi_mobile", "rees46", "retailrocket", "generic")
EXPLAIN_METHODS = ("ig", "shap", "attention", "all")


def _key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _weights(text: str) -> list[float]:
    """``--distill`` and ``--aux-cart``: one weight or several, comma-separated (train_model checks the range)."""
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a weight such as 0.5, or several such as 0.5,0.7; got {text!r}") from None


def _progress_bar(label: str) -> tuple[tqdm[Any], ProgressFn]:
    """A tqdm bar on stderr driven by core's progress(done, total, message) callbacks."""
    from tqdm import tqdm

    bar = tqdm(desc=label, file=sys.stderr, unit="", dynamic_ncols=True, leave=False,
               disable=not sys.stderr.isatty())

    def progress(done: float, total: float | None, message: str) -> None:
        if total is not None and bar.total != total:
            bar.total = total
        bar.n = done
        bar.set_postfix_str(message[:60], refresh=False)
        bar.refresh()
    return bar, progress


def _print_json(obj: Any) -> None:
    from models.artifact import json_default

    print(json.dumps(obj, indent=2, default=json_default))


def _store(args: argparse.Namespace, read_only: bool = False) -> Store:
    from core.data.store import Store
    return Store(args.db, read_only=read_only)


# -- data commands --------------------------------------------------------------------
def cmd_ingest(args: argparse.Namespace) -> int:
    from core.data.ingest import ingest_file

    bar, progress = _progress_bar("ingest")
    with _store(args) as store, bar:
        report = ingest_file(store, args.path, dataset=args.dataset, layout=args.format,
                             column_map=dict(args.map or []),
                             behavior_map=dict(args.behavior_map or []) or None,
                             replace=args.replace, progress=progress, ts_format=args.ts_format,
                             tz=args.tz, year=args.year, duplicates=args.duplicates)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report.summary())
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    with _store(args) as store:
        frame = store.datasets()
    if args.json:
        _print_json(frame.to_dict(orient="records"))
    elif frame.empty:
        print("No datasets yet. Ingest one: python -m core ingest PATH --dataset NAME")
    else:
        cols = ["name", "layout", "rows_stored", "n_users", "rows_quarantined", "ts_min", "ts_max"]
        print(frame[cols].to_string(index=False))
    return 0


def cmd_quality(args: argparse.Namespace) -> int:
    from core.data.quality import quality_report

    with _store(args) as store:
        report = quality_report(store, args.dataset)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report.summary())
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from core.modeling.synth import SynthConfig, generate

    bar, progress = _progress_bar("synth")
    config = SynthConfig(users=args.users, days=args.days, seed=args.seed)
    with bar:
        summary = generate(config, args.out, fmt=args.fmt, truth_out=args.truth,
                           progress=progress)
    print(summary.summary())
    return 0


# -- model commands -------------------------------------------------------------------
def cmd_pretrain(args: argparse.Namespace) -> int:
    from core.modeling.pipeline import PRESETS
    from core.modeling.pretrain import pretrain

    preset = PRESETS[args.preset]
    bar, progress = _progress_bar("pretrain")
    with _store(args) as store, bar:
        # log lines (examples, per-epoch losses, "resumed from the checkpoint at epoch 2 of 4") go to stderr
        result = pretrain(store, args.dataset, args.out, max_len=args.max_len, epochs=args.epochs,
                          d_model=preset.d_model, n_heads=preset.n_heads, n_layers=preset.n_layers,
                          d_ff=preset.d_ff, dropout=preset.dropout, cutoffs=args.step, until=args.until,
                          seed=args.seed, threads=args.threads, hashed_vocab=args.hashed_vocab,
                          progress=progress, log=lambda line: bar.write(line, file=sys.stderr))
    print(result.summary())
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from core.modeling.labels import LabelSpec
    from core.modeling.pipeline import train_model

    spec = LabelSpec(horizon=args.horizon, scope=args.scope, lookback=args.lookback,
                     max_len=args.max_len)
    from core.modeling.distributed import process_group

    bar, progress = _progress_bar("train")
    with process_group(args.model) as (rank, world), _store(args, read_only=world > 1) as store, bar, \
            tempfile.TemporaryDirectory(prefix="intentlens-rank-") as scratch:
        # under torchrun only process 0 saves the model and prints; the others train into scratch
        out = args.out if rank == 0 else str(Path(scratch) / "model")
        # log lines (cutoffs, rows, "resumed from the checkpoint at epoch 3 of 8", ...) go to stderr
        result = train_model(store, args.dataset, kind=args.model, spec=spec, epochs=args.epochs,
                             search=args.search, seed=args.seed, out=out, preset=args.preset,
                             progress=progress if rank == 0 else None, threads=args.threads, refit=args.refit,
                             label_share=args.label_share, compare_random_split=args.compare_random_split,
                             init=args.init, freeze=args.freeze, spark_master=args.spark, distill=args.distill,
                             aux_cart=args.aux_cart,
                             log=(lambda line: bar.write(line, file=sys.stderr)) if rank == 0 else None)
    if rank > 0:
        return 0
    print(result.summary())
    if args.compare_random_split:
        print()
        _print_split_comparison(result.card)
    return 0


def _print_metric_block(title: str, metrics: dict[str, Any]) -> None:
    print(title)
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            print(f"  {key:>18}: {value:.4f}" if isinstance(value, float) else f"  {key:>18}: {value:,}")
        elif isinstance(value, dict) and {"value", "low", "high"} <= set(value):
            print(f"  {key:>18}: {value['value']:.4f}  [{value['low']:.4f}, {value['high']:.4f}]")


def _print_split_comparison(card: dict[str, Any]) -> None:
    """Time split (test window) beside the random 80/20 split of the same rows."""
    from core.modeling.pipeline import split_comparison

    frame = split_comparison(card)
    print("time split (test window) vs random 80/20 split of the same rows:")
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(card["random_split"]["why"])


def cmd_evaluate(args: argparse.Namespace) -> int:
    from core.insight.evaluation import ensemble_lead, paired_comparison
    from models.artifact import load_card

    card = load_card(args.model)
    split = card.get("metrics_split", "valid")
    lead = (ensemble_lead(args.model).table.rename(columns={"model": "ensemble", "other": "member"})
            if card.get("kind") == "ensemble" else None)
    against = paired_comparison(args.model, args.against) if args.against else None
    if args.json:
        _print_json({"split": split, "metrics": card.get("metrics", {}),
                     "valid_metrics": card.get("valid_metrics", {}),
                     "calibration": card.get("calibration"), "random_split": card.get("random_split"),
                     "ensemble_vs_members": None if lead is None else lead.to_dict("records"),
                     "against": None if against is None else
                     {"rows": against.rows, "note": against.note, "table": against.table.to_dict("records")}})
        return 0
    print(f"{card.get('kind')} model {card.get('model_id')} on {card.get('dataset')} "
          f"(horizon {card.get('label', {}).get('horizon')}):")
    if split == "test":
        _print_metric_block("test window (reported; nothing was selected on it):", card.get("metrics", {}))
        _print_metric_block("validation window (early stopping, search, ensemble weights and calibration "
                            "were selected on it):", card.get("valid_metrics", {}))
    else:
        _print_metric_block("validation window (this model predates the test window: these figures come "
                            "from the window it was selected on, so they are optimistic):",
                            card.get("metrics", {}))
    if lead is not None and not lead.empty:
        print("ensemble minus each member on the same test users (paired bootstrap, 1,000 resamples; "
              "not_ahead: the share of resamples where the ensemble is not better):")
        print(lead.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if against is not None:
        if against.table.empty:
            print(f"no paired comparison with {args.against}: {against.note}")
        else:
            print(f"this model minus {Path(args.against).name} on the {against.rows:,} test rows both scored "
                  f"(paired bootstrap, 1,000 resamples; not_ahead: the share of resamples where this "
                  f"model is not better):")
            print(against.table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if card.get("refit"):
        print(f"refitted on every labelled window ({card['refit']['rows']:,} rows); the figures above are "
              f"the evaluated fit's")
    if args.compare_random_split:
        if not card.get("random_split"):
            raise DataError("this model was trained without the random-split comparison.",
                            title="No random-split figures",
                            hint="Train it again with `train --compare-random-split`.")
        print()
        _print_split_comparison(card)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from core.insight.cohorts import score_dataset

    bar, progress = _progress_bar("score")
    with _store(args) as store, bar:
        frame = score_dataset(store, args.model, args.dataset, progress=progress)
    if args.out:
        out = str(args.out)
        if out.endswith(".parquet"):
            frame.to_parquet(out, index=False)
        else:
            frame.to_csv(out, index=False)
        print(f"wrote {len(frame):,} scores to {out}")
    else:
        print(frame.to_csv(index=False), end="")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    import pandas as pd

    from core.insight.drivers import user_methods
    from core.insight.explain import explain_user, faithfulness_summary

    # "all": every method the model supports (scope 'category' models have no integrated gradients)
    methods = user_methods(args.model) if args.method == "all" else (args.method,)
    with _store(args, read_only=False) as store:
        result = explain_user(store, args.model, args.dataset, args.user, methods=methods)
    # the Explain page's faithfulness curve: score drop when each method's top-k events are removed,
    # against k random events; None for a model without per-event attributions (gbdt)
    faithful = (faithfulness_summary(result.faithfulness(max_k=args.max_k, n_random=args.random_draws,
                                                         seed=args.seed))
                if result.methods and len(result.events) else None)
    if args.json:
        payload: dict[str, object] = {"user_id": args.user, "score": result.score, "raw_score": result.raw_score,
                                      "summary": result.summary,
                                      "events": result.events.to_dict(orient="records"),
                                      "faithfulness": faithful}
        if result.features is not None:
            payload["features"] = result.features.to_dict(orient="records")
        _print_json(payload)
        return 0
    print(result.summary)
    print(result.events.to_string(index=False))
    if result.features is not None:
        print(result.features.to_string(index=False))
    if faithful is not None:
        print(f"\nFaithfulness: score drop when the top-k events are removed (score before "
              f"{faithful['score_before']:.3f}; random: mean of {faithful['n_random']} draws)")
        print(pd.DataFrame(faithful["drop"], index=pd.Index(faithful["k"], name="k")).to_string(
            float_format=lambda v: f"{v:+.4f}"))
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    from core.serving.monitor import EXIT_DRIFT, drift_report

    with _store(args, read_only=True) as store:
        report = drift_report(store, args.model, args.dataset, threshold=args.threshold, window=args.window)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report.headline())
        print()
        print(report.measures[["label", "psi", "status"]].head(args.top).to_string(
            index=False, float_format=lambda v: f"{v:.3f}"))
        for note in report.notes:
            print(note)
    return EXIT_DRIFT if report.drifted else 0


def cmd_report(args: argparse.Namespace) -> int:
    from core.insight.report import build_report

    bar, progress = _progress_bar("report")
    with _store(args) as store, bar:
        report = build_report(store, args.model, args.dataset, threshold=args.threshold,
                              cohort_top=args.cohort_top, driver_users=args.driver_users, progress=progress)
    path = report.write(args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {report.figures} figures; opens offline)")
    for note in report.notes:
        print(f"note: {note}")
    return 0


def cmd_outlook(args: argparse.Namespace) -> int:
    from core.insight.outlook import outlook

    with _store(args) as store:
        view = outlook(store, args.model, args.dataset, level=args.level, top=args.top)
    if args.json:
        _print_json(view.to_dict())
        return 0
    print(view.describe())
    print(view.frame.drop(columns="realized").to_string(index=False, float_format=lambda v: f"{v:,.1f}"))
    totals = view.totals()
    print(f"shown categories: {totals['expected']:,.1f} expected purchases against {totals['last_actual']:,.0f} "
          f"buyers in the last horizon ({len(view.frame)} of {view.categories} categories)")
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    from core.runtime.update import update_dataset

    bar, progress = _progress_bar("update")
    with _store(args) as store, bar:
        result = update_dataset(store, args.dataset, args.file, model=args.model, layout=args.format,
                                column_map=dict(args.map or []) or None,
                                behavior_map=dict(args.behavior_map or []) or None, ts_format=args.ts_format,
                                tz=args.tz, year=args.year, duplicates=args.duplicates, epochs=args.epochs,
                                seed=args.seed, threads=args.threads, progress=progress,
                                log=lambda line: bar.write(line, file=sys.stderr))
    if args.json:
        _print_json(result.to_dict())
    else:
        print(result.summary())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from core.serving.export import export_model

    bar, progress = _progress_bar("export")
    with _store(args, read_only=True) as store, bar:
        result = export_model(args.model, store=store, dataset=args.dataset, progress=progress)
    _print_json(result)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from core.serving import service

    print(f"serving {args.model} on http://{args.host}:{args.port} (API docs at /docs; Ctrl-C stops)",
          file=sys.stderr)
    service.serve(args.model, host=args.host, port=args.port, db_path=args.db, dataset=args.dataset,
                  threads=args.threads)
    return 0


def cmd_realized(args: argparse.Namespace) -> int:
    from core.insight.realized import EXIT_FLAGGED, realized_runs

    with _store(args, read_only=True) as store:
        report = realized_runs(store, args.model, args.dataset, top_percent=args.top)
    if args.json:
        _print_json(report.to_dict())
        return EXIT_FLAGGED if report.flagged else 0
    print(report.headline())
    if not report.runs.empty:
        cols = ["cutoff", "n_users", "buyers", "top_rows", "precision", "promised", "recall", "lift",
                "predicted_buyers", "roc_auc", "pr_auc", "flagged"]
        print()
        print(report.runs[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if not report.exports.empty:
        print("\nExported cohorts:")
        print(report.exports[["export_id", "cut", "rows", "buyers", "precision", "recall", "lift"]].to_string(
            index=False, float_format=lambda v: f"{v:.3f}"))
    if not report.pending.empty:
        print(f"\n{len(report.pending)} run(s) still inside their horizon (next due "
              f"{report.pending['due'].min():%Y-%m-%d %H:%M} UTC).")
    for note in report.notes:
        print(f"note: {note}")
    return EXIT_FLAGGED if report.flagged else 0


def cmd_check(args: argparse.Namespace) -> int:
    from core.data.catalog import Catalog
    from core.data.store import STORE_FORMAT, check_segments, resolve_db_path

    path = resolve_db_path(args.db)
    if not path.is_dir():
        raise NotFoundError(f"there is no store at {path}.", hint="Check --db / INTENTLENS_DB.")
    catalog = Catalog(path, create=False, schema_version=STORE_FORMAT)   # no views: works on a damaged store
    try:
        collected = catalog.collect_garbage() if args.collect else {}
        problems = check_segments(catalog)
        writes = catalog.open_writes()
        version = catalog.version()
    finally:
        catalog.close()
    if args.json:
        _print_json({"version": version, "problems": problems, "open_writes": writes, "collected": collected})
    else:
        print(f"store version {version}: " + ("every segment is whole" if not problems else
                                                f"{len(problems)} problem(s)"))
        for line in problems:
            print("  " + line)
        for w in writes:
            print(f"  write in progress: {w['what']} of {w['dataset']!r} by pid {w['pid']} on {w['host']}")
        if collected:
            print("collected: " + ", ".join(f"{k} {v}" for k, v in collected.items()))
    return 1 if problems else 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from core.data.store import migrate_single_file

    with _store(args) as store:
        counts = migrate_single_file(args.source, store)
    if args.json:
        _print_json(counts)
    else:
        for name, rows in counts.items():
            print(f"{name}: {rows:,} rows")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from core.modeling.pipeline import PRESETS
    from models.artifact import MODEL_KINDS

    parser = argparse.ArgumentParser(prog="python -m core",
                                     description="IntentLens: purchase-intent analytics, headless.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_db(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--db", help="the store folder (default: $INTENTLENS_DB or data/intentlens)")
        return p

    p = with_db(sub.add_parser("ingest", help="load a behaviour log into the database"))
    p.add_argument("path")
    p.add_argument("--dataset", help="name to store it under (default: the file name)")
    p.add_argument("--format", choices=LAYOUTS, default="auto")
    p.add_argument("--map", action="append", type=_key_value, metavar="FIELD=COLUMN",
                   help="generic layout: which source column holds user_id, item_id, category, "
                        "behavior, ts, session_id, price, brand, query")
    p.add_argument("--behavior-map", action="append", type=_key_value, metavar="SOURCE=BEHAVIOR",
                   help="generic layout: source behaviour value -> view|cart|fav|buy|remove_from_cart|search")
    p.add_argument("--ts-format", metavar="FORMAT",
                   help="generic layout: strptime format of the ts column, e.g. '%%Y-%%m-%%d %%H:%%M:%%S' or "
                        "'%%m-%%d' (with --year); default: epoch seconds/ms detected, or ISO date/time text")
    p.add_argument("--tz", metavar="ZONE",
                   help="generic layout: IANA time zone of the source's local times (default UTC), "
                        "e.g. Asia/Shanghai; converted to UTC and recorded")
    p.add_argument("--year", metavar="YYYY", help="generic layout: the year of dates whose --ts-format has none")
    p.add_argument("--duplicates", choices=("auto", "drop", "keep"), default="auto",
                   help="identical rows: drop all but one, or keep them (default auto: keep at day "
                        "resolution, where they are legitimate repeats, drop otherwise)")
    p.add_argument("--replace", action="store_true", help="overwrite a dataset of the same name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ingest)

    p = with_db(sub.add_parser("datasets", help="list datasets"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_datasets)

    p = with_db(sub.add_parser("quality", help="data quality report of a dataset"))
    p.add_argument("--dataset", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_quality)

    p = sub.add_parser("synth", help="write a seeded synthetic log with known intent")
    p.add_argument("--users", type=int, required=True)
    p.add_argument("--days", type=float, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help=".csv/.csv.gz (taobao layout) or .parquet")
    p.add_argument("--fmt", choices=("auto", "taobao", "parquet"), default="auto")
    p.add_argument("--truth", help="where to write the true purchase probabilities (parquet/csv)")
    p.set_defaults(func=cmd_synth)

    p = with_db(sub.add_parser("pretrain", help="pre-train a Transformer encoder on every user's events "
                                                "(masked event modelling; no labels needed)"))
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True, help="encoder directory; a killed run keeps a checkpoint beside it, "
                                                "in <out>.checkpoint, and the same command resumes from it")
    p.add_argument("--epochs", type=_positive_int, default=4, help="passes over the sequences (default 4)")
    p.add_argument("--hashed-vocab", action="store_true",
                   help="map items and categories by stable hash only, so the encoder transfers to other datasets")
    p.add_argument("--preset", choices=tuple(PRESETS), default="balanced",
                   help="encoder size (core.modeling.pipeline.PRESETS); fine-tune with the same")
    p.add_argument("--max-len", type=_positive_int, default=100, help="events per user sequence")
    p.add_argument("--step", default="1d", help="distance between cutoffs, back from the last event (default 1d)")
    p.add_argument("--until", default=None,
                   help="read no event after this time (ISO, UTC); for an honest test, the first evaluation cutoff")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=cmd_pretrain)

    p = with_db(sub.add_parser("train", help="train an intent model on a dataset"))
    p.add_argument("--dataset", required=True)
    p.add_argument("--model", choices=MODEL_KINDS, default="transformer")
    p.add_argument("--horizon", default="1d", help="label horizon: 30min, 6h, 1d, 7d ...")
    p.add_argument("--scope", choices=("any", "category"), default="any")
    p.add_argument("--lookback", default=None, help="history window before each cutoff (default: all)")
    p.add_argument("--max-len", type=int, default=100, help="events per user sequence")
    p.add_argument("--preset", choices=tuple(PRESETS), default="balanced",
                   help="model size and training budget (core.modeling.pipeline.PRESETS)")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    p.add_argument("--search", type=int, default=0, help="hyper-parameter search trials")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="model directory (default models/saved/<dataset>-<model>-<horizon>); "
                                               "a killed run keeps a checkpoint beside it, in <out>.checkpoint, "
                                               "and the same command resumes from it")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="torch CPU threads for the Transformer (default: torch's choice)")
    p.add_argument("--refit", action="store_true",
                   help="after evaluating on the test window, fit again on every window up to the latest "
                        "(same budget) and save that model; its card keeps the evaluated fit's test figures")
    p.add_argument("--label-share", type=float, default=1.0,
                   help="share of training users whose labels are used (label-efficiency runs; default 1)")
    p.add_argument("--distill", type=_weights, default=None, metavar="W[,W...]",
                   help="the Transformer's training targets: (1 - W) x label + W x an out-of-fold GBDT's "
                        "probability, 0 <= W < 1; 0 = the labels alone (default: the preset's; fast 0.5, balanced and "
                        "thorough 0.5,0.7); "
                        "several weights (0.5,0.7): one fit each, the best validation PR-AUC is kept")
    p.add_argument("--aux-cart", type=_weights, default=None, metavar="W[,W...]",
                   help="multi-task: a second, training-only head predicts whether the user carts within the "
                        "horizon, its loss added at weight W >= 0 (default: the preset's, 0 = none); several "
                        "weights (0,0.5): after the teacher weight is chosen, one fit each, the best validation "
                        "PR-AUC is kept")
    p.add_argument("--compare-random-split", action="store_true",
                   help="also measure a random 80/20 split of the same rows, to show how much it over-states "
                        "quality against the time split")
    p.add_argument("--init", default=None, metavar="DIR",
                   help="start the Transformer from a pre-trained encoder (`python -m core pretrain --out DIR`)")
    p.add_argument("--freeze", choices=("none", "embeddings", "all"), default="none",
                   help="with --init: keep the encoder's event embeddings (or the whole encoder) fixed")
    p.add_argument("--spark", default=None, metavar="MASTER",
                   help="build the sequences and features on Apache Spark from the store's files: local[N], "
                        "local-cluster[W,C,MB] or spark://HOST:7077 (pip install -r requirements-scale.txt)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="print a saved model's test-window metrics (validation beside them)")
    p.add_argument("--model", required=True)
    p.add_argument("--json", action="store_true")
    p.add_argument("--compare-random-split", action="store_true",
                   help="print the random 80/20 split's figures beside the time split's (when trained with them)")
    p.add_argument("--against", metavar="DIR",
                   help="another saved model of the same dataset and label: print this model's lead over it "
                        "on the test users both scored, with paired bootstrap intervals")
    p.set_defaults(func=cmd_evaluate)

    p = with_db(sub.add_parser("score", help="score every user of a dataset"))
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", help="FILE.csv or FILE.parquet (default: CSV on stdout)")
    p.set_defaults(func=cmd_score)

    p = with_db(sub.add_parser("explain", help="why the model scores one user as it does"))
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--method", choices=EXPLAIN_METHODS, default="all",
                   help="attribution method (default all: every method the model supports)")
    p.add_argument("--max-k", type=_positive_int, default=10,
                   help="faithfulness curve: remove the top k = 1..MAX_K events (default 10)")
    p.add_argument("--random-draws", type=_positive_int, default=20,
                   help="faithfulness curve: random deletions averaged per k (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random deletions")
    p.add_argument("--json", action="store_true",
                   help="JSON: score, summary, events with one column per method, and the faithfulness "
                        "curve (k, drop per method and random, random_drop_std)")
    p.set_defaults(func=cmd_explain)

    p = with_db(sub.add_parser("drift", help="drift between a model's training window and the latest data "
                                             "(exit code 3 when a measure is over the threshold)"))
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True, help="the dataset whose latest window is checked")
    p.add_argument("--threshold", type=float, default=0.25,
                   help="PSI at which a measure counts as drift (default 0.25; 0.1 is the watch level)")
    p.add_argument("--window", default=None,
                   help="window length, e.g. 7d (default: the span of the model's training windows)")
    p.add_argument("--top", type=_positive_int, default=15, help="measures listed, worst first (default 15)")
    p.add_argument("--json", action="store_true", help="the whole report as JSON")
    p.set_defaults(func=cmd_drift)
    p = with_db(sub.add_parser("report", help="write a self-contained HTML report of a model on a dataset"))
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True, help="the HTML file to write (opens offline; plotly embedded once)")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="cutoff probability the test-window performance is measured at (default 0.5)")
    p.add_argument("--cohort-top", type=float, default=5.0,
                   help="the cohort section's top X %% of the scoring run (default 5)")
    p.add_argument("--driver-users", type=_positive_int, default=200,
                   help="users sampled for the global drivers (default 200)")
    p.set_defaults(func=cmd_report)

    p = with_db(sub.add_parser("outlook", help="expected purchasers per category over the next horizon "
                                               "(a category-scope model)"))
    p.add_argument("--model", required=True, help="a model trained with --scope category")
    p.add_argument("--dataset", required=True)
    p.add_argument("--top", type=_positive_int, default=20, help="categories shown, most expected first (default 20)")
    p.add_argument("--level", type=float, default=0.9, help="the interval's coverage (default 0.9)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_outlook)

    p = with_db(sub.add_parser("update", help="append new events, warm-start the current model, promote it when "
                                              "no worse on the newest test window, re-score (nightly)"))
    p.add_argument("--dataset", required=True, help="the dataset to append to")
    p.add_argument("--file", required=True, help="the new events (same layouts as ingest)")
    p.add_argument("--model", default=None, metavar="DIR",
                   help="the current model (default: the newest model trained on the dataset in the models folder)")
    p.add_argument("--format", choices=LAYOUTS, default=None,
                   help="layout of the new file (default: the one the dataset was first ingested with)")
    p.add_argument("--map", action="append", type=_key_value, metavar="FIELD=COLUMN",
                   help="generic layout: column map (default: the dataset's recorded one)")
    p.add_argument("--behavior-map", action="append", type=_key_value, metavar="SOURCE=BEHAVIOR",
                   help="generic layout: behaviour map (default: the dataset's recorded one)")
    p.add_argument("--ts-format", metavar="FORMAT", help="generic layout: strptime format of the ts column")
    p.add_argument("--tz", metavar="ZONE", help="generic layout: IANA time zone of the source's local times")
    p.add_argument("--year", metavar="YYYY", help="generic layout: the year of dates whose --ts-format has none")
    p.add_argument("--duplicates", choices=("auto", "drop", "keep"), default="auto",
                   help="identical rows within the file, as for ingest; rows equal to a stored event in "
                        "(user_id, item_id, category, behavior, ts) are always dropped")
    p.add_argument("--epochs", type=_positive_int, default=None, help="override the model's preset's epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="torch CPU threads for the Transformer (default: torch's choice)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_update)

    p = with_db(sub.add_parser("export", help="write model.onnx beside a model, checked against torch on its "
                                              "test window (max |dp| <= 1e-5); scoring then uses ONNX Runtime"))
    p.add_argument("--model", required=True, metavar="DIR", help="the model directory (transformer or ensemble)")
    p.add_argument("--dataset", required=True, help="the dataset whose test window checks the export")
    p.set_defaults(func=cmd_export)
    p = with_db(sub.add_parser("serve", help="answer score and explain requests over HTTP (FastAPI on uvicorn)"))
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", default=None,
                   help="where stored users are looked up when a request names none (default: the model's)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_positive_int, default=8000)
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="torch / ONNX Runtime threads per request (default: torch's choice; 1 suits concurrent load)")
    p.set_defaults(func=cmd_serve)
    p = with_db(sub.add_parser("realized", help="did the predicted buyers buy: each scoring run whose horizon has "
                                                "passed, against what happened (exit code 3 when flagged)"))
    p.add_argument("--model", required=True, metavar="DIR", help="the model directory (or its model id)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--top", type=float, default=5.0, help="the top X %% of each run measured (default 5)")
    p.add_argument("--json", action="store_true", help="the whole report as JSON")
    p.set_defaults(func=cmd_realized)

    p = with_db(sub.add_parser("check", help="verify the store: every committed segment whole, writes in progress "
                                             "(exit code 1 on a problem)"))
    p.add_argument("--collect", action="store_true",
                   help="also delete files of writes whose process died and of long-replaced segments")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_check)

    p = with_db(sub.add_parser("migrate", help="copy a single-file DuckDB database of an earlier IntentLens into "
                                               "the store, one write per dataset"))
    p.add_argument("--from", dest="source", required=True, metavar="FILE", help="the old .duckdb file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_migrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("Cancelled.", file=sys.stderr)
        return 130
    except IntentLensError as err:
        print(str(err), file=sys.stderr)
        return 2
