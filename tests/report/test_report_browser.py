"""The rendered report in real headless Chromium (Debian's, driven by playwright): values on
the page equal the records, plots have their marks, filters work, no network, no script runs
from model output. Screenshots are written next to the report (pytest's tmp dir)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def report(inputs, tmp_path_factory):
    from evalkit.report import make_report

    out = tmp_path_factory.mktemp("report")
    html, md = make_report([inputs.store, inputs.compare, inputs.analysis, inputs.finetune], out)
    assert 0 < len(md.read_text(encoding="utf-8")) < 65_536
    return html


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail("chromium is not installed (scripts/install-system-deps.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


class Page:
    """An opened report with everything it tried to do recorded."""

    def __init__(self, browser, html: Path):
        self.page = browser.new_page(viewport={"width": 1300, "height": 1000})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error"
                     else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", self._dialog)
        self.url = html.resolve().as_uri()
        self.page.route("**/*", self._route)
        self.page.goto(self.url)
        self.page.wait_for_selector(".flip-explorer[data-ready]", timeout=20_000)

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _route(self, route) -> None:
        if route.request.url == self.url:  # the report itself
            route.continue_()
        else:
            self.requests.append(route.request.url)
            route.abort()


@pytest.fixture
def page(browser, report):
    p = Page(browser, report)
    yield p
    p.page.close()


def test_leaderboard_rows_equal_the_records(page, inputs):
    from evalkit.report.store import RunRecord, read_store

    records = [r for r in read_store(inputs.store) if isinstance(r, RunRecord)]
    expected = {(r.checkpoint.fingerprint, r.task.name, m): (v.value, v.stderr, v.n)
                for r in records for m, v in r.metrics.items()}
    rows = page.page.eval_on_selector_all("#board tbody tr", """rows => rows.map(tr => ({
        fp: tr.dataset.fingerprint, task: tr.dataset.task, metric: tr.dataset.metric,
        score: tr.querySelector('.score').dataset.value, se: tr.querySelector('.se').dataset.value,
        n: tr.querySelector('.n').textContent, text: tr.querySelector('.score').textContent}))""")
    assert len(rows) == len(expected) == 8
    for row in rows:
        value, se, n = expected[(row["fp"], row["task"], row["metric"])]
        assert float(row["score"]) == value and float(row["se"]) == se and int(row["n"]) == n
        assert row["text"] == f"{value:.4f}"
    # Tuned rows sit under their base and carry Δ and the verdict of the paired comparison.
    comparison = json.loads((inputs.compare / "comparison.json").read_text())
    verdicts = {r["task"]: r["verdict"] for r in comparison["rows"]}
    tuned = page.page.eval_on_selector_all("#board tbody tr.tuned", """rows => rows.map(tr =>
        [tr.dataset.task, tr.children[9].textContent])""")
    assert dict(tuned) == verdicts
    kinds = page.page.eval_on_selector_all("#board tbody tr", "rs => rs.map(r => r.className)")
    assert kinds == ["base"] * 4 + ["tuned"] * 4


def test_sorting_and_family_filter(page):
    p = page.page
    p.click("#board th:nth-child(5)")  # score
    scores = p.eval_on_selector_all("#board tbody tr .score", "c => c.map(x => +x.dataset.value)")
    assert scores == sorted(scores)
    p.click("#board th:nth-child(5)")
    scores = p.eval_on_selector_all("#board tbody tr .score", "c => c.map(x => +x.dataset.value)")
    assert scores == sorted(scores, reverse=True)
    p.click(".filters button[data-family=code]")
    visible = p.eval_on_selector_all("#board tbody tr:not([hidden])", "rs => rs.map(r => "
                                     "r.dataset.task)")
    assert visible == ["humaneval", "humaneval"]


def test_forest_plot_and_heatmaps_have_one_mark_per_value(page, inputs):
    p = page.page
    comparison = json.loads((inputs.compare / "comparison.json").read_text())
    rows = [r for r in comparison["rows"] if r["delta"] is not None]
    assert p.locator(".forest svg [id^='cmp0-forest-mark-']").count() == len(rows) == 4
    assert p.locator(".forest svg [id^='cmp0-forest-ci-']").count() == len(rows)
    with (inputs.analysis / "matrices.csv").open() as f:
        cells = {(m["layer"], m["module"]) for m in csv.DictReader(f)}
    assert len(cells) == 9
    assert p.locator(".heatmap svg [id^='ws0-intruders-mark-']").count() == len(cells)
    assert p.locator(".heatmap svg [id^='ws0-effective_rank-mark-']").count() == len(cells)
    summary = json.loads((inputs.analysis / "summary.json").read_text())
    assert (p.locator(".curve svg [id^='ws0-curve-mark-']").count()
            == len(summary["intruder_curve"]) == 9)
    assert p.locator(".finetune svg").count() == 1
    p.screenshot(path=str(Path(p.url[7:]).parent / "plots.png"), full_page=True)


def test_flip_filters_change_the_visible_items(page, inputs):
    p = page.page
    comparison = json.loads((inputs.compare / "comparison.json").read_text())
    flips = [(t["task"], f) for t in comparison["tasks"] for f in t["flipped"]]
    explorer = "#cmp0-flips"

    def shown():
        return p.eval_on_selector_all(f"{explorer} .flip", "fs => fs.map(f => [f.dataset.task,"
                                      " f.dataset.dir])")

    count = p.locator(f"{explorer} .flip-count")
    assert count.text_content() == f"25 of {len(flips)} shown"
    p.click(f"{explorer} button[data-k=dir][data-v=regression]")
    regressions = [f for _, f in flips if set(f["flips"].values()) == {"regression"}]
    assert count.text_content() == f"{min(25, len(regressions))} of {len(regressions)} shown"
    assert {d for _, d in shown()} == {"regression"}
    p.click(f"{explorer} button[data-k=task][data-v=gsm8k]")
    expected = [f for t, f in flips if t == "gsm8k" and set(f["flips"].values()) == {"regression"}]
    assert len(shown()) == len(expected) and {t for t, _ in shown()} == {"gsm8k"}
    p.click(f"{explorer} button[data-k=dir][data-v=all]")
    p.click(f"{explorer} button[data-k=task][data-v=all]")
    p.fill(f"{explorer} .flip-text", "window.__pwned")
    assert [t for t, _ in shown()] == [t for t, f in flips if f["doc_id"] == "1"]
    p.screenshot(path=str(Path(p.url[7:]).parent / "flips.png"))


def test_no_network_no_console_errors(page):
    page.page.click("#cmp0-flips .flip-more")
    assert page.requests == []
    assert page.errors == []


def test_model_output_stays_inert_text(page, xss):
    p = page.page
    p.fill("#cmp0-flips .flip-text", "window.__pwned")
    for detail in p.locator("#cmp0-flips details").all():
        detail.evaluate("d => d.open = true")
    assert page.dialogs == []
    assert p.evaluate("window.__pwned") is None
    assert p.locator("#pwn").count() == 0 and p.locator("img").count() == 0
    assert p.locator("script").count() == 1 + p.locator(".flip-data").count()
    text = p.locator("#cmp0-flips .completion").first.text_content()
    # Markup and template syntax shown verbatim; RTL override and ESC shown as escapes.
    shown = xss.replace("\u202e", "\\u202e").replace("\x1b", "\\u001b")
    assert text == shown
    assert "{{ 7*7 }}" in text and "49" not in text
    p.screenshot(path=str(Path(p.url[7:]).parent / "xss.png"))
