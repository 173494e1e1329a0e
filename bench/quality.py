"""Model quality, measured: every model kind against the Bayes-optimal score on a synthetic log,
and side by side with bootstrap intervals on the real Taobao samples (time split).

    python bench/quality.py                      # synthetic 8,000 users + real samples
    python bench/quality.py --users 20000 --epochs 8 --skip-real

Synthetic: the generator writes the true purchase probability of every (user, cutoff); the ratio
column is model ROC-AUC / Bayes ROC-AUC on the same validation rows (goal for the Transformer:
>= 0.95). Real: the Taobao two-hour slice with a 30-minute horizon (history up to 10:40 +08:00,
label = a buy by 11:10) and the head + tail users (nine-day histories) with a one-day horizon.
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

from core.data.ingest import ingest_file  # noqa: E402
from core.modeling.labels import LabelSpec  # noqa: E402
from core.modeling.pipeline import load_validation, train_model  # noqa: E402
from core.data.store import Store  # noqa: E402
from core.modeling.synth import SynthConfig, compare_with_truth, generate, truth_plan  # noqa: E402

KINDS = ("transformer", "gbdt", "logreg", "ensemble")


def _interval(metrics: dict, name: str) -> str:
    m = metrics[name]
    return f"{m['value']:.3f} [{m['low']:.3f}, {m['high']:.3f}]"


def synthetic(tmp: Path, users: int, epochs: int, preset: str) -> pd.DataFrame:
    config = SynthConfig(users=users, days=9, seed=21)
    generate(config, tmp / "syn.csv", truth_out=tmp / "truth.csv")
    truth = pd.read_csv(tmp / "truth.csv")
    rows = []
    with Store(tmp / "syn.duckdb") as store:
        ingest_file(store, tmp / "syn.csv", dataset="syn")
        for kind in KINDS:
            started = time.perf_counter()
            result = train_model(store, "syn", kind=kind, spec=LabelSpec(horizon="1d"), preset=preset,
                                 epochs=epochs, out=tmp / f"syn-{kind}", plan=truth_plan(config, n_train=5))
            report = compare_with_truth(load_validation(result.model_dir), truth)
            rows.append({"kind": kind, "rows": int(report["rows"]), "positives": int(report["positives"]),
                         "roc_auc": round(report["model_roc_auc"], 4), "bayes_roc_auc": round(report["bayes_roc_auc"], 4),
                         "ratio": round(report["ratio"], 4), "pr_auc": round(report["model_pr_auc"], 4),
                         "bayes_pr_auc": round(report["bayes_pr_auc"], 4),
                         "seconds": round(time.perf_counter() - started, 1)})
    return pd.DataFrame(rows)


def real(tmp: Path, epochs: int, preset: str) -> pd.DataFrame:
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
                result = train_model(store, name, kind=kind, spec=LabelSpec(horizon=horizon),
                                     preset=preset, epochs=epochs, out=tmp / f"{name}-{kind}")
                m = result.metrics
                rows.append({"dataset": name, "horizon": horizon, "kind": kind,
                             "valid_rows": int(m["n"]), "positives": int(m["positives"]),
                             "roc_auc [95% CI]": _interval(m, "roc_auc"),
                             "pr_auc [95% CI]": _interval(m, "pr_auc"),
                             "log_loss": round(m["log_loss"]["value"], 4)})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--preset", default="balanced")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    args = parser.parse_args()
    pd.set_option("display.width", 200)
    with tempfile.TemporaryDirectory(prefix="intentlens-quality-") as tmp:
        if not args.skip_synthetic:
            print(f"== synthetic log, {args.users:,} users, 9 days, horizon 1d (model vs Bayes-optimal) ==")
            print(synthetic(Path(tmp), args.users, args.epochs, args.preset).to_string(index=False))
        if not args.skip_real:
            print("\n== real Taobao samples, time split, bootstrap 95% intervals ==")
            print(real(Path(tmp), args.epochs, args.preset).to_string(index=False))


if __name__ == "__main__":
    main()
