"""Eval reports rendered from hand-built `llmops.eval/1` result dicts: what a reviewer relies on.

The Markdown carries the verdict and the figures, the JUnit XML parses with one test case per gate,
the JSON round-trips, and the HTML is one page with nothing external, escaped user text, one chart
per metric and the examples in order of score change.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from llmops.errors import SpecError
from llmops.evals.report import render_comparison, render_reports

HOSTILE = '<script>alert("x")</script> ]]> & @team | *bold* \x00\x1b end'


def make_result(*, baseline: bool = True, failing: bool = True, n: int = 6, run_id: str = "01RUNCANDIDATE") -> dict:
    """A result as the runner stores it: rougeL and exact_match, one gate failing when asked."""
    examples = []
    for i in range(n):
        # change in rougeL: example i changes by (i - 3) / 10, so ex-0 dropped most and ex-5 gained most
        before = 0.5
        after = round(0.5 + (i - 3) / 10, 3)
        examples.append({
            "id": f"ex-{i}",
            "inputs": {"question": f"What is rule {i}?"},
            "reference": f"Rule {i} says so.",
            "prediction": f"Answer {i}" + (" " + "long " * 80 if i == 1 else ""),
            "scores": {"rougeL": after, "exact_match": 0.0 if i == 0 else 1.0},
            "baseline_prediction": f"Old answer {i}" if baseline else None,
            "baseline_scores": {"rougeL": before, "exact_match": 1.0 if i in (0, 1) else 0.0} if baseline else None,
        })
    examples[2]["prediction"] = HOSTILE
    gates = [
        {"name": "rougeL >= 0.3", "metric": "rougeL", "kind": "min", "threshold": 0.3, "value": 0.45,
         "passed": True, "detail": "rougeL = 0.4500 [0.4000, 0.5000], minimum 0.3"},
    ]
    if baseline:
        gates.append({"name": "rougeL regression <= 0.01", "metric": "rougeL", "kind": "max_regression",
                      "threshold": 0.01, "value": -0.05 if failing else 0.0, "passed": not failing,
                      "detail": "delta -0.0500 [-0.0900, -0.0100] against prompt/qa@2 (p_better 0.04)"})
    result = {
        "format": "llmops.eval/1",
        "run_id": run_id,
        "created_at": "2026-11-27T11:00:00+00:00",
        "suite": {"name": "qa-heldout", "path": "evals/qa.yaml", "digest": "sha256:" + "ab" * 32},
        "target": {"ref": "prompt/qa@3", "kind": "prompt", "versions": ["prompt/qa@3", "model/smollm2-135m@1"]},
        "dataset": {"ref": "dataset/qa-test@2", "rows": n},
        "generation": {"max_new_tokens": 64, "temperature": 0.0},
        "bootstrap": {"resamples": 1000, "seed": 7, "confidence": 0.95},
        "metrics": {
            "rougeL": {"value": 0.45, "low": 0.40, "high": 0.50, "scale": 1.0},
            "exact_match": {"value": 0.8333, "low": 0.5, "high": 1.0, "scale": 1.0},
            "sacrebleu": {"value": float("nan"), "low": float("nan"), "high": float("inf"), "scale": 100.0},
        },
        "corpus": {"sacrebleu": {"score": 12.5}},
        "baseline": None,
        "gates": gates,
        "passed": not (baseline and failing),
        "examples": examples,
        "counts": {"generated": 4, "cached": 2, "seconds": 3.25},
    }
    if baseline:
        result["baseline"] = {
            "run_id": "01RUNBASELINE",
            "target": {"ref": "prompt/qa@2", "versions": ["prompt/qa@2", "model/smollm2-135m@1"]},
            "metrics": {"rougeL": {"value": 0.5, "low": 0.46, "high": 0.54, "scale": 1.0},
                        "exact_match": {"value": 0.3333, "low": 0.0, "high": 0.6667, "scale": 1.0}},
            "deltas": {"rougeL": {"delta": -0.05, "low": -0.09, "high": -0.01, "p_better": 0.04},
                       "exact_match": {"delta": 0.5, "low": 0.1667, "high": 0.8333, "p_better": 0.97}},
        }
    return result


@pytest.fixture
def reports(tmp_path: Path) -> dict[str, Path]:
    return render_reports(make_result(), tmp_path)


def test_all_four_reports_are_written(reports: dict[str, Path]) -> None:
    assert set(reports) == {"md", "junit", "json", "html"}
    assert [p.name for p in reports.values()] == ["report.md", "junit.xml", "report.json", "report.html"]
    assert all(p.is_file() and p.stat().st_size > 0 for p in reports.values())


def test_markdown_has_the_verdict_figures_gates_flips_and_versions(reports: dict[str, Path]) -> None:
    md = reports["md"].read_text("utf-8")
    first = md.splitlines()[0]
    assert first.startswith("## ❌") and "FAIL: 1 of 2 gates failed (rougeL regression <= 0.01)" in first
    assert "6 examples" in first
    # metrics row: candidate [CI], baseline [CI], delta [CI], P(better)
    assert "| rougeL | 0.450 [0.400, 0.500] | 0.500 [0.460, 0.540] | -0.050 [-0.090, -0.010] | 4% |" in md
    assert "| exact\\_match | 0.833 [0.500, 1.000] | 0.333 [0.000, 0.667] | +0.500 [+0.167, +0.833] | 97% |" in md
    assert "95% CI" in md
    assert "| sacrebleu | NaN [NaN, Infinity] | — | — | — |" in md  # non-finite values are named, not hidden
    assert "| ✅ | rougeL >= 0.3 | rougeL | min | 0.300 | 0.450 |" in md
    assert "| ❌ | rougeL regression <= 0.01 | rougeL | max\\_regression | 0.010 | -0.050 |" in md
    # exact_match is 0/1 so it flips at 0.5: ex-0 regressed, ex-2..5 fixed; rougeL flips at its gate's 0.3
    flips = md.split("### Examples that flipped: 2 regressed, 4 fixed")[1]
    assert "| ex-0 | exact\\_match | 1.000 → 0.000 | 🔻 regressed (threshold 0.500) |" in flips
    assert "| ex-0 | rougeL | 0.500 → 0.200 | 🔻 regressed (threshold 0.300) |" in flips
    assert "| ex-5 | exact\\_match | 0.000 → 1.000 | 🔺 fixed (threshold 0.500) |" in flips
    assert flips.index("regressed") < flips.index("fixed")
    drops = md.split("### Biggest drops in rougeL")[1]
    assert drops.index("ex-0") < drops.index("ex-1") < drops.index("ex-2")
    assert "ex-4" not in drops.split("<details>")[0]  # ex-4 and ex-5 improved
    assert "prompt/qa@3 — prompt/qa@3, model/smollm2-135m@1" in md
    assert "prompt/qa@2 — prompt/qa@2, model/smollm2-135m@1 (run 01RUNBASELINE)" in md
    assert "dataset/qa-test@2 (6 rows)" in md and "01RUNCANDIDATE" in md
    assert "qa-heldout (evals/qa.yaml, sha256 abababababab)" in md


def test_a_binary_metric_flips_at_half_its_scale_even_with_a_zero_minimum(tmp_path: Path) -> None:
    result = make_result()
    result["gates"][0] |= {"name": "exact_match >= 0", "metric": "exact_match", "threshold": 0.0}
    md = render_reports(result, tmp_path)["md"].read_text("utf-8")
    assert "| ex-0 | exact\\_match | 1.000 → 0.000 | 🔻 regressed (threshold 0.500) |" in md


def test_markdown_makes_hostile_text_inert(reports: dict[str, Path]) -> None:
    md = reports["md"].read_text("utf-8")
    assert "<script>" not in md and "&lt;script>alert" in md and "&lt;/script>" in md
    assert "@team" not in md  # no mention pings from a model's output
    drops = md.split("### Biggest drops")[1]
    row = next(line for line in drops.splitlines() if line.startswith("| ex-2 |"))
    assert len(re.findall(r"(?<!\\)\|", row)) == 6  # 5 cells: the pipe in the prediction opens none
    assert "\x00" not in md and "\x1b" not in md


def test_markdown_caps_the_examples_and_says_how_many_were_left_out(tmp_path: Path) -> None:
    result = make_result(n=40)
    for i, ex in enumerate(result["examples"]):
        ex["scores"]["rougeL"] = 0.4 + i / 1000 if i < 13 else 0.6  # 13 of 40 dropped from 0.5
    md = render_reports(result, tmp_path)["md"].read_text("utf-8")
    drops = md.split("### Biggest drops in rougeL")[1].split("<details>")[0]
    assert len([line for line in drops.splitlines() if line.startswith("| ex-")]) == 10
    assert "…and 3 more, left out here: see report.html" in drops  # 13 examples dropped (change < 0)
    assert len(md) < 65536  # GitHub's limit for a comment


def test_markdown_without_baseline_passes_and_shows_values_only(tmp_path: Path) -> None:
    md = render_reports(make_result(baseline=False), tmp_path)["md"].read_text("utf-8")
    assert md.splitlines()[0].startswith("## ✅") and "PASS: 1 of 1 gates passed" in md
    assert "| rougeL | 0.450 [0.400, 0.500] |" in md
    assert "baseline" not in md.split("### Gates")[0]
    assert "flipped" not in md and "Biggest drops" not in md


def test_junit_has_one_testcase_per_gate_and_the_failure_figures(reports: dict[str, Path]) -> None:
    root = ET.parse(reports["junit"]).getroot()
    suite = root.find("testsuite")
    assert suite is not None and suite.get("name") == "qa-heldout"
    assert (suite.get("tests"), suite.get("failures"), suite.get("time")) == ("2", "1", "3.250")
    assert (root.get("tests"), root.get("failures")) == ("2", "1")
    cases = suite.findall("testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("qa-heldout", "rougeL >= 0.3"), ("qa-heldout", "rougeL regression <= 0.01")]
    assert cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure is not None
    assert failure.get("message") == "rougeL changed by -0.050, beyond the allowed regression 0.010"
    assert "delta: -0.050 [-0.090, -0.010], P(better) 4%" in failure.text
    assert "lowest examples: ex-0 (0.200)" in failure.text
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["run_id"] == "01RUNCANDIDATE" and props["dataset"] == "dataset/qa-test@2 (6 rows)"


def test_junit_stays_valid_xml_with_hostile_names(tmp_path: Path) -> None:
    result = make_result()
    result["suite"]["name"] = "suite ]]> <x>"
    result["gates"][1]["name"] = 'gate "\x00\x1b" ]]> <script>'
    result["gates"][1]["detail"] = HOSTILE
    root = ET.parse(render_reports(result, tmp_path)["junit"]).getroot()
    case = root.findall("./testsuite/testcase")[1]
    assert case.get("classname") == "suite ]]> <x>"
    assert case.get("name") == 'gate "\ufffd\ufffd" ]]> <script>'
    assert '<script>alert("x")</script> ]]>' in case.find("failure").text


def test_junit_without_gates_has_zero_tests(tmp_path: Path) -> None:
    result = make_result(baseline=False)
    result["gates"] = []
    suite = ET.parse(render_reports(result, tmp_path)["junit"]).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.findall("testcase")) == ("0", "0", [])


def test_json_is_the_result_itself_strict_and_sorted(reports: dict[str, Path]) -> None:
    text = reports["json"].read_text("utf-8")
    back = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    expected = make_result()
    assert back["metrics"]["sacrebleu"] == {"value": "NaN", "low": "NaN", "high": "Infinity", "scale": 100.0}
    del back["metrics"]["sacrebleu"], expected["metrics"]["sacrebleu"]
    assert back == expected
    assert text == json.dumps(back | {"metrics": json.loads(text)["metrics"]}, sort_keys=True, indent=2,
                              ensure_ascii=False) + "\n"


def test_reports_rerender_from_their_own_json(tmp_path: Path, reports: dict[str, Path]) -> None:
    """`llmops eval report RUN_ID` renders from the stored (JSON) result: same Markdown and JUnit."""
    stored = json.loads(reports["json"].read_text("utf-8"))
    again = render_reports(stored, tmp_path / "again")
    assert again["md"].read_text("utf-8") == reports["md"].read_text("utf-8")
    assert again["junit"].read_text("utf-8") == reports["junit"].read_text("utf-8")


def test_html_is_self_contained_and_escapes_user_text(reports: dict[str, Path]) -> None:
    page = reports["html"].read_text("utf-8")
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:|//)""", page, re.I)
    assert not re.search(r"<(script|link|iframe|img|object|embed)\b", page, re.I)
    assert "@import" not in page and "url(" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; ]]&gt;" in page
    assert "default-src 'none'" in page  # the browser itself refuses anything external
    assert "\x00" not in page and "\x1b" not in page and "\ufffd\ufffd end" in page
    assert "&#34;score&#34;: 12.5" in page  # corpus-level figures are kept, escaped like all the rest


