"""The HTML report: its sections and numbers against the card and the evaluation rows, escaping,
self-containment (plotly.js once, nothing from the network), the CLI, and Chromium drawing every
figure of the file offline."""
from __future__ import annotations

import math
import shutil
from html.parser import HTMLParser

import pytest

from core.cli import main
from core.data.store import Store
from core.errors import DataError, ModelError, NotFoundError
from core.insight.evaluation import at_cutoff, evaluate_model
from core.insight.report import FIGURES_META, SECTIONS, build_report
from tests.app_util import tiny_app_data
from tests.browser_util import CHROMIUM, CHROMIUM_ARGS, needs_chromium
from tests.event_rows import clear_scores, copy_store

THRESHOLD, TOP, USERS = 0.3, 10.0, 30


class Tags(HTMLParser):
    """Every start tag with its attributes (script bodies are not parsed as tags)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The tiny scored installation (a 'fast' Transformer, scope any) and its report."""
    db, saved = tiny_app_data(tmp_path_factory)
    mine = tmp_path_factory.mktemp("report") / "db.duckdb"
    copy_store(db, mine)
    store = Store(mine)
    model = saved / "tiny"
    built = build_report(store, model, "synth", threshold=THRESHOLD, cohort_top=TOP, driver_users=USERS)
    yield store, model, built
    store.close()


def test_sections_and_numbers_match_the_card(world):
    store, model, built = world
    page = built.html
    from models.artifact import load_card

    card = load_card(model)
    positions = [page.index(f'<section id="{name}">') for name in SECTIONS]
    assert positions == sorted(positions) and built.sections == list(SECTIONS)
    assert card["model_id"] in page and card["created_at"] in page
    for name in ("roc_auc", "pr_auc", "log_loss", "brier", "ece"):   # test window, then validation
        test, valid = card["metrics"][name], card["valid_metrics"][name]
        assert f"{test['value']:.4f} [{test['low']:.4f}, {test['high']:.4f}]" in page
        assert f"{valid['value']:.4f}" in page
    for cutoff in card["cutoffs"]["train_cutoffs"] + [card["cutoffs"]["valid_cutoff"], card["cutoffs"]["test_cutoff"]]:
        assert str(cutoff) in page
    # at the cutoff: the same precision, recall and F1 as the evaluation of the test rows
    cut = at_cutoff(evaluate_model(model), "probability", THRESHOLD)
    for name in ("precision", "recall", "f1"):
        assert f"<td>{name}</td><td class=\"num\">{cut.values[name]:.4f}</td>" in page
    # the cohort: the top 10 % of the scoring run's users
    (scored,) = store.fetchone("SELECT count(*) FROM scores WHERE model_id = ?", [card["model_id"]])
    assert f'<td>users in the cohort</td><td class="num">{math.ceil(scored * TOP / 100):,}</td>' in page
    assert "top 10 %" in page and built.notes == []
    assert f"of {USERS} sampled users" in page


def test_the_file_is_self_contained_with_plotly_once(world):
    _, _, built = world
    page = built.html
    assert page.count("plotly.js v") == 1                      # the library, inline, once
    parser = Tags()
    parser.feed(page)
    scripts = [attrs for tag, attrs in parser.tags if tag == "script"]
    assert scripts and not any("src" in attrs for attrs in scripts)
    for _, attrs in parser.tags:
        for key in ("src", "href"):
            value = (attrs.get(key) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//")), (key, value)
    graphs = [attrs for tag, attrs in parser.tags if tag == "div" and "plotly-graph-div" in (attrs.get("class") or "")]
    meta = [attrs for tag, attrs in parser.tags if tag == "meta" and attrs.get("name") == FIGURES_META]
    # 4 performance figures (confusion, PR, ROC, reliability) and 3 driver charts
    assert len(graphs) == built.figures == int(meta[0]["content"]) == 7
    assert f"holds {built.figures} figures" in page


def test_text_is_escaped_and_a_missing_run_is_explained(world, tmp_path, tmp_path_factory):
    _, model, _ = world
    odd = tmp_path / "m<b>&x"
    shutil.copytree(model, odd)
    db, _ = tiny_app_data(tmp_path_factory)
    copy_store(db, tmp_path / "copy.duckdb")
    with Store(tmp_path / "copy.duckdb") as copy:
        clear_scores(copy)
        built = build_report(copy, odd, "synth", driver_users=10)
    assert "m&lt;b&gt;&amp;x" in built.html and "m<b>&x" not in built.html
    assert any("has not scored" in note for note in built.notes)
    assert 'class="note"' in built.html and built.figures == 7


def test_bad_inputs_are_refused(world, tmp_path):
    store, model, _ = world
    with pytest.raises(DataError):
        build_report(store, model, "synth", threshold=1.5)
    with pytest.raises(DataError):
        build_report(store, model, "synth", cohort_top=0)
    with pytest.raises(NotFoundError):
        build_report(store, model, "nope")
    with pytest.raises(ModelError):
        build_report(store, tmp_path, "synth")


def test_cli_report(world, tmp_path, capsys):
    store, model, _ = world
    out = tmp_path / "r" / "report.html"
    args = ["report", "--model", str(model), "--dataset", "synth", "--db", str(store.path),
            "--driver-users", "10"]
    assert main([*args, "--out", str(out), "--threshold", "0.4", "--cohort-top", "20"]) == 0
    assert "7 figures" in capsys.readouterr().out
    assert "Test-window performance at cutoff 0.400" in out.read_text(encoding="utf-8")
    assert main([*args, "--out", str(tmp_path / "bad.html"), "--threshold", "2"]) == 2
    assert not (tmp_path / "bad.html").exists()


@pytest.mark.browser
@needs_chromium
def test_chromium_draws_every_figure_offline(world, tmp_path):
    """Debian's Chromium opens the file with every network request refused: each of the report's
    figures becomes a drawn plotly graph."""
    from playwright.sync_api import sync_playwright

    _, _, built = world
    path = built.write(tmp_path / "report.html")
    refused: list[str] = []

    def only_files(route):
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1300, "height": 900}, offline=True)
            context.route("**/*", only_files)
            tab = context.new_page()
            errors: list[str] = []
            tab.on("pageerror", lambda exc: errors.append(str(exc)))
            tab.goto(path.as_uri())
            drawn = ("Array.from(document.querySelectorAll('.js-plotly-plot'))"
                     ".filter(g => g.querySelector('svg.main-svg') && (g._fullData || []).length > 0).length")
            tab.wait_for_function(f"{drawn} >= {built.figures}", timeout=60_000)
            assert tab.locator(".js-plotly-plot").count() == tab.evaluate(drawn) == built.figures
            assert tab.evaluate("typeof window.Plotly") == "object"
        finally:
            browser.close()
    assert errors == [] and refused == []


def test_an_ensemble_report_shows_its_lead_over_each_member():
    """The shipped demo ensemble: the performance section carries the paired table, and its cells
    are the numbers ensemble_lead computes (the report is only a view of them)."""
    from pathlib import Path

    from core.insight.evaluation import ensemble_lead
    from core.insight.report import _Figures, _performance_section

    model = Path(__file__).resolve().parents[1] / "models" / "saved" / "demo-ensemble"
    section = _performance_section(model, THRESHOLD, _Figures())
    lead = ensemble_lead(model).table
    assert f"on the same {2900:,} test users" in section
    for row in lead.itertuples():
        assert f"<td>{row.against}</td><td>{row.metric}</td>" in section
        assert f"[{row.low:+.4f}, {row.high:+.4f}]" in section
    assert "Lower is better for log loss" in section
