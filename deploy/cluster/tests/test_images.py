"""The images: how a build is asked of buildah, what the Dockerfiles promise, and one real build.

The real build (marker `images`) makes the Debian base and the ingest image in the project's
cache, then runs the image the way the chart does: as uid 10001 on a read-only root filesystem,
with a tmpfs on /tmp. buildah has no read-only option, so the test hands runc (the runtime
buildah and the kubelet both use) a bundle whose root is the mounted image, marked read-only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fetalmlops.cluster import images, torch_requirements
from fetalmlops.cluster.images import SERVICES, Buildah, ServiceImage
from fetalmlops.stack.config import StackConfig
from fetalmlops.stack.errors import StackError

ROOT = images.repository_root()


def dockerfile(service: ServiceImage) -> str:
    return (ROOT / service.dockerfile).read_text()


def locked_torch() -> str:
    with (ROOT / "uv.lock").open("rb") as file:
        return torch_requirements.locked_version(tomllib.load(file), "torch")


# ---- how buildah is asked ------------------------------------------------------------------


def test_buildah_keeps_its_storage_in_the_project_cache(tmp_path: Path) -> None:
    command = Buildah(tmp_path).command("images")
    assert command == [
        "buildah",
        "--root",
        f"{tmp_path}/cluster/containers/storage",
        "--runroot",
        f"{tmp_path}/cluster/containers/run",
        "--storage-driver",
        "overlay",
        "images",
    ]


def test_a_build_uses_runc_the_host_network_and_never_a_registry(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.crt"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    command = Buildah(tmp_path).build_command(
        "localhost/fetalmlops/ingest:0.1.0",
        tmp_path / "repo",
        tmp_path / "repo" / "services/ingest/Dockerfile",
        {"TORCH_BASE_IMAGE": "t", "BASE_IMAGE": "b"},
        ca_bundle=bundle,
    )
    arguments = " ".join(command)
    assert "bud --runtime /usr/sbin/runc --network host --layers --pull=never" in arguments
    assert "--format docker" in arguments  # HEALTHCHECK survives
    # Sorted, so that the same build is asked the same way (and hits buildah's layer cache).
    assert "--build-arg BASE_IMAGE=b --build-arg TORCH_BASE_IMAGE=t" in arguments
    assert f"--secret id=ca-bundle,src={bundle}" in arguments
    assert command[-3:] == [
        "--file",
        f"{tmp_path}/repo/services/ingest/Dockerfile",
        str(tmp_path / "repo"),
    ]
    assert "--tag localhost/fetalmlops/ingest:0.1.0" in arguments


def test_without_a_host_ca_bundle_no_secret_is_passed(tmp_path: Path) -> None:
    command = Buildah(tmp_path).build_command("t", tmp_path, ca_bundle=tmp_path / "missing.crt")
    assert "--secret" not in command
    assert "--file" not in command


def test_one_holder_at_a_time_uses_the_storage(tmp_path: Path) -> None:
    first, second = Buildah(tmp_path), Buildah(tmp_path)
    events: list[str] = []

    def second_holder() -> None:
        with second.locked():
            events.append("second")

    with first.locked():
        with first.locked():  # re-entered by the same object, as debian_base() does
            events.append("first")
        waiter = threading.Thread(target=second_holder)
        waiter.start()
        waiter.join(timeout=0.5)
        assert waiter.is_alive()  # another holder waits: flock, across processes too
        events.append("first done")
    waiter.join(timeout=5)
    assert events == ["first", "first done", "second"]


def test_a_storage_that_cannot_answer_is_not_taken_for_a_missing_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    buildah = Buildah(tmp_path)

    def answer(stderr: str) -> None:
        result = subprocess.CompletedProcess(["buildah"], 125, "", stderr)
        monkeypatch.setattr(buildah, "_inspect_result", lambda tag: result)

    answer("Error: importing settings: localhost/nope:1: image not known")
    assert buildah.exists("localhost/nope:1") is False
    answer("Error: unlinkat …/merged: device or resource busy")
    with pytest.raises(StackError, match="device or resource busy"):
        buildah.exists("localhost/fetalmlops/debian-base:bookworm")


def test_torch_services_start_from_the_torch_base_and_the_others_from_the_base() -> None:
    assert {service.name for service in SERVICES if service.torch} == {"trainer", "inference"}
    for service in SERVICES:
        expected = {"TORCH_BASE_IMAGE": "torch"} if service.torch else {"BASE_IMAGE": "base"}
        assert service.build_args("base", "torch") == expected


def test_tags_are_the_charts_registry_and_the_service_version() -> None:
    assert ServiceImage("ingest").tag(ROOT) == "localhost/fetalmlops/ingest:0.1.0"
    assert images.image_name("localhost/fetalmlops/ingest:0.1.0") == "ingest"
    assert images.image_name("localhost/fetalmlops/torch-base:2.15.0") == "torch-base"


def test_every_service_folder_has_an_image() -> None:
    folders = {path.parent.name for path in (ROOT / "services").glob("*/Dockerfile")}
    assert folders == {service.name for service in SERVICES}


# ---- the base image's apt sources --------------------------------------------------------


def test_mirrors_are_read_from_one_line_and_deb822_sources() -> None:
    deb822 = "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n"
    security = "deb http://mirror.example/debian-security bookworm-security main\n"
    other = "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n"
    assert images.debian_mirrors([other, deb822, security]) == (
        "http://mirror.example/debian",
        "http://mirror.example/debian-security",
    )
    assert images.debian_mirrors([other]) == (images.FALLBACK_MIRROR, None)


def test_the_base_gets_updates_and_security_where_a_security_mirror_is_known() -> None:
    sources = images.apt_sources_list("http://m/debian", "http://m/debian-security")
    assert sources.splitlines() == [
        "deb http://m/debian bookworm main",
        "deb http://m/debian bookworm-updates main",
        "deb http://m/debian-security bookworm-security main",
    ]
    assert "security" not in images.apt_sources_list("http://m/debian", None)


# ---- sizes --------------------------------------------------------------------------------


def test_an_images_size_is_the_sum_of_its_uncompressed_layers() -> None:
    manifest = {
        "layers": [{"digest": "sha256:a", "size": 175838720}, {"digest": "b", "size": 2560}]
    }
    assert images.manifest_layers(manifest) == [("sha256:a", 175838720), ("b", 2560)]
    assert images.human_size(175841280) == "175.8 MB"
    assert images.human_size(5_234_000_000) == "5.23 GB"
    assert images.human_size(512) == "512 B"


# ---- the torch base -----------------------------------------------------------------------


def test_the_torch_closure_follows_the_extras_asked_for_and_no_others() -> None:
    lock = {
        "package": [
            {
                "name": "torch",
                "version": "2",
                "dependencies": [{"name": "kit", "extra": ["blas"]}, {"name": "sympy"}],
            },
            {
                "name": "kit",
                "version": "1",
                "optional-dependencies": {
                    "blas": [{"name": "libblas"}],
                    "web": [{"name": "aiohttp"}],
                },
            },
            {"name": "sympy", "version": "1", "dependencies": [{"name": "mpmath"}]},
            {"name": "numpy", "version": "2"},
        ]
    }
    assert torch_requirements.torch_closure(lock) == {"torch", "kit", "libblas", "sympy", "mpmath"}
    assert torch_requirements.locked_version(lock, "torch") == "2"


def test_export_entries_keep_each_packages_marker_and_hash_lines() -> None:
    export = (
        "# comment\n"
        "networkx==3.6.1 ; python_full_version < '3.12' \\\n"
        "    --hash=sha256:aa\n"
        "Torch==2.15.0 \\\n"
        "    --hash=sha256:bb \\\n"
        "    --hash=sha256:cc\n"
    )
    assert torch_requirements.export_entries(export) == [
        ("networkx", "networkx==3.6.1 ; python_full_version < '3.12' \\\n    --hash=sha256:aa"),
        ("torch", "Torch==2.15.0 \\\n    --hash=sha256:bb \\\n    --hash=sha256:cc"),
    ]


def test_the_torch_base_requirements_are_those_of_uv_lock() -> None:
    try:
        torch_requirements.uv_command()
    except StackError:
        pytest.skip("needs uv (make setup)")
    checked_in = (ROOT / images.TORCH_BASE_DIR / "requirements.txt").read_text()
    assert checked_in == torch_requirements.torch_requirements(ROOT), (
        "stale: `.venv/bin/python -m fetalmlops.cluster.images --torch-requirements`"
    )
    assert f"torch=={locked_torch()} " in checked_in
    assert "--hash=sha256:" in checked_in


# ---- what the Dockerfiles promise -----------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES, ids=lambda service: service.name)
def test_a_dockerfile_names_its_base_by_argument_and_reaches_no_registry(
    service: ServiceImage,
) -> None:
    text = dockerfile(service)
    if service.torch:
        assert f"ARG TORCH_BASE_IMAGE=fetalmlops/torch-base:{locked_torch()}\n" in text
        assert set(re.findall(r"^FROM (\S+)", text, re.MULTILINE)) == {"${TORCH_BASE_IMAGE}"}
    else:
        assert "ARG BASE_IMAGE=python:3.11-slim-bookworm\n" in text
        assert set(re.findall(r"^FROM (\S+)", text, re.MULTILINE)) == {"${BASE_IMAGE}"}
    assert "--from=ghcr.io" not in text
    assert re.findall(r"--from=(\S+)", text) == ["build"]


@pytest.mark.parametrize("service", SERVICES, ids=lambda service: service.name)
def test_a_dockerfile_installs_its_member_from_the_lock_with_the_projects_uv(
    service: ServiceImage,
) -> None:
    text = dockerfile(service)
    makefile = (ROOT / "Makefile").read_text()
    uv_version = re.search(r"^UV_VERSION := (\S+)$", makefile, re.MULTILINE)
    assert uv_version is not None
    assert f"ARG UV_VERSION={uv_version.group(1)}\n" in text
    assert '"uv==${UV_VERSION}"' in text
    assert f"uv sync --frozen --no-dev --no-editable --package fetalmlops-{service.name}\n" in text


@pytest.mark.parametrize("service", SERVICES, ids=lambda service: service.name)
def test_a_dockerfile_runs_as_10001_with_every_cache_under_tmp(service: ServiceImage) -> None:
    text = dockerfile(service)
    assert "\nUSER 10001\n" in text
    for setting in ("HOME=/tmp", "XDG_CACHE_HOME=/tmp/.cache", "PYTHONDONTWRITEBYTECODE=1"):
        assert setting in text
    assert "UV_COMPILE_BYTECODE=1" in text


def test_the_build_context_holds_every_workspace_members_pyproject() -> None:
    """uv finds the workspace through every member's pyproject.toml: a member the context
    leaves out fails every image's `uv sync`."""
    with (ROOT / "pyproject.toml").open("rb") as file:
        members = tomllib.load(file)["tool"]["uv"]["workspace"]["members"]
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") + 1 :][:3] == ["!pyproject.toml", "!uv.lock", "!libs"]
    for member in members:
        if not member.startswith(("libs/", "services/")):
            assert f"!{member}/pyproject.toml" in ignore or f"!{member}" in ignore, member
    assert {"!cli", "!deploy/local"} <= set(ignore), "the trainer's image runs `fetalmlops`"


