"""`cxrkit serve` as a real process on a loopback port: a bounded load test and a real-browser test.

The browser is Debian's Chromium driven through Debian's chromedriver (both
installed by `.ci/run`); Selenium is given the driver's path, so Selenium
Manager never downloads anything. The screenshot of the page lands in the
test's tmp folder, and also at $CXRKIT_SCREENSHOT when that is set (that is how
docs/img/serve.png is made).
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import shutil
import statistics
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import sample_images
from cxrkit.inference.bundle import resolve_model, save_bundle
from serve_support import PATIENT_STRINGS, cxrkit_server, dicom_bytes, film, without_inline_images

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The default model plus a copy that always abstains (confidence threshold above 1), for UNCERTAIN."""
    folder = tmp_path_factory.mktemp("serve")
    unsure = save_bundle(dataclasses.replace(resolve_model(None), confidence_threshold=1.000001),
                         folder / "abstains.safetensors")
    log = folder / "server.log"
    with cxrkit_server(log, "--model", "cxr_cnn", "--model", str(unsure), "--workers", "2") as url:
        yield url, log


async def _load(url: str, n: int, concurrency: int) -> tuple[list[int], list[float], list[float]]:
    files = [p.read_bytes() for p in sample_images("test", "NORMAL")[:4] + sample_images("test", "PNEUMONIA")[:4]]
    gate = asyncio.Semaphore(concurrency)
    statuses, health = [], []
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        async def one(i: int):
            async with gate:
                query = "?heatmap=true" if i % 4 == 0 else ""
                r = await client.post(f"/api/predict{query}", files={"files": (f"{i}.jpeg", files[i % len(files)])})
                statuses.append(r.status_code)
                assert r.status_code != 200 or r.json()["results"][0]["label"] in ("NORMAL", "PNEUMONIA")

        async def probe():
            while len(statuses) < n:
                t = time.perf_counter()
                assert (await client.get("/healthz")).status_code == 200
                health.append(time.perf_counter() - t)
                await asyncio.sleep(0.05)

        t0 = time.perf_counter()
        await asyncio.gather(probe(), *(one(i) for i in range(n)))
        return statuses, health, [time.perf_counter() - t0]


def test_load_200_requests_at_concurrency_8_without_errors(server):
    url, _ = server
    statuses, health, (wall,) = asyncio.run(_load(url, 200, 8))
    assert statuses.count(200) == 200, {s: statuses.count(s) for s in set(statuses)}
    # inference runs off the event loop: health checks are answered while 8 requests are being scored
    assert len(health) >= 3 and statistics.median(health) < 0.5
    print(f"200 requests at concurrency 8 in {wall:.1f} s; /healthz median {1000 * statistics.median(health):.0f} ms")


def test_over_the_limit_is_413_over_a_real_socket(server):
    """The server stops reading at the limit; the client must still get the JSON 413, and the server go on."""
    url, _ = server
    r = httpx.post(f"{url}/api/predict", files={"files": ("huge.dcm", b"\0" * (25 * 2**20))}, timeout=60)
    assert r.status_code == 413 and r.json()["errors"] == [{"file": "huge.dcm",
                                                            "reason": "request exceeds the 20 MB upload limit"}]
    assert httpx.get(f"{url}/healthz").status_code == 200


