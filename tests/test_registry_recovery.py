"""After kill -9, registry fields that were staged but never flushed come back from the files."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import trio

from actors import RouterConfig, open_router
from storage import Registry
from tests.kinds import Gauge
from tests.procs import ROOT

CHILD = textwrap.dedent(
    """
    import sys, trio
    from actors import RouterConfig, open_router
    from tests.kinds import Gauge

    async def main(root):
        # The registry writer would flush staged progress only after an hour.
        config = RouterConfig(registry_flush_interval=3600)
        async with open_router(root, [Gauge], config) as router:
            await router.call("gauge", "g1", 0.0, create=True)
            for step in range(1, 21):
                await router.call("gauge", "g1", step / 20)
                await router.call("gauge", "g2", step / 40, create=True)
            print("acknowledged", flush=True)
            await trio.sleep_forever()

    trio.run(main, sys.argv[1])
    """
)


def test_begin_run_reports_an_unclean_previous_run(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.sqlite")
    assert registry.begin_run() is None  # a new registry
    registry.conn.close()
    registry = Registry(tmp_path / "registry.sqlite")
    since = registry.begin_run()  # the previous run never called end_run
    assert since is not None
    registry.end_run()
    registry.conn.close()
    registry = Registry(tmp_path / "registry.sqlite")
    assert registry.begin_run() is None
    registry.conn.close()


async def test_staged_progress_survives_kill_9(tmp_path: Path) -> None:
    child = await trio.lowlevel.open_process(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output = b""
    try:
        assert child.stdout is not None
        with trio.fail_after(60):  # a generous bound on a child's start-up and 41 calls
            while b"acknowledged\n" not in output:
                chunk = await child.stdout.receive_some()
                assert chunk, output.decode()
                output += chunk
    finally:
        child.kill()
        await child.wait()

    lost = Registry(tmp_path / "registry.sqlite")
    # Creations were durable (and flushed what was staged then); the later progress
    # was only staged when the process died: the rows are behind.
    stale = [lost.get("gauge", "g1"), lost.get("gauge", "g2")]
    assert stale[0] is not None and stale[0].progress < 1.0
    assert stale[1] is not None and stale[1].progress < 0.5
    lost.conn.close()

    async with open_router(tmp_path, [Gauge], RouterConfig()) as router:
        g1 = router.registry.get("gauge", "g1")
        g2 = router.registry.get("gauge", "g2")
        assert g1 is not None and g1.progress == 1.0
        assert g2 is not None and g2.progress == 0.5
        assert router.statistics().activations == 0  # recovered without activating anyone
