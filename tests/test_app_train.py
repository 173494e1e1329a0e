"""AppTest of the Train page through app.py: eligibility card, leaderboard, a background job that
finishes and one that is cancelled, adding models from a directory or a .zip (and refusing bad
ones without changing anything), deleting, and demo mode without any write control.

The expensive part is done once per module: the demo log ingested into a temp database and one
small GBDT trained on it. Each test gets its own copy of the models folder (``INTENTLENS_MODELS``
is pointed at it), so nothing is ever written into the repository's models/saved.
"""
from __future__ import annotations

import io
import json
import shutil
import time
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.data.ingest import ingest_file
from core.data.store import Store
from core.modeling.labels import LabelSpec, check_eligibility, plan_cutoffs
from core.modeling.pipeline import PRESETS, train_model
from pages.shared import cached
from tests.app_util import open_app_page, point_app_at

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 90
SPEC = LabelSpec(horizon="1d", max_train_cutoffs=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(database, models folder) with the demo dataset and one trained GBDT."""
    folder = tmp_path_factory.mktemp("train-page")
    db, saved = folder / "app.duckdb", folder / "saved"
    with Store(db) as store:
        ingest_file(store, ROOT / "sample_data" / "demo" / "events.csv.gz", dataset="demo")
        train_model(store, "demo", kind="gbdt", spec=SPEC, preset="fast", out=saved / "demo-gbdt-1d")
    return db, saved


@pytest.fixture
def env(trained, tmp_path, monkeypatch) -> tuple[Path, Path]:
    db, saved = trained
    models = tmp_path / "saved"
    shutil.copytree(saved, models)
    point_app_at(monkeypatch, db, models)
    return db, models


def train_page() -> AppTest:
    return open_app_page("pages/views/train.py", TIMEOUT)


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def errors(at: AppTest) -> str:
    return " ".join(e.value for e in at.error)


def make_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def model_zip(model_dir: Path, folder: str | None = "shared-gbdt") -> bytes:
    prefix = f"{folder}/" if folder else ""
    return make_zip({prefix + p.name: p.read_bytes() for p in model_dir.iterdir() if p.is_file()})


def test_eligibility_card_and_leaderboard(env):
    db, _ = env
    at = train_page()
    shown = metrics(at)
    with Store(db) as store:
        expected = check_eligibility(store, "demo", LabelSpec(horizon="1d", max_train_cutoffs=3))
    assert shown["Training positives"] == f"{expected.train_pos:,}"
    assert shown["Validation negatives"] == f"{expected.valid_neg:,}"
    assert shown["Test positives"] == f"{expected.test_pos:,}" and expected.test_pos > 0
    assert shown["Test negatives"] == f"{expected.test_neg:,}"
    assert shown["Training windows"] == "3"                       # the fast size's cutoffs
    assert any("Enough to train" in s.value for s in at.success)
    assert not at.button(key="train_start").disabled
    board = next(d.value for d in at.dataframe if "PR-AUC" in d.value.columns)
    assert board["model"].str.startswith("demo-gbdt-1d").all() and len(board) == 1
    assert board["PR-AUC 95% CI"].iloc[0].startswith("[")
    assert 0.5 < board["ROC-AUC"].iloc[0] <= 1.0
    assert "PR-AUC on the test window, with 95 % intervals" in next(c.proto.spec for c in at.get("plotly_chart"))
    assert board["measured on"].tolist() == ["test"] and board["validation ROC-AUC"].notna().all()
    assert any(c.value == PRESETS["fast"].describe() for c in at.caption)
    at.radio(key="train_preset").set_value("balanced").run()
    assert any(f"{PRESETS['balanced'].epochs} epochs at most" in c.value for c in at.caption)
    # the size tries two teacher weights and lets the validation window choose: the form says so
    assert any("Transformer targets 50% or 70% (chosen on the validation window)" in c.value for c in at.caption)
    assert at.number_input(key="train_distill").placeholder == "size's 0.5 or 0.7"
    assert at.number_input(key="train_aux_cart").placeholder == "size's 0 or 0.5"
    assert any("a cart head beside the buy head tried, kept when the validation window prefers it" in c.value
               for c in at.caption)
    with Store(db) as store:     # the 9-day log fits fewer one-day windows before validation and test
        windows = len(plan_cutoffs(store, "demo", LabelSpec(
            horizon="1d", max_train_cutoffs=PRESETS["balanced"].max_train_cutoffs)).train_cutoffs)
    assert metrics(at)["Training windows"] == str(windows) and 3 < windows <= PRESETS["balanced"].max_train_cutoffs
    # Every control says what it does.
    for widget in [*at.selectbox, *at.multiselect, *at.radio, *at.number_input, *at.text_input]:
        assert widget.help, widget.label


def test_eligibility_follows_the_label_and_refuses_junk(env):
    at = train_page()
    before = metrics(at)["Validation positives"]
    at.selectbox(key="train_horizon").set_value("6h").run()
    assert not at.exception
    assert metrics(at)["Validation positives"] != before
    at.selectbox(key="train_horizon").set_value("other…").run()
    at.text_input(key="train_horizon_text").set_value("soon").run()
    assert not at.exception
    assert "Bad duration" in errors(at)
    assert not any(b.key == "train_start" for b in at.button)      # no button without a label


def test_a_training_job_finishes_and_its_model_becomes_selectable(env):
    _, models = env
    at = train_page()
    at.multiselect(key="train_kinds").set_value(["logreg"]).run()
    at.button(key="train_start").click().run()
    assert not at.exception, at.exception
    (job_id,) = at.session_state["train_jobs"]
    state = cached.get_jobs().wait(job_id, timeout=120)
    assert state.status == "done", (state.status, state.error, state.log)
    at.run()
    assert not at.exception, at.exception
    assert (models / "demo-logreg-1d" / "card.json").is_file()
    assert "ROC-AUC" in metrics(at) and metrics(at)["PR-AUC"].startswith("0.")
    assert "Test-window ROC-AUC" in next(m.help for m in at.metric if m.label == "ROC-AUC")
    board = next(d.value for d in at.dataframe if "PR-AUC" in d.value.columns)
    assert sorted(board["kind"]) == ["gbdt", "logreg"]
    at.button(key=f"use_{job_id}").click().run()
    assert at.sidebar.selectbox(key="model_picker").value == str(models / "demo-logreg-1d")


def test_cancel_stops_a_running_job(env):
    _, models = env
    at = train_page()
    at.multiselect(key="train_kinds").set_value(["transformer"]).run()
    at.radio(key="train_preset").set_value("fast").run()
    at.button(key="train_start").click().run()
    assert not at.exception, at.exception
    (job_id,) = at.session_state["train_jobs"]
    at.button(key=f"cancel_{job_id}").click().run()                # the page's own handler
    state = cached.get_jobs().wait(job_id, timeout=120)
    assert state.status == "cancelled", (state.status, state.error)
    at.run()
    assert not at.exception, at.exception
    assert any("Cancelled" in w.value for w in at.warning)
    assert not any(b.key == f"cancel_{job_id}" for b in at.button)
    assert not (models / "demo-transformer-1d").exists()           # nothing was saved


@pytest.mark.parametrize("name, content, why", [
    ("no-card.zip", make_zip({"m/vocab.json": b"{}", "m/weights.pt": b"x"}), "has no card.json"),
    ("escape.zip", make_zip({"../card.json": b"{}"}), "points outside the model folder"),
    ("absolute.zip", make_zip({"/tmp/card.json": b"{}"}), "points outside the model folder"),
    ("extra.zip", make_zip({"card.json": b"{}", "run.sh": b"rm -rf /"}), "unexpected file"),
    ("plain.zip", b"this is not an archive", "not a readable .zip archive"),
    ("wrong-format.zip", make_zip({"card.json": b'{"format": "other/9", "kind": "gbdt"}'}),
     "model format"),
], ids=["no-card", "escape", "absolute", "extra", "plain", "wrong-format"])   # zips hold the time: fixed ids
def test_a_bad_model_upload_is_refused_and_changes_nothing(env, name, content, why):
    _, models = env
    before = listing(models)
    at = train_page()
    at.file_uploader(key="model_zip").set_value((name, content, "application/zip")).run()
    at.button(key="add_model_zip").click().run()
    assert not at.exception, at.exception
    assert why in errors(at), errors(at)
    assert listing(models) == before
    assert len(at.sidebar.selectbox(key="model_picker").options) == 1


def test_a_model_zip_is_added_once(env):
    _, models = env
    content = model_zip(models / "demo-gbdt-1d")
    at = train_page()
    at.file_uploader(key="model_zip").set_value(("upload.zip", content, "application/zip")).run()
    at.button(key="add_model_zip").click().run()
    assert not at.exception and not at.error, (at.exception, errors(at))
    assert (models / "shared-gbdt" / "card.json").is_file()
    assert any("Added model **shared-gbdt**" in s.value for s in at.success)
    assert len(at.sidebar.selectbox(key="model_picker").options) == 2
    # The same name again is refused with the project's message; nothing changes.
    before = listing(models)
    at.file_uploader(key="model_zip").set_value(("upload.zip", content, "application/zip")).run()
    at.button(key="add_model_zip").click().run()
    assert "Name taken" in errors(at) and listing(models) == before


def test_add_from_a_directory_and_delete(env, tmp_path, monkeypatch):
    _, models = env
    allowed = tmp_path / "shared-models"
    monkeypatch.setenv("INTENTLENS_MODEL_DIRS", str(allowed))
    outside = tmp_path / "elsewhere" / "other-gbdt"
    shutil.copytree(models / "demo-gbdt-1d", outside)
    before = listing(models)
    at = train_page()
    # a folder outside the models root and the allowed folders is refused without saying whether it exists
    for probe in (str(outside), str(tmp_path / "nothing-here"), str(allowed / ".." / "elsewhere" / "other-gbdt")):
        at.text_input(key="model_dir_path").set_value(probe).run()
        at.button(key="add_model_dir").click().run()
        assert "Folder not allowed" in errors(at), (probe, errors(at))
    assert listing(models) == before
    shutil.copytree(outside, allowed / "other-gbdt")
    at.text_input(key="model_dir_path").set_value(str(allowed)).run()
    at.button(key="add_model_dir").click().run()
    assert "not an IntentLens model" in errors(at)
    at.text_input(key="model_dir_path").set_value(str(allowed / "other-gbdt")).run()
    at.button(key="add_model_dir").click().run()
    assert not at.error, errors(at)
    assert (models / "other-gbdt" / "card.json").is_file()
    at.selectbox(key="delete_model_pick").set_value(str(models / "other-gbdt")).run()
    at.checkbox(key="delete_model_sure").check().run()
    at.button(key="delete_model").click().run()
    assert not at.exception and not at.error
    assert not (models / "other-gbdt").exists() and (models / "demo-gbdt-1d").exists()


def test_demo_mode_has_no_train_upload_or_delete_controls(env, monkeypatch):
    monkeypatch.setenv("INTENTLENS_DEMO", "1")
    at = train_page()
    assert not at.exception
    keys = {b.key for b in at.button}
    assert not keys & {"train_start", "add_model_dir", "add_model_zip", "delete_model"}
    assert len(at.file_uploader) == 0
    assert not [w for w in at.text_input if w.key == "model_dir_path"]
    assert any("Demo mode" in i.value for i in at.info)
    board = next(d.value for d in at.dataframe if "PR-AUC" in d.value.columns)   # still visible
    assert len(board) == 1


@pytest.mark.slow
def test_a_cancelled_training_resumes_from_its_checkpoint(env):
    """Cancel after the first epoch, train again: the job picks up the checkpoint and says so."""
    _, models = env
    at = train_page()
    at.multiselect(key="train_kinds").set_value(["transformer"]).run()
    at.number_input(key="train_epochs").set_value(2).run()
    at.number_input(key="train_distill").set_value(0.0).run()        # the labels alone: no teacher
    at.number_input(key="train_aux_cart").set_value(0.5).run()       # a cart head, resumed with the rest
    at.button(key="train_start").click().run()
    (first,) = at.session_state["train_jobs"]
    registry = cached.get_jobs()
    deadline = time.monotonic() + 300
    while not registry.snapshot(first).epochs and time.monotonic() < deadline:
        time.sleep(0.2)
    assert registry.snapshot(first).epochs, registry.snapshot(first).log
    at.button(key=f"cancel_{first}").click().run()
    assert registry.wait(first, timeout=300).status == "cancelled"
    at.run()
    assert any("start the same training again to resume" in w.value for w in at.warning)
    assert not (models / "demo-transformer-1d").exists()
    at.button(key="train_start").click().run()
    second = at.session_state["train_jobs"][-1]
    state = registry.wait(second, timeout=300)
    assert state.status == "done", (state.status, state.error, state.log)
    at.run()
    assert not at.exception, at.exception
    assert any("resumed from the checkpoint at epoch 1 of 2" in i.value for i in at.info), [i.value for i in at.info]
    assert [e["epoch"] for e in state.epochs] == [1, 2]          # epoch 1 replayed from the checkpoint
    assert (models / "demo-transformer-1d" / "card.json").is_file()
    assert not (models / "demo-transformer-1d.checkpoint").exists()
    card = json.loads((models / "demo-transformer-1d" / "card.json").read_text())
    assert card["train_config"]["distill"] == 0.0 and "teacher" not in card
    assert card["train_config"]["aux_cart"] == 0.5


def test_label_efficiency_refuses_a_folder_that_is_not_an_encoder(env, tmp_path):
    _, models = env
    at = train_page()
    before = listing(models)
    (tmp_path / "not-an-encoder").mkdir()
    at.text_input(key="train_le_encoder").set_value(str(tmp_path / "not-an-encoder")).run()
    at.button(key="train_le_start").click().run()
    assert not at.exception
    assert "pretrain.json" in errors(at) and "python -m core pretrain" in errors(at)
    assert "train_label_efficiency_job" not in at.session_state     # no job was started
    assert listing(models) == before


def test_models_timeline_shows_an_update_and_its_parent(env):
    """A promoted update written beside the trained GBDT (its lineage on the card): the timeline draws
    both models and the arrow between them, and its table names the parent."""
    from core.modeling.update import write_lineage
    from models.artifact import load_card

    _, models = env
    parent = load_card(models / "demo-gbdt-1d")
    child = models / "demo-gbdt-1d-v2"
    shutil.copytree(models / "demo-gbdt-1d", child)
    card = {**load_card(child), "model_id": "demo-gbdt-1d-v2-test", "created_at": "2099-01-01T00:00:00+00:00"}
    (child / "card.json").write_text(json.dumps(card))
    write_lineage(child, {"parent_id": parent["model_id"], "promoted": True, "reason": "promoted: no worse",
                          "data": {"events_added": 123, "duplicates_dropped": 4},
                          "metrics": {"candidate": {"roc_auc": {"value": 0.9}},
                                      "current": {"roc_auc": {"value": 0.8}}}})
    at = train_page()
    spec = next(c.proto.spec for c in at.get("plotly_chart") if "Models over time" in c.proto.spec)
    assert "update, promoted" in spec and "trained from scratch" in spec and "parent → child" in spec
    table = next(d.value for d in at.dataframe if "status" in d.value.columns)
    assert table["model_id"].tolist() == [parent["model_id"], "demo-gbdt-1d-v2-test"]
    assert table["status"].tolist() == ["trained", "promoted"]
    assert table["parent_id"].iloc[1] == parent["model_id"] and table["events_added"].iloc[1] == 123
    assert table["new_window_roc_auc"].iloc[1] == 0.9 and table["parent_new_window_roc_auc"].iloc[1] == 0.8