def _chrome(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1150", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def test_real_browser_upload_decision_heatmap_uncertain_screenshot(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    assert Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file(), "apt-get install chromium chromium-driver"
    url, log = server
    jpeg = sample_images("test", "PNEUMONIA")[0]
    dcm = tmp_path / "IM000001"  # a PACS export: no suffix, patient tags inside
    dcm.write_bytes(dicom_bytes(4080 - film("NORMAL").astype(np.uint16) * 16, "MONOCHROME1"))
    driver = _chrome(tmp_path / "profile")
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(url)
        wait.until(lambda d: len(Select(d.find_element(By.ID, "model")).options) == 2)
        assert "Not a medical device" in driver.find_element(By.ID, "disclaimer").text
        driver.find_element(By.ID, "files").send_keys(f"{dcm}\n{jpeg}")
        wait.until(lambda d: len([e for e in d.find_elements(By.CSS_SELECTOR, ".result .decision") if e.text]) == 2)
        cards = {c.find_element(By.CSS_SELECTOR, ".name").text: c
                 for c in driver.find_elements(By.CSS_SELECTOR, ".result")}
        assert set(cards) == {jpeg.name, dcm.name}
        card = cards[jpeg.name]
        assert card.find_element(By.CSS_SELECTOR, ".decision").text == "PNEUMONIA"
        assert not card.find_element(By.CSS_SELECTOR, ".uncertain").is_displayed()
        shown = re.search(r"P\(PNEUMONIA\) = ([0-9.]+)", card.find_element(By.CSS_SELECTOR, ".probs").text)
        assert shown and float(shown.group(1)) >= 0.9
        assert card.find_element(By.CSS_SELECTOR, ".fill").size["width"] > 100  # the probability bar
        img = card.find_element(By.CSS_SELECTOR, ".film")
        preview = img.get_attribute("src")
        assert preview.startswith("data:image/jpeg")
        assert driver.execute_script("return arguments[0].naturalWidth", img) > 0
        card.find_element(By.CSS_SELECTOR, ".heat").click()  # the Grad-CAM toggle
        heat = img.get_attribute("src")
        assert heat.startswith("data:image/jpeg") and heat != preview
        assert driver.execute_script("return arguments[0].naturalWidth", img) == 224
        assert cards[dcm.name].find_element(By.CSS_SELECTOR, ".decision").text in ("NORMAL", "PNEUMONIA")
        cards[dcm.name].find_element(By.CSS_SELECTOR, ".heat").click()

        huge = tmp_path / "huge.dcm"
        huge.write_bytes(b"\0" * (21 * 2**20))
        driver.find_element(By.ID, "files").send_keys(str(huge))
        wait.until(lambda d: "over the server's 20.0 MB upload limit" in d.find_element(By.ID, "results").text)
        refused = driver.find_element(By.CSS_SELECTOR, ".result.error")
        assert not refused.find_element(By.CSS_SELECTOR, ".film").is_displayed()  # no broken-image box

        Select(driver.find_element(By.ID, "model")).select_by_value("abstains.safetensors")
        driver.find_element(By.ID, "files").send_keys(str(sample_images("test", "NORMAL")[1]))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".result.is-uncertain")) == 1)
        unsure = driver.find_element(By.CSS_SELECTOR, ".result.is-uncertain .uncertain")
        assert unsure.is_displayed() and unsure.text.startswith("UNCERTAIN")
        Select(driver.find_element(By.ID, "model")).select_by_value("cxr_cnn")
        card_text = driver.find_element(By.ID, "card").text
        assert "Intended use" in card_text and "Not a medical device" in card_text and "youden" in card_text
        page = driver.find_element(By.TAG_NAME, "body").text
        for secret in PATIENT_STRINGS:
            assert secret not in page and secret not in without_inline_images(driver.page_source)
        shot = tmp_path / "serve.png"
        driver.save_screenshot(str(shot))
        driver.find_element(By.CSS_SELECTOR, "#card summary").click()  # the full markdown card: data and metrics
        assert "Kermany" in driver.find_element(By.ID, "card-text").text
    finally:
        driver.quit()
    with Image.open(shot) as im:
        assert im.size[0] >= 1000 and np.asarray(im.convert("L")).std() > 10
    if os.environ.get("CXRKIT_SCREENSHOT"):
        shutil.copy(shot, os.environ["CXRKIT_SCREENSHOT"])
    served = log.read_text()
    assert "POST /api/predict" in served  # the access log is on, and it holds no patient data
    for secret in PATIENT_STRINGS:
        assert secret not in served
