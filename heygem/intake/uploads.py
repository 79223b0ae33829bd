"""Turning what a caller names (a page upload, a path, a URL) into a checked file under our control.

Everything accepted is copied into <data_dir>/uploads/ first: Gradio deletes its temporary files and a
client may delete its own, but a queued task must still find its inputs, even after a restart.
"""

from __future__ import annotations

import re
import secrets
import shutil
import time
from pathlib import Path

import httpx

from heygem.config import Config
from heygem.errors import InputError, quote_input
from heygem.files import require_regular_file
from heygem.intake.disk_space import require_free_space
from heygem.intake.media_check import Slot, check_media

URL_PATTERN = re.compile(r"^https?://", re.IGNORECASE)
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
MAX_REDIRECTS = 3


def is_url(value: str) -> bool:
    return bool(URL_PATTERN.match(value))


def accept_upload(source: Path, slot: Slot, config: Config) -> Path:
    """Check an uploaded file by content and copy it to the uploads folder; returns the copy."""
    check_media(source, slot, config)
    target = new_upload_path(config, slot, source.name)
    shutil.copyfile(source, target)
    return target


def accept_api_input(value: object, field: str, slot: Slot, config: Config) -> Path:
    """An API's audio_url/video_url: a URL (downloaded when allowed) or a path inside the allowed roots."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{field} is required (a path or an http(s) URL)")
    value = value.strip()
    if not is_url(value):
        source = resolve_input_path(value, field, config)
        try:
            return accept_upload(source, slot, config)
        except InputError as exc:
            raise InputError(f"{field}: {exc}") from None
    path = download_url(value, field, slot, config)
    try:
        check_media(path, slot, config)
    except InputError as exc:
        discard_downloads([path], config)
        raise InputError(f"{field}: {exc}") from None
    return path


def discard_downloads(paths: list[Path], config: Config) -> None:
    """Remove what we downloaded for a request that was refused; the caller's own files are never touched."""
    uploads = config.paths.uploads_dir.resolve()
    for path in paths:
        if path.resolve().is_relative_to(uploads):
            path.unlink(missing_ok=True)


def allowed_roots(config: Config) -> list[Path]:
    return [root.resolve() for root in (config.paths.input_dir, *config.server.allowed_roots)]


def resolve_input_path(value: str, field: str, config: Config) -> Path:
    """Relative paths resolve against paths.input_dir; the final target (symlinks followed) must lie in a root."""
    candidate = Path(value).expanduser()
    if not candidate.is_absolute():
        candidate = config.paths.input_dir / candidate
    try:
        resolved = candidate.resolve()
    except (OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"{field}: {quote_input(value)} is not a usable path ({exc})") from None
    roots = allowed_roots(config)
    if not any(resolved.is_relative_to(root) for root in roots):
        raise InputError(f"{field}: {quote_input(value)} is outside the folders this server reads from "
                         f"({', '.join(map(str, roots))})")
    require_regular_file(resolved, f"{field}: file", f"{quote_input(value)} (looked at {quote_input(str(resolved))})")
    return resolved


def download_url(url: str, field: str, slot: Slot, config: Config) -> Path:
    """Fetch a URL into the uploads folder within the configured size and time limits."""
    limits = config.server
    if not limits.allow_url_download:
        raise InputError(f"{field}: URL downloads are disabled on this server (server.allow_url_download); "
                         "give a path instead")
    max_bytes = int(limits.url_max_mb * 1e6)
    target = new_upload_path(config, slot, url.rsplit("/", 1)[-1].split("?", 1)[0])
    deadline = time.monotonic() + limits.url_timeout_s
    try:
        with httpx.Client(timeout=limits.url_timeout_s, follow_redirects=True, max_redirects=MAX_REDIRECTS) as client, \
                client.stream("GET", url) as response:
            response.raise_for_status()
            declared = int(response.headers.get("content-length") or 0)
            if declared > max_bytes:
                raise InputError(f"{field}: {url} is {declared / 1e6:.0f} MB; the limit is {limits.url_max_mb:g} MB")
            _stream_to_file(response, target, max_bytes, deadline, field)
    except httpx.HTTPError as exc:
        target.unlink(missing_ok=True)
        raise InputError(f"{field}: could not download {url}: {exc}") from None
    except InputError:
        target.unlink(missing_ok=True)
        raise
    return target


def _stream_to_file(response: httpx.Response, target: Path, max_bytes: int, deadline: float, field: str) -> None:
    received = 0
    with target.open("wb") as handle:
        for chunk in response.iter_bytes():
            received += len(chunk)
            if received > max_bytes:
                raise InputError(f"{field}: the download exceeds the limit of {max_bytes / 1e6:g} MB")
            if time.monotonic() > deadline:
                raise InputError(f"{field}: the download took longer than the limit")
            handle.write(chunk)


def new_upload_path(config: Config, slot: Slot, original_name: str) -> Path:
    """A fresh, collision-free file name in the uploads folder that keeps the original name readable (refused
    when the disk is nearly full)."""
    require_free_space(config)
    uploads = config.paths.uploads_dir
    uploads.mkdir(parents=True, exist_ok=True)
    name = SAFE_NAME.sub("_", Path(original_name).name).strip("._")[-80:] or slot
    return uploads / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}-{slot}-{name}"
