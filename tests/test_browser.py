"""The run browser in a real headless Chromium (Debian's package, driven by Selenium).

A real smoke run: the tiny model and an adapter generate on the session's vLLM server, two
judges (det-mixed and llm-only, the tiny model judging) score it, `report` writes report.html,
and the browser opens it from file:// with no network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
import warnings
from pathlib import Path

import polars as pl
import pytest

from harness.browser.page import render_page
from harness.client import Sampling
from harness.generation_job import GenerateRequest, run_generation
from harness.judging.job import JudgeRequest, run_judging
from harness.report import render_report
from serve.registry import AdapterRegistry

from conftest import SERVER_MAX_RANK

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
except ImportError:  # pragma: no cover - CI installs it
    webdriver = None
needs_chromium = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER and webdriver),
                                    reason="needs Debian's chromium and chromium-driver, and pip's selenium")

JUDGES = ("mixed", "llm")


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def judged_run(server, tiny, adapters, tmp_path_factory):
    run = tmp_path_factory.mktemp("browse") / "run"
    registry = AdapterRegistry(server.api_base, tiny, "tiny", SERVER_MAX_RANK)
    adapter, _ = registry.load("a", adapters["a"], check=False)
    try:
        for model in ("tiny", "a"):
            run_generation(GenerateRequest(run=str(run), model=model, url=server.base_url, split="train",
                                           sampling=Sampling(max_tokens=16), concurrency=16))
    finally:
        registry.unload(adapter.served_name)
    for label, mode in zip(JUDGES, ("det-mixed", "llm-only"), strict=True):
        run_judging(JudgeRequest(run=str(run), mode=mode, judge_model="hosted_vllm/tiny", api_base=server.api_base,
                                 label=label))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rendered = render_report(str(run), JUDGES[0], JUDGES[1])
    return run, Path(rendered["report_html"])


def _errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _verdict_word(passed) -> str:
    return "unscored" if passed is None else "pass" if passed else "fail"


@needs_chromium
def test_report_browser_filters_opens_a_cell_and_shows_both_judges(browser, judged_run, tmp_path):
    run, report = judged_run
    episodes = pl.read_parquet(run / "episodes.parquet")
    verdicts = pl.read_parquet(run / "verdicts.parquet")
    page = report.read_text()
    assert "Identical responses: baseline/curated:" in page and "verdicts unscored" in page

    browser.get(report.as_uri())
    assert browser.find_element(By.ID, "ssb-count").text == f"showing {len(episodes)} of {len(episodes)} cells"
    skill = episodes["skill"].sort()[0]
    Select(browser.find_element(By.ID, "ssb-f-skill")).select_by_value(skill)
    mine = episodes.filter(pl.col("skill") == skill)
    assert browser.find_element(By.ID, "ssb-count").text == f"showing {len(mine)} of {len(episodes)} cells"
    rows = browser.find_elements(By.CSS_SELECTOR, "#ssb-rows tr")
    assert len(rows) == len(mine)
    cell_id = rows[0].get_attribute("data-cell")
    rows[0].click()
    episode = episodes.filter(pl.col("cell_id") == cell_id).row(0, named=True)
    assert episode["skill"] == skill
    shown = browser.find_element(By.CSS_SELECTOR, "#ssb-detail .ssb-response").get_attribute("textContent")
    assert shown == (episode["final"] if episode["final"] is not None else episode["response"])
    for label in JUDGES:
        row = browser.find_element(By.CSS_SELECTOR, f"#ssb-detail .ssb-verdict[data-judge='{label}']")
        v = verdicts.filter((pl.col("cell_id") == cell_id) & (pl.col("judge_label") == label)).row(0, named=True)
        cells = [td.get_attribute("textContent") for td in row.find_elements(By.TAG_NAME, "td")]
        assert cells[0] == label and cells[2] == _verdict_word(v["passed"]) and cells[3] == v["rule"]
    # Its baseline/curated partner and its base/adapter partner are shown beside it.
    assert browser.find_element(By.CSS_SELECTOR, "#ssb-detail .ssb-blcu").is_displayed()
    assert browser.find_element(By.CSS_SELECTOR, "#ssb-detail .ssb-adapter").is_displayed()
    shot = tmp_path / "cell.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 0

    # The agreement table's link lists exactly the cells the two judges disagree on.
    Select(browser.find_element(By.ID, "ssb-f-skill")).select_by_value("")
    wide = verdicts.pivot(on="judge_label", index=["cell_id", "model_label"], values="passed")
    model = "tiny"
    disagree = wide.filter((pl.col("model_label") == model) & pl.col("mixed").is_not_null() & pl.col("llm").is_not_null()
                           & (pl.col("mixed") != pl.col("llm")))
    links = browser.find_elements(By.CSS_SELECTOR, "#ssb-agreement a.ssb-link")
    assert len(links) == 2  # one per model
    next(a for a in links if a.find_element(By.XPATH, "../..").find_elements(By.TAG_NAME, "td")[2].text == model).click()
    assert browser.find_element(By.ID, "ssb-count").text == f"showing {len(disagree)} of {len(episodes)} cells"
    assert _errors(browser) == []


@needs_chromium
def test_view_serves_the_same_browser_on_localhost(browser, judged_run):
    run, _ = judged_run
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "view", str(run)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        body = urllib.request.urlopen(url, timeout=30).read().decode()
        first = pl.read_parquet(run / "episodes.parquet")["cell_id"][0]
        assert "id='ssb-data'" in body and first in body
        browser.get(url)
        n = len(pl.read_parquet(run / "episodes.parquet"))
        assert browser.find_element(By.ID, "ssb-count").text == f"showing {n} of {n} cells"
        assert _errors(browser) == []
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    missing = subprocess.run([sys.executable, "-m", "harness.cli", "view", str(run.parent / "nope")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "no episodes" in missing.stderr  # refused: nothing to show


def _synthetic_payload(n: int) -> dict:
    cells = [{"id": f"c{i}", "model": f"m{i % 4}", "base": "b", "adapter": None, "cond": ("baseline", "curated")[i % 2],
              "task": f"t{i // 8}", "skill": f"skill-{i % 37}", "qt": "YES_NO", "think": None,
              "final": f"Response {i}: the answer is " + ("yes" if i % 3 else "no") + " because " + "words " * 60,
              "finish": "stop", "prompt": None,
              "v": {"a": [i % 2, "answer-is", "yes", None, None, None, "deterministic", "extractor"],
                    "b": [int(i % 3 > 0), "m", None, "ok", None, None, "llm", "m"]}} for i in range(n)]
    return {"run": "synthetic", "judges": ["a", "b"], "verdict_fields": ["passed", "rule", "extracted", "rationale",
            "unscored_reason", "escalated_from", "judge_kind", "judge"], "cells": cells, "tasks": {}, "prompts": [],
            "agreement": [{"a": "a", "b": "b", "models": {"m0": {"n": 1, "agreement": 0.5, "kappa": 0.0,
                                                               "unscored_excluded": 0, "disagree": 1}}}]}


@needs_chromium
def test_ten_thousand_cells_render_one_page_at_a_time(browser, tmp_path):
    page = tmp_path / "big.html"
    page.write_text(render_page(_synthetic_payload(10_000)))
    browser.get(page.as_uri())
    assert browser.find_element(By.ID, "ssb-count").text == "showing 10000 of 10000 cells"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#ssb-rows tr")) == 50
    Select(browser.find_element(By.ID, "ssb-f-disagree")).select_by_index(1)  # any two judges
    expected = sum(1 for i in range(10_000) if (i % 2) != int(i % 3 > 0))
    assert browser.find_element(By.ID, "ssb-count").text == f"showing {expected} of 10000 cells"
    stats = browser.execute_script("return window.ssbStats")
    print(f"10,000 cells: first render {stats['initMs']:.0f} ms, filter {stats['lastFilterMs']:.0f} ms")
    assert _errors(browser) == []


def test_payload_json_cannot_close_its_script_element(tmp_path):
    payload = _synthetic_payload(1)
    payload["cells"][0]["final"] = "</script><script>document.title='pwned'</script>"
    html = render_page(payload)
    assert "</script><script>document.title" not in html
    data = html.split("id='ssb-data'>", 1)[1].split("</script>", 1)[0]
    assert json.loads(data)["cells"][0]["final"] == payload["cells"][0]["final"]
