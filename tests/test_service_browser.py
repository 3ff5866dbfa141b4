"""The page in a real browser: headless Chromium from the system packages (``chromium``,
``chromium-driver``; ``.ci/run`` installs them) driven by Selenium. The server runs on a free
loopback port; the test uploads a query, waits for the grid, checks every card's labels against
the API's answer, removes the query's identity and checks the "no match" banner, and saves a
screenshot."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.test_service import TOKEN, Server, fresh_copy, queries

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
#: where the screenshot goes (the README's is made with REID_SCREENSHOT=docs/service.png)
SCREENSHOT = os.environ.get("REID_SCREENSHOT")


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        message = "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs them: missing there is a failure, not a skip
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1200,900", "--no-first-run", "--disable-extensions"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def cards(driver):
    from selenium.webdriver.common.by import By

    return [
        {"row": int(c.get_attribute("data-row")), "pid": int(c.get_attribute("data-pid")),
         "camid": int(c.get_attribute("data-camid")), "match": c.get_attribute("data-match"),
         "text": c.text}
        for c in driver.find_elements(By.CSS_SELECTOR, "#hits .hit")
    ]  # fmt: skip


def test_page_shows_the_apis_answer_and_the_no_match_banner(
    browser, index_dir, tiny_checkpoint, synthetic_root, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    from reid.service.client import search

    index = fresh_copy(index_dir, tmp_path)
    server = Server(index, tiny_checkpoint, tmp_path)
    try:
        query = _query_without_impostor_above_threshold(server.url, queries(synthetic_root, 30))
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 60)
        token = wait.until(ready.presence_of_element_located((By.ID, "token")))
        browser.execute_script("arguments[0].value = arguments[1];", token, TOKEN)
        browser.execute_script("loadGallery()")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#point option[value^='far:']"))

        def search_in_page():
            browser.execute_script("document.getElementById('hits').dataset.ready = 'false'")
            browser.find_element(By.ID, "file").send_keys(str(query))
            wait.until(
                lambda d: d.find_element(By.ID, "hits").get_attribute("data-ready") == "true"
            )

        search_in_page()
        api = search(server.url, [query], topk=10, exclude_same_camera=True, token=TOKEN)[
            "results"
        ][0]
        shown = cards(browser)
        assert [(c["row"], c["pid"], c["camid"]) for c in shown] == [
            (h["row"], h["pid"], h["camid"]) for h in api["hits"]
        ]
        assert [c["match"] for c in shown] == [str(h["match"]).lower() for h in api["hits"]]
        for card, hit in zip(shown, api["hits"]):
            assert f"#{hit['rank']}" in card["text"] and f"{hit['score']:.3f}" in card["text"]
            assert f"id {hit['pid']}" in card["text"] and f"cam {hit['camid']}" in card["text"]
        wait.until(
            lambda d: all(
                i.get_attribute("src") for i in d.find_elements(By.CSS_SELECTOR, "#hits img")
            )
        )
        browser.find_elements(By.CSS_SELECTOR, "#hits .hit")[
            0
        ].click()  # that identity across cameras
        wait.until(lambda d: d.find_element(By.ID, "identity").is_displayed())
        assert (
            f"Identity {api['hits'][0]['pid']}"
            in browser.find_element(By.ID, "identity-title").text
        )
        if SCREENSHOT:
            Path(SCREENSHOT).parent.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(SCREENSHOT)
        # the query's identity is removed from the index → the page says there is no match
        pid = int(query.name.split("_")[0])
        _remove(server.url, pid)
        search_in_page()
        banner = browser.find_element(By.ID, "banner")
        api = search(server.url, [query], topk=10, exclude_same_camera=True, token=TOKEN)[
            "results"
        ][0]
        assert api["no_match"] is True and pid not in [h["pid"] for h in api["hits"]]
        assert banner.get_attribute("data-no-match") == "true" and banner.text.startswith(
            "No match above τ"
        )
        assert all(c["match"] == "false" for c in cards(browser))
        browser.save_screenshot(str(tmp_path / "no_match.png"))
    finally:
        server.stop()


def _remove(url, pid):
    import json
    import urllib.request

    request = urllib.request.Request(
        url + "/gallery/remove", data=json.dumps({"pids": [pid]}).encode(), method="POST"
    )
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _query_without_impostor_above_threshold(url, candidates):
    """A query whose best other-identity hit is below the default threshold: once its own
    identity is removed, the right answer is "no match"."""
    from reid.service.client import gallery, search

    info = gallery(url, token=TOKEN)
    tau = next(p["threshold"] for p in info["operating_points"] if p["far"] == info["default_far"])
    for query in candidates:
        pid = int(query.name.split("_")[0])
        hits = search(
            url, [query], topk=30, exclude_same_camera=True, no_threshold=True, token=TOKEN
        )
        others = [h["score"] for h in hits["results"][0]["hits"] if h["pid"] != pid]
        if (
            others
            and max(others) < tau
            and any(h["pid"] == pid for h in hits["results"][0]["hits"])
        ):
            return query
    raise AssertionError("no query of the synthetic set has all impostors below the threshold")
