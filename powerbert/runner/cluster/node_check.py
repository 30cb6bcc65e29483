"""What a node must have to take a run: the run folder at the same path, writable, and the
head's versions of PowerBERT, Python, torch and transformers.

`check_node` runs on the node (in the preflight's Ray task, and again in each run's actor
where it lands) and returns the problem in a few words, or None. It reads versions from
package metadata rather than importing torch: the check is quick, and a node whose torch is
broken says so by version.
"""

from __future__ import annotations

import os
import platform
import uuid
from importlib import metadata
from pathlib import Path

PACKAGES = ("powerbert", "torch", "transformers")
TOKEN_PREFIX = ".powerbert-preflight-"


def versions() -> dict[str, str]:
    """This node's versions of what a run needs to match the head on."""
    found = {"python": ".".join(platform.python_version_tuple()[:2])}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def check_node(folder: str, token: str | None, expected: dict[str, str]) -> str | None:
    """The problem that keeps this node from taking runs whose folders live in `folder`, or
    None. `token`: the name of a file the head wrote there; a node that has a `folder` of its
    own (not the shared one) does not see it."""
    mine = versions()
    wrong = [f"{name} {mine.get(name)} (the head has {want})" for name, want in expected.items() if mine.get(name) != want]
    if wrong:
        return "has " + ", ".join(wrong)
    path = Path(folder)
    if not path.is_dir():
        return f"cannot see {folder}: the run folders must be on storage every node mounts at the same path"
    if token is not None and not (path / token).is_file():
        return (f"sees a different {folder} than the head (the head's {token} is not there): "
                f"the run folders must be on storage every node shares")
    probe = path / f"{TOKEN_PREFIX}{uuid.uuid4().hex}.probe"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return f"cannot write in {folder}: {exc.strerror}"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"cannot write in {folder}"
    return None
