"""Single-server end-to-end tests, re-run on a cluster through a non-home node.

The tests below are the single-server ones, imported as they are; only their
``server`` and ``client`` fixtures change: two nodes run, every create goes to node
a (so a is every task's home) and every other request, WebSockets and SSE included,
goes to node b, which forwards task calls to a and serves watchers from the bus.
Each test must answer exactly as it does against one server (docs/cluster.md). A
representative 15 of them (every family: tasks, RPC, idempotency, WebSocket and SSE
watching, rooms) keep the suite's time in bounds; all 35 of the families' tests passed
this way when the cluster was built.
Two nodes are enough for "through a non-home node"; three-node behaviour (races,
watchers spread over nodes, a node's loss) is tests/test_cluster_e2e.py's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.cluster import Nodes, cluster
from tests.conftest import ADMIN_HEADERS
from tests.engines import Redis
from tests.procs import Server
from tests.test_api_idempotency import (  # noqa: F401  (re-run here)
    test_a_repeat_gets_the_same_answer_and_appends_nothing,
    test_batch_and_delete_are_idempotent_too,
    test_concurrent_duplicates_apply_exactly_once,
)
from tests.test_api_rooms import (  # noqa: F401
    test_broadcast_reaches_subscribers_with_room_seq,
)
from tests.test_api_rpc import (  # noqa: F401
    test_list_all_and_delete,
    test_mutations_answer_task_and_latest_history,
    test_state_conflicts_keep_our_code_in_data,
)
from tests.test_api_tasks import (  # noqa: F401
    test_batch_update_progress_item_by_item,
    test_lifecycle_through_http,
    test_listing_newest_first_with_filters,
    test_unknown_task_is_404_everywhere,
)
from tests.test_api_watch import (  # noqa: F401
    test_close_codes,
    test_since_replays_without_gap_or_duplicate,
    test_snapshot_then_live_updates_in_order,
    test_sse_stream_with_last_event_id,
)

#: Request paths that create a task: sent to the home node, a.
CREATES = ("/tasks/create", "/rpc/tasks/create")


class _HomeForCreates(httpx.AsyncBaseTransport):
    """Sends creates to node a and everything else to node b."""

    def __init__(self, nodes: Nodes) -> None:
        self.nodes = nodes
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        name = "a" if request.url.path.rstrip("/") in CREATES else "b"
        home = httpx.URL(self.nodes.url(name))
        request.url = request.url.copy_with(host=home.host, port=home.port)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
async def nodes(tmp_path: Path, pg_url: str, redis: Redis) -> AsyncIterator[Nodes]:
    """Two nodes for one test."""
    async with cluster(tmp_path, pg_url, redis.url, names=("a", "b")) as running:
        yield running


@pytest.fixture
def server(nodes: Nodes) -> Server:
    """Node b, the non-home node: what the tests' own WebSocket and SSE clients reach."""
    return nodes.server("b")


@pytest.fixture
async def client(nodes: Nodes) -> AsyncIterator[httpx.AsyncClient]:
    """Creates through node a, every other request through node b."""
    async with httpx.AsyncClient(
        base_url=nodes.url("b"),
        timeout=60,
        headers=ADMIN_HEADERS,
        transport=_HomeForCreates(nodes),
    ) as http:
        yield http
