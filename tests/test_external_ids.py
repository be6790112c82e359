"""ExternalIds: reservations of external ids, unique per owner, stale ones taken over."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from spectral.sql import SqliteSql
from spectral.tasks import index
from spectral.tasks.index import ExternalIdExistsError, ExternalIds
from storage import Registry


class _Tasks:
    """The summaries ``summary_of`` answers: task id → (owner, external id)."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[str, str]] = {}
        self.on_ask: dict[str, Any] = {}

    async def summary_of(self, task_id: str) -> dict[str, Any] | None:
        if task_id in self.on_ask:
            self.on_ask.pop(task_id)()
        if task_id not in self.held:
            return None
        owner, external_id = self.held[task_id]
        return {"owner": owner, "externalId": external_id}


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry.sqlite", migrations={index.STREAM: index.MIGRATIONS})


def _rows(registry: Registry) -> list[tuple[str, str, str]]:
    return registry.conn.execute(
        "SELECT owner, external_id, task_id FROM task_external_ids ORDER BY 1, 2"
    ).fetchall()


async def test_a_reservation_is_refused_while_held_and_kept_once_the_task_holds_it(
    registry: Registry,
) -> None:
    tasks = _Tasks()
    ids = ExternalIds(SqliteSql(registry.conn), tasks.summary_of)
    assert await ids.reserve("o", "E", "t1") is True
    with pytest.raises(ExternalIdExistsError):  # a create under way holds it
        await ids.reserve("o", "E", "t2")
    assert await ids.reserve("p", "E", "t3") is True  # unique per owner only
    tasks.held["t1"] = ("o", "E")
    await ids.done("o", "E", "t1", reserved=True)
    assert _rows(registry) == [("o", "E", "t1"), ("p", "E", "t3")]
    with pytest.raises(ExternalIdExistsError):
        await ids.reserve("o", "E", "t2")
    assert await ids.reserve("o", "E", "t1") is False  # the same task: TASK_EXISTS
    assert ids.pending == {("p", "E")}
    assert await ids.find("E", "o") == [("o", "t1")]
    assert await ids.find("E", None) == [("o", "t1")]  # t3 never came to hold it
    await ids.done("p", "E", "t3", reserved=True)  # its create failed: released
    assert _rows(registry) == [("o", "E", "t1")] and not ids.pending


async def test_a_stale_reservation_is_taken_over(registry: Registry) -> None:
    tasks = _Tasks()
    ids = ExternalIds(SqliteSql(registry.conn), tasks.summary_of)
    assert await ids.reserve("o", "E", "dead") is True
    await ids.done("o", "E", "dead", reserved=False)  # as if the server died: row stays
    assert _rows(registry) == [("o", "E", "dead")]
    assert await ids.find("E", "o") == []
    assert await ids.reserve("o", "E", "t2") is True
    assert _rows(registry) == [("o", "E", "t2")]


async def test_a_take_over_loses_to_one_made_meanwhile(registry: Registry) -> None:
    """Judged stale, then replaced by another node's create before ours: that one wins."""
    tasks = _Tasks()
    ids = ExternalIds(SqliteSql(registry.conn), tasks.summary_of)
    registry.conn.execute("INSERT INTO task_external_ids VALUES ('o', 'E', 'dead')")

    def other_node_takes_it() -> None:
        registry.conn.execute("UPDATE task_external_ids SET task_id = 'theirs'")
        tasks.held["theirs"] = ("o", "E")

    tasks.on_ask["dead"] = other_node_takes_it
    with pytest.raises(ExternalIdExistsError):
        await ids.reserve("o", "E", "mine")
    assert _rows(registry) == [("o", "E", "theirs")] and not ids.pending
