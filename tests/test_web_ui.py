"""The built-in web chat: the page and its assets as the server answers them (in process), and the
page itself in a real browser (headless Chromium, tests.browserfix) against a real ``mlxk serve``
on two tiny chat models: the scripted one of tests.scriptfix (a known answer full of markdown and
markup) and a character-level one (random text, as long as asked for)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlxk.server.app import ServerSettings
from mlxk.server.hosts import HostPolicy
from tests import browserfix
from tests.modelfix import DEFAULT_GREEDY, build_tiny_chat_model, install
from tests.scriptfix import ANSWER, REASONING, SCRIPT, build_scripted_model
from tests.servefix import Client, ServerProcess, metric, run_in_process, start_server, wait_for

SCRIPTED, TINY = "test/Scripted-Chat", "test/Tiny-Chat"
KEY = "page-key-123"
CANCELLED = 'mlxk_generations_total{finish_reason="cancelled"}'


# --- the page as the server answers it (no browser) -------------------------------------------


def in_process(hub: Path, scenario: Any, **settings: Any) -> Any:
    return run_in_process(ServerSettings(hub_root=str(hub), **settings), scenario)


def test_the_page_and_its_assets_come_with_their_types_and_a_strict_policy(hub: Path) -> None:
    async def scenario(call: Client) -> None:
        page = await call("GET", "/")
        assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy
        assert "unsafe-inline" not in policy and "require-trusted-types-for 'script'" in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["cache-control"] == "no-cache" and page.headers["etag"]
        assert '<script type="module" src="ui/app.js">' in page.text
        kinds = {
            "/ui/app.js": "text/javascript; charset=utf-8",
            "/ui/markdown.js": "text/javascript; charset=utf-8",
            "/ui/api.js": "text/javascript; charset=utf-8",
            "/ui/store.js": "text/javascript; charset=utf-8",
            "/ui/app.css": "text/css; charset=utf-8",
            "/ui/icon.svg": "image/svg+xml",
        }
        for path, kind in kinds.items():
            asset = await call("GET", path)
            assert asset.status_code == 200 and asset.headers["content-type"] == kind, path
            assert asset.content and asset.headers["content-security-policy"] == policy

    in_process(hub, scenario)


def test_an_asset_the_browser_has_is_not_sent_again(hub: Path) -> None:
    async def scenario(call: Client) -> None:
        first = await call("GET", "/ui/app.js")
        again = await call("GET", "/ui/app.js", headers={"if-none-match": first.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == first.headers["etag"]
        changed = await call("GET", "/ui/app.js", headers={"if-none-match": '"something-else"'})
        assert changed.status_code == 200 and changed.content == first.content
        head = await call("HEAD", "/")
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) == len((await call("GET", "/")).content)

    in_process(hub, scenario)


def test_only_the_pages_own_files_are_answered_and_only_to_get(hub: Path) -> None:
    async def scenario(call: Client) -> None:
        for path in (
            "/ui/",
            "/ui/nothing.js",
            "/ui/../app.py",
            "/ui/%2e%2e/ui.py",
            "/index.html",
            "/ui/ui.py",
        ):
            answer = await call("GET", path)
            assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found", path
        post = await call("POST", "/", content=b"{}")
        assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
        metrics = (await call("GET", "/metrics")).text
        # counted under their own label (the client sent "/ui/../app.py" as "/app.py": no page path)
        assert metric(metrics, 'mlxk_requests_total{route="/ui",status="404"}') == 4
        assert metric(metrics, 'mlxk_requests_total{route="/ui",status="405"}') == 1

    in_process(hub, scenario)


def test_the_page_needs_no_key_and_the_api_still_does(hub: Path) -> None:
    async def scenario(call: Client) -> None:
        assert (await call("GET", "/")).status_code == 200
        assert (await call("GET", "/ui/app.js")).status_code == 200
        assert (await call("GET", "/v1/models")).status_code == 401
        auth = {"authorization": f"Bearer {KEY}"}
        assert (await call("GET", "/v1/models", headers=auth)).status_code == 200

    in_process(hub, scenario, api_key=KEY)


def test_without_the_ui_the_root_is_no_route(hub: Path) -> None:
    async def scenario(call: Client) -> None:
        for path in ("/", "/ui/app.js"):
            answer = await call("GET", path)
            assert answer.status_code == 404 and answer.json()["error"]["message"] == f"no route {path}"

    in_process(hub, scenario, web_ui=False)


def test_the_pages_own_origin_may_post_and_no_other(hub: Path) -> None:
    """A POST from the page carries ``Origin: http://127.0.0.1:PORT``; it passes the origin check
    (and then fails on its empty body, 400); foreign origins stay refused."""

    async def scenario(call: Client) -> None:
        async def post(origin: str) -> httpx.Response:
            return await call(
                "POST", "/v1/chat/completions", json={"messages": []}, headers={"origin": origin}
            )

        for own in ("http://127.0.0.1:8000", "HTTP://127.0.0.1:8000"):
            answer = await post(own)
            assert answer.status_code == 400 and answer.json()["error"]["param"] == "messages", own
            assert "access-control-allow-origin" not in answer.headers  # same origin: no CORS needed
        for foreign in (
            "http://evil.example",
            "http://evil.example:8000",
            "http://127.0.0.1:9999",  # another port is another origin
            "http://localhost:8000",  # another name too, though it means the same machine
            "http://127.0.0.1:8000.evil.example",
            "null",
        ):
            answer = await post(foreign)
            assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden_origin", foreign

    in_process(hub, scenario)


def test_own_origins_are_only_names_the_server_knows_as_its_own() -> None:
    loopback = HostPolicy("127.0.0.1", ("chat.example",))
    assert loopback.own_origin("http://localhost:8000", "localhost:8000")
    assert loopback.own_origin("https://chat.example", "chat.example")  # behind a TLS proxy
    assert loopback.own_origin("http://[::1]:8000", "[::1]:8000")
    assert not loopback.own_origin("http://127.0.0.1:8000", None)
    assert not loopback.own_origin("ftp://127.0.0.1:8000", "127.0.0.1:8000")
    # bound to every address, the host is not checked: an origin naming a DNS name could be a
    # rebinding page, and only an IP address or an allowed name counts as the server's own
    everywhere = HostPolicy("0.0.0.0", ("box.lan",))
    assert everywhere.own_origin("http://192.168.1.5:8000", "192.168.1.5:8000")
    assert everywhere.own_origin("http://[fe80::1]:8000", "[fe80::1]:8000")
    assert everywhere.own_origin("http://box.lan:8000", "box.lan:8000")
    assert not everywhere.own_origin("http://evil.example:8000", "evil.example:8000")


# --- a real server and a real browser ---------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    problem = browserfix.browser_problem()
    if problem is not None:
        if os.environ.get("MLXK_REQUIRE_BROWSER") == "1":
            pytest.fail(problem)
        pytest.skip(problem)
    driver = browserfix.start_browser()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def chat_hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    hub = tmp_path_factory.mktemp("web-ui") / "hub"
    hub.mkdir()
    install(hub, SCRIPTED, build_scripted_model())
    # a long context: a generation that runs for thousands of tokens, to stop while it streams
    install(hub, TINY, build_tiny_chat_model(max_position_embeddings=8192))
    return hub


@pytest.fixture(scope="module")
def server(chat_hub: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    served = start_server(chat_hub, log=tmp_path_factory.mktemp("web-ui-log") / "serve.log")
    yield served
    assert served.stop() == 0


def assert_the_script(reasoning: str, content: str) -> None:
    """The scripted model's answer: its thinking split off as reasoning, or at the start of the
    content (a server that does not split it)."""
    if reasoning:
        assert (reasoning.strip(), content.strip()) == (REASONING.strip(), ANSWER.strip())
    else:
        assert content == SCRIPT


def test_the_scripted_model_writes_its_script_at_any_temperature(server: ServerProcess) -> None:
    for temperature in (0.0, 2.0):
        body = {
            "model": SCRIPTED,
            "messages": [{"role": "user", "content": "Anything at all"}],
            "temperature": temperature,
        }
        reply = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60).json()
        message = reply["choices"][0]["message"]
        assert_the_script(message.get("reasoning_content") or "", message["content"])
        assert reply["choices"][0]["finish_reason"] == "stop"


class Page:
    """The chat page in the browser, with the steps a user takes."""

    def __init__(self, driver: Any, url: str) -> None:
        self.driver = driver
        self.url = url

    def open(self, *, fresh: bool = True, models: bool = True) -> None:
        self.driver.get(self.url + "/")
        if fresh:  # a first visit: nothing kept from an earlier test
            self.driver.execute_script("localStorage.clear(); sessionStorage.clear();")
            self.driver.get(self.url + "/")
        if models:
            self.wait(lambda d: d.find_element("id", "model").is_enabled(), "the model list")

    def wait(self, condition: Any, what: str) -> Any:
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        # an element found a moment ago may have been drawn anew since (the page redraws the
        # conversation when an answer ends): the condition is tried again
        wait = WebDriverWait(
            self.driver,
            browserfix.WAIT_S,
            poll_frequency=0.05,
            ignored_exceptions=(StaleElementReferenceException,),
        )
        return wait.until(condition, f"timed out waiting for {what}")

    def find(self, css: str) -> Any:
        return self.driver.find_element("css selector", css)

    def find_all(self, css: str) -> list[Any]:
        return list(self.driver.find_elements("css selector", css))

    def pick_model(self, name: str) -> None:
        from selenium.webdriver.support.ui import Select

        Select(self.find("#model")).select_by_value(name)

    def settings(
        self, *, temperature: float | None = None, max_tokens: int | None = None, system: str | None = None
    ) -> None:
        self.find("#open-settings" if self.visible("#open-settings") else "#settings-button").click()
        self.wait(lambda d: self.find("#settings").get_attribute("open") is not None, "the settings")
        if temperature is not None:  # a range input takes no typing: set it as a drag would
            self.driver.execute_script(
                "const r = document.getElementById('temperature'); r.value = arguments[0];"
                "r.dispatchEvent(new Event('input'));",
                str(temperature),
            )
        if max_tokens is not None:
            field = self.find("#max-tokens")
            field.clear()
            field.send_keys(str(max_tokens))
        if system is not None:
            field = self.find("#system")
            field.clear()
            field.send_keys(system)
        self.find("#settings-done").click()
        self.wait(lambda d: self.find("#settings").get_attribute("open") is None, "the settings to close")

    def tap_beside_the_drawer(self) -> None:
        """A tap on the dimmed page right of the open drawer (its middle is under the drawer)."""
        from selenium.webdriver.common.action_chains import ActionChains

        scrim = self.find("#scrim")
        beside = scrim.size["width"] // 2 - 20  # from the scrim's centre to near its right edge
        ActionChains(self.driver).move_to_element_with_offset(scrim, beside, 0).click().perform()

    def visible(self, css: str) -> bool:
        found = self.find_all(css)
        return bool(found) and found[0].is_displayed()

    def send(self, text: str) -> None:
        from selenium.webdriver.common.keys import Keys

        prompt = self.find("#prompt")
        prompt.send_keys(text)
        prompt.send_keys(Keys.ENTER)

    def answer(self, state: str | None = None) -> Any:
        """The last answer, once it is in ``state`` (streaming, done, stopped, error)."""

        def last(driver: Any) -> Any:
            found = self.find_all("article[data-role=assistant]")
            if found and (state is None or found[-1].get_attribute("data-state") == state):
                return found[-1]
            return False

        return self.wait(last, f"an answer in state {state}")

    def stored_chats(self) -> list[dict[str, Any]]:
        raw = self.driver.execute_script("return localStorage.getItem('mlxk.chats.v1')")
        chats: list[dict[str, Any]] = json.loads(raw)["chats"]
        return chats

    def text(self, element: Any) -> str:
        return str(self.driver.execute_script("return arguments[0].textContent", element))


@pytest.fixture
def page(browser: Any, server: ServerProcess) -> Iterator[Page]:
    browserfix.emulate(browser, dark=False)
    browser.get_log("browser")  # what earlier tests left in the console
    yield Page(browser, server.url)
    errors = browserfix.console_errors(browser)
    assert not errors, f"the page reported errors: {errors}"


def scripted_answer(page: Page) -> Any:
    page.open()
    page.pick_model(SCRIPTED)
    page.send("Show me <b>markdown</b>")
    return page.answer("done")


def test_an_answer_streams_in_and_the_stop_button_ends_its_generation(
    page: Page, server: ServerProcess
) -> None:
    page.open()
    page.pick_model(TINY)
    page.settings(temperature=0, max_tokens=8000)
    cancelled = metric(httpx.get(server.url + "/metrics").text, CANCELLED) or 0
    page.send("Hello")
    answer = page.answer("streaming")
    content = answer.find_element("css selector", ".content")
    first = page.wait(lambda d: len(page.text(content)), "the first text")
    page.wait(lambda d: len(page.text(content)) > first + 20, "more text while the answer streams")
    assert answer.get_attribute("data-state") == "streaming" and page.visible("#stop")
    page.find("#stop").click()
    stopped = page.answer("stopped")
    assert "stopped" in page.text(stopped.find_element("css selector", ".stats"))
    assert page.visible("#send") and not page.visible("#stop")
    # the server saw the page leave and ended the generation (the browser closed the stream)
    wait_for(
        lambda: (metric(httpx.get(server.url + "/metrics").text, CANCELLED) or 0) > cancelled,
        "the server to cancel the generation",
    )
    kept = page.stored_chats()[0]["messages"][-1]
    assert kept["state"] == "stopped" and 20 < len(kept["content"]) < 8000


def test_switching_models_sends_each_question_to_the_model_picked(page: Page) -> None:
    scripted = scripted_answer(page)
    assert scripted.get_attribute("data-model") == SCRIPTED
    assert page.text(scripted.find_element("css selector", ".model-name")) == SCRIPTED
    kept = page.stored_chats()[0]["messages"][-1]
    assert_the_script(kept["reasoning"], kept["content"])  # every streamed piece, in order

    page.find("#new-chat").click()
    page.pick_model(TINY)
    page.settings(temperature=0, max_tokens=20)
    page.send("Hello")
    tiny = page.answer("done")
    assert tiny.get_attribute("data-model") == TINY
    # greedy, 20 tokens, the chat template and no system prompt: the model's known answer
    assert page.text(tiny.find_element("css selector", ".content")) == DEFAULT_GREEDY
    assert "cut at max tokens" in page.text(tiny.find_element("css selector", ".stats"))
    chats = page.stored_chats()
    assert len(chats) == 2 and {c["model"] for c in chats} == {SCRIPTED, TINY}


def test_markup_in_an_answer_is_shown_as_text_and_never_runs(page: Page) -> None:
    answer = scripted_answer(page)
    driver = page.driver
    assert driver.execute_script("return window.__pwned") is None
    messages = page.find("#messages")
    for tag in ("img", "script", "iframe", "b", "i", "object", "embed", "svg:not(.copy svg)"):
        assert not messages.find_elements("css selector", tag), f"a <{tag}> element came from text"
    shown = page.text(answer.find_element("css selector", ".content"))
    assert '<img src=x onerror="window.__pwned = 1">' in shown
    assert "<script>window.__pwned = 2</script>" in shown
    assert "[bad link](javascript:window.__pwned=3)" in shown
    links = answer.find_elements("css selector", "a")
    assert [a.get_attribute("href") for a in links] == ["https://example.com/docs"]
    assert links[0].get_attribute("target") == "_blank" and "noopener" in links[0].get_attribute("rel")
    assert page.text(page.find("article[data-role=user] .user-text")) == "Show me <b>markdown</b>"

    # what is markdown is rendered: heading, emphasis, code, list, table, reasoning collapsed
    assert page.text(answer.find_element("css selector", "h1")) == "Scripted answer"
    assert page.text(answer.find_element("css selector", "strong")) == "bold"
    assert page.text(answer.find_element("css selector", "em")) == "italic"
    assert [page.text(c) for c in answer.find_elements("css selector", "p > code")] == [
        "inline code",
        "<b>not bold</b>",
    ]
    assert [page.text(li) for li in answer.find_elements("css selector", "ul > li")] == [
        "first item",
        "second item",
    ]
    code = answer.find_element("css selector", ".code-block pre code")
    assert page.text(code) == 'def greet(name):\n    return f"Hello, {name}!"'
    assert page.text(answer.find_element("css selector", ".code-lang")) == "python"
    headers = [page.text(th) for th in answer.find_elements("css selector", "th")]
    assert headers == ["Model", "Tokens", "Note"]
    cells = answer.find_elements("css selector", "tbody td")
    assert [page.text(td) for td in cells[:3]] == ["tiny", "42", "<i>plain</i>"]
    assert [td.get_attribute("class") for td in cells[:3]] == ["align-left", "align-right", "align-center"]
    reasoning = answer.find_element("css selector", "details.reasoning")
    assert (
        reasoning.get_attribute("open") is None
        and page.text(reasoning.find_element("css selector", ".reasoning-text")) == REASONING.strip()
    )
    assert "<think>" not in shown and REASONING.strip() not in shown


RENDER = (
    "const done = arguments[arguments.length - 1];"
    "import('./ui/markdown.js').then((markdown) => done(arguments[0].map((text) => {"
    "  const box = document.createElement('div');"
    "  box.append(markdown.renderMarkdown(text));"
    "  const outline = (node) => node.nodeType === Node.TEXT_NODE ? JSON.stringify(node.data)"
    "    : node.tagName.toLowerCase() + (node.getAttribute('href') ? `[${node.getAttribute('href')}]` : '')"
    "      + '(' + [...node.childNodes].map(outline).join(' ') + ')';"
    "  return [box.textContent, [...box.childNodes].map(outline).join(' ')];"
    "})), (error) => done(String(error)));"
)


def test_markdown_of_any_shape_renders_as_elements_of_ours_and_hostile_text_stays_text(page: Page) -> None:
    page.open(models=False)
    shapes = {
        "> a quote\n> - in a list": 'blockquote(p("a quote") ul(li("in a list")))',
        "1. one\n   - nested\n2. two": 'ol(li(p("one") ul(li("nested"))) li("two"))',
        "| a \\| b | c |\n|---|---|\n| `<u>` | [x](data:text/html,hi) |": (
            'div(table(thead(tr(th("a | b") th("c"))) tbody(tr(td(code("<u>")) td("[x](data:text/html,hi)")))))'
        ),
        "<https://a.example/x> and https://b.example/y.": (
            'p(a[https://a.example/x]("https://a.example/x") " and " a[https://b.example/y]("https://b.example/y") ".")'
        ),
        "```\nno closing fence <b>": 'div(div(span("text")) pre(code("no closing fence <b>")))',
    }
    rendered = page.driver.execute_async_script(RENDER, list(shapes))
    assert [outline for _, outline in rendered] == list(shapes.values())
    # text built to make a parser scan again and again (openers with no closer): it comes back
    # whole, as text (the script timeout guards against a hang)
    hostile = ["<" * 100_000, "[a](" * 30_000, "[" * 50_000, "*a " * 30_000, "_a " * 30_000, "~~a " * 30_000]
    rendered = page.driver.execute_async_script(RENDER, hostile)
    assert [text for text, _ in rendered] == [text.strip() for text in hostile]


def test_copy_buttons_put_the_code_and_the_answer_on_the_clipboard(page: Page) -> None:
    answer = scripted_answer(page)
    page.driver.execute_cdp_cmd(
        "Browser.grantPermissions",
        {"origin": page.url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
    )
    read = "navigator.clipboard.readText().then(arguments[0], (e) => arguments[0]('failed: ' + e));"
    button = answer.find_element("css selector", ".code-block .copy")
    button.click()
    page.wait(lambda d: "copied" in (button.get_attribute("class") or ""), "the code to be copied")
    assert page.driver.execute_async_script(read) == 'def greet(name):\n    return f"Hello, {name}!"'
    answer.find_element("css selector", "footer .copy").click()
    copied = page.driver.execute_async_script(read)
    assert copied.startswith("# Scripted answer\n") and "<think>" not in copied


def test_the_system_prompt_and_the_theme_are_settings_kept_in_the_browser(page: Page) -> None:
    def prompt_tokens() -> int:
        page.send("Hello")
        page.answer("done")
        tokens: int = page.stored_chats()[-1]["messages"][-1]["usage"]["prompt_tokens"]
        page.find("#new-chat").click()
        return tokens

    page.open()
    page.pick_model(TINY)
    page.settings(temperature=0, max_tokens=4)
    without = prompt_tokens()
    system = "Answer in one short line."
    page.settings(system=system)
    # the system prompt reached the model: a character-level tokenizer counts each of its characters
    assert prompt_tokens() >= without + len(system)
    theme = "return document.documentElement.dataset.theme"
    assert page.driver.execute_script(theme) == "light"  # the system's scheme, by default
    page.find("#theme").click()
    assert page.driver.execute_script(theme) == "dark"
    page.open(fresh=False)  # a reload
    kept = page.driver.execute_script("return JSON.parse(localStorage.getItem('mlxk.settings.v1'))")
    assert kept == {"model": TINY, "system": system, "temperature": 0, "maxTokens": 4, "theme": "dark"}
    assert page.driver.execute_script(theme) == "dark"
    page.settings()
    assert page.find("#system").get_attribute("value") == system


def test_conversations_are_kept_in_the_browser(page: Page) -> None:
    scripted_answer(page)
    page.open(fresh=False)  # a reload
    items = page.find_all(".chat-item")
    assert len(items) == 1 and page.text(items[0]) == "Show me <b>markdown</b>"
    assert page.find("article[data-role=assistant][data-state=done] h1")
    page.find("#new-chat").click()
    assert page.find_all("article") == [] and page.find(".empty")
    page.find(".chat-item:not(.current) .chat-open").click()
    assert page.find("article[data-role=assistant] h1")
    page.find(".chat-item.current .chat-delete").click()
    assert [c["messages"] for c in page.stored_chats()] == [[]]


def test_the_page_loads_nothing_from_anywhere_but_its_server(page: Page) -> None:
    scripted_answer(page)
    urls = page.driver.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name).concat([location.href])"
    )
    assert urls and all(url.startswith(page.url + "/") for url in urls), urls


@pytest.fixture
def keyed_server(browser: Any, chat_hub: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    served = start_server(chat_hub, "--api-key", KEY, log=tmp_path / "serve.log")
    yield served
    assert served.stop() == 0


def test_with_an_api_key_the_page_asks_for_it_and_keeps_it_only_in_its_storage(
    browser: Any, keyed_server: ServerProcess
) -> None:
    page = Page(browser, keyed_server.url)
    browser.get_log("browser")
    page.open(models=False)
    page.wait(lambda d: page.find("#key-dialog").get_attribute("open") is not None, "the key dialog")
    page.find("#key-input").send_keys("wrong")
    page.find("#key-connect").click()
    page.wait(lambda d: page.text(page.find("#key-error")) == "The server refused the key.", "the refusal")
    page.find("#key-input").send_keys(KEY)
    page.find("#key-connect").click()
    page.wait(lambda d: page.find("#model").is_enabled(), "the models, with the key")
    stored = "return [sessionStorage.getItem('mlxk.apiKey'), localStorage.getItem('mlxk.apiKey')]"
    assert browser.execute_script(stored) == [KEY, None]  # this tab only, unless asked to keep it
    page.pick_model(SCRIPTED)
    page.send("Hi")
    page.answer("done")
    page.open(fresh=False)  # a reload in the same tab keeps the key
    assert browser.execute_script(stored) == [KEY, None]
    # kept on the device when asked
    page.find("#open-settings").click()
    page.find("#change-key").click()
    page.find("#key-input").send_keys(KEY)
    page.find("#key-keep").click()
    page.find("#key-connect").click()
    page.wait(lambda d: page.find("#model").is_enabled(), "the models")
    assert browser.execute_script(stored) == [None, KEY]
    # the 401 the page met is in the console as a failed load; nothing else may be
    errors = [e for e in browserfix.console_errors(browser) if "401" not in e]
    assert not errors, errors


def test_screenshots_in_light_and_dark_at_desktop_and_phone_widths(page: Page) -> None:
    """Kept as artifacts (the folder is named in the session's summary); the layout checks that
    they could not show: nothing wider than a phone's screen, the composer on it, the theme as asked."""
    scripted_answer(page)
    driver = page.driver
    shots = []
    for dark in (False, True):
        for phone in (False, True):
            browserfix.emulate(driver, dark=dark, phone=phone)
            page.open(fresh=False)  # theme "auto": the system's scheme
            page.answer("done")
            theme = driver.execute_script("return document.documentElement.dataset.theme")
            assert theme == ("dark" if dark else "light")
            background = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
            assert _luminance(background) < 0.2 if dark else _luminance(background) > 0.8
            width = driver.execute_script("return window.innerWidth")
            assert width == browserfix.PHONE[0] if phone else width >= 1000
            overflow = driver.execute_script("return document.scrollingElement.scrollWidth - innerWidth")
            assert overflow <= 0, "the page is wider than the screen"
            composer = driver.execute_script(
                "const r = document.getElementById('prompt').getBoundingClientRect();"
                "return [r.top, r.bottom, innerHeight]"
            )
            assert 0 < composer[0] < composer[1] <= composer[2]
            assert page.visible("#sidebar") != phone  # a drawer on phones
            name = f"chat-{'phone' if phone else 'desktop'}-{'dark' if dark else 'light'}"
            shots.append(browserfix.screenshot(driver, name))
            if phone:
                page.find("#menu").click()
                page.wait(lambda d: page.visible("#scrim"), "the drawer")
                left = "return document.getElementById('sidebar').getBoundingClientRect().left"
                assert driver.execute_script(left) == 0  # in place at once: reduced motion, no slide
                shots.append(browserfix.screenshot(driver, name.replace("chat-", "drawer-")))
                page.tap_beside_the_drawer()
                page.wait(lambda d: not page.visible("#sidebar"), "the drawer to close")
    for shot in shots:
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _luminance(css_color: str) -> float:
    channels = [float(part) for part in css_color[css_color.index("(") + 1 : -1].split(",")[:3]]
    return sum(channels) / (3 * 255)


def test_serve_no_ui_turns_the_page_off(chat_hub: Path, server: ServerProcess, tmp_path: Path) -> None:
    assert httpx.get(server.url + "/").status_code == 200  # on by default
    served = start_server(chat_hub, "--no-ui", log=tmp_path / "serve.log")
    try:
        assert httpx.get(served.url + "/").status_code == 404
        assert httpx.get(served.url + "/ui/app.js").status_code == 404
        assert httpx.get(served.url + "/v1/models").status_code == 200
    finally:
        assert served.stop() == 0
