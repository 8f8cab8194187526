"""The web UI in a real browser: Debian's chromium, driven by Playwright for Python, against the UI
served by uvicorn on a loopback port (in a thread), over a workspace built through the public API.

Every test fails on a console error, an uncaught script error, a failed request or an HTTP error
response on the page (`watch`). CI installs chromium with apt-get (`.ci/run`); without it these
tests are skipped, saying so.
"""

from __future__ import annotations

import re
import shutil

import pytest

import llmops
from support_serve import serving
from ui_support import build

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None,
                                reason=f"{CHROMIUM} is not installed (apt-get install -y chromium); .ci/run installs it")


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_llm_dir):
    ws = llmops.Workspace(tmp_path_factory.mktemp("ui-browser") / "ws")
    ids = build(ws, tiny_llm_dir)
    yield ws, ids
    ws.close()


@pytest.fixture(scope="module")
def server(built):
    """The UI (mounted at /ui, as `llmops ui` serves it) on a free loopback port, in a thread."""
    from llmops.ui.app import standalone_app

    with serving(standalone_app(built[0])) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


class Watch:
    """Problems a page reported: console errors, script errors, failed requests, HTTP errors.

    A request the browser itself cancelled (`net::ERR_ABORTED`: the favicon still loading when the test
    navigates on) is not a failure of the server; every answer the server gave is checked by status.
    """

    def __init__(self, page):
        self.problems: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: self.problems.append(f"script error: {e}"))
        page.on("requestfailed", lambda r: "ERR_ABORTED" not in (r.failure or "")
                and self.problems.append(f"failed: {r.url} {r.failure}"))
        page.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))


@pytest.fixture
def page(browser, server):
    context = browser.new_context(base_url=server)
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    watch = Watch(pg)
    yield pg
    context.close()
    assert not watch.problems, "\n".join(watch.problems)


def test_every_page_opens_cleanly(page, built):
    _, ids = built
    pages = {
        "/ui/runs": "Runs", f"/ui/runs/{ids.train}": "lora-train", f"/ui/compare?runs={ids.train},{ids.other}": "Compare 2 runs",
        "/ui/assets": "Assets", "/ui/assets/prompt/qa": "prompt/qa", "/ui/assets/prompt/qa@2": "prompt/qa@2",
        "/ui/assets/chain/tinyqa@1": "chain/tinyqa@1", "/ui/assets/prompt/qa/diff?a=1&b=2": "prompt/qa",
        f"/ui/lineage/{ids.request}": "Lineage of", "/ui/lineage": "Lineage", "/ui/evals": "Evals",
        f"/ui/evals/{ids.eval_b}": "Eval qa-suite", "/ui/requests": "Requests", f"/ui/requests/{ids.request}": "Request",
        "/ui/playground": "Playground", "/ui/playground?chain=tinyqa": "Playground",
    }
    for url, heading in pages.items():
        page.goto(url)
        assert heading in page.locator("h1").inner_text(), url
        assert page.locator("header nav a").count() == 6


def test_click_through_runs_to_a_chart_and_a_comparison(page, built):
    _, ids = built
    page.goto("/ui/runs")
    page.get_by_role("link", name=ids.train[:12]).click()
    page.wait_for_url(f"**/ui/runs/{ids.train}")
    chart = page.locator('svg[data-metric="loss"]')
    assert chart.count() == 1 and chart.locator("polyline").count() == 1
    page.get_by_role("link", name="time", exact=True).click()
    page.wait_for_url("**?x=time")
    assert "seconds since the first point" in page.locator('svg[data-metric="loss"]').text_content()
    page.get_by_role("link", name="Runs", exact=True).first.click()
    page.get_by_label(f"compare {ids.train}").check()
    page.get_by_label(f"compare {ids.other}").check()
    assert page.get_by_role("button", name="Compare 2 ticked runs").count() == 1  # ui.js counts them
    page.get_by_role("button", name="Compare 2 ticked runs").click()
    page.wait_for_url("**/ui/compare?**")
    assert page.locator('svg[data-metric="loss"] polyline').count() == 2


def test_the_filter_box_searches_and_reports_mistakes(page):
    page.goto("/ui/runs")
    box = page.get_by_label("Filter")
    box.fill("params.lr = '0.001'")
    box.press("Enter")
    page.wait_for_url("**filter=**")
    assert "1 run" in page.locator("main").inner_text()
    assert page.locator("table.runs tbody tr").count() == 1


