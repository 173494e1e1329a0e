"""Top-category accuracy of a category-scope model on its test window against a most-viewed baseline.

Generates a small synthetic log, trains a fast GBDT of scope ``category`` and prints, for k = 1 and
3, the share of buyers (users who bought in some category in the test window) whose k offered
categories include a bought one: the model's k highest-probability categories against the user's k
most-viewed categories before the cutoff (:func:`core.insight.realized.offer_hit_rate`).

    python bench/offers.py [--users 2000] [--days 9] [--seed 3]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    import torch

    from core.data.ingest import ingest_file
    from core.data.store import Store
    from core.insight.realized import offer_hit_rate
    from core.modeling.labels import LabelSpec
    from core.modeling.pipeline import load_evaluation, train_model
    from core.modeling.synth import SynthConfig, generate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--days", type=float, default=9)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        config = SynthConfig(users=args.users, days=args.days, seed=args.seed, n_items=3000, n_categories=30)
        generate(config, tmp / "log.csv")
        spec = LabelSpec(horizon="1d", scope="category", max_train_cutoffs=2)
        with Store(tmp / "db.duckdb") as store:
            ingest_file(store, tmp / "log.csv", dataset="d")
            result = train_model(store, "d", kind="gbdt", spec=spec, preset="fast", seed=0, out=tmp / "m",
                                 models_root=tmp)
            rows = load_evaluation(result.model_dir, "test")
            print(f"{args.users:,} users, {args.days:g} days, seed {args.seed}: test window "
                  f"{rows['cutoff'].iloc[0]} ({len(rows):,} user-category rows)")
            print(f"{'k':>3} {'buyers':>7} {'model':>7} {'most viewed':>12}")
            for k in (1, 3):
                hit = offer_hit_rate(store, "d", rows, spec.horizon, k=k)
                print(f"{k:>3} {hit['users']:>7.0f} {hit['model']:>7.1%} {hit['baseline']:>12.1%}")


if __name__ == "__main__":
    main()
