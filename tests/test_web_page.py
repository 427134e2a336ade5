"""The web page in a real headless Chromium against the real server: chat streams and stops,
models load and unload, the live log shows the prompt, the Server view the options, the API key
is asked for once, the system's dark theme is followed, every control is named and reached by
keyboard, `--no-ui` turns the page off and Ollama's clients still get their answer at `/`.
Screenshots of each view land in the run's temporary folder (printed with `-s`)."""

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
MIN_CONTRAST = 4.5  # WCAG AA for body text
CONTROLS = "input, select, textarea, button"
# A control's accessible name, from the sources a screen reader reads first.
NAME_OF = """const nameOf = (el) => [el.getAttribute("aria-label"),
  ...(el.getAttribute("aria-labelledby") || "").split(" ")
    .map((id) => id && document.getElementById(id)?.textContent),
  ...[...(el.labels || [])].map((label) => label.textContent),
  el.tagName === "BUTTON" ? el.textContent : "", el.title]
  .map((text) => (text || "").trim()).find(Boolean) || "";
"""


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


def options_shown(browser) -> dict[str, str]:
    """The Server view's options, as its definition list shows them."""
    script = (
        "return Object.fromEntries([...document.querySelectorAll('#server-options dt')]"
        ".map((term) => [term.textContent, term.nextElementSibling.textContent]));"
    )
    return browser.execute_script(script)


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


def relative_luminance(css_colour: str) -> float:
    """WCAG's relative luminance of a computed `rgb(r, g, b)` colour."""
    red, green, blue = (
        float(part) for part in css_colour[css_colour.index("(") + 1 : -1].split(",")[:3]
    )

    def linear(channel: float) -> float:
        channel /= 255
        return channel / 12.92 if channel <= 0.04045 else ((channel + 0.055) / 1.055) ** 2.4

    return 0.2126 * linear(red) + 0.7152 * linear(green) + 0.0722 * linear(blue)


def contrast(foreground: str, background: str) -> float:
    lighter, darker = sorted((relative_luminance(foreground), relative_luminance(background)))[::-1]
    return (lighter + 0.05) / (darker + 0.05)


def computed_colours(browser) -> dict[str, tuple[str, str]]:
    """Text and background colours of body text, a muted label on its panel, the Send button."""
    return browser.execute_script(
        "const style = (selector) => getComputedStyle(document.querySelector(selector));"
        "return {body: [style('body').color, style('body').backgroundColor],"
        "label: [style('label[for=system]').color, style('.settings').backgroundColor],"
        "send: [style('#send').color, style('#send').backgroundColor]};"
    )


def test_a_reply_without_spaces_wraps_and_leaves_the_settings_in_view(browser, server):
    wide = {"role": "assistant", "content": "x" * 3000}  # what a tiny model often writes
    conversation = {"id": "wide", "title": "Wide", "updated": 0, "messages": [wide]}
    store = "localStorage.setItem('mlxserve.conversations', JSON.stringify([arguments[0]]));"
    browser.execute_script(store, conversation)
    browser.refresh()
    wait(browser, lambda: len(text(browser, ".message.assistant .content")) == 3000)
    right = "return document.querySelector('.settings').getBoundingClientRect().right;"
    width = "return document.documentElement.clientWidth;"
    assert browser.execute_script(right) <= browser.execute_script(width)


def test_the_page_follows_the_systems_light_and_dark_theme(browser, server, screenshots):
    def emulate(scheme: str) -> dict[str, tuple[str, str]]:
        feature = {"name": "prefers-color-scheme", "value": scheme}
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [feature]})
        return computed_colours(browser)

    browser.get(server.base_url)
    wait(browser, lambda: find(browser, "#model option").get_attribute("value") == MODEL)
    try:
        light = emulate("light")
        dark = emulate("dark")
        browser.save_screenshot(str(screenshots / "chat-dark.png"))
    finally:
        emulate("light")
    assert light["body"][1] != dark["body"][1]
    assert relative_luminance(dark["body"][1]) < relative_luminance(light["body"][1])
    for scheme, colours in (("light", light), ("dark", dark)):
        for part, (foreground, background) in colours.items():
            ratio = contrast(foreground, background)
            assert ratio >= MIN_CONTRAST, (
                f"{scheme} {part}: {foreground} on {background} {ratio:.2f}"
            )