def test_the_torch_base_has_the_same_base_argument_and_uv() -> None:
    text = (ROOT / images.TORCH_BASE_DIR / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim-bookworm\n" in text
    assert "--require-hashes" in text
    assert "useradd --uid 10001" in text


# ---- one real build, run as the chart runs it ----------------------------------------------


def can_build() -> str | None:
    if os.geteuid() != 0:
        return "buildah's storage and runc need root here"
    missing = [tool for tool in ("buildah", "runc", "debootstrap") if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} (apt-get install -y buildah runc debootstrap)"
    return None


@pytest.fixture(scope="module")
def ingest_image() -> Iterator[tuple[Buildah, str]]:
    reason = can_build()
    if reason is not None:
        pytest.skip(reason)
    cache = StackConfig().cache
    buildah = Buildah(cache)
    base = images.debian_base(buildah, cache)
    service = ServiceImage("ingest")
    tag = service.tag(ROOT)
    buildah.build(tag, ROOT, ROOT / service.dockerfile, service.build_args(base, "unused"))
    yield buildah, tag


def run_read_only(buildah: Buildah, tag: str, argv: list[str], tmp_path: Path) -> str:
    """Runs ``argv`` in the image with runc: uid 10001, root filesystem read-only, tmpfs /tmp."""
    with buildah.locked():
        return run_in_bundle(buildah, tag, argv, tmp_path)


def run_in_bundle(buildah: Buildah, tag: str, argv: list[str], tmp_path: Path) -> str:
    container = subprocess.run(
        buildah.command("from", "--pull=never", tag), capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        rootfs = subprocess.run(
            buildah.command("mount", container), capture_output=True, text=True, check=True
        ).stdout.strip()
        config = json.loads(
            subprocess.run(
                buildah.command("inspect", "--type", "image", tag),
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )["OCIv1"]["config"]
        bundle = tmp_path / "bundle"
        bundle.mkdir()
        subprocess.run(["runc", "spec"], cwd=bundle, check=True)
        spec = json.loads((bundle / "config.json").read_text())
        spec["root"] = {"path": rootfs, "readonly": True}
        spec["process"].update(
            terminal=False,
            args=argv,
            env=config["Env"],
            cwd="/",
            user={"uid": 10001, "gid": 10001},
        )
        spec["mounts"].append(
            {
                "destination": "/tmp",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev"],
            }
        )
        (bundle / "config.json").write_text(json.dumps(spec))
        result = subprocess.run(
            ["runc", "run", "--bundle", str(bundle), f"fetalmlops-test-{uuid.uuid4().hex[:12]}"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout
    finally:
        subprocess.run(buildah.command("rm", container), capture_output=True, check=False)


PROBE = """
import errno, os
import fetalmlops.ingest.main  # the whole service: FastAPI app, bus, store, DICOM stack
assert os.getuid() == 10001, os.getuid()
for path in ("/app/probe", "/probe", "/app/.venv/lib/probe"):
    try:
        open(path, "w")
    except OSError as error:
        assert error.errno in (errno.EROFS, errno.EACCES), error
    else:
        raise AssertionError(f"{path} is writable")
with open("/tmp/probe", "w") as scratch:
    scratch.write("ok")
# The build stage's tools and the source tree stay behind in the build stage.
for left_behind in ("/opt/uv", "/src", "/app/.venv/bin/uv"):
    assert not os.path.exists(left_behind), left_behind
print("imported read-only as", os.getuid())
"""


@pytest.mark.images
@pytest.mark.timeout(3600)
def test_the_ingest_image_runs_as_10001_on_a_read_only_root(
    ingest_image: tuple[Buildah, str], tmp_path: Path
) -> None:
    buildah, tag = ingest_image
    output = run_read_only(buildah, tag, ["python", "-c", PROBE], tmp_path)
    assert output.strip() == "imported read-only as 10001"


@pytest.mark.images
@pytest.mark.timeout(3600)
def test_the_ingest_image_is_configured_as_the_chart_runs_it(
    ingest_image: tuple[Buildah, str],
) -> None:
    buildah, tag = ingest_image
    inspected = json.loads(
        subprocess.run(
            buildah.command("inspect", "--type", "image", tag), capture_output=True, check=True
        ).stdout
    )
    config = inspected["Docker"]["config"]
    assert config["User"] == "10001"
    assert config["Entrypoint"] == ["python", "-m", "fetalmlops.ingest"]
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert buildah.size(tag) == sum(size for _, size in buildah.layers(tag)) > 0
