"""The whole pipeline at scale on a synthetic log: wall time, rows/s and peak RSS of every stage.

    python bench/e2e.py --users 20000
    python bench/e2e.py --users 1000000            # the full Taobao size: ~100M events (issue 13)
    python bench/e2e.py --users 100000 --workdir /data/tmp --keep --json-out e2e.json

One stage after another, in one process, each timed once (a stage at this size takes minutes, so a
single run is the measurement; repeat the command to see how much the machine moves it):

  generate  ``core.modeling.synth.generate``: a Taobao-layout CSV (``--sessions-per-day`` 2.35 gives
            about 100 events per user over 9 days, Taobao's 100M events / 988k users), written a
            chunk of users at a time
  ingest    ``core.data.ingest.ingest_file`` into a fresh store (a folder of Parquet segments) in the work directory
  quality   ``core.data.quality.quality_report`` on the dataset
  train     ``core.modeling.pipeline.train_model`` with its default kind and preset, one epoch, every
            core; the preset caps the training rows (``max_train_rows``, printed), the validation and
            test rows are built whole
  score     ``core.insight.cohorts.score_dataset``: every user at the dataset's last event
  cohort    the top 5 %: ``cohort_summary`` (with the model's test rows, as the Cohorts page) and
            ``export_cohort`` to Parquet
  explain   ``core.insight.drivers.explain`` (what the Explain page calls, with its first methods)
            for 100 users of the exported cohort

Rows are what the stage went through (events, example rows, users; the unit is printed). CPU s is
the user + system time the stage used (all threads): on a shared machine wall time grows with the
load, CPU time much less, so their ratio shows how much of the wall time was waiting. Peak RSS is
the process tree's (this process and any children), sampled every 20 ms during the stage, so it
includes what earlier stages still hold. The memory goal is the issue's 4 GB (4e9 bytes); DuckDB
itself is held to ``get_settings().memory_limit`` (``INTENTLENS_MEMORY_LIMIT``, 3GB by default) and
spills beyond it.

Files go to ``--workdir`` (default: a fresh folder under the system temp dir; never inside the
repository): the log, the store, the model and the export in ``<workdir>/run/``, deleted at
the end unless ``--keep``; the table as JSON in ``<workdir>/e2e.json`` (or ``--json-out``). Ctrl-C
stops after the running stage's clean-up, prints the stages done and exits with 130.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.timing import PeakRSS  # noqa: E402  (needs REPO on sys.path)

DATASET = "e2e"
SESSIONS_PER_DAY = 2.35      # synth sessions per user per day -> ~100 events per user over 9 days (Taobao)
COHORT_TOP_PERCENT = 5.0
EXPLAIN_USERS = 100
MEMORY_GOAL = 4 * 10 ** 9    # bytes: the 4 GB
GIB = 1024 ** 3
STAGES = ("generate", "ingest", "quality", "train", "score", "cohort", "explain")


@dataclass
class Stage:
    """One measured stage."""

    stage: str
    seconds: float
    rows: int
    unit: str                 # what ``rows`` counts
    cpu_seconds: float        # user + system CPU of this process and its waited-for children
    peak_rss: int             # bytes, process tree, during the stage
    rss_before: int           # bytes, process tree, when the stage began
    note: str = ""

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"rows_per_s": self.rows_per_s, "peak_rss_gib": self.peak_rss / GIB}


class Interrupted(Exception):
    """Ctrl-C arrived; raised from the signal handler so a DuckDB query or a torch loop stops too."""


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    raise Interrupted


def _cpu_seconds() -> float:
    t = psutil.Process().cpu_times()
    return float(t.user + t.system + t.children_user + t.children_system)


def measure(stage: str, unit: str, fn: Callable[[], tuple[int, str]], done: list[Stage],
            echo: Callable[[str], None]) -> None:
    """Run ``fn`` (returning its row count and a note) under a peak-RSS sampler and append the result."""
    echo(f"[{stage}] ...")
    rss = PeakRSS(children=True)
    rss.start()
    before = rss.peak
    began, cpu = time.perf_counter(), _cpu_seconds()
    try:
        rows, note = fn()
    finally:
        seconds, cpu = time.perf_counter() - began, _cpu_seconds() - cpu
        rss.stop()
    done.append(Stage(stage, seconds, rows, unit, cpu, rss.peak, before, note))
    echo(f"[{stage}] {seconds:,.1f} s (CPU {cpu:,.1f} s), {rows:,} {unit}, peak RSS {rss.peak / GIB:.2f} GiB"
         + (f" ({note})" if note else ""))


def run_pipeline(users: int, days: float, seed: int, run_dir: Path, done: list[Stage],
                 echo: Callable[[str], None], sessions_per_day: float = SESSIONS_PER_DAY) -> None:
    """Every stage in order on a fresh log and store in ``run_dir``; results appended to ``done``."""
    import pyarrow.parquet as pq

    from core.data.ingest import ingest_file
    from core.data.quality import quality_report
    from core.data.store import Store
    from core.insight import drivers
    from core.insight.cohorts import CohortSpec, cohort_summary, export_cohort, score_dataset
    from core.modeling.pipeline import PRESETS, load_evaluation, train_model
    from core.modeling.synth import SynthConfig, generate

    events_path = run_dir / "events.csv"
    config = SynthConfig(users=users, days=days, seed=seed, sessions_per_day=sessions_per_day)

    def gen() -> tuple[int, str]:
        summary = generate(config, events_path, fmt="taobao")
        size = events_path.stat().st_size / GIB
        return summary.events, f"{summary.events / users:.1f} events/user, {size:.2f} GiB CSV"

    measure("generate", "events", gen, done, echo)
    threads = os.cpu_count() or 1
    with Store(run_dir / "e2e.duckdb") as store:
        def ingest() -> tuple[int, str]:
            rep = ingest_file(store, events_path, dataset=DATASET)
            return rep.rows_stored, f"{rep.rows_quarantined:,} quarantined, {rep.duplicates_dropped:,} dropped"

        measure("ingest", "events", ingest, done, echo)
        events_path.unlink()        # the database holds the log now: free the disk

        def quality() -> tuple[int, str]:
            report = quality_report(store, DATASET)
            return int(store.dataset(DATASET)["rows_stored"]), f"status {report.status}"

        measure("quality", "events", quality, done, echo)

        defaults = inspect.signature(train_model).parameters
        preset_name, kind = str(defaults["preset"].default), str(defaults["kind"].default)
        preset = PRESETS[preset_name]
        model_box: dict[str, Any] = {}

        def train() -> tuple[int, str]:
            result = train_model(store, DATASET, epochs=1, threads=threads, out=run_dir / "model", seed=seed)
            model_box["dir"], model_box["id"] = result.model_dir, result.card["model_id"]
            rows = result.card["rows"]
            n = sum(int(rows[s]) for s in ("train", "valid", "test") if s in rows)
            auc = result.metrics.get("roc_auc", {}).get("value", float("nan"))
            return n, (f"{kind}/{preset_name}, {threads} threads; train {int(rows.get('train', 0)):,} rows "
                       f"(cap max_train_rows {preset.max_train_rows:,}), valid {int(rows.get('valid', 0)):,}, "
                       f"test {int(rows.get('test', 0)):,}; test ROC-AUC {auc:.3f}")

        measure("train", "example rows", train, done, echo)
        model_dir, model_id = model_box["dir"], model_box["id"]

        def score() -> tuple[int, str]:
            frame = score_dataset(store, model_dir, DATASET)
            return len(frame), f"mean score {frame['score'].mean():.3f}"

        measure("score", "users", score, done, echo)
        export_path = run_dir / "cohort.parquet"

        def cohort() -> tuple[int, str]:
            spec = CohortSpec(mode="top", top_percent=COHORT_TOP_PERCENT)
            summary = cohort_summary(store, model_id, DATASET, spec, held_out=load_evaluation(model_dir))
            stamp = export_cohort(store, model_id, DATASET, spec, export_path)
            return summary.total, f"{summary.size:,} users in the cohort, {int(stamp['rows']):,} exported"

        measure("cohort", "scored users", cohort, done, echo)

        def explain() -> tuple[int, str]:
            ids = pq.read_table(export_path, columns=["user_id"]).column("user_id").to_pylist()
            chosen = list(dict.fromkeys(str(u) for u in ids))[:EXPLAIN_USERS]
            methods = drivers.quick_methods(model_dir)
            for user in chosen:
                drivers.explain(store, model_dir, DATASET, user, methods)
            return len(chosen), f"methods {', '.join(methods)}"

        measure("explain", "users", explain, done, echo)


def table(done: list[Stage]) -> str:
    """The printed table, with the total, the slowest stage and the memory goal check."""
    lines = [f"{'stage':<9} {'wall s':>9} {'CPU s':>9} {'rows':>13} {'unit':<13} {'rows/s':>11} "
             f"{'peak RSS GiB':>12}"]
    for s in done:
        rate = f"{s.rows_per_s:>11,.0f}" if s.rows_per_s >= 100 else f"{s.rows_per_s:>11.2f}"
        lines.append(f"{s.stage:<9} {s.seconds:>9,.1f} {s.cpu_seconds:>9,.1f} {s.rows:>13,} {s.unit:<13} {rate} "
                     f"{s.peak_rss / GIB:>12.2f}")
    if done:
        total = sum(s.seconds for s in done)
        slowest = max(done, key=lambda s: s.seconds)
        peak = max(s.peak_rss for s in done)
        cpu = sum(s.cpu_seconds for s in done)
        lines.append(f"{'total':<9} {total:>9,.1f} {cpu:>9,.1f}" + " " * 40 + f"{peak / GIB:>12.2f}")
        lines.append(f"slowest stage: {slowest.stage} ({slowest.seconds:,.1f} s, "
                     f"{100 * slowest.seconds / max(total, 1e-9):.0f} % of the total)")
        lines.append(f"memory goal {MEMORY_GOAL / GIB:.2f} GiB (4 GB): peak {peak / GIB:.2f} GiB -> "
                     + ("met" if peak <= MEMORY_GOAL else "MISSED")
                     + f" (largest in stage {max(done, key=lambda s: s.peak_rss).stage})")
    return "\n".join(lines)


def _inside_repo(path: Path) -> bool:
    return path.resolve().is_relative_to(REPO)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, required=True, help="synthetic users (1000000: ~100M events)")
    ap.add_argument("--days", type=float, default=9, help="length of the log in days (default 9)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sessions-per-day", type=float, default=SESSIONS_PER_DAY,
                    help=f"synth sessions per user per day (default {SESSIONS_PER_DAY}: ~100 events/user in 9 days)")
    ap.add_argument("--workdir", type=Path, default=None, help="where to write (default: a new temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the log, database, model and export")
    ap.add_argument("--json-out", type=Path, default=None, help="the table as JSON (default <workdir>/e2e.json)")
    args = ap.parse_args(argv)
    if args.users < 1:
        ap.error("--users must be >= 1")
    for path in (args.workdir, args.json_out):
        if path is not None and _inside_repo(path):
            ap.error(f"{path} is inside the repository; the bench writes only outside it")
    return args


def main(argv: list[str] | None = None) -> int:
    from core.settings import get_settings

    args = parse_args(argv)
    if args.workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="intentlens-e2e-"))
    else:
        workdir = args.workdir
        workdir.mkdir(parents=True, exist_ok=True)
    run_dir = workdir / "run"
    if run_dir.exists():
        print(f"{run_dir} exists: remove it or pick another --workdir", file=sys.stderr)
        return 2
    run_dir.mkdir()
    json_out = args.json_out or workdir / "e2e.json"

    def echo(line: str) -> None:
        print(line, flush=True)

    settings = get_settings()
    echo(f"e2e: {args.users:,} users, {args.days:g} days, seed {args.seed}; {os.cpu_count()} cores, "
         f"{psutil.virtual_memory().total / GIB:.1f} GiB RAM; DuckDB memory_limit {settings.memory_limit}; "
         f"work dir {run_dir}")
    done: list[Stage] = []
    previous = signal.signal(signal.SIGINT, _on_sigint)
    interrupted = False
    try:
        run_pipeline(args.users, args.days, args.seed, run_dir, done, echo, args.sessions_per_day)
    except Interrupted:
        interrupted = True
    except BaseException as err:
        # DuckDB turns a Python exception raised during a query into its own error: tell by the cause
        if not isinstance(err.__cause__ or err.__context__, Interrupted) and "Interrupted" not in str(err):
            raise
        interrupted = True
    finally:
        signal.signal(signal.SIGINT, previous)
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
    if interrupted:
        stage = STAGES[len(done)] if len(done) < len(STAGES) else "the end"
        echo(f"interrupted during {stage}; stages done:")
    echo("")
    echo(table(done))
    payload = {"users": args.users, "days": args.days, "seed": args.seed, "sessions_per_day": args.sessions_per_day,
               "cores": os.cpu_count(), "memory_limit": settings.memory_limit, "memory_goal_bytes": MEMORY_GOAL,
               "complete": len(done) == len(STAGES), "total_seconds": sum(s.seconds for s in done),
               "stages": [s.to_dict() for s in done]}
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(payload, indent=2) + "\n")
    echo(f"table as JSON: {json_out}" + (f"; files kept in {run_dir}" if args.keep else ""))
    return 130 if interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