def press_tab(browser) -> str:
    """Tab once; the accessible name of the control that has the focus then."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    ActionChains(browser).send_keys(Keys.TAB).perform()
    return browser.execute_script(NAME_OF + "return nameOf(document.activeElement);")


def test_every_control_is_named_and_reached_by_tab_on_each_view(browser, server):
    """Screen readers read each control's name; keyboard users reach every enabled one with Tab
    (the two tabs not selected are reached with the arrow keys, as ARIA's tabs pattern says)."""
    controls = NAME_OF + (
        "return [...document.querySelectorAll(arguments[0])].filter((el) => el.checkVisibility())"
        ".map((el) => [nameOf(el), !el.disabled && el.ariaSelected !== 'false', el.outerHTML"
        ".slice(0, 120)]);"
    )
    browser.get(server.base_url)
    wait(browser, lambda: find(browser, "#model option").get_attribute("value") == MODEL)
    for view, ready in (("chat", ".message"), ("models", "#model-rows button"), ("server", "dd")):
        find(browser, f"#tab-{view}").click()
        wait(browser, lambda ready=ready: browser.find_elements("css selector", ready))
        shown = browser.execute_script(controls, CONTROLS)
        assert [html for name, _, html in shown if not name] == [], view
        reached = {press_tab(browser) for _ in range(len(shown) + 3)}
        missed = {name for name, focusable, _ in shown if focusable} - reached
        assert missed == set(), view


def test_a_message_is_written_and_sent_by_keyboard_alone(browser, server):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    browser.get(server.base_url)
    wait(browser, lambda: find(browser, "#model option").get_attribute("value") == MODEL)
    browser.execute_script("document.getElementById('max_tokens').value = '6';")  # a short reply
    replies = len(browser.find_elements("css selector", ".message.assistant"))
    for _ in range(60):  # from the page's start, in Tab order
        if press_tab(browser) == "Message":
            break
    assert browser.execute_script("return document.activeElement.id;") == "prompt"
    ring = browser.execute_script(
        "const style = getComputedStyle(document.activeElement);"
        "return [style.outlineStyle, parseFloat(style.outlineWidth)];"
    )
    assert ring[0] != "none" and ring[1] >= 2, ring  # the focus stays visible
    ActionChains(browser).send_keys("Keys only", Keys.ENTER).perform()
    last = ".message.assistant:last-child"
    wait(
        browser, lambda: len(browser.find_elements("css selector", ".message.assistant")) > replies
    )
    # The finish reason and the token count come in separate chunks: wait for both.
    wait(browser, lambda: "finish: length" in text(browser, f"{last} .stats"), 60)
    wait(browser, lambda: "6 tokens" in text(browser, f"{last} .stats"), 10)
    assert text(browser, f"{last} .content")


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
    wait(browser, lambda: "--port" in options_shown(browser))
    options = options_shown(browser)
    assert options["--port"] == str(server.port) and options["--model"] == MODEL
    assert (options["--engine"], options["--api-key"], options["--no-ui"]) == ("mlx", "none", "off")
    browser.save_screenshot(str(screenshots / "server.png"))
    find(browser, "#log-filter").send_keys("no such text")
    assert not find(browser, "#log li").is_displayed()


def test_with_an_api_key_the_page_asks_for_it_once(browser, store, screenshots):
    with ServerProcess(store, model=MODEL, extra_args=["--api-key", KEY]) as keyed:
        assert httpx.get(f"{keyed.base_url}/api/v0/models").status_code == 401
        assert httpx.get(f"{keyed.base_url}/ui/main.js").status_code == 200
        assert httpx.get(f"{keyed.base_url}/api/v0/server").status_code == 401
        authorized = {"Authorization": f"Bearer {KEY}"}
        shown = httpx.get(f"{keyed.base_url}/api/v0/server", headers=authorized)
        assert shown.json()["options"]["api_key"] == "set" and KEY not in shown.text
        browser.get(keyed.base_url)
        wait(browser, lambda: find(browser, "#key-dialog").get_attribute("open") is not None)
        browser.save_screenshot(str(screenshots / "api-key.png"))
        find(browser, "#key-input").send_keys(KEY)
        find(browser, "#key-form button").click()
        wait(browser, lambda: find(browser, "#model option").get_attribute("value") == MODEL)
        browser.refresh()  # kept for the tab: not asked again
        wait(browser, lambda: find(browser, "#model option").get_attribute("value") == MODEL)
        assert find(browser, "#key-dialog").get_attribute("open") is None
        find(browser, "#tab-server").click()
        wait(browser, lambda: options_shown(browser).get("--api-key") == "set")


def test_no_ui_serves_no_page(store):
    with ServerProcess(store, model=MODEL, extra_args=["--no-ui"]) as plain:
        root = httpx.get(f"{plain.base_url}/", headers={"Accept": "text/html"})
        assert root.text == "Ollama is running"
        assert httpx.get(f"{plain.base_url}/ui/main.js").status_code == 404
