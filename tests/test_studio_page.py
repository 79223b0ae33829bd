"""The studio as a person meets it, in headless Chromium at laptop (1400x1000) and phone (390x844) sizes, against one
`python app.py`: a refusal's reason stays under its slot, files of the wrong kind are named in plain words, the
Generate page holds no server internals and fits a laptop's first screen, the Tasks tab turns into cards on a
phone, and a whole task is watched change by change: one view (never a finished status beside the live preview,
nor progress going back), one queue text (ours), an honest first time estimate, and silence warned about.

Every check waits on the condition it asserts (Playwright's expect, wait_for_function) or reads a log the page
wrote of every change it went through; none sleeps.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import pytest

from heygem.pipeline import samples
from tests.media import astronaut_video, silent_wav
from tests.server_process import ServerProcess
from tests.studio_server import CHROMIUM, CHROMIUM_ARGS, JOB_TIMEOUT_S, make_speech

pytestmark = [pytest.mark.server, pytest.mark.browser]

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

DESKTOP = {"width": 1400, "height": 1000}
PHONE = {"width": 390, "height": 844}
SIZES = [pytest.param(DESKTOP, id="desktop"), pytest.param(PHONE, id="phone")]
WAIT_MS = 30_000

# Installed before the page loads: every change of the Generate tab's task view, as the person saw it.
WATCH_JS = """() => {
  const QUEUE_TEXT = /.{0,40}(queue: \\d+\\/\\d+|\\d+\\.\\d+\\/\\d+\\.\\d+s).{0,40}/;
  window.hgLog = [];
  const look = () => {
    const card = document.querySelector('#hg-status .hg-card');
    const result = document.querySelector('#hg-result');
    const resultVideo = document.querySelector('#hg-result video');
    const percent = document.querySelector('#hg-status .hg-percent');
    const eta = document.querySelector('#hg-status .hg-eta');
    const entry = {
      t: performance.now(),
      state: card ? card.className.replace('hg-card', '').trim() : '',
      code: (document.querySelector('#hg-status code') || {}).textContent || '',
      percent: percent ? parseFloat(percent.textContent) : null,
      eta: eta ? eta.textContent : '',
      live: !!(document.querySelector('#hg-live video') && document.querySelector('#hg-live').offsetParent !== null),
      result: !!(resultVideo && resultVideo.getAttribute('src') && result.offsetParent !== null),
      queue: (document.querySelector('.gradio-container').innerText.match(QUEUE_TEXT) || [''])[0],
    };
    const last = window.hgLog[window.hgLog.length - 1];
    if (!last || JSON.stringify({...last, t: 0}) !== JSON.stringify({...entry, t: 0})) window.hgLog.push(entry);
  };
  new MutationObserver(look).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                     characterData: true});
}"""


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("studio-page-media")
    not_a_video = folder / "holiday.mp4"
    not_a_video.write_text("these are my holiday notes, not a video\n" * 10)
    photo = folder / "portrait_photo.png"
    cv2.imwrite(str(photo), cv2.resize(samples.portrait(), (256, 256)))
    return {"speech": make_speech(folder / "speech.wav", 6.0), "long_speech": make_speech(folder / "long.wav", 24.0),
            "silence": silent_wav(folder / "silence.wav", 2.0), "video": astronaut_video(folder / "portrait.mp4", 2.0,
                                                                                        size=(256, 256)),
            "not_a_video": not_a_video, "photo": photo}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (make debian-packages PACKAGES=chromium installs it)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser: Any, server: ServerProcess) -> Iterator[Any]:
    pages: list[Any] = []

    def open_at(viewport: dict[str, int], clock: bool = False) -> Any:
        page = browser.new_page(viewport=viewport)
        pages.append(page)
        if clock:
            page.clock.install()
        page.goto(server.url)
        page.evaluate(WATCH_JS)
        expect(page.locator("#hg-generate")).to_be_enabled(timeout=WAIT_MS)
        return page

    yield open_at
    for page in pages:
        page.close()


def upload(page: Any, slot: str, path: Path) -> None:
    page.locator(f"#hg-{slot} input[type=file]").set_input_files(str(path))


def upload_both(page: Any, speech: Path, video: Path) -> None:
    upload(page, "speech", speech)
    upload(page, "video", video)
    expect(page.locator("#hg-video video")).to_have_count(1, timeout=WAIT_MS)
    expect(page.locator("#hg-speech audio, #hg-speech .waveform-container, #hg-speech button[aria-label='Play']")
           .first).to_be_attached(timeout=WAIT_MS)


def run_to_the_end(page: Any) -> list[dict[str, Any]]:
    """Presses Generate, waits for the finished status card, and returns the page's log of the task's view."""
    page.locator("#hg-generate").click()
    expect(page.locator("#hg-status .hg-succeeded, #hg-status .hg-failed")).to_have_count(1,
                                                                                          timeout=JOB_TIMEOUT_S * 1000)
    log: list[dict[str, Any]] = page.evaluate("window.hgLog")
    return log


@pytest.mark.parametrize("viewport", SIZES)
def test_a_refused_file_stays_explained_under_its_slot(open_page: Any, media: dict[str, Path],
                                                       viewport: dict[str, int]) -> None:
    page = open_page(viewport, clock=True)
    upload_both(page, media["speech"], media["not_a_video"])  # a text file named .mp4 passes the browser's check
    page.locator("#hg-generate").click()
    reason = page.locator("#hg-video-note .hg-slot-error")
    expect(reason).to_contain_text("not a readable media file", timeout=WAIT_MS)
    expect(reason).to_contain_text("holiday.mp4")
    expect(page.locator("#hg-status")).to_contain_text("Not started")
    page.clock.fast_forward(20_000)  # long past any pop-up's self-close; the timers of the page ran meanwhile
    expect(reason).to_be_visible()
    expect(reason).to_contain_text("not a readable media file")
    expect(page.get_by_text("Error", exact=True)).to_have_count(0)
    assert "Upload a speech and a video" not in page.locator("#hg-status").inner_text()
    assert not [entry["queue"] for entry in page.evaluate("window.hgLog") if entry["queue"]], "only our own status"
    # Changing the video clears its reason.
    page.locator("#hg-video button[aria-label='Clear']").first.click()
    upload(page, "video", media["video"])
    expect(reason).to_have_count(0, timeout=WAIT_MS)


def test_a_photo_and_swapped_files_are_named_in_plain_words(open_page: Any, media: dict[str, Path]) -> None:
    page = open_page(DESKTOP)
    upload(page, "video", media["photo"])
    words = page.locator("#hg-video-guard")
    expect(words).to_contain_text("is a photo; this slot needs a video of the person", timeout=WAIT_MS)
    expect(page.get_by_text(re.compile("Invalid file type|Only video/"))).to_have_count(0)
    upload(page, "video", media["speech"])
    upload(page, "speech", media["video"])
    expect(page.locator("#hg-speech-guard")).to_contain_text("These two look swapped", timeout=WAIT_MS)
    upload(page, "speech", media["speech"])
    expect(page.locator("#hg-speech-guard")).to_have_count(0, timeout=WAIT_MS)


@pytest.mark.parametrize("viewport", SIZES)
def test_the_generate_page_says_the_limits_first_and_no_server_internals(open_page: Any, media: dict[str, Path],
                                                                         server: ServerProcess,
                                                                         viewport: dict[str, int]) -> None:
    page = open_page(viewport)
    expect(page.locator(".hg-limits")).to_contain_text("up to 10 min")
    upload_both(page, media["speech"], media["video"])
    text = page.locator("#hg-generate").locator("xpath=ancestor::div[contains(@class,'tabitem')][1]").inner_text()
    assert str(server.data_dir) not in text and "python -m" not in text and ".onnx" not in text, text
    if viewport is DESKTOP:  # the whole task on a laptop's first screen, without scrolling
        box = page.locator("#hg-generate").bounding_box()
        assert box is not None and box["y"] + box["height"] <= viewport["height"], box
    page.wait_for_function("document.documentElement.scrollWidth <= window.innerWidth")


def test_a_task_is_shown_as_one_view_with_an_honest_estimate(open_page: Any, media: dict[str, Path],
                                                             server: ServerProcess) -> None:
    """A long and a short job: the first ETA is within 3x of the rendering time that was really left (the short job
    may finish rendering before the page can show one), the view never shows a finished status beside the live
    preview nor a running one beside the result, and progress never goes back."""
    for speech in (media["long_speech"], media["speech"]):
        page = open_page(DESKTOP)
        upload_both(page, speech, media["video"])
        log = run_to_the_end(page)
        assert not [entry["queue"] for entry in log if entry["queue"]], "Gradio's queue text stays off the page"
        task = [entry for entry in log if entry["code"]]
        for entry in task:
            finished = "hg-succeeded" in entry["state"] or "hg-failed" in entry["state"]
            assert not (finished and entry["live"]), f"a finished status beside the live preview: {entry}"
            assert not (not finished and entry["result"]), f"a running status beside the result: {entry}"
        percents = [entry["percent"] for entry in task if entry["percent"] is not None]
        assert percents == sorted(percents), f"progress went back: {percents}"
        done_at = next(entry["t"] for entry in task if "hg-succeeded" in entry["state"])
        first = next((entry for entry in task if entry["eta"]), None)
        if first is None:  # a render over between two looks, or within two seconds, goes without an estimate
            rendering = [entry["t"] for entry in task if entry["percent"] and "hg-running" in entry["state"]]
            assert speech is media["speech"], f"no time estimate on the long job: {task}"
            assert not rendering or done_at - rendering[0] < 2000, f"no time estimate: {task}"
            continue
        said = seconds_of(first["eta"])
        # The estimate is the rendering's: the worker's finishing and the looks that notice it come after 100 %, and
        # on a loaded machine they alone can outlast it (1 s said with 6.6 s to go, at load 13).
        rendered_at = next(entry["t"] for entry in task if entry["percent"] == 100 or "hg-succeeded" in entry["state"])
        left = (rendered_at - first["t"]) / 1000
        # The card says whole seconds, and the page looks every ui_refresh_s: a second's slack either way.
        assert left / 3 - 1 <= said <= 3 * left + 1, f"first estimate {said:.0f} s, {left:.1f} s left ({speech.name})"


def test_silent_speech_ends_with_a_visible_warning(open_page: Any, media: dict[str, Path],
                                                   server: ServerProcess) -> None:
    page = open_page(DESKTOP)
    upload_both(page, media["silence"], media["video"])
    run_to_the_end(page)
    expect(page.locator("#hg-status .hg-warning")).to_contain_text("the speech track is silent")
    code = page.locator("#hg-status code").inner_text()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert "silent" in client.get(f"/api/v1/tasks/{code}").json()["warning"]
        assert "silent" in client.get("/easy/query", params={"code": code}).json()["data"]["msg"]


@pytest.mark.parametrize("viewport", SIZES)
def test_the_tasks_tab_is_a_list_to_scan_at_any_size(open_page: Any, media: dict[str, Path], server: ServerProcess,
                                                     viewport: dict[str, int]) -> None:
    page = open_page(viewport)
    upload_both(page, media["speech"], media["video"])
    page.locator("#hg-generate").click()
    expect(page.locator("#hg-status .hg-queued, #hg-status .hg-initializing, #hg-status .hg-running")).to_have_count(
        1, timeout=WAIT_MS)
    code = page.locator("#hg-status code").inner_text()
    page.get_by_role("tab", name="Tasks").click()
    row = page.locator(f"#hg-tasks tr[data-code='{code}']")
    expect(row).to_contain_text("speech.wav", timeout=WAIT_MS)
    expect(row).to_contain_text("portrait.mp4")
    expect(row.locator(".hg-thumb img")).to_have_count(1)
    # The list follows the running task by itself, to its end, with one progress figure.
    expect(row.locator(".hg-state")).to_have_text("Done", timeout=JOB_TIMEOUT_S * 1000)
    expect(row.locator(".hg-progress")).to_have_text("100 %")
    page.wait_for_function("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scrolling
    headers = page.locator("#hg-tasks th")
    if viewport is PHONE:
        expect(headers.first).to_be_hidden()  # cards: no table header at all
        box = row.bounding_box()
        assert box is not None and box["width"] <= viewport["width"], box
    else:
        line = page.evaluate("parseFloat(getComputedStyle(document.querySelector('#hg-tasks th')).lineHeight)")
        heights = [box["height"] for box in (headers.nth(index).bounding_box() for index in range(headers.count()))
                   if box]
        assert heights and max(heights) <= 2 * line + 16, heights  # at most two lines (and the padding)
    row.click()
    expect(page.locator("#hg-selected textarea, #hg-selected input").first).to_have_value(code)


def seconds_of(eta: str) -> float:
    """ "about 1 min 05 s left" -> 65.0"""
    minutes = re.search(r"(\d+) min", eta)
    seconds = re.search(r"(\d+) s", eta)
    return 60.0 * int(minutes.group(1) if minutes else 0) + int(seconds.group(1) if seconds else 0)
