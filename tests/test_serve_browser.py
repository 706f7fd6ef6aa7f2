"""The page of ``tripletlab serve`` in a real browser: Debian's headless ``chromium`` driven by
Selenium through ``chromium-driver`` (``scripts/setup_browser.sh`` installs both, as ``make
test`` does) against a server on 127.0.0.1: upload an image, see k neighbours and a verdict,
click one to search from it, use the map (hover, click, pan by dragging, zoom with the wheel)
and the per-class panel, drop an image file on the page, and no console errors."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

import pytest
from serve_helpers import copy_run, digit_png, running_server

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.skipif(BROWSER is None, reason="no chromium on PATH (scripts/setup_browser.sh)"),
    pytest.mark.skipif(
        DRIVER is None, reason="no chromedriver on PATH (apt-get install chromium-driver)"
    ),
]
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")

from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.actions.wheel_input import ScrollOrigin  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

K = 6


@pytest.fixture
def browser(tmp_path: Path) -> Any:
    options = webdriver.ChromeOptions()
    options.binary_location = str(BROWSER)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")  # never the user's
    options.add_argument("--window-size=1280,1600")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=str(DRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def neighbour_ids(driver: Any) -> list[str]:
    """The ids of the neighbours shown, read in one script (the list is replaced whole by
    each answer, so elements found one call earlier may be gone)."""
    script = "return Array.from(document.querySelectorAll('#neighbors li'), (li) => li.dataset.id)"
    return list(driver.execute_script(script))


# A file dropped on the drop zone: the events a drag from the desktop fires, with a File made
# from the bytes given (WebDriver cannot drag from outside the page).
DROP = """
const [zone, b64] = arguments;
const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
const data = new DataTransfer();
data.items.add(new File([bytes], "dropped.png", {type: "image/png"}));
const fire = (type) => zone.dispatchEvent(
  new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true}));
fire("dragenter"); fire("dragover");
const over = zone.classList.contains("over");
fire("drop");
return over;
"""
VIEW = "return [state.view.cx, state.view.cy, state.view.scale]"


def test_the_page_searches_and_clicks_through(
    browser: Any, digits_run: Path, tmp_path: Path
) -> None:
    run_dir = copy_run(digits_run, tmp_path)
    query = tmp_path / "query.png"
    query.write_bytes(digit_png(3))
    wait = WebDriverWait(browser, 60)
    with running_server([str(run_dir), "--device", "cpu", "--k", str(K)]) as url:
        browser.get(url + "/")
        wait.until(lambda d: "items" in d.find_element(By.ID, "status").text)
        browser.find_element(By.ID, "file").send_keys(str(query))
        wait.until(lambda d: len(neighbour_ids(d)) == K)
        verdict = browser.find_element(By.ID, "verdict").text
        assert verdict.startswith("nearest: "), verdict  # this index has no threshold
        first = neighbour_ids(browser)
        images = browser.find_elements(By.CSS_SELECTOR, "#neighbors li img")
        wait.until(
            lambda d: all(d.execute_script("return arguments[0].naturalWidth", i) for i in images)
        )

        clicked = first[2]
        browser.find_elements(By.CSS_SELECTOR, "#neighbors li")[2].click()
        wait.until(lambda d: neighbour_ids(d)[:1] == [clicked])
        assert browser.find_element(By.ID, "item").get_attribute("value") == clicked
        assert len(neighbour_ids(browser)) == K

        second = neighbour_ids(browser)[1]  # a pasted thumbnail URL of an indexed item
        thumbnail = browser.find_elements(By.CSS_SELECTOR, "#neighbors li img")[1]
        src = thumbnail.get_attribute("src")
        browser.find_element(By.ID, "item").clear()
        browser.find_element(By.ID, "item").send_keys(src + "\n")
        wait.until(lambda d: neighbour_ids(d)[:1] == [second])

        wait.until(lambda d: "pca" in d.find_element(By.ID, "map-method").text)
        canvas = browser.find_element(By.ID, "map")
        point = browser.execute_script(  # where item 0 is drawn, in CSS pixels of the canvas
            "const c = arguments[0]; const [x, y] = toScreen(state.view, c, state.map.x[0],"
            " state.map.y[0]); const r = c.getBoundingClientRect();"
            "return [x * r.width / c.width - r.width / 2, y * r.height / c.height - r.height / 2];",
            canvas,
        )
        ActionChains(browser).move_to_element_with_offset(canvas, *point).perform()
        wait.until(lambda d: d.find_element(By.ID, "tip").is_displayed())
        hovered = browser.find_element(By.ID, "tip-text").text.split(" (")[0]
        ActionChains(browser).click().perform()
        wait.until(lambda d: neighbour_ids(d)[:1] == [hovered])
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#classes tbody tr")) == 10)
        rows = browser.find_elements(By.CSS_SELECTOR, "#classes tbody tr")
        rows[0].click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#hardest li"))
        assert browser.find_element(By.ID, "hardest-title").text.startswith("Hardest queries of")

        drawn = browser.execute_script(
            "const c = arguments[0]; const d = c.getContext('2d')"
            ".getImageData(0, 0, c.width, c.height).data;"
            "let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n;",
            canvas,
        )
        assert drawn > 1000, "the map is blank"

        cx, cy, scale = browser.execute_script(VIEW)  # pan: drag the map
        before_pan = neighbour_ids(browser)
        ActionChains(browser).move_to_element_with_offset(
            canvas, -100, -80
        ).click_and_hold().move_by_offset(30, 20).move_by_offset(30, 20).release().perform()
        px, py, pscale = browser.execute_script(VIEW)
        assert px < cx and py > cy and pscale == scale, (cx, cy, px, py)
        assert neighbour_ids(browser) == before_pan  # a drag is not a click on a point
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
        page_y = browser.execute_script("return window.scrollY")
        origin = ScrollOrigin.from_element(canvas)  # zoom: the wheel, in then out
        ActionChains(browser).scroll_from_origin(origin, 0, -120).perform()
        wait.until(lambda d: d.execute_script(VIEW)[2] > scale)
        zoomed = browser.execute_script(VIEW)[2]
        ActionChains(browser).scroll_from_origin(origin, 0, 120).perform()
        wait.until(lambda d: d.execute_script(VIEW)[2] < zoomed)
        assert browser.execute_script("return window.scrollY") == page_y  # the map took it

        dropped = digit_png(7)  # drag and drop an image file
        zone = browser.find_element(By.ID, "drop")
        assert browser.execute_script(DROP, zone, base64.b64encode(dropped).decode()) is True
        wait.until(
            lambda d: d.execute_script(
                "const i = document.querySelector('#query-view img');"
                "return i !== null && i.src.startsWith('blob:')"
            )
        )
        wait.until(lambda d: len(neighbour_ids(d)) == K)
        assert "over" not in zone.get_attribute("class")

        browser.find_element(By.ID, "item").clear()
        browser.find_element(By.ID, "item").send_keys("no-such-item\n")
        wait.until(lambda d: "no item" in d.find_element(By.ID, "error").text)

        browser.save_screenshot(str(tmp_path / "page.png"))
        logs = browser.get_log("browser")
    # The unknown item's 404 is the one expected console line ("Failed to load resource"):
    # seeing it shows that the console is captured.
    assert any("no-such-item" in e["message"] for e in logs), logs
    errors = [e for e in logs if e["level"] == "SEVERE" and "no-such-item" not in e["message"]]
    assert errors == [], errors
