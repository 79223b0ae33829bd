"""Issue 8, finding 3: with server.api_token set, every route of the app needs it (or a sign-in), Gradio's included.

The routes are enumerated from the app's own route table, so a route added later is attacked as well. The requests
go to `python app.py` in a subprocess; the studio's own flows (gradio_client, Chromium) must still work.
"""

from __future__ import annotations

import html
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AuthenticationError

from heygem.api.auth import SESSION_COOKIE, Credentials, check_exposure
from heygem.config import load_config
from heygem.errors import ConfigError
from heygem.server import create_app
from tests.conftest import REPO_ROOT, ConfigFactory
from tests.security import route_table
from tests.server_process import ServerProcess
from tests.studio_server import CHROMIUM, CHROMIUM_ARGS, JOB_TIMEOUT_S, OPTIONS, wait_for_result, write_inputs
from tests.supervision import wait_until

pytestmark = pytest.mark.server

TOKEN = "correct-horse-battery-staple"
# Paths no route serves: the rule must hold for them too.
UNROUTED = [("GET", "/nothing-here"), ("POST", "/gradio_api/nothing-here"), ("GET", "/gradio_api/file=/etc/passwd")]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("auth"), HEYGEM_SERVER__API_TOKEN=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str]]:
    """The route table of the same app, built in this process on a data folder of its own."""
    folder = tmp_path_factory.mktemp("route-table")
    app = create_app(load_config(environ={}, overrides={
        "paths": {"data_dir": str(folder / "data"), "input_dir": str(folder / "inputs")},
        "server": {"api_token": TOKEN}}))
    app.state.supervisor.shutdown()  # never started; this releases its data folder
    table = route_table(app)
    assert len(table) > 60 and ("POST", "/gradio_api/queue/join") in table and ("GET", "/config") in table
    return table + UNROUTED


def status_of(client: httpx.Client, method: str, path: str, headers: dict[str, str] | None = None) -> int:
    # Streamed: some routes are event streams that would not end; the status line is all that matters.
    with client.stream(method, path, headers=headers) as response:
        return response.status_code


def test_without_the_token_every_route_is_refused_but_healthz(server: ServerProcess,
                                                             routes: list[tuple[str, str]]) -> None:
    wrong = []
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for method, path in routes:
            expected = 200 if path == "/healthz" else 401
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Token": TOKEN[:-1]},
                            {"Cookie": "heygem_session=4102444800.forged"}, {"Accept": "text/html"}):
                status = status_of(client, method, path, headers)
                if status != expected:
                    wrong.append(f"{method} {path} {headers}: {status}")
    assert not wrong, "\n".join(wrong)


def test_the_token_opens_every_route(server: ServerProcess, routes: list[tuple[str, str]]) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        refused = [f"{method} {path}" for method, path in routes
                   if status_of(client, method, path, {"X-API-Token": TOKEN}) == 401
                   and (method, path) != ("POST", "/login")]  # the sign-in checks its form, not headers
    assert not refused


