"""The token of the API, the password of the page and the request size cap, on the real app in-process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from heygem.server import create_app
from tests.conftest import ConfigFactory

pytestmark = pytest.mark.slow

TOKEN = "s3cret-token"
PASSWORD = "open-sesame"


@pytest.fixture
def client(make_config: ConfigFactory) -> Iterator[TestClient]:
    config = make_config(server={"api_token": TOKEN, "password": PASSWORD, "max_request_kb": 4})
    with TestClient(create_app(config)) as client:
        yield client


def test_the_api_needs_the_token_and_says_how_to_send_it(client: TestClient) -> None:
    refused = client.get("/easy/query", params={"code": "x"})
    assert refused.status_code == 401
    assert refused.json()["code"] == 9999 and "Authorization: Bearer" in refused.json()["msg"]
    assert client.get("/api/v1/tasks").status_code == 401
    assert client.get("/metrics").status_code == 401
    assert client.get("/easy/query", params={"code": "x"}, headers={"Authorization": "Bearer wrong"}
                      ).status_code == 401
    bearer = client.get("/easy/query", params={"code": "x"}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert bearer.status_code == 200 and bearer.json()["code"] == 10004
    assert client.get("/api/v1/tasks", headers={"X-API-Token": TOKEN}).json() == {"tasks": []}
    assert client.get("/healthz").status_code == 200  # for load balancers and probes: says nothing secret


def test_the_page_needs_the_password_or_the_token(client: TestClient) -> None:
    assert client.get("/config").status_code == 401
    assert client.post("/login", data={"username": "heygem", "password": "wrong"}).status_code == 401
    assert client.post("/login", data={"username": "someone", "password": PASSWORD}).status_code == 401
    assert client.post("/login", data={"username": "heygem", "password": PASSWORD}).status_code == 200
    assert client.get("/config").status_code == 200
    client.cookies.clear()
    assert client.post("/login", data={"password": TOKEN}).status_code == 200  # the token signs in too
    assert client.get("/gradio_api/info").status_code == 200
    assert client.get("/logout", follow_redirects=False).status_code == 303
    assert client.get("/config").status_code == 401


def test_a_browser_gets_the_sign_in_page_and_comes_back_where_it_was(client: TestClient) -> None:
    page = client.get("/?code=abc", headers={"Accept": "text/html"})
    assert page.status_code == 401 and '<form method="post" action="/login">' in page.text
    assert 'name="next" value="/?code=abc"' in page.text
    wrong = client.post("/login", data={"password": "nope", "next": "/?code=abc"}, headers={"Accept": "text/html"})
    assert wrong.status_code == 401 and "Wrong user name and password, or wrong token." in wrong.text
    signed_in = client.post("/login", data={"password": TOKEN, "next": "/?code=abc"},
                            headers={"Accept": "text/html"}, follow_redirects=False)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/?code=abc"
    cookie = signed_in.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    elsewhere = client.post("/login", data={"password": TOKEN, "next": "//evil.example/"},
                            headers={"Accept": "text/html"}, follow_redirects=False)
    assert elsewhere.headers["location"] == "/"


def test_a_forged_or_odd_session_cookie_is_refused(client: TestClient) -> None:
    for value in ("99999999999.0123456789abcdef", "1.whatever", "9" * 5000 + ".x", "", "."):
        client.cookies.set("heygem_session", value)
        assert client.get("/config").status_code == 401, value


def test_request_bodies_are_capped(client: TestClient) -> None:
    too_big = client.post("/easy/submit", content=b"{}" + b" " * 5000, headers={"Authorization": f"Bearer {TOKEN}"})
    assert too_big.status_code == 413 and "server.max_request_kb" in too_big.json()["error"]


def test_no_api_documentation_or_other_files_are_served(client: TestClient) -> None:
    for path in ("/docs", "/openapi.json", "/gradio_api/file=/etc/passwd"):
        assert client.get(path).status_code in (401, 403, 404), path
