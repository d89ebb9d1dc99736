"""The worker's Faust consumer fetches with the configured wait, not Faust's fixed 1.5 s."""

import asyncio

from streamguard.faust_app.transport import App


def test_the_worker_consumer_takes_the_apps_fetch_wait() -> None:
    async def build() -> int:
        app = App("sg-transport-test", broker="kafka://127.0.0.1:1", autodiscover=False)
        app.fetch_max_wait_ms = 80
        thread = app.consumer._thread
        consumer = thread._create_worker_consumer(app.transport)
        return int(consumer._fetch_max_wait_ms)

    assert asyncio.run(build()) == 80
