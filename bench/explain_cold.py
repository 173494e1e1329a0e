"""Benchmark: the Explain page's first explanation in a fresh process (what a new server pays).

  python bench/explain_cold.py [--repeats 5]

Each repeat starts a new Python process that sets up the shipped demo (first-start data and scores
in a temporary store, not timed), then times one ``core.insight.drivers.explain`` of the demo
Transformer's top-scored user: once with the methods the page shows first (``quick_methods``: IG and
attention) and, in another fresh process, with every method (SHAP too). The reference is the second
call of the same explanation in the same process, when imports, the model and SHAP's numba kernels
are already warm: the ratio says how much of the first call is one-off start-up cost. Medians of
``--repeats`` processes (>= 5), with the fastest and slowest beside them.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import MIN_REPEATS, Stat

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, tempfile, time
from core.data.store import Store
from core.insight import drivers as D
from core.runtime.samples import DEMO_DATASET, ensure_default_data, ensure_demo_scores
from models.artifact import load_card

model_dir = "models/saved/demo"
store = Store(tempfile.mkdtemp() + "/bench.duckdb")
ensure_default_data(store)
ensure_demo_scores(store)
user = D.first_user(store, load_card(model_dir)["model_id"], DEMO_DATASET)
methods = D.quick_methods(model_dir) if sys.argv[1] == "quick" else D.user_methods(model_dir)
start = time.perf_counter()
D.explain(store, model_dir, DEMO_DATASET, user, methods)
first = time.perf_counter() - start
start = time.perf_counter()
D.explain(store, model_dir, DEMO_DATASET, user, methods)
warm = time.perf_counter() - start
print(json.dumps({"first": first, "warm": warm, "methods": list(methods)}))
"""


def run(kind: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, kind], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS)
    args = parser.parse_args()
    repeats = max(MIN_REPEATS, args.repeats)
    for kind in ("quick", "all"):
        runs = [run(kind) for _ in range(repeats)]
        first, warm = Stat.of([r["first"] for r in runs]), Stat.of([r["warm"] for r in runs])
        print(f"{kind:>5} ({', '.join(runs[0]['methods'])}): first call {first.text('.2f', ' s')}, "
              f"warm call {warm.text('.2f', ' s')}, first / warm = {first.median / warm.median:.1f}x")


if __name__ == "__main__":
    main()
