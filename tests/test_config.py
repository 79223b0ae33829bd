"""Configuration: defaults, overrides by file and environment, and errors that name the key."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import heygem
from heygem.config import DEFAULT_CONFIG_PATH, Config, load_config
from heygem.errors import ConfigError
from tests.conftest import REPO_ROOT


def test_defaults_match_the_documented_values() -> None:
    config = load_config(environ={})
    assert config.supervisor.poll_interval_s == 0.5
    assert config.supervisor.init_grace_s == 30
    assert config.supervisor.error_confirm_s == 60
    assert config.supervisor.task_timeout_s == 600
    assert config.paths.data_dir.is_absolute()


def test_environment_overrides_any_key() -> None:
    config = load_config(environ={"HEYGEM_SUPERVISOR__MAX_WORKERS": "2", "HEYGEM_PATHS__DATA_DIR": "/srv/heygem",
                                  "HEYGEM_SUPERVISOR__KEEP_TEMP": "true"})
    assert config.supervisor.max_workers == 2
    assert config.paths.data_dir == Path("/srv/heygem")
    assert config.supervisor.keep_temp is True


def test_the_ray_backend_is_chosen_and_configured_by_environment() -> None:
    config = load_config(environ={"HEYGEM_SUPERVISOR__BACKEND": "ray", "HEYGEM_RAY__ADDRESS": "10.0.0.2:6379",
                                  "HEYGEM_RAY__GPU_MEMORY_GB": "24", "HEYGEM_RAY__AUTH_TOKEN_FILE": "/etc/heygem/ray"})
    assert config.supervisor.backend == "ray"
    assert (config.ray.address, config.ray.gpu_memory_gb) == ("10.0.0.2:6379", 24.0)
    assert config.ray.auth_token_file == Path("/etc/heygem/ray")
    defaults = load_config(environ={})
    assert defaults.supervisor.backend == "local" and defaults.ray.address == "" and defaults.ray.task_cpus == 1


def test_a_config_file_overrides_and_the_environment_wins(tmp_path: Path) -> None:
    file = tmp_path / "site.yaml"
    file.write_text("supervisor:\n  max_workers: 3\n  queue_max: 7\n")
    config = load_config(file, environ={"HEYGEM_SUPERVISOR__QUEUE_MAX": "9"})
    assert (config.supervisor.max_workers, config.supervisor.queue_max) == (3, 9)


@pytest.mark.parametrize(("environ", "message"), [
    ({"HEYGEM_SUPERVISOR__MAX_WORKER": "2"}, "unknown key supervisor.max_worker"),
    ({"HEYGEM_SUPERVISR__MAX_WORKERS": "2"}, "unknown section 'supervisr'"),
    ({"HEYGEM_SUPERVISOR__MAX_WORKERS": "two"}, "supervisor.max_workers: expected a whole number, got 'two'"),
    ({"HEYGEM_SUPERVISOR__MAX_WORKERS": "0"}, "supervisor.max_workers: must be greater than 0"),
    ({"HEYGEM_SUPERVISOR__KEEP_TEMP": "maybe"}, "supervisor.keep_temp: expected true or false"),
    ({"HEYGEM_LOGGING__LEVEL": "LOUD"}, "logging.level: unknown level 'LOUD'"),
    ({"HEYGEM_SUPERVISOR__BACKEND": "slurm"}, "supervisor.backend: expected one of local, ray, got 'slurm'"),
    ({"HEYGEM_RAY__TASK_CPUS": "0"}, "ray.task_cpus: must be greater than 0, got 0.0"),
    ({"HEYGEM_RAY__GPU_MEMORY_GB": "-1"}, "ray.gpu_memory_gb: must be 0 or more, got -1.0"),
    ({"HEYGEM_RAY__STATUS_PORT": "70000"},
     "ray.status_port: must be a port up to 65535, or 0 for any free port, got 70000"),
    ({"HEYGEM_RAY__OBJECT_STORE_MB": "50"}, "ray.object_store_mb: must be at least 100, got 50"),
    *[({"HEYGEM_RAY__ADDRESS": address}, "ray.address: must be empty (a private Ray runtime), auto, or the head "
                                         f"node's host:port such as 127.0.0.1:6379, got '{address}'")
      for address in ("headnode", ":6379", "headnode:70000", "headnode:port", "ray://headnode:10001")],
])
def test_invalid_settings_name_the_key(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(environ=environ)


def test_a_broken_config_file_is_a_one_line_cli_error(tmp_path: Path) -> None:
    file = tmp_path / "broken.yaml"
    file.write_text("supervisor:\n  max_workers: [\n")
    result = subprocess.run([sys.executable, "-m", "heygem", "--config", str(file), "tasks", "list"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: config file {file} is not valid YAML")
    assert "Traceback" not in result.stderr


def test_lists_and_empty_values_in_the_environment_read_as_in_the_yaml_file() -> None:
    config = load_config(environ={"HEYGEM_SERVER__ALLOWED_ROOTS": "[/srv/a, /srv/b]",
                                  "HEYGEM_SERVER__API_TOKEN": "null", "HEYGEM_MODELS__DIR": "",
                                  "HEYGEM_SERVER__PASSWORD": "1234"})
    assert config.server.allowed_roots == [Path("/srv/a"), Path("/srv/b")]
    assert (config.server.api_token, config.models.dir, config.server.password) == (None, None, "1234")
    with pytest.raises(ConfigError, match=r"^server.allowed_roots: expected a list, got '/srv/a'$"):
        load_config(environ={"HEYGEM_SERVER__ALLOWED_ROOTS": "/srv/a"})


def test_the_config_crosses_processes_as_its_validated_values() -> None:
    config = load_config(environ={"HEYGEM_SUPERVISOR__MAX_WORKERS": "3", "HEYGEM_PATHS__DATA_DIR": "relative"})
    values = json.loads(json.dumps(config.to_dict()))  # plain data: what a pickle or a Ray task carries
    assert values["paths"]["data_dir"] == str(Path.cwd() / "relative"), "paths travel absolute"
    assert Config.from_dict(values) == config
    values["supervisor"]["max_workers"] = 0
    with pytest.raises(ConfigError, match=r"^supervisor.max_workers: must be greater than 0, got 0$"):
        Config.from_dict(values)


def test_the_defaults_are_found_through_the_package() -> None:
    assert DEFAULT_CONFIG_PATH.parent.parent == Path(heygem.__file__).parent
    assert DEFAULT_CONFIG_PATH.read_bytes() == (REPO_ROOT / "configs" / "default.yaml").read_bytes()
