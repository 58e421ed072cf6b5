"""``fetalmlops cluster up|down|status|env``: the single-node cluster from a terminal."""

from __future__ import annotations

import contextlib
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Annotated

import typer

from fetalmlops.cluster.layout import Layout
from fetalmlops.cluster.state import ClusterStatus
from fetalmlops.stack.errors import StackError

app = typer.Typer(
    help="A real single-node Kubernetes (v1.34) with the KServe controller, built from the "
    "package registries and run as processes of this machine (root). State in "
    "~/.cache/fetalmlops/cluster.",
    no_args_is_help=True,
)


@contextlib.contextmanager
def _reported() -> Iterator[ModuleType]:
    """The cluster's operations; a StackError is the user's to fix: its message, no traceback."""
    from fetalmlops.cluster import cluster

    try:
        yield cluster
    except StackError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


def _step(message: str) -> None:
    typer.echo(f"  - {message}")


def _mib(rss_bytes: int | None) -> str:
    return "-" if rss_bytes is None else f"{rss_bytes / 2**20:.0f} MiB"


def table(state: ClusterStatus) -> str:
    """The status table: one row per process (pid, memory, log), then the in-cluster addons."""
    rows = [("COMPONENT", "STATE", "PID", "RSS", "LOG")]
    for p in state.processes:
        if p.running:
            word = "running"
        elif p.pid is not None:
            word = "starting"
        else:
            word = "stopped"
        rows.append((p.name, word, str(p.pid or "-"), _mib(p.rss_bytes), str(p.log)))
    for a in state.addons:
        word = {True: "ready", False: "not ready", None: "absent"}[a.ready]
        logs = f"kubectl -n {a.namespace} logs deploy/{a.deployment}"
        rows.append((a.name, word, "-", "-", logs))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
        + "  "
        + row[4]
        for row in rows
    )


def _export(layout: Layout) -> str:
    return f"export KUBECONFIG={shlex.quote(str(layout.admin_kubeconfig))}"


@app.command()
def up(
    kserve: Annotated[
        bool, typer.Option(help="Install the KServe controller and CRDs (RawDeployment mode).")
    ] = True,
) -> None:
    """Build what is missing (minutes the first time), start the node and its addons."""
    began = time.monotonic()
    with _reported() as cluster:
        state = cluster.up(progress=_step, with_kserve=kserve)
    typer.echo(table(state))
    typer.echo(f"cluster up in {time.monotonic() - began:.1f} s; point kubectl and helm at it:")
    typer.echo(f"  {_export(Layout.default())}")


@app.command()
def down() -> None:
    """Stop the cluster and put the host back as `up` found it (binaries and images stay)."""
    began = time.monotonic()
    with _reported() as cluster:
        problems = cluster.down(progress=_step)
    for problem in problems:
        typer.secho(f"  ! {problem}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"cluster down in {time.monotonic() - began:.1f} s")
    if problems:
        raise typer.Exit(1)


@app.command()
def status() -> None:
    """Show each component, its pid, memory and log; exit code 1 unless all are running."""
    with _reported() as cluster:
        state = cluster.status()
    typer.echo(table(state))
    if not state.running:
        raise typer.Exit(1)


@app.command()
def env() -> None:
    """Print `export KUBECONFIG=...` for the cluster's administrator."""
    typer.echo(_export(Layout.default()))


@app.command()
def build(
    kserve: Annotated[bool, typer.Option(help="Also build the KServe controller.")] = True,
) -> None:
    """Only build the binaries into the cache (what `up` does first)."""
    from fetalmlops.cluster.builds import build_all

    with _reported():
        build_all(Layout.default(), _step, kserve=kserve)
    typer.echo("built")


@app.command()
def images(
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="Only this service's image (and the bases it starts from)."),
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", help="Another name for the one --only image (Tilt's $EXPECTED_REF)."),
    ] = None,
) -> None:
    """Build every service's image (as `make images`) and copy those new or changed into the
    running node's containerd."""
    from fetalmlops.cluster.images import Buildah, service_images
    from fetalmlops.cluster.load import imported

    if tag and len(only or []) != 1:
        raise typer.BadParameter("--tag names the image of exactly one --only service")
    layout = Layout.default()
    with _reported():
        buildah = Buildah(layout.cache)
        tags = service_images(buildah, layout.cache, only=only)
        if tag:
            buildah.tag(next(iter(tags.values())), *tag)
        wanted = [*tags.values(), *(tag or [])]
        done = imported(layout, wanted, _step)
    typer.echo(f"{len(done)} of {len(wanted)} images copied; the others were there already")


@app.command()
def install(
    values: Annotated[
        list[Path] | None,
        typer.Option("--values", "-f", help="More values files, after local-cluster.yaml."),
    ] = None,
    settings: Annotated[
        list[str] | None, typer.Option("--set", help="More values, as `helm --set` takes them.")
    ] = None,
) -> None:
    """Install (or upgrade) the chart on the cluster, with its Secrets made from the local
    stack's credentials, and wait until every workload is ready."""
    from fetalmlops.cluster.release import Release, Tokens
    from fetalmlops.cluster.tools import HELM
    from fetalmlops.stack.config import StackConfig

    layout = Layout.default()
    began = time.monotonic()
    with _reported():
        release = Release(_kubectl(), HELM.ensure(layout.cache), layout.admin_kubeconfig)
        release.apply_secrets(StackConfig(), Tokens.load_or_make(layout.root / "tokens.json"))
        release.install(values or [], settings or [])
    typer.echo(f"installed in {time.monotonic() - began:.1f} s (namespace {release.namespace})")


@app.command()
def uninstall() -> None:
    """Uninstall the chart (its Secrets and namespace stay)."""
    from fetalmlops.cluster.release import Release
    from fetalmlops.cluster.tools import HELM

    layout = Layout.default()
    with _reported():
        Release(_kubectl(), HELM.ensure(layout.cache), layout.admin_kubeconfig).uninstall()
    typer.echo("uninstalled")


def _kubectl() -> str:
    from fetalmlops.cluster.builds import Binaries

    return str(Binaries(Layout.default()).kube("kubectl"))
