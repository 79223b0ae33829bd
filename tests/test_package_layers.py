"""Packages depend one way: every import under heygem/, lazy ones inside functions too, points down the layers."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "heygem"
# Top to bottom. A part may import itself and the parts of lower layers, never a part of its own layer or above.
LAYERS: list[set[str]] = [
    {"heygem.server", "heygem.__main__"},  # what puts the app and the CLI together
    {"heygem.ui", "heygem.api", "heygem.cli"},
    {"heygem.supervisor", "heygem.intake"},  # intake: what the studio and the HTTP APIs both accept files with
    {"heygem.engines"},
    {"heygem.pipeline"},  # it holds the engine interface the pipeline drives; engines implement it
    {"heygem.logs"},
    {"heygem.config"},
    {"heygem.options", "heygem.files", "heygem.desktop_client", "heygem.hooks"},
    {"heygem.errors", "heygem"},  # "heygem": the package itself, its version
]
RANK = {part: rank for rank, layer in enumerate(LAYERS) for part in layer}


def part_of(module: str, package: Path = PACKAGE) -> str:
    """heygem.supervisor.store -> heygem.supervisor; heygem.config -> heygem.config; heygem -> heygem."""
    names = module.split(".")
    if len(names) == 1 or not ((package / names[1]).is_dir() or (package / f"{names[1]}.py").is_file()):
        return module
    return ".".join(names[:2])


def module_name(path: Path, package: Path = PACKAGE) -> str:
    names = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(names[:-1] if names[-1] == "__init__" else names)


def imported_modules(path: Path, package: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, module) of every import of a heygem module in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    name = module_name(path, package)
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            anchor = here[: len(here) - node.level + 1] if node.level else []
            # `from heygem.pipeline import compositing` imports a module of that package: the package counts.
            found.append((node.lineno, ".".join([*anchor, *([node.module] if node.module else [])])))
    return [(line, module) for line, module in found if module == "heygem" or module.startswith("heygem.")]


def upward_imports(package: Path = PACKAGE) -> list[str]:
    """Every import of a part of the same layer or of a layer above, as "file:line: part imports part"."""
    found = []
    for path in sorted(package.rglob("*.py")):
        source = part_of(module_name(path, package), package)
        for line, module in imported_modules(path, package):
            target = part_of(module, package)
            if target != source and RANK[target] <= RANK[source]:
                found.append(f"{path.relative_to(package.parent)}:{line}: {source} imports {target}")
    return found


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {part_of(module_name(path)) for path in PACKAGE.rglob("*.py")}
    assert parts - RANK.keys() == set(), "place each new package or module in LAYERS"


def test_imports_point_down_the_layers_only() -> None:
    assert upward_imports() == []


def test_the_check_sees_lazy_relative_and_sideways_imports(tmp_path: Path) -> None:
    package = tmp_path / "heygem"
    for name in ("pipeline", "engines", "ui", "api"):
        (package / name).mkdir(parents=True)
        (package / name / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "pipeline" / "generate.py").write_text("def run():\n    from heygem.engines import base\n")
    (package / "engines" / "base.py").write_text("from ..pipeline import generate\n")
    (package / "ui" / "studio.py").write_text("from heygem.api.intake import accept\n")
    (package / "api" / "intake.py").write_text("from . import other\n")
    assert upward_imports(package) == ["heygem/pipeline/generate.py:2: heygem.pipeline imports heygem.engines",
                                       "heygem/ui/studio.py:1: heygem.ui imports heygem.api"]
