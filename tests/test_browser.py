"""The web page in a real browser: Debian's Chromium driven by Playwright, against a real uvicorn on
loopback. Type, submit, see each task's answer; a screenshot is kept in tests/artifacts/."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from serve_fixtures import served_run  # noqa: F401 - fixture

from mtbert.inference.predictor import Predictor
from mtbert.inference.server import create_app, serve_in_thread

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Chromium is not installed (apt-get install chromium): the web page is untested")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu",
                                                               "--disable-background-networking"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def site(served_run):  # noqa: F811
    predictor = Predictor(served_run, precision="fp32")
    with serve_in_thread(create_app(predictor, run_name="demo-run")) as url:
        yield url, predictor


@pytest.fixture
def page(browser, site):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(site[0])
    page.wait_for_selector("body[data-ready=true]")
    yield page
    page.close()
    assert errors == []  # no script error on the page


def spans(words: list[str], tags: list[str]) -> list[list[str]]:
    """IOB2 entities as [type, words]: B-X starts one, I-X continues it."""
    out, i = [], 0
    while i < len(words):
        if tags[i] == "O":
            i += 1
            continue
        kind, j = tags[i][2:], i + 1
        while j < len(words) and tags[j] == f"I-{kind}":
            j += 1
        out.append([kind, " ".join(words[i:j])])
        i = j
    return out


def test_type_a_text_and_see_every_task(page, site):
    _, predictor = site
    # the page names the run and its tasks, links the API docs, and its empty fields show examples
    assert page.inner_text("#status") == "serving demo-run: 7 tasks (sent, sts, mc, ner, polar, para, len) · torch engine"
    assert page.title() == "mtbert · demo-run" and page.get_attribute("#docs", "href") == "docs"
    assert page.get_attribute("#text", "placeholder").startswith("e.g. ") and page.input_value("#text") == ""
    style = page.eval_on_selector("#text", "e => getComputedStyle(e, '::placeholder').fontStyle")
    assert style == "italic"
    text = "John lives in Paris and loves great fun movies"
    page.fill("#text", text)
    page.fill("#text_pair", "a man lives in France")
    page.fill("#question", "what happened?")
    page.fill("#choices", "people liked it\npeople left")
    page.click("#predict")
    page.wait_for_selector(".result[data-task=para] .label")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web_page.png"), full_page=True)

    expected = predictor.predict_all([text], return_probas=True)[0]
    cards = page.locator(".result")
    assert cards.evaluate_all("cards => cards.map(c => c.dataset.task)") == ["sent", "sts", "mc", "ner", "polar", "para", "len"]
    sent = page.locator(".result[data-task=sent]")
    assert sent.locator(".label").inner_text() == expected["sent"]["label"]
    bars = sent.locator(".bar").evaluate_all("bars => bars.map(b => Number(b.getAttribute('aria-valuenow')))")
    assert bars == pytest.approx(list(expected["sent"]["probas"].values()), abs=1e-3)
    score = float(page.locator(".result[data-task=len] .score").inner_text())
    assert score == pytest.approx(expected["len"]["score"], abs=1e-3)
    mc = predictor.predict("mc", [{"text": text, "question": "what happened?", "choices": ["people liked it", "people left"]}])
    assert page.locator(".result[data-task=mc] .label").inner_text() == ["people liked it", "people left"][mc[0]["label"]]
    marks = page.locator(".result[data-task=ner] mark.entity").evaluate_all(
        "ms => ms.map(m => [m.dataset.type, m.childNodes[0].textContent])")
    assert marks == spans(text.split(), expected["ner"]["label"])

def test_entities_are_highlighted_and_missing_inputs_named(page):
    # the tiny model's tags are noise: answer /predict/all with known tags to check the highlighting
    tags = ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]

    def fulfil(route):
        body = {"tasks": ["ner"], "results": [{"ner": {"label": tags}}]}
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    page.route("**/predict/all", fulfil)
    page.check(".task-toggle[value=ner]")
    page.check(".task-toggle[value=sts]")
    assert not page.is_checked("#all-tasks") and page.is_visible("#text_pair") and not page.is_visible("#choices")
    page.fill("#text", "Mary Smith flew to Paris yesterday")
    page.click("#predict")
    page.wait_for_selector("mark.entity")
    marks = page.locator("mark.entity").evaluate_all("ms => ms.map(m => [m.dataset.type, m.childNodes[0].textContent])")
    assert marks == [["PER", "Mary Smith"], ["LOC", "Paris"]]
    assert page.locator(".note").inner_text() == "sts: needs a second text"


def test_a_server_error_is_shown(page):
    page.check(".task-toggle[value=sent]")
    page.fill("#text", "x" * 10_001)  # over the server's per-input limit
    page.click("#predict")
    page.wait_for_selector(".error")
    assert "10001 characters; the limit is 10000" in page.inner_text(".error")
