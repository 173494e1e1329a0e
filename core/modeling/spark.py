"""Sequences and aggregate features on Apache Spark, for logs beyond one machine.

The store keeps events as Parquet segments (:mod:`core.data.store`), so Spark reads them in place:
the files of the catalog's committed version (a consistent snapshot; other processes may keep
writing). Spark spreads the work: it repartitions the events by ``user_id`` so every event of a user
lands in one task, and ships the example rows to every task as a broadcast. Each task loads its
users' events into a private in-memory DuckDB store and runs the single-machine code on them
(:func:`core.modeling.sequences.build_sequences`, :func:`core.modeling.features.build_features`):
both read only each user's own events up to each cutoff, so the result is the single-machine
result, row for row (``tests/test_spark.py`` checks it on a 2-worker local cluster). The driver
collects the arrays through Arrow and reorders them into the examples' order.

Spark is used as it is (``pyspark``): a ``local[N]`` master on one machine, ``local-cluster[2,1,1024]``
for a 2-worker cluster on one machine, ``spark://HOST:7077`` or YARN/Kubernetes through
``spark-submit`` beyond it (README, "When one machine is not enough"). Object-store paths
(``s3a://...``) go through Spark's own Hadoop readers; that was not tested offline.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from core.data.store import Store
from core.errors import DataError
from core.modeling.labels import LabelSpec
from core.modeling.sequences import PAD, SequenceBatch, Vocab, _id_dtype
from core.settings import PROJECT_ROOT

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

_EVENT_COLUMNS = ("dataset", "user_id", "item_id", "category", "behavior", "ts", "session_id", "price",
                  "brand", "query")
_ROW = "il_row"              # the example's position, carried through Spark


def spark_session(master: str = "local[2]", *, app: str = "intentlens", executor_memory: str = "1g",
                  config: dict[str, str] | None = None) -> SparkSession:
    """A SparkSession for this package's jobs: Arrow transfers on, UTC session time zone (the store's
    timestamps are UTC), the workers running this Python."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # the workers import this package: from this checkout on a local cluster (spark-submit --py-files
    # ships it to a remote one)
    path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    builder = (SparkSession.builder.master(master).appName(app)
               .config("spark.executorEnv.PYTHONPATH", path)
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.executor.memory", executor_memory)
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "8"))
    for key, value in (config or {}).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def event_files(store: Store, dataset: str) -> list[str]:
    """The Parquet files of ``dataset``'s events in the store's committed version (absolute paths)."""
    if store.catalog is None:
        raise DataError("Spark reads a shared store's files; this store is private (in memory).",
                        title="No files to read", hint="Open the store folder (--db DIR).")
    store.dataset(dataset)                      # NotFoundError names the datasets there are
    snap = store.catalog.snapshot()
    return [str(store.path / s.file) for s in snap.segments if s.table == "events" and s.dataset == dataset]


def _task(dataset: str, spec_dict: dict[str, Any], vocab_dict: dict[str, Any] | None, features: bool,
          examples_bc: Any) -> Any:
    """The function each Spark task runs on the batches of one partition (all events of its users)."""
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from core.modeling.features import build_features
        from core.modeling.sequences import build_sequences

        events = pd.concat(list(batches), ignore_index=True)
        if events.empty:
            return
        examples: pd.DataFrame = examples_bc.value
        mine = examples[examples["user_id"].isin(set(events["user_id"]))]
        if mine.empty:
            return
        spec = LabelSpec.from_dict(spec_dict)
        with Store(":memory:", threads=1) as private:
            with private.write(dataset, "spark task") as w:
                w.cur.register("il_task_events", events[list(_EVENT_COLUMNS)])
                w.add("events", "SELECT * FROM il_task_events")
            keys = mine.drop(columns=[_ROW]).reset_index(drop=True)
            columns: dict[str, Any] = {_ROW: mine[_ROW].to_numpy()}
            if vocab_dict is not None:
                batch = build_sequences(private, dataset, keys, Vocab.from_dict(vocab_dict), spec)
                for name in SequenceBatch.ARRAYS:
                    if name == "mask":
                        continue                       # it is behavior != PAD
                    array = getattr(batch, name).astype(np.int32)
                    columns[name] = list(array.reshape(len(batch), -1))
            if features:
                frame = build_features(private, dataset, keys, spec)
                columns["features"] = list(frame.to_numpy(np.float32))
        yield pd.DataFrame(columns)
    return run


