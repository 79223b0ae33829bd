"""Fixtures shared by every test module. Module-specific fixtures live beside their tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from heygem.config import Config, load_config

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_MEDIA = REPO_ROOT.parent / "shared" / "media"

ConfigFactory = Callable[..., Config]


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
