"""The bare stack's ceiling: a minimal quart-trio JSON echo on spectral's hypercorn settings.

``python bench/echo_app.py --port 0`` prints ``echo listening on http://HOST:PORT``.
bench/http_load.py measures it in the same run as spectral, with the same load generator.
"""

from __future__ import annotations

import argparse
import gc
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Any

import hypercorn.trio
import trio
from quart import request
from quart_trio import QuartTrio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spectral.server import hypercorn_config
from spectral.settings import Settings

app = QuartTrio("echo")


@app.post("/echo")
async def echo() -> Any:
    """Parse the JSON body and send it back."""
    return await request.get_json()


async def serve(port: int) -> None:
    """Serve until SIGTERM/SIGINT."""
    config = hypercorn_config(Settings(port=port))
    stop = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def on_signal() -> None:
                async for _ in signals:
                    stop.set()
                    return

            nursery.start_soon(on_signal)
            urls = await nursery.start(
                partial(hypercorn.trio.serve, app, config, shutdown_trigger=stop.wait)
            )
            gc.collect()
            gc.freeze()
            gc.set_threshold(100_000, 50, 100)
            print(f"echo listening on {urls[0]}", flush=True)


def main() -> None:
    """Parse flags and serve."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=0)
    trio.run(serve, parser.parse_args().port)


if __name__ == "__main__":
    main()
