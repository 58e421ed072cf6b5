"""Apache Kafka in KRaft mode, one process as broker and controller, jars from Maven Central."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import shutil
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from string import Template

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError

from fetalmlops.common.settings import Settings
from fetalmlops.stack.component import Progress
from fetalmlops.stack.config import Port, StackConfig
from fetalmlops.stack.errors import StackError
from fetalmlops.stack.process import (
    HOST,
    Daemon,
    accepts_connections,
    require_executable,
    run_logged,
    wait_until,
)

RESOURCES = resources.files("fetalmlops.stack") / "resources"
JAVA_HINT = "install a JDK 17+, e.g. `apt-get install -y openjdk-17-jre-headless`."
MAVEN_HINT = "install Apache Maven, e.g. `apt-get install -y maven`."
POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


@contextlib.contextmanager
def quiet_client_logs() -> Iterator[None]:
    """Silences kafka-python while the broker boots: it logs every refused connection."""
    client_logger = logging.getLogger("kafka")
    level = client_logger.level
    client_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        client_logger.setLevel(level)


def broker_pom() -> str:
    return (RESOURCES / "kafka-broker.pom.xml").read_text()


def broker_version(pom: str) -> str:
    """The Kafka version pinned in the pom (the ``kafka_<scala>`` dependency)."""
    project = ET.fromstring(pom)  # noqa: S314 (our own packaged pom, not untrusted input)
    for dep in project.iterfind("m:dependencies/m:dependency", POM_NS):
        group = dep.findtext("m:groupId", "", POM_NS)
        artifact = dep.findtext("m:artifactId", "", POM_NS)
        if group == "org.apache.kafka" and artifact.startswith("kafka_"):
            return dep.findtext("m:version", "", POM_NS)
    raise StackError("the Kafka pom pins no org.apache.kafka:kafka_<scala> dependency")


def render_server_properties(
    template: str,
    *,
    broker_port: int,
    controller_port: int,
    cluster_port: int,
    node_address: str,
    log_dir: Path,
    num_partitions: int,
) -> str:
    return Template(template).substitute(
        broker_port=broker_port,
        controller_port=controller_port,
        cluster_port=cluster_port,
        node_address=node_address,
        log_dir=log_dir,
        num_partitions=num_partitions,
    )


def new_cluster_id() -> str:
    """A KRaft cluster id as `kafka-storage random-uuid` prints it, without starting a JVM."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # Kafka's Uuid.randomUuid() also rejects ids that would read as a command-line flag.
        if not text.startswith("-"):
            return text


def missing_topics(wanted: list[str], existing: set[str]) -> list[str]:
    return [t for t in wanted if t not in existing]


class Kafka:
    name = "kafka"

    def __init__(self, config: StackConfig, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        pom = broker_pom()
        pom_hash = hashlib.sha256(pom.encode()).hexdigest()[:8]
        # Keyed by the pom's content: any edit to the pin fetches a fresh set of jars.
        self.libs = config.cache / "kafka" / f"{broker_version(pom)}-{pom_hash}" / "libs"
        self.log = config.logs / "kafka.log"
        self.setup_log = config.logs / "kafka-setup.log"
        self.conf_dir = config.conf / "kafka"
        self.server_properties = self.conf_dir / "server.properties"
        self.log_dir = config.data / "kafka"
        self.daemon = Daemon(
            self.name, config.run / "kafka.pid", self.log, marker=str(self.server_properties)
        )

    @property
    def ports(self) -> tuple[Port, ...]:
        return (
            self.config.port(self.name, "broker", "kafka_port"),
            self.config.port(self.name, "KRaft controller", "kafka_controller_port"),
            self.config.port(self.name, "listener for the local cluster", "kafka_cluster_port"),
        )

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.config.kafka_port}"

    def pid(self) -> int | None:
        return self.daemon.pid()

    def install(self, progress: Progress) -> None:
        require_executable("java", JAVA_HINT)
        if self.libs.is_dir():
            return
        mvn = require_executable("mvn", MAVEN_HINT)
        progress(f"fetching Kafka {broker_version(broker_pom())} jars from Maven Central")
        staging = self.libs.parent / f".staging-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        pom = staging / "pom.xml"
        pom.write_text(broker_pom())
        run_logged(
            [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
             "-DincludeScope=runtime", f"-DoutputDirectory={staging / 'libs'}"],
            self.setup_log,
            what="fetching the Kafka jars with Maven",
        )  # fmt: skip
        # A rename is atomic, so an interrupted download never looks like a finished one.
        (staging / "libs").rename(self.libs)
        shutil.rmtree(staging, ignore_errors=True)

    def _java(self, main: str, *args: str, heap: str = "256m") -> list[str]:
        return [
            "java",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.conf_dir / 'log4j2.xml'}",
            "-cp",
            f"{self.libs}/*",  # the JVM expands the wildcard itself
            main,
            *args,
        ]

    def _write_config(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        (self.conf_dir / "log4j2.xml").write_text((RESOURCES / "kafka-log4j2.xml").read_text())
        self.server_properties.write_text(
            render_server_properties(
                (RESOURCES / "kafka-server.properties").read_text(),
                broker_port=self.config.kafka_port,
                controller_port=self.config.kafka_controller_port,
                cluster_port=self.config.kafka_cluster_port,
                node_address=self.config.node_address,
                log_dir=self.log_dir,
                num_partitions=self.settings.bus_partitions,
            )
        )

    def start(self) -> None:
        self._write_config()
        # Formatting twice would give the log dir a second cluster id; KRaft refuses that.
        if not (self.log_dir / "meta.properties").exists():
            run_logged(
                self._java("kafka.tools.StorageTool", "format", "-t", new_cluster_id(),
                           "-c", str(self.server_properties), "--standalone"),
                self.setup_log,
                what="formatting the Kafka storage",
            )  # fmt: skip
        self.daemon.spawn(
            self._java("kafka.Kafka", str(self.server_properties), heap=self.config.kafka_heap)
        )

    def _admin(self) -> KafkaAdminClient:
        return KafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers,
            client_id="fetalmlops-stack",
            request_timeout_ms=10_000,
            bootstrap_timeout_ms=5_000,
        )

    def _answers(self) -> bool:
        if not accepts_connections(self.config.kafka_port):
            return False
        with quiet_client_logs():
            try:
                admin = self._admin()
            except KafkaError:
                return False
            try:
                admin.list_topics()
                return True
            except KafkaError:
                return False
            finally:
                admin.close()

    def wait_healthy(self) -> None:
        wait_until(
            self._answers,
            name=self.name,
            log=self.log,
            timeout_s=self.config.start_timeout_s,
            alive=lambda: self.pid() is not None,
        )

    def provision(self) -> None:
        admin = self._admin()
        try:
            wanted = missing_topics(self.settings.topics.all(), set(admin.list_topics()))
            for topic in wanted:
                spec = {"num_partitions": self.settings.bus_partitions, "replication_factor": 1}
                # Another `up` may create it between our list and our create.
                with contextlib.suppress(TopicAlreadyExistsError):
                    admin.create_topics({topic: spec}, wait_for_metadata=True)
        finally:
            admin.close()

    def stop(self) -> None:
        self.daemon.stop(self.config.stop_timeout_s)
