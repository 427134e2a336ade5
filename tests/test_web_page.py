"""The web page in a real headless Chromium against the real server: chat streams and stops,
models load and unload, the live log shows the prompt, the API key is asked for once, `--no-ui`
turns the page off and Ollama's clients still get their answer at `/`. Screenshots of each view
land in the run's temporary folder (printed with `-s`)."""

from __future__ import annotations

import os
import shutil

import httpx
import pytest

from tests.metrics import model_metric
from tests.server import ServerProcess
from tests.tiny_models import make_tiny_gemma

MODEL = "test/tiny-gemma"
OTHER = "test/tiny-gemma-b"
KEY = "page-key"
PAGE_WEIGHT_LIMIT = 300_000
WAIT = 30


def browser_paths() -> tuple[str, str]:
    """Debian's chromium and chromedriver (.ci/run installs them)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    message = "chromium and chromedriver are missing: `apt-get install chromium chromium-driver`"
    if os.environ.get("CI"):  # CI installs them: a skip would hide an untested page
        pytest.fail(message)
    pytest.skip(f"NO BROWSER, THE WEB PAGE IS NOT TESTED: {message}")


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path = browser_paths()
    from selenium import webdriver  # the test extra installs it
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    models = tmp_path_factory.mktemp("web")
    make_tiny_gemma(models / "test" / "tiny-gemma", bytes_vocabulary=True)  # 4,096 tokens
    make_tiny_gemma(models / "test" / "tiny-gemma-b", seed=1)
    return models


@pytest.fixture(scope="module")
def server(store):
    with ServerProcess(store, model=MODEL, engine="mlx") as running:
        yield running


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    folder = tmp_path_factory.mktemp("web-screenshots")
    print(f"\nscreenshots of the web page: {folder}")
    return folder


def wait(browser, condition, timeout: float = WAIT):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.1).until(lambda _: condition())


def find(browser, selector: str):
    return browser.find_element("css selector", selector)


def text(browser, selector: str) -> str:
    """Read in the page, at once: a streaming reply replaces its nodes every frame."""
    script = "return document.querySelector(arguments[0])?.innerText ?? '';"
    return browser.execute_script(script, selector)


def model_state(server, model: str) -> str:
    models = httpx.get(f"{server.base_url}/api/v0/models").json()["data"]
    return next(entry["state"] for entry in models if entry["id"] == model)


def test_a_plain_get_keeps_ollamas_answer_and_a_browser_gets_the_page(server):
    root = httpx.get(f"{server.base_url}/")
    assert (root.status_code, root.text) == (200, "Ollama is running")
    assert httpx.head(f"{server.base_url}/").status_code == 200
    page = httpx.get(f"{server.base_url}/", headers={"Accept": "text/html,*/*;q=0.8"})
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert httpx.get(f"{server.base_url}/ui/../page.py").status_code == 404


def test_the_page_loads_light_and_without_console_errors(browser, server):
    browser.get(server.base_url)
    wait(browser, lambda: find(browser, "#model option").get_attribute("value") == MODEL)
    weight = browser.execute_script(
        "const own = (e) => { const p = new URL(e.name).pathname; "
        "return p === '/' || p.startsWith('/ui/'); };"
        "return [...performance.getEntriesByType('navigation'), "
        "...performance.getEntriesByType('resource')]"
        ".filter(own).reduce((sum, e) => sum + e.transferSize, 0);"
    )
    print(f"\npage weight at first load: {weight} bytes transferred")
    assert 0 < weight < PAGE_WEIGHT_LIMIT
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []  # a Content-Security-Policy violation would be one


def test_markdown_is_rendered_with_the_models_html_escaped(browser, server):
    html = browser.execute_async_script(
        "import('/ui/markdown.js').then((m) => arguments[0](m.renderMarkdown("
        "'**bold** <img src=x onerror=alert(1)>\\n```py\\nprint(\"<b>\")\\n```')));"
    )
    assert "<strong>bold</strong>" in html and "&lt;img src=x" in html and "<img" not in html
    assert '<pre data-language="py"><code>print(&quot;&lt;b&gt;&quot;)</code></pre>' in html


def test_a_reply_streams_in_and_stop_ends_its_generation(browser, server, screenshots):
    from selenium.webdriver.common.keys import Keys

    max_tokens = find(browser, "#max_tokens")
    max_tokens.clear()
    max_tokens.send_keys("3000")
    find(browser, "#extra").send_keys('{"logit_bias": {"2": -100}}')  # no end of sequence
    find(browser, "#prompt").send_keys("Hello", Keys.ENTER)
    content = ".message.assistant .content"
    wait(browser, lambda: len(text(browser, content)) > 5)
    assert find(browser, "#stop").is_enabled()  # text arrived while the reply goes on
    assert model_metric(server.base_url, "mlxserve_engine_sequences", MODEL) == 1
    browser.save_screenshot(str(screenshots / "chat.png"))
    find(browser, "#stop").click()
    wait(browser, lambda: model_metric(server.base_url, "mlxserve_engine_sequences", MODEL) == 0)
    wait(browser, lambda: "finish: stopped" in text(browser, ".message.assistant .stats"))
    browser.refresh()  # the conversation is kept in the browser
    wait(browser, lambda: text(browser, ".message.user .content") == "Hello")
    assert text(browser, "#conversations button") == "Hello"


def test_first_paint_and_frames_while_a_long_reply_streams(browser, server):
    """The page paints within a second, and 1,000 streamed tokens leave the browser drawing
    frames: the reply is redrawn once per frame, never per token."""
    from selenium.webdriver.common.keys import Keys

    browser.get(server.base_url)
    wait(browser, lambda: find(browser, "#model option").get_attribute("value") == MODEL)
    paint = browser.execute_script(
        "return performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null;"
    )
    assert paint is not None and paint < 1000, paint
    find(browser, "#new-chat").click()
    for field, value in (("#max_tokens", "1000"), ("#extra", '{"logit_bias": {"2": -100}}')):
        find(browser, field).clear()
        find(browser, field).send_keys(value)
    browser.execute_script(
        "window.frameTimes = []; const tick = (t) => { window.frameTimes.push(t); "
        "requestAnimationFrame(tick); }; requestAnimationFrame(tick);"
    )
    started = browser.execute_script("return performance.now();")
    find(browser, "#prompt").send_keys("Stream", Keys.ENTER)
    wait(browser, lambda: "finish: length" in text(browser, ".message.assistant .stats"), 120)
    times = browser.execute_script("return window.frameTimes;")
    streamed = [t for t in times if t >= started]
    seconds = (streamed[-1] - streamed[0]) / 1000
    gaps = [later - earlier for earlier, later in zip(streamed, streamed[1:], strict=False)]
    fps, longest = len(gaps) / seconds, max(gaps)
    print(f"\nfirst paint {paint:.0f} ms; {fps:.0f} frames/s streaming; longest {longest:.0f} ms")
    assert fps >= 20 and longest < 500


def test_a_model_loads_and_unloads_from_the_models_view(browser, server, screenshots):
    find(browser, "#tab-models").click()
    load = f'[data-model="{OTHER}"] button[aria-label="Load {OTHER}"]'
    wait(browser, lambda: browser.find_elements("css selector", load))
    find(browser, "#load-context").send_keys("256")
    find(browser, load).click()
    wait(browser, lambda: model_state(server, OTHER) == "loaded")
    unload = f'[data-model="{OTHER}"] button[aria-label="Unload {OTHER}"]'
    wait(browser, lambda: browser.find_elements("css selector", unload))
    assert "512 / 256" in text(browser, f'[data-model="{OTHER}"]')
    browser.save_screenshot(str(screenshots / "models.png"))
    find(browser, unload).click()
    wait(browser, lambda: model_state(server, OTHER) == "not-loaded")


def test_the_server_view_shows_each_prompt_and_the_metrics(browser, server, screenshots):
    find(browser, "#tab-server").click()
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "log me"}], "max_tokens": 4}
    assert httpx.post(f"{server.base_url}/v1/chat/completions", json=chat, timeout=60).is_success
    wait(browser, lambda: "log me" in text(browser, "#log"))
    wait(browser, lambda: "generated" in text(browser, "#log .stats"))
    wait(browser, lambda: "mlxserve_requests_active" in text(browser, "#metric-rows"))
    browser.save_screenshot(str(screenshots / "server.png"))
    find(browser, "#log-filter").send_keys("no such text")
    assert not find(browser, "#log li").is_displayed()


def test_with_an_api_key_the_page_asks_for_it_once(browser, store, screenshots):
    with ServerProcess(store, model=MODEL, extra_args=["--api-key", KEY]) as keyed:
        assert httpx.get(f"{keyed.base_url}/api/v0/models").status_code == 401
        assert httpx.get(f"{keyed.base_url}/ui/main.js").status_code == 200
        browser.get(keyed.base_url)
        wait(browser, lambda: find(browser, "#key-dialog").get_attribute("open") is not None)
        browser.save_screenshot(str(screenshots / "api-key.png"))
        find(browser, "#key-input").send_keys(KEY)
        find(browser, "#key-form button").click()
        wait(browser, lambda: find(browser, "#model option").get_attribute("value") == MODEL)
        browser.refresh()  # kept for the tab: not asked again
        wait(browser, lambda: find(browser, "#model option").get_attribute("value") == MODEL)
        assert find(browser, "#key-dialog").get_attribute("open") is None


def test_no_ui_serves_no_page(store):
    with ServerProcess(store, model=MODEL, extra_args=["--no-ui"]) as plain:
        root = httpx.get(f"{plain.base_url}/", headers={"Accept": "text/html"})
        assert root.text == "Ollama is running"
        assert httpx.get(f"{plain.base_url}/ui/main.js").status_code == 404
