"""Private hooks of other packages that HeyGem relies on, checked before they are used.

A hook is a name a package does not promise to keep (an underscore method, a protocol's attributes, a `_private`
module). Each is pinned in the requirements files with a comment naming its use; if an upgrade removes one anyway,
the app refuses to start with one sentence instead of losing the guarantee the hook gave it without a word.
"""

from __future__ import annotations

import dataclasses
import dis
import importlib
import inspect
from importlib import metadata

from heygem.errors import HeyGemError


@dataclasses.dataclass(frozen=True)
class PrivateHook:
    distribution: str  # the package pip installs, whose version is pinned
    module: str
    owner: str  # a class of `module` whose attributes are used, or "" for the module itself
    names: tuple[str, ...]  # attributes of the owner; for a class, also those its methods assign to `self`
    used_by: str  # the file that relies on it
    requirements: str  # the requirements file that pins it


def _present(owner: object, name: str) -> bool:
    if hasattr(owner, name):
        return True
    if not inspect.isclass(owner):
        return False
    # An instance attribute: one that a method of the class assigns (self.conn = ...).
    return any(instruction.opname == "STORE_ATTR" and instruction.argval == name
               for klass in owner.__mro__ for function in vars(klass).values() if inspect.isfunction(function)
               for instruction in dis.get_instructions(function))


def missing_names(hook: PrivateHook) -> list[str]:
    try:
        owner: object = importlib.import_module(hook.module)
    except ImportError:
        return [hook.module]
    if hook.owner:
        if not hasattr(owner, hook.owner):
            return [f"{hook.module}.{hook.owner}"]
        owner = getattr(owner, hook.owner)
    prefix = hook.owner or hook.module
    return [f"{prefix}.{name}" for name in hook.names if not _present(owner, name)]


def require_hooks(*hooks: PrivateHook) -> None:
    """Raise HeyGemError, one sentence, for the first hook whose names are gone."""
    for hook in hooks:
        missing = missing_names(hook)
        if missing:
            try:
                installed = f"{hook.distribution} {metadata.version(hook.distribution)}"
            except metadata.PackageNotFoundError:
                installed = hook.distribution
            raise HeyGemError(f"{installed} lacks {', '.join(missing)}, which {hook.used_by} relies on: install the "
                              f"version {hook.requirements} pins")
