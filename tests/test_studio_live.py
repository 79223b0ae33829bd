"""The studio's live preview in headless Chromium against `python app.py`: the result area plays the task's stream
while it renders, a reload comes back to it, and the final video then takes its place with its download button.

"While it renders" is made certain rather than raced: once the first segment exists, the test stops the task's
worker and encoder (SIGSTOP to its process group) while the browser plays, and lets them go on afterwards, well
within the supervisor's heartbeat timeout.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.media import astronaut_video, spoken_wav
from tests.server_process import ServerProcess
from tests.studio_server import CHROMIUM, CHROMIUM_ARGS, JOB_TIMEOUT_S
from tests.supervision import wait_until

pytestmark = [pytest.mark.server, pytest.mark.browser]

PLAYING = ("() => { const v = document.querySelector('#hg-live video');"
           " return v !== null && v.currentTime > 0; }")
RESULT_READY = ("() => { const v = document.querySelector('#hg-result video');"
                " return v !== null && !!v.currentSrc && v.readyState >= 1 && v.duration > 0; }")


def wait_for_segment(client: httpx.Client, code: str) -> None:
    wait_until(lambda: client.get(f"/api/v1/tasks/{code}/live.m3u8").status_code == 200, JOB_TIMEOUT_S,
               f"a live segment of task {code}")


def test_the_result_area_plays_the_stream_then_the_result(server: ServerProcess, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (make debian-packages PACKAGES=chromium installs it)")
    speech, video = spoken_wav(tmp_path / "speech.wav", 10.0), astronaut_video(tmp_path / "portrait.mp4", 4.0)
    with sync_api.sync_playwright() as playwright, httpx.Client(base_url=server.url, timeout=30) as client:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(server.url)
            page.locator("#hg-speech input[type=file]").set_input_files(str(speech))
            page.locator("#hg-video input[type=file]").set_input_files(str(video))
            page.get_by_role("button", name="Generate").click()
            page.wait_for_selector("#hg-status .hg-initializing, #hg-status .hg-running", timeout=30_000)
            code = page.locator("#hg-status code").inner_text()
            wait_for_segment(client, code)
            worker = client.get(f"/api/v1/tasks/{code}").json()["worker_pid"]
            os.killpg(worker, signal.SIGSTOP)  # the render holds; what is written so far plays
            try:
                page.wait_for_function(PLAYING, timeout=30_000)
                expect(page.locator("#hg-status .hg-running")).to_have_count(1)  # playing while the task renders
                expect(page.locator("#hg-result")).to_be_hidden()  # the preview takes the result's place
                page.screenshot(path=str(tmp_path / "live.png"), full_page=True)

                page.reload()  # the page finds the task again from ?code=, and its live view
                page.wait_for_selector(f"#hg-status code:text-is('{code}')", timeout=30_000)
                page.wait_for_function(PLAYING, timeout=30_000)
                expect(page.locator("#hg-status .hg-running")).to_have_count(1)
            finally:
                os.killpg(worker, signal.SIGCONT)
            page.wait_for_function(RESULT_READY, timeout=JOB_TIMEOUT_S * 1000)
            # One view: the event that shows the result also shows the final status and ends the preview.
            expect(page.locator("#hg-status .hg-succeeded")).to_have_count(1)
            expect(page.locator("#hg-live video")).to_have_count(0)
            expect(page.get_by_role("button", name="Download the video")).to_be_visible()
            page.screenshot(path=str(tmp_path / "result.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "live.png").stat().st_size > 10_000
