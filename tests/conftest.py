"""Fixtures shared by every test module. Module-specific fixtures live beside their tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from heygem.config import Config, load_config
from heygem.supervisor import TaskSupervisor

if TYPE_CHECKING:  # tests.server_process imports this module
    from tests.server_process import ServerProcess

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_MEDIA = REPO_ROOT.parent / "shared" / "media"

ConfigFactory = Callable[..., Config]
# Short periods so that deadlines and windows pass in seconds; tests override single knobs. The init grace and the
# heartbeat timeout are no shorter than a spawned worker's start on a loaded 2-core machine (at a load of 12, more
# than 5 s before its first heartbeat): the tests that measure them set their own.
SUPERVISOR_TEST_SETTINGS = {"poll_interval_s": 0.2, "init_grace_s": 30, "error_confirm_s": 2, "task_timeout_s": 60,
                            "heartbeat_timeout_s": 20, "heartbeat_interval_s": 0.5}


@pytest.fixture
def make_config(tmp_path: Path) -> ConfigFactory:
    """A Config whose data lives in this test's temporary folder; keyword arguments are sections of overrides."""

    def build(**sections: dict[str, Any]) -> Config:
        overrides: dict[str, dict[str, Any]] = {
            "paths": {"data_dir": str(tmp_path / "data"), "input_dir": str(tmp_path / "inputs")}}
        for section, values in sections.items():
            overrides.setdefault(section, {}).update(values)
        return load_config(environ={}, overrides=overrides)

    return build


def shared_media(name: str) -> Path:
    """A real clip from ../shared/media, or a skip that says why it is missing."""
    path = SHARED_MEDIA / name
    if not path.is_file():
        pytest.skip(f"real test clip {path} is not present (see ../shared/media/SOURCES.md)")
    return path


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    """Input files for scripted engines, which do not read them (the supervisor checks they exist)."""
    audio, video = tmp_path / "speech.wav", tmp_path / "person.mp4"
    audio.write_bytes(b"audio")
    video.write_bytes(b"video")
    return audio, video


@pytest.fixture
def start_supervisor(make_config: ConfigFactory) -> Iterator[Callable[..., TaskSupervisor]]:
    started: list[TaskSupervisor] = []

    def start(**supervisor_settings: Any) -> TaskSupervisor:
        supervisor = TaskSupervisor(make_config(supervisor={**SUPERVISOR_TEST_SETTINGS, **supervisor_settings})).start()
        started.append(supervisor)
        return supervisor

    yield start
    for supervisor in started:
        supervisor.shutdown()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One `python app.py` with one worker, shared by every module that needs no other setting: each start costs
    seconds of importing Gradio, many more on a loaded machine. Its tests make their own task codes, read only their
    own tasks and wait for them to end. A module that needs other settings defines its own `server`."""
    from tests.server_process import ServerProcess

    with ServerProcess(tmp_path_factory.mktemp("shared-server"), HEYGEM_SUPERVISOR__MAX_WORKERS=1) as server:
        yield server


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    """An HTTP client of the module's `server` fixture (a `python app.py` subprocess)."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client
