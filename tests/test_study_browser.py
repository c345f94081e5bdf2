"""The study's page in a real headless browser (Debian's chromium and chromium-driver through Selenium): a rater
starts, answers by click and by keyboard, reloads mid-study and continues where it was. Skips, naming why, only
where no browser or driver is installed (.ci/run installs them with apt-get).

With ROCM_RLHF_SCREENSHOTS=<folder> set, the screenshots of the page are written there (docs/study_*.png, shown in
the README, come from ``ROCM_RLHF_SCREENSHOTS=docs pytest tests/test_study_browser.py``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from rocm_rlhf.study.app import create_app, serving
from rocm_rlhf.study.db import read_answers
from rocm_rlhf.study.design import build_study, load_study
from test_study import RUNS, _samples

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), shutil.which("google-chrome"))
                 if p), None)
DRIVER = shutil.which("chromedriver")


def _browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    if not CHROMIUM or not DRIVER:
        pytest.skip("no chromium/chromedriver on this machine: install Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver, as .ci/run does)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,760",
                "--disable-gpu"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


def test_a_rater_answers_by_click_and_keyboard_reloads_and_continues(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    build_study(_samples(tmp_path), RUNS, tmp_path / "design", pairs_per_arm_pair=2, attention_fraction=0.5, seed=0)
    study = load_study(tmp_path / "design")
    total = len(study["items"])  # 6 comparisons and 3 checks
    shots = os.environ.get("ROCM_RLHF_SCREENSHOTS")
    driver = _browser()
    wait = WebDriverWait(driver, 20)

    def position() -> int:
        wait.until(lambda d: d.find_element(By.ID, "progress").text.startswith("question"))
        return int(driver.find_element(By.ID, "progress").text.split()[1])

    def wait_for(n: int) -> None:
        wait.until(lambda d: d.find_element(By.ID, "progress").text.startswith(f"question {n} /"))
        wait.until(lambda d: d.execute_script(
            "const l = document.getElementById('img-left'), r = document.getElementById('img-right');"
            "return l.complete && r.complete && l.naturalWidth > 0 && r.naturalWidth > 0;"))

    try:
        with serving(create_app(tmp_path / "design", tmp_path / "answers.sqlite")) as url:
            driver.get(url + "/")
            if shots:
                driver.save_screenshot(str(Path(shots) / "study_start.png"))
            driver.find_element(By.ID, "rater").send_keys("browser-rater")
            driver.find_element(By.ID, "begin").click()
            wait.until(ec.url_to_be(url + "/rate"))
            wait_for(1)
            prompt = driver.find_element(By.ID, "prompt").text
            assert prompt in {i["prompt"] for i in study["items"]}
            if shots:
                driver.save_screenshot(str(Path(shots) / "study_rate.png"))
            driver.find_element(By.ID, "btn-left").click()  # by click
            wait_for(2)
            driver.find_element(By.ID, "btn-tie").click()
            wait_for(3)
            body = driver.find_element(By.TAG_NAME, "body")
            body.send_keys(Keys.ARROW_RIGHT)  # by keyboard
            wait_for(4)
            body.send_keys("2")
            wait_for(5)
            driver.refresh()  # a reload mid-study continues at the next unanswered question
            wait_for(5)
            assert position() == 5
            driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_LEFT)
            wait_for(6)
            for n in range(6, total + 1):
                driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_DOWN)
                if n < total:
                    wait_for(n + 1)
            wait.until(ec.visibility_of_element_located((By.ID, "done")))
            if shots:
                driver.save_screenshot(str(Path(shots) / "study_done.png"))
            driver.get(url + "/stop")
            assert f"You answered {total} of {total}" in driver.find_element(By.TAG_NAME, "body").text
    finally:
        driver.quit()
    answers = read_answers(tmp_path / "answers.sqlite", study)
    assert len(answers) == total and set(answers["rater_id"]) == {"browser-rater"}
    order = answers.sort_values("answered_at")["choice"].tolist()
    assert order[:6] == ["left", "tie", "right", "tie", "left", "tie"]  # one answer per question, none repeated
