"""Uploads stop before the disk fills: below storage.min_free_mb of free space in the data folder, no way in
accepts a new file. Every copy into the uploads folder checks it (heygem.intake.uploads.new_upload_path), and the
upload routes check it before they read a byte of the body (heygem.api.storage)."""

from __future__ import annotations

import shutil

from heygem.config import Config
from heygem.errors import StorageFullError


def require_free_space(config: Config) -> None:
    """Raise StorageFullError when the data folder's file system has less than storage.min_free_mb free."""
    limit_mb = config.storage.min_free_mb
    if limit_mb <= 0:
        return
    data_dir = config.paths.data_dir
    # Before the first start the folder may not exist yet: its file system is that of its nearest parent.
    free_mb = shutil.disk_usage(next(folder for folder in (data_dir, *data_dir.parents) if folder.exists())).free / 1e6
    if free_mb < limit_mb:
        raise StorageFullError(f"the server's disk is nearly full: {free_mb:.0f} MB free in its data folder, below "
                               f"the {limit_mb:g} MB it keeps free (storage.min_free_mb); it takes no new uploads "
                               "until space is freed (finished tasks can be deleted)")