def test_html_has_a_chart_per_metric_and_the_examples_sorted_by_change(reports: dict[str, Path]) -> None:
    page = reports["html"].read_text("utf-8")
    charts = re.findall(r'<svg [^>]*data-metric="([^"]+)"', page)
    assert [c for c in charts if c != "rougeL" or True][:3] == ["rougeL", "exact_match", "sacrebleu"]
    assert 'data-chart="deltas"' in page and 'data-chart="histogram"' in page
    assert "n/a (NaN)" in page  # a NaN metric is drawn as n/a, not as a bar at 0
    order = re.findall(r'<tr id="ex-(ex-\d+)"', page)
    assert order == ["ex-0", "ex-1", "ex-2", "ex-3", "ex-4", "ex-5"]
    table = page.split('id="examples"')[1]
    assert table.index("Answer 0") < table.index("Old answer 0") < table.index("Rule 0 says so.")
    assert "What is rule 0?" in table
    # the long prediction is clipped, its full text kept in a <details>
    assert re.search(r"<details><summary>Answer 1 (long ){20,}.*…</summary><div class=\"full\">Answer 1 ", table)
    assert page.count('href="#ex-ex-0"') == 2 and "regressed" in page and "fixed" in page


def test_html_without_baseline_has_charts_but_no_deltas(tmp_path: Path) -> None:
    page = render_reports(make_result(baseline=False), tmp_path)["html"].read_text("utf-8")
    assert len(re.findall(r"<svg [^>]*data-metric=", page)) == 3
    assert 'data-chart="deltas"' not in page and "Examples that flipped" not in page
    order = re.findall(r'<tr id="ex-(ex-\d+)"', page)
    assert order == ["ex-0", "ex-1", "ex-2", "ex-3", "ex-4", "ex-5"]  # lowest rougeL first


