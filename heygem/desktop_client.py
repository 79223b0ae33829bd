"""Where HeyGem.ai's desktop client (now Duix.Avatar) keeps the files it shares with the synthesis service.

The client copies its inputs into one folder and sends the service bare file names from it; it reads each result
from that folder as well. The reference service's container mounts the folder as /code/data/temp. The client names
it in src/main/config/config.js: `path.join(os.homedir(), 'duix_avatar_data', 'face2face', 'temp')` (Windows:
`D:\\duix_avatar_data\\face2face\\temp`); clients from before September 2025 say `heygem_data` instead.
`python app.py --heygem-client` makes that folder our paths.input_dir.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from heygem.errors import HeyGemError

# The client's data folder, newest name first.
DATA_FOLDER_NAMES = ("duix_avatar_data", "heygem_data")
# Drive D: as WSL mounts it: a service running in WSL shares the folder of a client running on Windows.
WSL_DRIVE_D = Path("/mnt/d")


@dataclasses.dataclass(frozen=True)
class ClientFolder:
    path: Path
    note: str  # which folder, and why that one: for the log


def shared_folder(root: Path, data_folder_name: str) -> Path:
    return root / data_folder_name / "face2face" / "temp"


def find_client_folder(home: Path | None = None, drive_d: Path = WSL_DRIVE_D) -> ClientFolder:
    """The client's shared folder that exists (the newest name first, the home folder before WSL's D:), else the
    newest client's folder, created: the client itself creates it only when it first saves a model."""
    home = Path.home() if home is None else home
    candidates = [shared_folder(root, name) for root in (home, drive_d) for name in DATA_FOLDER_NAMES]
    existing = [folder for folder in candidates if folder.is_dir()]
    if existing:
        chosen, others = existing[0], existing[1:]
        also = f"; also present, and not used: {', '.join(map(str, others))}" if others else ""
        return ClientFolder(chosen, f"HeyGem desktop client's shared folder: {chosen}{also}")
    chosen = candidates[0]
    try:
        chosen.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HeyGemError(f"--heygem-client: cannot create the desktop client's folder {chosen} ({exc.strerror}); "
                          "create it, or set paths.input_dir to the client's folder instead") from None
    return ClientFolder(chosen, f"HeyGem desktop client's shared folder: {chosen}, created (none of "
                                f"{', '.join(map(str, candidates))} existed; a HeyGem.ai client older than "
                                f"Duix.Avatar uses {candidates[1]}: start this one after that client has run once)")