def signed_in_cookie(server: ServerProcess) -> str:
    answer = httpx.post(f"{server.url}/login", data={"password": TOKEN}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.cookies[SESSION_COOKIE]


def test_pages_on_another_port_or_scheme_may_not_act_for_the_signed_in_user(
        server: ServerProcess, routes: list[tuple[str, str]]) -> None:
    """Issue 17, finding 5: with the user's cookie, a page at http://127.0.0.1:9999 could submit (201) and cancel
    tasks: origins were compared by host name only. And Gradio answered with access-control-allow-origin set to
    whatever origin a request named, with credentials allowed."""
    own = f"http://127.0.0.1:{server.port}"
    foreign = ["http://127.0.0.1:9999", f"https://127.0.0.1:{server.port}", f"http://localhost:{server.port}"]
    wrong = []
    with httpx.Client(base_url=server.url, timeout=10, cookies={SESSION_COOKIE: signed_in_cookie(server)}) as client:
        for method, path in routes:
            if path == "/healthz" or (method, path) == ("GET", "/logout"):  # open to all; ends the session
                continue
            for origin in [*foreign, own]:
                with client.stream(method, path, headers={"Origin": origin}) as answer:
                    # A HEAD answer has no body to tell our refusal from a route's own 403 (file=x): only foreign.
                    refused = answer.status_code == 403 and (
                        method == "HEAD" or "cross-site request refused" in answer.read().decode())
                    granted = [name for name in answer.headers if name.startswith("access-control-")]
                if (refused != (origin != own) and (method, origin) != ("HEAD", own)) or granted:
                    wrong.append(f"{method} {path} from {origin}: {answer.status_code} {granted}")
    assert not wrong, "\n".join(wrong)


def test_signing_out_ends_the_session_on_the_server(server: ServerProcess) -> None:
    """Issue 17, finding 6: after GET /logout the old cookie still worked for up to 7 days."""
    cookie, other = signed_in_cookie(server), signed_in_cookie(server)
    tasks = f"{server.url}/api/v1/tasks"
    assert httpx.get(tasks, cookies={SESSION_COOKIE: cookie}, timeout=10).status_code == 200
    out = httpx.get(f"{server.url}/logout", cookies={SESSION_COOKIE: cookie}, timeout=10)
    assert out.status_code == 303 and f"{SESSION_COOKIE}=" in out.headers["set-cookie"]
    assert httpx.get(tasks, cookies={SESSION_COOKIE: cookie}, timeout=10).status_code == 401, "a copy kept of it"
    assert httpx.get(tasks, cookies={SESSION_COOKIE: other}, timeout=10).status_code == 200, "only that session"
    # The ended session stays ended for a server started again on the same data (the list is in data_dir).
    credentials = Credentials(load_config(environ={}, overrides={"server": {"api_token": TOKEN}}).server,
                              server.data_dir / "signed_out.json")
    assert not credentials.session_valid(cookie) and credentials.session_valid(other)


def test_head_healthz_answers_as_get_does(server: ServerProcess) -> None:
    """Issue 17, finding 6: probes that send HEAD got 404."""
    assert httpx.head(f"{server.url}/healthz", timeout=10).status_code == 200


def test_the_blocking_predict_endpoint_follows_the_same_rule(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for route in ("/gradio_api/call/predict", "/gradio_api/run/predict", "/gradio_api/queue/join"):
            assert status_of(client, "POST", route) == 401
            assert status_of(client, "POST", route, {"X-API-Token": TOKEN}) != 401


def test_gradio_client_runs_a_job_with_the_token(server: ServerProcess, tmp_path: Path) -> None:
    with pytest.raises(AuthenticationError):
        Client(server.url, verbose=False)
    speech, video = write_inputs(tmp_path)
    client = Client(server.url, verbose=False, headers={"X-API-Token": TOKEN}, download_files=str(tmp_path / "out"))
    code, *_ = client.predict(handle_file(str(speech)), handle_file(str(video)), *OPTIONS, api_name="/generate")
    result = Path(wait_for_result(client, code))
    assert result.is_relative_to(tmp_path / "out") and result.stat().st_size > 10_000, "downloaded with the token"
    # gradio_client's own sign-in (auth=) posts to /login and carries the cookie; the token is the password here.
    signed_in = Client(server.url, verbose=False, auth=("anyone", TOKEN))
    assert "No task with code <b>no-such-task</b>" in signed_in.predict("no-such-task", api_name="/task_status")[0]


@pytest.mark.parametrize(("target", "landing"), [
    ("/?code=abc", "/?code=abc"), ("/api/v1/tasks", "/api/v1/tasks"), ("//evil.example/", "/"),
    ("/\\evil.example", "/"), ("https://evil.example/", "/"), ("/\t/evil.example", "/"), ("/\n/evil.example", "/"),
    ("javascript:alert(1)", "/"), ("", "/")])
def test_signing_in_goes_back_only_to_a_page_of_this_server(server: ServerProcess, target: str, landing: str) -> None:
    """The sign-in form's `next` is where the browser goes afterwards: a link to our sign-in with next=//evil.example
    would otherwise hand a freshly signed-in person to another site (an open redirect)."""
    answer = httpx.post(f"{server.url}/login", data={"password": TOKEN, "next": target},
                        headers={"Accept": "text/html"}, timeout=30)
    assert answer.status_code == 303 and answer.headers["location"] == landing, answer.headers
    refused = httpx.post(f"{server.url}/login", data={"password": "wrong", "next": target},
                         headers={"Accept": "text/html"}, timeout=30)
    assert refused.status_code == 401 and f'name="next" value="{html.escape(landing)}"' in refused.text


@pytest.mark.browser
def test_a_browser_signs_in_with_the_token_and_generates(server: ServerProcess, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    speech, video = write_inputs(tmp_path)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{server.url}/?code=none-yet")
            page.get_by_label("API token").fill("not the token")
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_selector("text=Wrong user name and password, or wrong token.", timeout=10_000)
            page.get_by_label("API token").fill(TOKEN)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/?code=none-yet", timeout=10_000)  # back where the browser was going
            page.locator("#hg-speech input[type=file]").set_input_files(str(speech))
            page.locator("#hg-video input[type=file]").set_input_files(str(video))
            page.get_by_role("button", name="Generate").click()
            page.wait_for_function("() => { const v = document.querySelector('#hg-result video');"
                                   " return v && v.currentSrc && v.readyState >= 1 && v.duration > 0; }",
                                   timeout=JOB_TIMEOUT_S * 1000)
        finally:
            browser.close()


def test_starting_on_a_network_address_without_any_credential_is_refused(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HEYGEM_", "GRADIO_"))}
    env["HEYGEM_PATHS__DATA_DIR"] = str(tmp_path / "data")
    # It stops before binding anything: no traffic leaves this machine.
    result = subprocess.run([sys.executable, str(REPO_ROOT / "app.py"), "--host", "0.0.0.0", "--port", "9"],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "error: server.host is 0.0.0.0, which other machines can reach" in result.stderr
    assert "server.allow_unauthenticated" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "tasks.sqlite3").exists(), "nothing started"


def test_loopback_any_credential_or_an_explicit_choice_may_start(make_config: ConfigFactory) -> None:
    for server in ({"host": "127.0.0.1"}, {"host": "::1"}, {"host": "localhost"},
                   {"host": "0.0.0.0", "api_token": TOKEN}, {"host": "192.168.1.20", "password": "pw"},
                   {"host": "0.0.0.0", "allow_unauthenticated": True}):
        check_exposure(make_config(server=server).server)
    for host in ("0.0.0.0", "::", "192.168.1.20", "studio.example.org"):
        with pytest.raises(ConfigError, match=f"server.host is {host}, which other machines can reach"):
            check_exposure(make_config(server={"host": host}).server)


def test_a_player_with_the_token_plays_a_task_s_live_stream(server: ServerProcess, tmp_path: Path) -> None:
    """Debian's ffprobe, as ffplay would, sends the token with the playlist and with every segment."""
    ffprobe = Path("/usr/bin/ffprobe")
    if not ffprobe.exists():
        pytest.skip("Debian's ffmpeg (ffprobe) is not installed; make test installs it")
    speech, video = write_inputs(tmp_path)
    with httpx.Client(base_url=server.url, headers={"X-API-Token": TOKEN}, timeout=30) as client:
        code = client.post("/api/v1/tasks", files={"audio": (speech.name, speech.read_bytes()),
                                                   "video": (video.name, video.read_bytes())}).json()["code"]
        wait_until(lambda: client.get(f"/api/v1/tasks/{code}").json()["state"] == "succeeded", JOB_TIMEOUT_S,
                   f"task {code} to succeed", interval_s=0.2)
    url = f"{server.url}/api/v1/tasks/{code}/live.m3u8"
    command = [str(ffprobe), "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", url]
    played = subprocess.run([*command[:3], "-headers", f"Authorization: Bearer {TOKEN}\r\n", *command[3:]],
                            capture_output=True, text=True, timeout=60, check=False)
    assert played.returncode == 0 and float(played.stdout) > 1.5, played.stderr
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode != 0 and "401" in refused.stderr