def test_a_result_of_another_format_is_refused_and_nothing_written(tmp_path: Path) -> None:
    result = make_result()
    del result["metrics"]
    with pytest.raises(SpecError, match="field 'metrics' is missing"):
        render_reports(result, tmp_path / "out")
    with pytest.raises(SpecError, match="'format' is 'llmops.eval/0', expected 'llmops.eval/1'"):
        render_reports(make_result() | {"format": "llmops.eval/0"}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_minimal_result_renders(tmp_path: Path) -> None:
    """Only the fields every stored result has: optional parts missing must not break a re-render."""
    result = {"format": "llmops.eval/1", "run_id": "01MIN", "suite": {}, "metrics": {"rougeL": {"value": 0.5}},
              "gates": [], "examples": [{"id": 1, "scores": {"rougeL": 0.5}}]}
    paths = render_reports(result, tmp_path)
    assert paths["md"].read_text("utf-8").startswith("## ✅ Eval `?`: PASS: no gates · 1 examples")
    assert "| rougeL | 0.500 |" in paths["md"].read_text("utf-8")
    assert '<tr id="ex-1"' in paths["html"].read_text("utf-8")
    assert ET.parse(paths["junit"]).getroot().find("testsuite").get("tests") == "0"


def test_comparison_renders_given_deltas_and_flips(tmp_path: Path) -> None:
    a = make_result(baseline=False, run_id="01RUNA")
    for ex in a["examples"]:
        ex["scores"] = {"rougeL": 0.5, "exact_match": 1.0}
    a["metrics"]["rougeL"]["value"] = 0.5
    b = make_result(baseline=False, run_id="01RUNB")
    deltas = {"rougeL": {"delta": -0.05, "low": -0.09, "high": -0.01, "p_better": 0.04}}
    paths = render_comparison(a, b, tmp_path, deltas=deltas)
    assert set(paths) == {"md", "json", "html"}
    md = paths["md"].read_text("utf-8")
    assert "0 metrics better, 1 worse" in md.splitlines()[0]
    assert "`prompt/qa@3` (run `01RUNB`) against `prompt/qa@3` (run `01RUNA`)" in md
    assert "| metric | run B [95% CI] | run A [95% CI] | Δ [95% CI] | P(better) |" in md
    assert "| rougeL | 0.450 [0.400, 0.500] | 0.500 [0.400, 0.500] | -0.050 [-0.090, -0.010] | 4% |" in md
    assert "| exact\\_match | 0.833 [0.500, 1.000] | 0.833 [0.500, 1.000] | — | — |" in md
    assert "| ex-0 | exact\\_match | 1.000 → 0.000 | 🔻 regressed" in md
    assert "| ex-0 | rougeL | 0.500 → 0.200 | 🔻 regressed (threshold 0.300) |" in md  # B's min gate
    assert "Biggest drops in rougeL" in md  # sorted by B's first gated metric
    summary = json.loads(paths["json"].read_text("utf-8"))
    assert (summary["a"]["run_id"], summary["b"]["run_id"]) == ("01RUNA", "01RUNB")
    assert summary["changes"]["ex-0"]["rougeL"] == pytest.approx(-0.3)
    assert summary["flipped"][0]["id"] == "ex-0"
    page = paths["html"].read_text("utf-8")
    assert "run A" in page and re.findall(r'<tr id="ex-(ex-\d+)"', page)[0] == "ex-0"


def test_comparison_without_deltas_shows_plain_differences(tmp_path: Path) -> None:
    a, b = make_result(baseline=False, run_id="01RUNA"), make_result(baseline=False, run_id="01RUNB")
    b["metrics"]["rougeL"]["value"] = 0.55
    md = render_comparison(a, b, tmp_path)["md"].read_text("utf-8")
    assert "| rougeL | 0.550 [0.400, 0.500] | 0.450 [0.400, 0.500] | +0.100 | — |" in md
    assert "without paired intervals" in md


def test_comparison_of_different_dataset_versions_is_refused(tmp_path: Path) -> None:
    a, b = make_result(run_id="01RUNA"), make_result(run_id="01RUNB")
    b["dataset"]["ref"] = "dataset/qa-test@3"
    with pytest.raises(SpecError, match="dataset version dataset/qa-test@2.*dataset/qa-test@3"):
        render_comparison(a, b, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_non_finite_values_everywhere_still_render(tmp_path: Path) -> None:
    result = make_result()
    result["baseline"]["deltas"]["rougeL"] = {"delta": math.nan, "low": -math.inf, "high": math.inf, "p_better": math.nan}
    result["examples"][3]["scores"]["rougeL"] = math.nan
    result["counts"]["seconds"] = math.inf
    paths = render_reports(result, tmp_path)
    assert "| NaN [-Infinity, Infinity] | — |" in paths["md"].read_text("utf-8")
    assert ET.parse(paths["junit"]).getroot().find("testsuite").get("time") == "0.000"
    json.loads(paths["json"].read_text("utf-8"), parse_constant=lambda c: pytest.fail(c))
    page = paths["html"].read_text("utf-8")
    assert re.findall(r'<tr id="ex-(ex-\d+)"', page)[-1] == "ex-3"  # unknown change sorts last


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _browser_console(page: Path) -> tuple[str, str]:
    """(DOM, console log lines) of `page` opened by headless Chromium."""
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         "--user-data-dir=" + str(page.parent / "profile"), "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    return proc.stdout, "\n".join(line for line in proc.stderr.splitlines() if "CONSOLE" in line)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (it is not installed by the tests)")
def test_html_opens_in_a_headless_browser_without_console_errors(tmp_path: Path, reports: dict[str, Path]) -> None:
    dom, console = _browser_console(reports["html"])
    assert "qa-heldout" in dom and dom.count('<tr id="ex-') == 6
    assert console == ""
    # the check sees errors: an external image on the same policy is refused and logged
    bad = tmp_path / "bad.html"
    bad.write_text(reports["html"].read_text("utf-8").replace("</main>", '<img src="https://example.com/x.png"></main>'))
    assert "Content Security Policy" in _browser_console(bad)[1]


def test_docstring_examples_hold() -> None:
    import doctest

    import llmops.evals.charts
    import llmops.evals.report

    for module in (llmops.evals.charts, llmops.evals.report):
        assert doctest.testmod(module).failed == 0, module.__name__
