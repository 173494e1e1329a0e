"""Model quality, measured: every model kind against the Bayes-optimal score on a synthetic log,
and side by side with bootstrap intervals on the real Taobao samples (time split).

    python bench/quality.py                      # synthetic 8,000 users + real samples
    python bench/quality.py --users 20000 --epochs 8 --skip-real

Synthetic: the generator writes the true purchase probability of every (user, cutoff); the ratio
column is model ROC-AUC / Bayes ROC-AUC on the same validation rows (goal for the Transformer:
>= 0.95). Real: the Taobao two-hour slice with a 30-minute horizon (history up to 10:40 +08:00,
label = a buy by 11:10) and the head + tail users (nine-day histories) with a one-day horizon.

Each kind is trained ``--seeds`` times (at least 5; seeds 0, 1, ...): a score is the median over the
seeds with the lowest and highest beside it, so one lucky initialisation cannot make the table. The
real samples also show the bootstrap 95 % interval of the seed-0 model (the spread the validation
rows alone allow).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.timing import MIN_REPEATS, Stat  # noqa: E402
from core.data.ingest import ingest_file  # noqa: E402
from core.data.store import Store  # noqa: E402
from core.modeling.labels import LabelSpec  # noqa: E402
from core.modeling.pipeline import load_validation, train_model  # noqa: E402
from core.modeling.synth import SynthConfig, compare_with_truth, generate, truth_plan  # noqa: E402

KINDS = ("transformer", "gbdt", "logreg", "ensemble")


def _interval(metrics: dict, name: str) -> str:
    m = metrics[name]
    return f"{m['value']:.3f} [{m['low']:.3f}, {m['high']:.3f}]"


def _over_seeds(values: list[float]) -> str:
    return Stat.of(values).text(".4f")


def synthetic(tmp: Path, users: int, epochs: int, preset: str, seeds: int) -> pd.DataFrame:
    config = SynthConfig(users=users, days=9, seed=21)
    generate(config, tmp / "syn.csv", truth_out=tmp / "truth.csv")
    truth = pd.read_csv(tmp / "truth.csv")
    rows = []
    with Store(tmp / "syn.duckdb") as store:
        ingest_file(store, tmp / "syn.csv", dataset="syn")
        for kind in KINDS:
            runs: dict[str, list[float]] = {"roc_auc": [], "ratio": [], "pr_auc": [], "seconds": []}
            for seed in range(seeds):
                started = time.perf_counter()
                result = train_model(store, "syn", kind=kind, spec=LabelSpec(horizon="1d"), preset=preset,
                                     epochs=epochs, seed=seed, out=tmp / f"syn-{kind}-{seed}",
                                     plan=truth_plan(config, n_train=5))
                report = compare_with_truth(load_validation(result.model_dir), truth)
                runs["roc_auc"].append(report["model_roc_auc"])
                runs["ratio"].append(report["ratio"])
                runs["pr_auc"].append(report["model_pr_auc"])
                runs["seconds"].append(time.perf_counter() - started)
            rows.append({"kind": kind, "rows": int(report["rows"]), "positives": int(report["positives"]),
                         "roc_auc": _over_seeds(runs["roc_auc"]),
                         "bayes_roc_auc": round(report["bayes_roc_auc"], 4),
                         "ratio": _over_seeds(runs["ratio"]), "pr_auc": _over_seeds(runs["pr_auc"]),
                         "bayes_pr_auc": round(report["bayes_pr_auc"], 4),
                         "seconds": round(Stat.of(runs["seconds"]).median, 1)})
    return pd.DataFrame(rows)


def real(tmp: Path, epochs: int, preset: str, seeds: int) -> pd.DataFrame:
    head_tail = tmp / "head_tail.csv"
    with head_tail.open("w") as out:
        for name in ("UserBehavior_head.csv", "UserBehavior_tail.csv"):
            out.write((ROOT / "sample_data" / "taobao" / name).read_text())
    cases = [("taobao_2h", ROOT / "sample_data/taobao/UserBehavior_slice_2h.csv", "30min"),
             ("taobao_head_tail", head_tail, "1d")]
    rows = []
    with Store(tmp / "real.duckdb") as store:
        for name, path, horizon in cases:
            ingest_file(store, path, dataset=name)
            for kind in KINDS:
                metrics = [train_model(store, name, kind=kind, spec=LabelSpec(horizon=horizon), preset=preset,
                                       epochs=epochs, seed=seed, out=tmp / f"{name}-{kind}-{seed}").metrics
                           for seed in range(seeds)]
                first = metrics[0]
                rows.append({"dataset": name, "horizon": horizon, "kind": kind,
                             "valid_rows": int(first["n"]), "positives": int(first["positives"]),
                             "roc_auc over seeds": _over_seeds([m["roc_auc"]["value"] for m in metrics]),
                             "pr_auc over seeds": _over_seeds([m["pr_auc"]["value"] for m in metrics]),
                             "roc_auc seed 0 [95% CI]": _interval(first, "roc_auc"),
                             "log_loss": round(Stat.of([m["log_loss"]["value"] for m in metrics]).median, 4)})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--preset", default="balanced")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--seeds", type=int, default=MIN_REPEATS, help=f"trainings per kind (at least {MIN_REPEATS})")
    args = parser.parse_args()
    seeds = max(args.seeds, MIN_REPEATS)
    pd.set_option("display.width", 200)
    with tempfile.TemporaryDirectory(prefix="intentlens-quality-") as tmp:
        if not args.skip_synthetic:
            print(f"== synthetic log, {args.users:,} users, 9 days, horizon 1d (model vs Bayes-optimal); "
                  f"median (min–max) over {seeds} seeds ==")
            print(synthetic(Path(tmp), args.users, args.epochs, args.preset, seeds).to_string(index=False))
        if not args.skip_real:
            print(f"\n== real Taobao samples, time split; median (min–max) over {seeds} seeds ==")
            print(real(Path(tmp), args.epochs, args.preset, seeds).to_string(index=False))


if __name__ == "__main__":
    main()
