"""A training run killed with SIGKILL resumes from its checkpoint when started again, and says so.

The CLI test kills a real ``python -m core train`` process once its first epoch's checkpoint is on
disk, runs the same command again, and compares the result with an uninterrupted run of the same
command (seed and one torch thread): on CPU the resumed run is bitwise the same model (every epoch
draws its shuffling, augmentation and dropout from (seed, epoch), and the checkpoint carries the
optimizer and scheduler state), so the validation metrics and scores are compared for equality.
The job test runs the Train page's path: ``train_model`` in the job registry's worker with the job
context's callbacks, where the "resumed" line lands in the job's log.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from core.data.ingest import ingest_file
from core.data.store import Store
from core.modeling.labels import LabelSpec
from core.modeling.pipeline import checkpoint_dir_for, load_evaluation, train_model
from core.modeling.synth import SynthConfig, generate
from core.modeling.training import CHECKPOINT_FILE
from core.runtime.jobs import JobContext, JobRegistry
from models.artifact import load_card
from tests.event_rows import copy_store

EPOCHS = 5
SPEC = LabelSpec(horizon="1d", max_len=30)


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic log (300 users, 6 days) in a DuckDB file; tests copy it."""
    root = tmp_path_factory.mktemp("resume")
    generate(SynthConfig(users=300, days=6, seed=3), root / "synth.csv")
    with Store(root / "db.duckdb") as store:
        ingest_file(store, root / "synth.csv", dataset="syn")
    return root / "db.duckdb"


def _train_command(db: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "core", "train", "--db", str(db), "--dataset", "syn", "--preset", "fast",
            "--epochs", str(EPOCHS), "--horizon", SPEC.horizon, "--max-len", str(SPEC.max_len),
            "--seed", "7", "--threads", "1", "--out", str(out)]


def _without_seconds(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def test_cli_training_killed_with_sigkill_resumes_with_the_same_command(database: Path, tmp_path: Path) -> None:
    db = copy_store(database, tmp_path / "db")
    reference_db = db                          # both processes read the one store at the same time
    out, reference_out = tmp_path / "model", tmp_path / "reference"
    checkpoint = checkpoint_dir_for(out) / CHECKPOINT_FILE
    # the uninterrupted run of the same command goes alongside, on its own copy of the data
    with (tmp_path / "reference.log").open("w") as reference_log, \
            (tmp_path / "victim.log").open("w") as victim_log:
        reference = subprocess.Popen(_train_command(reference_db, reference_out), stdout=subprocess.DEVNULL,
                                     stderr=reference_log)
        victim = subprocess.Popen(_train_command(db, out), stdout=subprocess.DEVNULL, stderr=victim_log)
        deadline = time.monotonic() + 240
        while not checkpoint.is_file():
            assert victim.poll() is None, f"training ended before its first checkpoint:\n" \
                                          f"{(tmp_path / 'victim.log').read_text()}"
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.01)
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=60) == -signal.SIGKILL
        reference_code = reference.wait(timeout=600)
    assert reference_code == 0, (tmp_path / "reference.log").read_text()
    killed_at = int(torch.load(checkpoint, weights_only=True)["epoch"])
    assert 1 <= killed_at < EPOCHS                  # killed in the middle: there is something to resume
    assert not (out / "card.json").exists()

    again = subprocess.run(_train_command(db, out), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"resumed from the checkpoint at epoch {killed_at} of {EPOCHS}" in again.stderr
    assert "resumed" not in (tmp_path / "reference.log").read_text()
    assert not checkpoint.parent.exists()           # removed once the model is saved
    assert not checkpoint_dir_for(reference_out).exists()

    card, reference_card = load_card(out), load_card(reference_out)
    assert len(card["history"]) >= killed_at + 1
    assert _without_seconds(card["history"]) == _without_seconds(reference_card["history"])
    assert card["metrics"] == reference_card["metrics"]
    np.testing.assert_array_equal(load_evaluation(out)["score"].to_numpy(),
                                  load_evaluation(reference_out)["score"].to_numpy())


def test_train_page_job_resumes_and_its_log_says_so(database: Path, tmp_path: Path) -> None:
    """The Train page's job: a run stopped after its first epoch (here by Cancel) is started again with
    the same settings; the job's log carries the "resumed" line and its epochs list the whole run."""
    db = copy_store(database, tmp_path / "db")
    out = tmp_path / "model"
    registry = JobRegistry()

    def job(stop_after: int | None) -> Callable[[JobContext], str]:
        def run(ctx: JobContext) -> str:
            def on_epoch(record: dict[str, float]) -> None:
                ctx.on_epoch(record)
                if stop_after is not None and record["epoch"] >= stop_after:
                    ctx.cancel.cancel()

            with Store(db) as store:
                result = train_model(store, "syn", kind="transformer", spec=SPEC, preset="fast", epochs=3,
                                     seed=1, out=out, progress=ctx.progress, cancel=ctx.cancel, log=ctx.log,
                                     on_epoch=on_epoch, threads=1)
            return str(result.model_dir)
        return run

    try:
        first = registry.wait(registry.submit("train", job(stop_after=1)), timeout=600)
        assert first.status == "cancelled", first.error
        assert (checkpoint_dir_for(out) / CHECKPOINT_FILE).is_file()
        assert not any("resumed" in line for line in first.log)
        second = registry.wait(registry.submit("train", job(stop_after=None)), timeout=600)
    finally:
        registry.shutdown()
    assert second.status == "done", second.error
    assert "resumed from the checkpoint at epoch 1 of 3" in second.log
    assert [record["epoch"] for record in second.epochs] == [1, 2, 3]   # restored epoch first
    assert second.epochs[0] == first.epochs[0]
    assert not checkpoint_dir_for(out).exists()
