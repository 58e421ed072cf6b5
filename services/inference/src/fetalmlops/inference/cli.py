"""`fetalmlops serve`: one model version behind KServe's V1 and V2 protocols, from a folder or
the object store, on loopback unless told otherwise."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from fetalmlops.common.settings import Settings
from fetalmlops.common.telemetry import configure_logging, configure_tracing
from fetalmlops.inference.settings import SERVICE_NAME, InferenceSettings


def serve(
    model_dir: Annotated[
        Path | None,
        typer.Option(
            help="A model version in KServe's layout (model-store/<model>.mar, "
            "config/config.properties), or a .mar file.",
            exists=True,
        ),
    ] = None,
    model_uri: Annotated[
        str | None,
        typer.Option(help="A model version in the object store: s3://fetal-models/<model>/v<N>/."),
    ] = None,
    model_name: Annotated[
        str | None, typer.Option(help="Name on the endpoint paths (default: the archive's).")
    ] = None,
    http_port: Annotated[
        int | None, typer.Option(help="HTTP port (default: FETALMLOPS_HTTP_PORT).")
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on (default: FETALMLOPS_HTTP_HOST, 127.0.0.1)."),
    ] = None,
) -> None:
    """Serve a model version over KServe's V1 (:predict) and V2 (/infer) REST protocols.

    Without --model-dir or --model-uri, FETALMLOPS_INFERENCE_MODEL_URI is served. The object
    store is the one FETALMLOPS_STORE and FETALMLOPS_MINIO_* name.
    """
    if model_dir is not None and model_uri is not None:
        raise typer.BadParameter("give --model-dir or --model-uri, not both")
    settings, own = Settings(service_name=SERVICE_NAME), InferenceSettings()
    source = model_dir or model_uri or own.model_uri
    if source is None:
        raise typer.BadParameter("give --model-dir or --model-uri (or set it in the environment)")
    bind = settings.http_host if host is None else host
    # Imported here: the `fetalmlops` CLI loads every command when it starts, and kserve with
    # torch costs seconds (and kserve parses sys.argv when imported).
    from fetalmlops.inference.guard import ServeRefused, bearer_tokens, require_token_off_loopback

    try:
        # Before kserve, torch and the model load: a server that may not start says so at once.
        require_token_off_loopback(bind, bearer_tokens(own))
    except ServeRefused as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    from fetalmlops.inference.archive import ArchiveError
    from fetalmlops.inference.main import build, run_serving

    configure_logging(settings)
    configure_tracing(settings)
    own = own.model_copy(update={"model_name": model_name or own.model_name})
    with tempfile.TemporaryDirectory(prefix="fetalmlops-serve-") as scratch:
        cache = own.cache_dir or Path(scratch)
        try:
            serving = build(settings, own, cache, source)
        except ArchiveError as exc:
            typer.echo(f"cannot serve {source}: {exc}", err=True)
            raise typer.Exit(2) from None
        port = settings.http_port if http_port is None else http_port
        try:
            run_serving(serving, settings, own, cache, bind, port)
        except ServeRefused as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from None


# The same command standalone, for `python -m`-style use and tests.
app = typer.Typer(help="Serve a model version over KServe's protocols.")
app.command()(serve)