def test_click_through_a_diff(page):
    page.goto("/ui/assets")
    page.get_by_role("link", name="qa", exact=True).click()
    page.wait_for_url("**/ui/assets/prompt/qa")
    page.get_by_label("A = @1").check()
    page.get_by_label("B = @2").check()
    page.get_by_role("button", name="Diff A → B").click()
    page.wait_for_url(re.compile(r"/ui/assets/prompt/qa/diff\?"))
    assert {"a=1", "b=2"} <= set(page.url.split("?", 1)[1].split("&"))
    added = page.locator("table.sbs tr.added")
    assert "Answer briefly." in added.first.inner_text()
    deltas = page.locator("section.evaldelta")
    assert "qa-suite" in deltas.inner_text() and "exact_match" in deltas.inner_text()
    deltas.get_by_role("link").first.click()
    page.wait_for_url("**/ui/evals/*")


def test_click_through_a_lineage_graph(page, built):
    _, ids = built
    page.goto(f"/ui/lineage/{ids.request}")
    node = page.locator('figure.graph a[data-node="prompt/qa@1"]')
    assert node.count() == 1
    node.click()
    page.wait_for_url("**/ui/assets/prompt/qa@1")
    assert "prompt/qa@1" in page.locator("h1").inner_text()
    page.get_by_role("link", name="Lineage", exact=True).last.click()
    page.wait_for_url("**/ui/lineage/prompt/qa@1")
    runs = page.locator('figure.graph a[data-node]')
    assert runs.count() >= 4
    page.locator(f'figure.graph a[data-node="{ids.eval_a}"]').click()
    page.wait_for_url(f"**/ui/evals/{ids.eval_a}")


def test_click_through_an_eval_report(page, built):
    _, ids = built
    page.goto("/ui/evals")
    page.get_by_role("link", name="qa-suite", exact=True).first.click()
    page.wait_for_url("**/ui/evals?suite=qa-suite")
    page.get_by_role("link", name=ids.eval_b[:12]).first.click()
    page.wait_for_url(f"**/ui/evals/{ids.eval_b}")
    report = page.frame_locator("iframe.report")
    assert "qa-suite" in report.locator(".banner").inner_text()
    assert report.locator("svg").count() >= 1  # the report's own charts
    with page.expect_popup() as popup:
        page.get_by_role("link", name="Open the report alone").click()
    alone = popup.value
    alone.wait_for_load_state()
    assert "qa-suite" in alone.locator(".banner").inner_text()


def test_move_an_alias_and_run_the_playground_in_the_browser(page, built):
    ws, _ = built
    page.goto("/ui/assets/prompt/qa")
    page.get_by_label("Alias").fill("staging")
    page.get_by_label("Version").fill("2")
    page.get_by_label("Reason").fill("try the shorter prompt")
    page.get_by_role("button", name="Move alias").click()
    page.wait_for_url("**/ui/assets/prompt/qa#history")
    assert "try the shorter prompt" in page.locator("#history + table").inner_text()
    assert ws.registry.aliases("prompt/qa")["staging"] == 2

    page.goto("/ui/playground")
    page.get_by_label("Chain", exact=True).fill("tinyqa@1")
    page.get_by_role("button", name="Choose").first.click()
    page.get_by_label("question").fill("what is item 3?")
    page.get_by_role("button", name="Run").click()
    page.wait_for_url("**/ui/requests/*")
    assert "chain/tinyqa@1" in page.locator("main").inner_text()


def test_pages_read_without_javascript(browser, server, built):
    _, ids = built
    context = browser.new_context(base_url=server, java_script_enabled=False)
    pg = context.new_page()
    watch = Watch(pg)
    try:
        pg.goto(f"/ui/runs/{ids.train}")
        assert pg.locator('svg[data-metric="loss"] polyline').count() == 1
        pg.goto("/ui/runs")
        pg.get_by_label(f"compare {ids.train}").check()
        pg.get_by_label(f"compare {ids.other}").check()
        pg.get_by_role("button", name=re.compile("Compare")).click()
        pg.wait_for_url("**/ui/compare?**")
        assert pg.locator('svg[data-metric="loss"] polyline').count() == 2
    finally:
        context.close()
    assert not watch.problems, watch.problems
