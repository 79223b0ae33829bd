"""HeyGem as a package: its wheel holds the default config and the `heygem` command, which works from any folder."""

from __future__ import annotations

import ast
import email.parser
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

# What a wheel is built from; a copy, so the build leaves nothing in the checkout.
SOURCES = ["heygem", "configs", "pyproject.toml", "README.md",
           *(path.name for path in REPO_ROOT.glob("requirements*.txt"))]


def pins(requirements: Path) -> list[str]:
    """The requirement lines of a requirements file, without comments or includes."""
    return [line.strip() for line in requirements.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith(("#", "-r"))]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in SOURCES:
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, source / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO_ROOT / name, source / name)
    # No build isolation: setuptools from this environment, nothing downloaded.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(out), str(source)], check=True, timeout=300)
    (built,) = out.glob("heygem-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed on its own into a folder (its dependencies are this environment's); returns the folder."""
    target = tmp_path_factory.mktemp("installed")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target",
                    str(target), str(wheel)], check=True, timeout=300)
    return target


def run_heygem(installed: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed `heygem` command, from `cwd`, which holds no checkout: heygem comes from the wheel."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HEYGEM_")}
    env["PYTHONPATH"] = str(installed)
    return subprocess.run([str(installed / "bin" / "heygem"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_wheel_holds_the_default_config_the_command_and_every_pin(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("heygem/configs/default.yaml") == (REPO_ROOT / "configs" / "default.yaml").read_bytes()
        assert {"heygem/ui/studio.css", "heygem/ui/live_player.js"} <= set(archive.namelist())
        info = next(name for name in archive.namelist() if name.endswith(".dist-info/entry_points.txt"))
        assert "heygem = heygem.cli:run" in archive.read(info).decode()
        meta = email.parser.Parser().parsestr(archive.read(info.replace("entry_points.txt", "METADATA")).decode())
    requires = meta.get_all("Requires-Dist")
    assert sorted(r for r in requires if "extra ==" not in r) == sorted(pins(REPO_ROOT / "requirements-base.txt"))
    for extra, file in (("cpu", "requirements-cpu.txt"), ("gpu", "requirements-gpu.txt"),
                        ("ray", "requirements-ray.txt"), ("dev", "requirements-dev.txt")):
        assert sorted(r.split(";")[0].strip() for r in requires if f'extra == "{extra}"' in r) == sorted(
            pins(REPO_ROOT / file)), extra


def test_every_directly_imported_library_is_pinned() -> None:
    """Each package heygem/ imports (lazily too) is pinned: in requirements-base.txt for CPU and GPU boxes alike,
    onnxruntime in the file of each kind of box, ray in requirements-ray.txt."""
    imported = {name.split(".")[0] for path in (REPO_ROOT / "heygem").rglob("*.py")
                for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, (ast.Import, ast.ImportFrom))
                for name in ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                             else [node.module or ""] if node.level == 0 else [])}
    third_party = imported - set(sys.stdlib_module_names) - {"heygem", "__future__"}
    distributions = metadata.packages_distributions()
    pinned = {canonical(line.split("==")[0]): file for file in REPO_ROOT.glob("requirements-*.txt")
              for line in pins(file)}
    where = {module: {pinned.get(canonical(name)) for name in distributions[module]} - {None}
             for module in third_party}
    assert {module for module, files in where.items() if not files} == set(), "imported but pinned nowhere"
    # GPU boxes take onnxruntime-gpu of the same version, which provides the same module.
    assert where.pop("onnxruntime") == {REPO_ROOT / "requirements-cpu.txt"}
    (cpu,), (gpu,) = pins(REPO_ROOT / "requirements-cpu.txt"), pins(REPO_ROOT / "requirements-gpu.txt")
    assert gpu == cpu.replace("onnxruntime==", "onnxruntime-gpu==")
    assert where.pop("ray") == {REPO_ROOT / "requirements-ray.txt"}
    assert {module for module, files in where.items() if files != {REPO_ROOT / "requirements-base.txt"}} == set()


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_installed_command_works_from_any_folder(installed: Path, tmp_path: Path) -> None:
    helped = run_heygem(installed, tmp_path, "--help")
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: heygem ") and "generate" in helped.stdout
    # The defaults come from the package's own config (the help shows them); a user config still overrides them.
    generate_help = " ".join(run_heygem(installed, tmp_path, "generate", "--help").stdout.split())
    assert "(default from config: media.loop_mode)" in generate_help
    (tmp_path / "site.yaml").write_text(f"paths:\n  data_dir: {tmp_path / 'site-data'}\n")
    listed = run_heygem(installed, tmp_path, "--config", "site.yaml", "models", "list")
    assert listed.returncode == 0, listed.stderr
    assert str(tmp_path / "site-data" / "models") in listed.stdout + listed.stderr


def test_the_ray_backend_of_an_installed_package_does_not_ship_site_packages(monkeypatch, make_config) -> None:
    from heygem.errors import ConfigError
    from heygem.supervisor.backends import ray_head

    monkeypatch.setattr(ray_head, "PROJECT_ROOT", Path(shutil.__file__).parent)  # a folder of installed modules
    with pytest.raises(ConfigError, match=r"^ray.ship_code sends this checkout's code to the nodes, but heygem here "
                                          r"is an installed package: set ray.ship_code to false"):
        ray_head.RayBackend(make_config(supervisor={"backend": "ray"})).start(lambda: None)
