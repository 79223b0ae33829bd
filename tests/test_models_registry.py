"""Model registry: where files go, what counts as verified, refusal of bad files, fetch and the CLI."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from heygem.cli import main
from heygem.config import load_config
from heygem.engines.models import (
    MODELS,
    ModelState,
    check_model,
    fetch_model,
    get_spec,
    model_path,
    models_dir,
    require_model,
)
from heygem.errors import EngineUnavailableError, HeyGemError
from tests.conftest import ConfigFactory
from tests.wav2lip_standins import write_standin

GAN = get_spec("wav2lip_gan_96")


def test_models_dir_defaults_under_data_dir_and_follows_environment(tmp_path: Path) -> None:
    config = load_config(environ={"HEYGEM_PATHS__DATA_DIR": str(tmp_path / "d")})
    assert models_dir(config) == tmp_path / "d" / "models"
    config = load_config(environ={"HEYGEM_MODELS__DIR": str(tmp_path / "m"), "HEYGEM_MODELS__ALLOW_UNVERIFIED": "1"})
    assert models_dir(config) == tmp_path / "m"
    assert config.models.allow_unverified is True


def test_registry_entries_are_complete() -> None:
    assert len({spec.name for spec in MODELS}) == len(MODELS)
    for spec in MODELS:
        assert spec.licence and spec.source_page.startswith("https://") and spec.size_bytes > 0
        assert spec.sha256 is None or len(spec.sha256) == 64
        assert spec.converts_to is None or get_spec(spec.converts_to).format == "onnx"


def test_missing_model_names_exact_path(make_config: ConfigFactory) -> None:
    config = make_config()
    status = check_model(GAN, config)
    assert status.state is ModelState.MISSING and not status.usable
    assert str(model_path(GAN, config)) in status.detail
    with pytest.raises(EngineUnavailableError, match=r"wav2lip_gan_96 is missing: place wav2lip_gan_96\.onnx at"):
        require_model("wav2lip_gan_96", config)


def test_missing_onnx_suggests_converting_a_present_checkpoint(make_config: ConfigFactory) -> None:
    config = make_config()
    checkpoint = models_dir(config) / "wav2lip_gan.pth"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"x")
    assert f"models convert-wav2lip {checkpoint} " in check_model(GAN, config).detail


def test_unreadable_file_is_corrupt_even_when_unverified_allowed(make_config: ConfigFactory) -> None:
    config = make_config(models={"allow_unverified": True})
    path = model_path(GAN, config)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"<html>sign in to download</html>")
    status = check_model(GAN, config)
    assert status.state is ModelState.CORRUPT and "not a readable ONNX file" in status.detail


def test_wrong_size_is_refused_unless_unverified_allowed(make_config: ConfigFactory) -> None:
    strict = make_config()
    write_standin(model_path(GAN, strict))
    status = check_model(GAN, strict)
    assert status.state is ModelState.CORRUPT
    assert "is not the published 145.2 MB" in status.detail and "HEYGEM_MODELS__ALLOW_UNVERIFIED=1" in status.detail
    with pytest.raises(EngineUnavailableError, match="corrupt"):
        require_model("wav2lip_gan_96", strict)
    lenient = make_config(models={"allow_unverified": True})
    status = check_model(GAN, lenient)
    assert status.state is ModelState.UNVERIFIED and status.usable
    assert require_model("wav2lip_gan_96", lenient).path == model_path(GAN, lenient)


def test_registered_sha256_is_checked(make_config: ConfigFactory) -> None:
    config = make_config()
    path = write_standin(model_path(GAN, config))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert check_model(dataclasses.replace(GAN, sha256=digest), config).state is ModelState.PRESENT
    status = check_model(dataclasses.replace(GAN, sha256="0" * 64), config)
    assert status.state is ModelState.CORRUPT and f"sha256 {digest} differs" in status.detail


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server over a folder: the download path runs for real without the internet."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    thread.join()


def test_fetch_downloads_then_verifies(make_config: ConfigFactory, file_server: tuple[str, Path]) -> None:
    base, root = file_server
    served = write_standin(root / "model.onnx")
    config = make_config()
    spec = dataclasses.replace(GAN, size_bytes=served.stat().st_size)
    status = fetch_model(spec, config, url=f"{base}/model.onnx")
    assert status.state is ModelState.PRESENT
    assert model_path(spec, config).read_bytes() == served.read_bytes()
    assert not list(models_dir(config).glob("*.part"))
    # The registered size does not match the stand-in: the download is set aside, never left looking present.
    with pytest.raises(HeyGemError, match="failed verification"):
        fetch_model(GAN, make_config(models={"dir": str(root / "other")}), url=f"{base}/model.onnx")
    assert not (root / "other" / GAN.file_name).exists()
    assert (root / "other" / f"{GAN.file_name}.rejected").exists()


def test_fetch_without_network_fails_clearly(make_config: ConfigFactory) -> None:
    config = make_config()
    target = re.escape(str(model_path(GAN, config)))
    with pytest.raises(HeyGemError, match=rf"cannot download wav2lip_gan_96 .*place it at {target}"):
        fetch_model(GAN, config, url="http://127.0.0.1:9/wav2lip_gan_96.onnx")
    assert not list(models_dir(config).iterdir())
    with pytest.raises(HeyGemError, match="has no direct download"):
        fetch_model(get_spec("wav2lip_pth"), config)


def test_cli_list_verify(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    monkeypatch.setenv("HEYGEM_MODELS__DIR", str(tmp_path))
    write_standin(tmp_path / GAN.file_name)
    assert main(["models", "list"]) == 0
    listing = capsys.readouterr().out
    assert "wav2lip_gan_96   corrupt" in listing and "wav2lip_96       missing" in listing
    assert str(tmp_path / "wav2lip_96.onnx") in listing
    assert "engine wav2lip    unavailable: model wav2lip_gan_96 is corrupt" in listing
    assert main(["models", "verify"]) == 1
    verified = capsys.readouterr().out
    assert "sha256 " + hashlib.sha256((tmp_path / GAN.file_name).read_bytes()).hexdigest() in verified
    assert "wav2lip_96" not in verified  # only files that are present, unless named
    assert main(["models", "verify", "wav2lip_96"]) == 1
    monkeypatch.setenv("HEYGEM_MODELS__ALLOW_UNVERIFIED", "1")
    assert main(["models", "verify", "wav2lip_gan_96"]) == 0
    capsys.readouterr()
    assert main(["models", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["models_dir"] == str(tmp_path)
    states = {model["name"]: (model["state"], model["usable"]) for model in listed["models"]}
    assert states["wav2lip_gan_96"] == ("unverified", True) and states["wav2lip_96"] == ("missing", False)
    assert listed["engines"]["wav2lip"]["available"] is True
