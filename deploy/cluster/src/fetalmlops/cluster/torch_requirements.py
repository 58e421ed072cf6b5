"""The torch base image's requirements.txt, made from uv.lock.

The torch base (``deploy/images/torch-base``) installs torch and every package it needs before
any service is built, so that the trainer and inference images share that one layer. Its
requirements are the lock's own export (pins, markers and hashes) cut down to torch's closure:
nothing is resolved again, and a service build that finds another version fails.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from collections.abc import Mapping
from pathlib import Path

from fetalmlops.stack.errors import StackError

# Trainer and inference share the trainer's lock export: one lock, one version of each package.
TORCH_LOCK_PACKAGE = "fetalmlops-trainer"


def locked_version(lock: Mapping[str, object], name: str) -> str:
    packages = lock["package"]
    assert isinstance(packages, list)
    versions = {str(package["version"]) for package in packages if package["name"] == name}
    if len(versions) != 1:
        raise StackError(f"uv.lock pins {len(versions)} versions of {name}; expected one")
    return versions.pop()


def torch_closure(lock: Mapping[str, object]) -> set[str]:
    """torch and every package it depends on in uv.lock, with the extras asked for, on any
    platform (the export's markers then say where each one applies)."""
    packages: dict[str, list[Mapping[str, object]]] = {}
    listed = lock["package"]
    assert isinstance(listed, list)
    for package in listed:
        packages.setdefault(str(package["name"]), []).append(package)
    seen: set[tuple[str, str | None]] = set()
    todo: list[tuple[str, str | None]] = [("torch", None)]
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        for package in packages.get(name, []):
            optional = package.get("optional-dependencies", {})
            assert isinstance(optional, Mapping)
            edges = package.get("dependencies", []) if extra is None else optional.get(extra, [])
            assert isinstance(edges, list)
            for edge in edges:
                todo.append((str(edge["name"]), None))
                todo += [(str(edge["name"]), str(wanted)) for wanted in edge.get("extra", [])]
    return {name for name, _ in seen}


def export_entries(export: str) -> list[tuple[str, str]]:
    """A `uv export` requirements file as (package name, its lines: pin, marker and hashes)."""
    entries: list[tuple[str, list[str]]] = []
    for line in export.splitlines():
        if line.startswith((" ", "\t")) and entries:
            entries[-1][1].append(line)
        elif line and not line.startswith("#"):
            name = re.match(r"[A-Za-z0-9._-]+", line)
            if name is not None:
                entries.append((name.group(0).lower(), [line]))
    return [(name, "\n".join(lines)) for name, lines in entries]


# The lock's requirements for one member, as `uv export` writes them (pins, markers, hashes).
EXPORT = ("export", "--frozen", "--no-dev", "--no-emit-workspace", "--no-header", "--no-annotate")
TORCH_REQUIREMENTS_HEADER = """\
# torch and every package it needs, pinned and hashed as uv.lock pins them: the torch base
# image's one install (deploy/images/torch-base/Dockerfile). Generated from uv.lock by
# `python -m fetalmlops.cluster.images --torch-requirements`; a test fails when it is stale.
"""


def uv_command() -> list[str]:
    """uv as `make setup` installs it: on PATH, or as the system python3's module."""
    uv = shutil.which("uv")
    if uv is not None:
        return [uv]
    python3 = shutil.which("python3")
    if python3 is not None:
        probe = subprocess.run([python3, "-m", "uv", "--version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return [python3, "-m", "uv"]
    raise StackError("uv was not found: `make setup` installs it (python3 -m pip install uv)")


def torch_requirements(repository: Path) -> str:
    """The torch base's requirements.txt, made from the lock's own export."""
    export = subprocess.run(
        [*uv_command(), *EXPORT, "--package", TORCH_LOCK_PACKAGE],
        cwd=repository,
        capture_output=True,
        text=True,
        check=False,
    )
    if export.returncode != 0:
        raise StackError(f"`uv export` failed in {repository}: {export.stderr.strip()}")
    with (repository / "uv.lock").open("rb") as file:
        closure = torch_closure(tomllib.load(file))
    kept = [lines for name, lines in export_entries(export.stdout) if name in closure]
    return TORCH_REQUIREMENTS_HEADER + "\n".join(kept) + "\n"
