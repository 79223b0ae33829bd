"""The studio page, driven by gradio_client and by headless Chromium against `python app.py` in a subprocess."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from tests.option_cases import OUT_OF_RANGE, WRONG_KIND, case_id
from tests.server_process import ServerProcess
from tests.studio_server import (
    CHROMIUM,
    CHROMIUM_ARGS,
    JOB_TIMEOUT_S,
    OPTIONS,
    make_speech,
    query,
    wait_for_result,
    write_inputs,
)

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("studio-media")
    speech, video = write_inputs(folder)
    # Long enough to still be rendering when the browser test reloads the page.
    return {"speech": speech, "video": video, "long_speech": make_speech(folder / "long-speech.wav", 8.0)}


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Client:
    return Client(server.url, verbose=False)


def test_gradio_client_runs_a_job_and_gets_the_video_back(client: Client, server: ServerProcess,
                                                           media: dict[str, Path]) -> None:
    code, status, _, _, _ = client.predict(handle_file(str(media["speech"])), handle_file(str(media["video"])),
                                           *OPTIONS, api_name="/generate")
    assert code in status
    video = wait_for_result(client, code)
    with av.open(video) as container:
        assert container.streams.video and container.duration
    # The inputs were copied out of Gradio's temporary files, and a script over HTTP sees the same task.
    uploads = sorted(path.name for path in (server.data_dir / "uploads").iterdir())
    assert any(name.endswith("-audio-speech.wav") for name in uploads)
    assert any(name.endswith("-video-portrait.mp4") for name in uploads)
    with httpx.Client(base_url=server.url) as http:
        answer = query(http, code)["data"]
    assert answer["status"] == 2 and answer["result"].endswith(f"{code}-r.mp4")


@pytest.mark.parametrize(("slots", "message"), [
    (("speech", "speech"), "Video: this is an audio file, but the video slot needs a video"),
    (("video", "video"), "Speech: audio file has no audio stream"),
    ((None, "video"), "Add the speech first"),
])
def test_an_invalid_upload_is_refused_with_its_message(client: Client, media: dict[str, Path],
                                                        slots: tuple[str | None, str], message: str) -> None:
    files = [handle_file(str(media[slot])) if slot else None for slot in slots]
    with pytest.raises(AppError, match=message):
        client.predict(*files, *OPTIONS, api_name="/generate")


@pytest.mark.parametrize("case", OUT_OF_RANGE + WRONG_KIND, ids=case_id)
def test_an_option_out_of_range_is_refused_with_the_one_message(client: Client, case: tuple[str, Any, str]) -> None:
    name, value, message = case
    controls = dict(zip(("engine", "loop_mode", "mouth_intensity", "ai_label", "watermark", "speech_language"), OPTIONS,
                        strict=True))
    controls[name] = value
    # Options are checked before the files: none are sent.
    with pytest.raises(AppError) as refusal:
        client.predict(None, None, *controls.values(), api_name="/generate")
    assert refusal.value.message == message


def test_an_option_the_engine_does_not_take_is_refused_by_name(client: Client) -> None:
    controls = dict(zip(("engine", "loop_mode", "mouth_intensity", "ai_label", "watermark", "speech_language"), OPTIONS,
                        strict=True))
    # The slider moved away from where it starts, with the engine that has no such option: before any file is sent.
    controls.update(engine="wav2lip", mouth_intensity=1.5)
    with pytest.raises(AppError) as refusal:
        client.predict(None, None, *controls.values(), api_name="/generate")
    assert refusal.value.message == ("mouth_intensity is not an option of the wav2lip engine (its options: "
                                     "loop_mode, ai_label, watermark); leave mouth_intensity out, or choose an engine "
                                     "that takes it")


@pytest.mark.browser
def test_browser_generates_and_reattaches_after_a_reload(server: ServerProcess, media: dict[str, Path],
                                                         tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (make debian-packages PACKAGES=chromium installs it)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(server.url)
            page.locator("#hg-speech input[type=file]").set_input_files(str(media["long_speech"]))
            page.locator("#hg-video input[type=file]").set_input_files(str(media["video"]))
            page.get_by_role("button", name="Generate").click()
            page.wait_for_selector("#hg-status .hg-initializing, #hg-status .hg-running", timeout=30_000)
            code = page.locator("#hg-status code").inner_text()
            assert f"code={code}" in page.url

            page.reload()  # the task lives on; the page finds it again from ?code=
            page.wait_for_selector(f"#hg-status code:text-is('{code}')", timeout=30_000)
            page.wait_for_function("() => { const v = document.querySelector('#hg-result video');"
                                   " return v && v.currentSrc && v.readyState >= 1 && v.duration > 0; }",
                                   timeout=JOB_TIMEOUT_S * 1000)
            sync_api.expect(page.locator("#hg-status .hg-succeeded")).to_have_count(1)
            page.screenshot(path=str(tmp_path / "studio.png"), full_page=True)

            fresh = browser.new_page()  # no browser memory: only the link
            fresh.goto(f"{server.url}/?code={code}")
            fresh.wait_for_selector("#hg-result video[src]", timeout=30_000)
        finally:
            browser.close()
    assert (tmp_path / "studio.png").stat().st_size > 10_000