def _schema(sequences: bool, features: bool) -> str:
    parts = [f"{_ROW} long"]
    if sequences:
        parts += [f"{name} array<int>" for name in SequenceBatch.ARRAYS if name != "mask"]
    if features:
        parts.append("features array<float>")
    return ", ".join(parts)


def build_on_spark(spark: SparkSession, files: Sequence[str], dataset: str, examples: pd.DataFrame,
                   spec: LabelSpec, *, vocab: Vocab | None = None, features: bool = True,
                   partitions: int | None = None) -> tuple[SequenceBatch | None, pd.DataFrame | None]:
    """Sequences (when ``vocab`` is given) and aggregate features (``features``) of ``examples`` built
    on ``spark`` from the event files ``files`` (:func:`event_files`), equal to what
    ``build_sequences`` / ``build_features`` return on one machine, in the examples' order."""
    from pyspark.sql import functions as F

    from core.modeling.features import feature_names
    from core.modeling.sequences import QUERY_TOKENS

    if vocab is None and not features:
        raise DataError("nothing to build: pass a vocabulary (sequences) or features=True.")
    if not files:
        raise DataError(f"dataset {dataset!r} has no event files.", title="No events")
    keyed = examples.reset_index(drop=True).assign(**{_ROW: np.arange(len(examples), dtype=np.int64)})
    examples_bc = spark.sparkContext.broadcast(keyed)
    try:
        events = spark.read.parquet(*files).where(F.col("dataset") == dataset).select(*_EVENT_COLUMNS)
        n_parts = partitions or max(2 * spark.sparkContext.defaultParallelism, len(files))
        task = _task(dataset, spec.to_dict(), vocab.to_dict() if vocab is not None else None, features,
                     examples_bc)
        table = (events.repartition(n_parts, "user_id")
                 .mapInPandas(task, schema=_schema(vocab is not None, features))
                 .toPandas())
    finally:
        examples_bc.unpersist()
    if len(table) != len(keyed):
        raise DataError(f"Spark returned {len(table)} rows for {len(keyed)} examples.", title="Rows lost")
    table = table.sort_values(_ROW, kind="stable").reset_index(drop=True)
    batch = None
    if vocab is not None:
        length = int(spec.max_len)
        dtypes: dict[str, type[np.generic] | np.dtype[Any]] = {
            "behavior": np.int8, "item": _id_dtype(vocab.n_items - 1), "category": _id_dtype(vocab.n_categories - 1),
            "gap": _id_dtype(vocab.gap_buckets), "hour": np.int8, "query": _id_dtype(vocab.query_buckets)}
        arrays = {}
        for name, dtype in dtypes.items():
            stacked = np.stack(table[name].to_numpy()).astype(dtype)
            arrays[name] = stacked.reshape(len(table), length, QUERY_TOKENS) if name == "query" else stacked
        target = None
        if spec.scope == "category":
            from core.modeling.sequences import map_ids

            target = map_ids(keyed["category"], vocab.categories, vocab.category_buckets).astype(
                _id_dtype(vocab.n_categories - 1))
        batch = SequenceBatch(keys=examples.reset_index(drop=True), mask=arrays["behavior"] != PAD,
                              target_category=target, **arrays)
    feats = None
    if features:
        feats = pd.DataFrame(np.stack(table["features"].to_numpy()).astype(np.float32),
                             columns=feature_names(spec), index=examples.index)
    return batch, feats
