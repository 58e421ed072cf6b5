"""A built platform run in this process until Ctrl-C or SIGTERM, then stopped whole.

Each service runs as `fetalmlops run` runs it: its HTTP app under uvicorn, its consumers in
threads of the shared loop, its listeners (ingest's SCP) in theirs. KServe's ModelServer, which
must own the main thread's signals, serves the inference service there; when a signal (or a
consumer that cannot go on) stops it, the other services stop too, before the bus they share
is closed. A training run in progress is abandoned: nothing of it was committed, so on the
real stack the request is delivered again at the next start, resumed from its checkpoint.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import uvicorn

from fetalmlops.common.service import Server, consume_or_stop, http_server
from fetalmlops.inference import main as inference
from fetalmlops.inference.server import serve
from fetalmlops.up.services import Platform

log = logging.getLogger(__name__)
JOIN_S = 10.0  # how long stopping waits for a consumer to finish the message in hand


def run(platform: Platform, started: Callable[[threading.Event], None]) -> None:
    """Serve until stopped. ``started(stop)`` runs in a thread of its own once everything
    has been started; ``stop`` is set when the platform stops."""
    stop = threading.Event()
    servers = [http_server(service) for service in platform.services.values()]
    threads = [
        threading.Thread(target=server.run, name=f"{name} http", daemon=True)
        for name, server in zip(platform.services, servers, strict=True)
    ]
    for name, service in platform.services.items():
        assert service.bus is not None  # every service here consumes
        threads += [
            threading.Thread(
                target=consume_or_stop,
                args=(service.bus, consumer, stop),
                name=f"{name} {consumer.group}",
                daemon=True,  # a training run in hand must not hold the platform up
            )
            for consumer in service.consumers
        ]
    listeners = [listener for s in platform.services.values() for listener in s.servers]
    try:
        for thread in threads:
            thread.start()
        for listener in listeners:
            listener.start()
        threading.Thread(target=started, args=(stop,), name="started", daemon=True).start()
        served = platform.inference
        settings, serving = served.settings, served.serving
        with inference.serving_session(serving, settings, served.own, served.cache):
            try:
                serve(
                    serving.predictors, served.own, settings.http_host, settings.http_port,
                    serving.readiness,
                )  # fmt: skip
            finally:
                stop_services(stop, servers, listeners, threads)
    finally:
        stop.set()
        close_buses(platform)


def stop_services(
    stop: threading.Event,
    servers: list[uvicorn.Server],
    listeners: list[Server],
    threads: list[threading.Thread],
) -> None:
    stop.set()
    for server in servers:
        server.should_exit = True
    for listener in listeners:
        listener.stop()
    for thread in threads:
        thread.join(JOIN_S)
        if thread.is_alive():
            log.warning("left running as the platform stops", extra={"thread": thread.name})


def close_buses(platform: Platform) -> None:
    """Each service's bus (the embedded one, shared, was closed with the inference service)."""
    for service in platform.services.values():
        if service.bus is not None and service.bus is not platform.inference.serving.bus:
            service.bus.close()
