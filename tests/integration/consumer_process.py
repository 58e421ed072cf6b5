"""A consumer in its own process, for tests that really kill or signal it.

    python consumer_process.py crash|serve BOOTSTRAP TOPIC GROUP OUTDIR [HTTP_PORT]

Its handler writes ``OUTDIR/<key>`` (keyed, so a replay overwrites) and appends the key to
``OUTDIR/calls``. ``crash`` then SIGKILLs itself — after processing, before the commit.
``serve`` runs the shared service shell until SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from fetalmlops.common.bus import Consumer, KafkaBus, Record
from fetalmlops.common.service import Service, create_app, run
from fetalmlops.common.settings import Settings


def main() -> None:
    mode, bootstrap, topic, group, outdir = sys.argv[1:6]
    out = Path(outdir)
    # The broker's minimum: the survivor waits this long for the killed member's partition.
    bus = KafkaBus(bootstrap, client_id=f"test-{mode}", session_timeout_ms=6000)

    def handler(record: Record) -> None:
        (out / (record.key or "none")).write_bytes(record.value)
        with (out / "calls").open("a") as calls:
            calls.write(f"{record.key}\n")
        if mode == "crash":
            os.kill(os.getpid(), signal.SIGKILL)

    consumer = Consumer([topic], group, handler, deadletter_topic=f"{topic}.dlq")
    settings = Settings(service_name="test-consumer", http_port=int(sys.argv[6]), log_json=True)
    run(Service(settings, create_app("test consumer", {}), bus=bus, consumers=[consumer]))


if __name__ == "__main__":
    main()
