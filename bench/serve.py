"""Benchmark: batch scoring with ONNX Runtime against eager torch, and the scoring service under load.

Goals (issue 10): ONNX Runtime >= 2.5x eager torch's users/s on the same model, inputs and threads;
the service answering a 100-event user at p99 <= 10 ms with 0 errors under bounded load on loopback.

  python bench/serve.py                          # the shipped demo Transformer on the demo log
  python bench/serve.py --requests 500 --repeats 5 --model models/saved/demo-gbdt

1. Batch scoring. The demo log is ingested into a temporary store and the model copied beside it; the
   copy is exported to ONNX (``core.serving.export.export_model``, checked against torch on its test
   window), so the shipped model is never touched. Every user of the dataset is scored at T = the last
   event from the same prebuilt sequences with ``LoadedModel.predict(engine="torch")`` and
   ``engine="onnx"``, ``--threads`` threads for both (ONNX Runtime's session takes torch's thread
   count), ``--repeats`` times each (at least 5), after one untimed warm-up call. Printed: users/s as
   median (fastest-slowest, n), the ratio of the medians, and the largest |dp| between the engines.
   When the export cannot be made (no ONNX support, a feature model), it says so and measures torch only.
2. The service. ``python -m core serve --model COPY --threads N`` runs in a subprocess on a free
   loopback port (the copy: ONNX Runtime when its export exists, as ``engine="auto"`` does); after
   ``--warmup`` untimed requests, ``--clients`` threads, each with its own httpx client, send
   ``--requests`` requests in all: POST /v1/score with the same user's newest ``--events`` events inline.
   Printed: the service's input path (``fast``: numpy, no DuckDB, for a transformer; ``sql``), requests/s
   over the whole run, latency p50/p99 seen by the clients and by the service itself (its request log,
   ``core.serving.requestlog``), and the error count (any answer but 200, or a failed connection). The
   clients run on the same machine as the service and share its cores.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.timing import MIN_REPEATS, Stat, rates, repeat  # noqa: E402
from core.data.ingest import ingest_file  # noqa: E402
from core.data.store import Store  # noqa: E402
from core.errors import IntentLensError  # noqa: E402
from core.modeling.labels import scoring_examples  # noqa: E402
from core.modeling.sequences import build_sequences  # noqa: E402
from core.serving.requestlog import default_log_path, read_request_log  # noqa: E402
from models.artifact import load_model  # noqa: E402

DEMO_LOG = ROOT / "sample_data" / "demo" / "events.csv.gz"
DATASET = "demo"


def export_copy(model_dir: Path, store: Store) -> str | None:
    """Export the copied model to ONNX; None when done, else why it could not be."""
    try:
        from core.serving.export import export_model
    except ImportError as err:
        return f"ONNX export not available ({err})."
    try:
        figures = export_model(model_dir, store=store, dataset=DATASET)
    except (IntentLensError, ImportError) as err:
        return f"ONNX export not available: {err}"
    print(f"exported model.onnx: max |dp| against torch on the {figures.get('split', 'test')} window "
          f"{figures.get('max_abs_diff', float('nan')):.2e} over {figures.get('rows', 0):,} rows")
    return None


def batch_scoring(model_dir: Path, store: Store, repeats: int, onnx_missing: str | None) -> None:
    model = load_model(model_dir)
    cutoff = store.dataset(DATASET)["ts_max"]
    examples = scoring_examples(store, DATASET, model.spec, cutoff)
    seq = build_sequences(store, DATASET, examples, model.vocab, model.spec) if model.vocab is not None else None
    if model.feature_names:
        from core.modeling.features import build_features

        feats = build_features(store, DATASET, examples, model.spec)
    else:
        feats = None
    n = len(examples)
    print(f"\n1. batch scoring: {n:,} users of {DATASET!r}, model {model.card['model_id']} ({model.kind}), "
          f"{_threads()} thread(s); users/s, median (fastest–slowest, n)")
    engines = ("torch",) if onnx_missing else ("torch", "onnx")
    results: dict[str, tuple[Stat, np.ndarray]] = {}
    for engine in engines:
        seconds, probs = repeat(lambda e=engine: model.predict(seq, feats, engine=e), repeats, warmup=1)
        results[engine] = (rates(n, seconds), probs)
        print(f"   {engine:<5} {results[engine][0].text(',.0f', ' users/s')}")
    if onnx_missing:
        print(f"   {onnx_missing}")
        return
    torch_rate, p_torch = results["torch"]
    onnx_rate, p_onnx = results["onnx"]
    print(f"   ONNX Runtime / torch: {onnx_rate.median / torch_rate.median:.2f}x (goal >= 2.5x); "
          f"max |dp| {float(np.max(np.abs(p_onnx - p_torch))):.2e}")


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def user_events(store: Store, n_events: int) -> tuple[str, list[dict[str, object]], str]:
    """The busiest user's newest ``n_events`` events as request JSON, and the dataset's last time."""
    cutoff = store.dataset(DATASET)["ts_max"]
    user = store.fetchone("SELECT user_id FROM events WHERE dataset = ? GROUP BY user_id "
                          "HAVING count(*) >= ? ORDER BY count(*), user_id LIMIT 1", [DATASET, n_events])
    if user is None:
        raise SystemExit(f"no user of {DATASET!r} has {n_events} events")
    frame = store.df("SELECT item_id, category, behavior::VARCHAR AS behavior, ts FROM events "
                     "WHERE dataset = ? AND user_id = ? ORDER BY ts DESC LIMIT ?", [DATASET, user[0], n_events])
    events: list[dict[str, object]] = [{"behavior": r.behavior, "item_id": r.item_id, "category": r.category,
               "ts": pd.Timestamp(str(r.ts)).isoformat()} for r in frame.iloc[::-1].itertuples()]
    return str(user[0]), events, pd.Timestamp(cutoff).isoformat()


def wait_ready(url: str, server: subprocess.Popen[bytes], limit: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the service exited with code {server.returncode}")
        try:
            if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the service did not answer /health within {limit:.0f} s")


def load_test(model_dir: Path, db: Path, body: dict[str, object], *, requests: int, clients: int,
              warmup: int, threads: int) -> None:
    """Run the service in a subprocess and send it ``requests`` copies of ``body`` from ``clients`` threads."""
    import httpx

    sent = body.get("events")
    n_events = len(sent) if isinstance(sent, list) else 0
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("INTENTLENS_API_KEY", None)
    server = subprocess.Popen([sys.executable, "-m", "core", "serve", "--model", str(model_dir), "--db", str(db),
                               "--port", str(port), "--threads", str(threads)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL)     # its stderr (failures) comes through
    try:
        wait_ready(url, server)
        payload = json.dumps(body).encode()
        headers = {"content-type": "application/json"}
        path = "?"
        with httpx.Client(base_url=url, timeout=30.0) as client:
            for _ in range(warmup):
                answer = client.post("/v1/score", content=payload, headers=headers)
                answer.raise_for_status()
                path = str(answer.json().get("path", "?"))
        log_path = default_log_path(db)
        logged_before = len(read_request_log(log_path))
        latencies: list[list[float]] = [[] for _ in range(clients)]
        errors = [0] * clients
        share = [requests // clients + (1 if i < requests % clients else 0) for i in range(clients)]
        start = threading.Barrier(clients + 1)

        def client_loop(i: int) -> None:
            with httpx.Client(base_url=url, timeout=30.0) as client:
                start.wait()
                for _ in range(share[i]):
                    began = time.perf_counter()
                    try:
                        ok = client.post("/v1/score", content=payload, headers=headers).status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    latencies[i].append(time.perf_counter() - began)
                    errors[i] += 0 if ok else 1

        workers = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
        for worker in workers:
            worker.start()
        start.wait()
        began = time.perf_counter()
        for worker in workers:
            worker.join()
        wall = time.perf_counter() - began
        seen = np.concatenate([np.asarray(x) for x in latencies]) * 1000.0
        time.sleep(0.5)                                   # the last log lines are flushed per line; be safe
        lines = read_request_log(log_path).iloc[logged_before:]
        served = lines.loc[lines["route"] == "/v1/score", "latency_ms"].to_numpy()
        print(f"\n2. service on loopback: {requests:,} requests from {clients} clients, one user of "
              f"{n_events:,} events inline (after {warmup} warm-up requests), {threads} thread(s), "
              f"inputs built by the {path} path")
        print(f"   {requests / wall:,.0f} requests/s over {wall:.2f} s; errors {sum(errors)} (goal 0)")
        print(f"   latency at the clients   p50 {np.percentile(seen, 50):.1f} ms   "
              f"p99 {np.percentile(seen, 99):.1f} ms (goal p99 <= 10 ms)")
        if len(served):
            print(f"   latency in the service   p50 {np.percentile(served, 50):.1f} ms   "
                  f"p99 {np.percentile(served, 99):.1f} ms   ({len(served):,} lines of its request log)")
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "saved" / "demo"),
                        help="the model to measure (copied; the original is not touched)")
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS, help="batch-scoring runs per engine (>= 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime threads (default 1)")
    parser.add_argument("--requests", type=int, default=2000, help="requests in the load test")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument("--events", type=int, default=100, help="events of the user sent inline")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests before the load test")
    parser.add_argument("--skip-service", action="store_true", help="measure batch scoring only")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        folder = Path(tmp)
        db = folder / "bench.duckdb"
        model_dir = folder / Path(args.model).name
        shutil.copytree(args.model, model_dir)
        print(f"preparing: the demo log in a temporary store, {Path(args.model).name} copied and exported ...")
        with Store(db) as store:
            ingest_file(store, DEMO_LOG, dataset=DATASET)
            missing = export_copy(model_dir, store)
            batch_scoring(model_dir, store, args.repeats, missing)
            user, events, cutoff = user_events(store, args.events)
            print(f"load-test user: {user!r}, newest {len(events)} events, scored at {cutoff}")
        if not args.skip_service:
            load_test(model_dir, db, {"events": events, "cutoff": cutoff}, requests=args.requests,
                      clients=args.clients, warmup=args.warmup, threads=args.threads)


if __name__ == "__main__":
    main()
