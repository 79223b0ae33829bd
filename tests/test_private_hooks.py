"""A private hook HeyGem relies on, gone after an upgrade, stops the start with one sentence that names it."""

from __future__ import annotations

import re

import pytest
import starlette.responses
import uvicorn.protocols.http.flow_control

from heygem.errors import HeyGemError
from tests.conftest import ConfigFactory


def test_the_app_does_not_start_without_starlette_s_open_file_hook(monkeypatch, make_config: ConfigFactory) -> None:
    from heygem.server import create_app

    monkeypatch.delattr(starlette.responses.FileResponse, "_open_file")
    with pytest.raises(HeyGemError, match=re.escape(
            "starlette 1.10.0 lacks FileResponse._open_file, which heygem/api/served_files.py relies on: install the "
            "version requirements-base.txt pins")):
        create_app(make_config())


def test_the_app_does_not_start_when_uvicorn_renames_what_the_slow_client_limit_reads(
        monkeypatch, make_config: ConfigFactory) -> None:
    from heygem.server import create_app

    class RenamedFlowControl:  # uvicorn's FlowControl with its read_paused flag under another name
        def __init__(self) -> None:
            self._paused = False

    monkeypatch.setattr(uvicorn.protocols.http.flow_control, "FlowControl", RenamedFlowControl)
    with pytest.raises(HeyGemError, match=r"^uvicorn [\d.]+ lacks FlowControl\.read_paused, which "
                                          r"heygem/api/slow_clients\.py relies on"):
        create_app(make_config())


def test_the_ray_backend_does_not_start_without_ray_s_per_node_resources(monkeypatch,
                                                                         make_config: ConfigFactory) -> None:
    pytest.importorskip("ray")
    import ray._private.state

    from heygem.supervisor.backends.ray_head import RayBackend

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # what the backend would export, restored afterwards
    monkeypatch.delattr(ray._private.state, "available_resources_per_node")
    with pytest.raises(HeyGemError, match=re.escape(
            "ray 2.60.0 lacks ray._private.state.available_resources_per_node, which "
            "heygem/supervisor/backends/ray_head.py relies on: install the version requirements-ray.txt pins")):
        RayBackend(make_config(supervisor={"backend": "ray"})).start(lambda: None)
    assert not ray.is_initialized()
