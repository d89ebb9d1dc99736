"""Is the broker there, with the topics the specs describe? A metadata round trip.

A broker that is frozen or overloaded still accepts TCP connections (the kernel answers the
handshake), so the probe asks for cluster metadata and waits a bounded time for the answer.
The result feeds ``streamguard_broker_up`` and ``/health``; sends that fail set it too.

The same metadata says whether every topic exists with the partitions its spec declares. A
broker that auto-creates topics (Kafka's default, and the embedded broker's) recreates a lost
topic with its own partition count on the first write; state keyed by partition is then
unreadable, and ``/health`` must say why instead of the worker silently stalling.
"""

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError

from streamguard.contracts import TopicSpec
from streamguard.faust_app.metrics import Metrics

__all__ = ["BrokerProbe"]

log = logging.getLogger("streamguard.worker")


class BrokerProbe:
    """Periodic metadata requests against the bootstrap servers."""

    def __init__(
        self,
        bootstrap: str,
        metrics: Metrics,
        specs: dict[str, TopicSpec],
        timeout_s: float = 3.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.metrics = metrics
        self.specs = specs
        self.timeout_s = timeout_s
        self._client: AIOKafkaClient | None = None
        self.up = True
        self.topic_problems: list[str] = []

    async def check(self) -> bool:
        """One probe; updates the broker gauge and returns whether the broker answered."""
        try:
            if self._client is None:
                client = AIOKafkaClient(
                    bootstrap_servers=self.bootstrap,
                    request_timeout_ms=int(self.timeout_s * 1000),
                )
                await asyncio.wait_for(client.bootstrap(), self.timeout_s)
                self._client = client
            metadata = await asyncio.wait_for(self._client.fetch_all_metadata(), self.timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            await self.close()  # reconnect from scratch next time: the broker may have moved
            if self.up:
                log.error("broker unreachable: %s", exc or type(exc).__name__)
            self.up = False
        else:
            if not self.up:
                log.warning("broker reachable again")
            self.up = True
            problems = []
            for spec in self.specs.values():
                partitions = metadata.partitions_for_topic(spec.name)
                if not partitions:
                    problems.append(f"topic {spec.name} is missing")
                elif len(partitions) != spec.partitions:
                    problems.append(
                        f"topic {spec.name} has {len(partitions)} partitions, "
                        f"its spec {spec.partitions}"
                    )
            if problems and problems != self.topic_problems:
                log.error("topics differ from topics/*.toml: %s", "; ".join(problems))
            self.topic_problems = problems
        self.metrics.broker_ok.set(1 if self.up else 0)
        return self.up

    async def close(self) -> None:
        """Close the probe's connections."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(KafkaError, OSError):  # a dead connection: nothing to do
                await client.close()
