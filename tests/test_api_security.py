"""The token of the API, the password of the page and the request size cap, on the real app in-process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from heygem.server import create_app
from tests.conftest import ConfigFactory

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


def test_the_page_needs_the_password(client: TestClient) -> None:
    assert client.get("/config").status_code == 401
    assert client.post("/login", data={"username": "heygem", "password": "wrong"}).status_code == 400
    assert client.post("/login", data={"username": "heygem", "password": PASSWORD}).status_code == 200
    assert client.get("/config").status_code == 200


def test_request_bodies_are_capped(client: TestClient) -> None:
    too_big = client.post("/easy/submit", content=b"{}" + b" " * 5000, headers={"Authorization": f"Bearer {TOKEN}"})
    assert too_big.status_code == 413 and "server.max_request_kb" in too_big.json()["error"]


def test_no_api_documentation_or_other_files_are_served(client: TestClient) -> None:
    for path in ("/docs", "/openapi.json", "/gradio_api/file=/etc/passwd"):
        assert client.get(path).status_code in (401, 403, 404), path
