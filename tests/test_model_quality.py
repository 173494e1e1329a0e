"""Model quality against the best achievable: on a synthetic log whose true purchase probabilities
are known, the Transformer's ROC-AUC must reach 95 % of the Bayes-optimal AUC on the same rows.
(bench/quality.py runs the same comparison larger, with every model kind.)"""
from __future__ import annotations

import pandas as pd
import pytest

from core.data.ingest import ingest_file
from core.data.store import Store
from core.modeling.labels import LabelSpec
from core.modeling.pipeline import load_validation, train_model
from core.modeling.synth import SynthConfig, compare_with_truth, generate, truth_plan

CONFIG = SynthConfig(users=6000, days=8, seed=11, n_items=5000, n_categories=60)


@pytest.mark.slow
def test_transformer_reaches_95_percent_of_the_bayes_auc(tmp_path):
    generate(CONFIG, tmp_path / "events.csv", truth_out=tmp_path / "truth.csv")
    truth = pd.read_csv(tmp_path / "truth.csv")
    with Store(tmp_path / "db.duckdb") as store:
        ingest_file(store, tmp_path / "events.csv", dataset="syn")
        result = train_model(store, "syn", kind="transformer", spec=LabelSpec(horizon="1d"),
                             preset="fast", seed=0, out=tmp_path / "model",
                             plan=truth_plan(CONFIG, n_train=4))
    report = compare_with_truth(load_validation(result.model_dir), truth)
    print(report)
    assert report["rows"] > 1000 and report["positives"] > 50
    assert report["ratio"] >= 0.95, report
