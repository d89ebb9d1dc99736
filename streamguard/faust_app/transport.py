"""Faust's aiokafka transport with a fetch wait the worker chooses.

Faust builds its consumer with ``fetch_max_wait_ms=1500`` and no setting to change it. On
Apache Kafka a fetch returns as soon as data arrives, so the wait only bounds idle polls; the
embedded Tansu broker answers a fetch of an empty partition only when the wait expires, so
each hop between stages (predictions -> partials -> verdicts -> control) took up to 1.5 s
(0.48 s on average, measured with aiokafka against the embedded broker; 0.01 s with a 100 ms
wait). A short wait costs idle fetch requests (10 per second per broker at 100 ms) and cuts
the window-close-to-command latency on both brokers' worst case.
"""

from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as driver

from streamguard.faust_app.buffer import BoundedBuffer
from streamguard.faust_app.drain import drain

__all__ = ["App"]


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads it when the consumer starts (its fetcher is built in start()).
        app = self.app
        if isinstance(app, App):
            consumer._fetch_max_wait_ms = app.fetch_max_wait_ms  # private: no public knob
        return consumer


class _Consumer(driver.Consumer):
    async def _drain_messages(self, fetcher: Any) -> None:
        await drain(self, fetcher)  # without four tasks per message (drain's docstring)

    def on_buffer_drop(self, tp: Any) -> None:
        # Faust makes a partition active again when its stream's buffer drains, paused or
        # not: a partition paused for running ahead (faust_app.pacing) stays paused.
        if tp in self._paused_partitions:
            self._buffered_partitions.discard(tp)
            return
        super().on_buffer_drop(tp)

    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(driver.Transport):
    Consumer = _Consumer


class App(faust.App):
    """A Faust app whose consumer waits at most ``fetch_max_wait_ms`` per fetch, delivers
    through :func:`~streamguard.faust_app.drain.drain`, and whose streams buffer at most
    ``stream_buffer_max_bytes`` of message values each (:mod:`streamguard.faust_app.buffer`)."""

    fetch_max_wait_ms: int = 1500
    stream_buffer_max_bytes: int = 64 << 20

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)

    def FlowControlQueue(  # noqa: N802 - Faust's name for the factory
        self, maxsize: int | None = None, *, clear_on_resume: bool = False
    ) -> BoundedBuffer:
        return BoundedBuffer(
            maxsize or 0,
            max_bytes=self.stream_buffer_max_bytes,
            flow_control=self.flow_control,
            clear_on_resume=clear_on_resume,
        )
