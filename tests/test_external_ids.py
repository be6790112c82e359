"""ExternalIds: reservations of external ids, unique per owner, stale ones taken over."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import pytest
import trio

from spectral.cluster import schema
from spectral.cluster.pg import open_database
from spectral.cluster.sql import PgSql
from spectral.sql import Conn, Sql, SqliteSql
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


class _Clock:
    """A wall clock the test moves."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


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
    clock = _Clock()
    ids = ExternalIds(SqliteSql(registry.conn), tasks.summary_of, clock=clock)
    assert await ids.reserve("o", "E", "dead") is True
    await ids.done("o", "E", "dead", reserved=False)  # as if the server died: row stays
    assert _rows(registry) == [("o", "E", "dead")]
    assert await ids.find("E", "o") == []
    clock.now += index.RESERVATION_GRACE  # no longer a create under way
    assert await ids.reserve("o", "E", "t2") is True
    assert _rows(registry) == [("o", "E", "t2")]


async def test_a_take_over_loses_to_one_made_meanwhile(registry: Registry) -> None:
    """Judged stale, then replaced by another node's create before ours: that one wins."""
    tasks = _Tasks()
    ids = ExternalIds(SqliteSql(registry.conn), tasks.summary_of)
    registry.conn.execute("INSERT INTO task_external_ids VALUES ('o', 'E', 'dead', 1.0)")

    def other_node_takes_it() -> None:
        registry.conn.execute("UPDATE task_external_ids SET task_id = 'theirs'")
        tasks.held["theirs"] = ("o", "E")

    tasks.on_ask["dead"] = other_node_takes_it
    with pytest.raises(ExternalIdExistsError):
        await ids.reserve("o", "E", "mine")
    assert _rows(registry) == [("o", "E", "theirs")] and not ids.pending


async def test_migration_4_keeps_existing_reservations_as_old(tmp_path: Path) -> None:
    """A registry from before reserved_at: its rows read NULL, judged by their task."""
    path = tmp_path / "registry.sqlite"
    before = Registry(path, migrations={index.STREAM: index.MIGRATIONS[:3]})
    before.conn.execute("INSERT INTO task_external_ids VALUES ('o', 'E', 'dead')")
    before.close()
    registry = Registry(path, migrations={index.STREAM: index.MIGRATIONS})
    try:
        rows = registry.conn.execute("SELECT * FROM task_external_ids").fetchall()
        assert rows == [("o", "E", "dead", None)]
        ids = ExternalIds(SqliteSql(registry.conn), _Tasks().summary_of)
        assert await ids.reserve("o", "E", "t1") is True  # old and not held: stale
        assert _rows(registry) == [("o", "E", "t1")]
    finally:
        registry.close()


# --- the grace period, on SQLite and on PostgreSQL ------------------------------------------

#: Concurrent creates of one external id per round, each as another node.
ROUND = 8


@pytest.fixture(params=["sqlite", "postgresql"])
async def sql(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Sql]:
    """The product's database, migrated: a SQLite registry, or a fresh PostgreSQL one."""
    if request.param == "sqlite":
        registry = Registry(tmp_path / "r.sqlite", migrations={index.STREAM: index.MIGRATIONS})
        yield SqliteSql(registry.conn)
        registry.close()
        return
    pg_url = request.getfixturevalue("pg_url")
    async with open_database(pg_url, size=ROUND) as database:
        await database.run(schema.migrate)
        yield cast(Sql, PgSql(database))  # PgSql's connection is a Conn


def _execute(statement: str, *params: Any) -> Callable[[Conn], None]:
    """A unit of work that runs one statement."""

    def work(conn: Conn) -> None:
        conn.execute(statement, params)

    return work


async def _reservations(sql: Sql) -> list[tuple[Any, ...]]:
    return [
        tuple(row)
        for row in await sql.run(
            lambda conn: conn.execute(
                "SELECT owner, external_id, task_id, reserved_at FROM task_external_ids"
                " ORDER BY 1, 2"
            ).fetchall()
        )
    ]


async def test_a_fresh_reservation_is_a_create_under_way_an_old_one_is_stale(sql: Sql) -> None:
    """Fresh: taken even though its task does not exist (yet); past the grace: taken over."""
    tasks, clock = _Tasks(), _Clock()
    # Two nodes: each knows only its own creates under way (``pending``).
    one = ExternalIds(sql, tasks.summary_of, clock=clock)
    two = ExternalIds(sql, tasks.summary_of, clock=clock)
    assert await one.reserve("o", "E", "t1") is True
    assert await _reservations(sql) == [("o", "E", "t1", clock.now)]
    clock.now += index.RESERVATION_GRACE - 1
    with pytest.raises(ExternalIdExistsError):
        await two.reserve("o", "E", "t2")  # t1 does not exist yet: still not stale
    assert not two.pending
    clock.now += 1  # t1's create never finished (its node died): stale now
    assert await two.reserve("o", "E", "t2") is True
    assert await _reservations(sql) == [("o", "E", "t2", clock.now)]
    with pytest.raises(ExternalIdExistsError):  # and t2's is fresh in its turn
        await one.reserve("o", "E", "t1")
    tasks.held["t2"] = ("o", "E")
    await two.done("o", "E", "t2", reserved=True)
    clock.now += 10 * index.RESERVATION_GRACE
    with pytest.raises(ExternalIdExistsError):  # old, but held by a live task
        await one.reserve("o", "E", "t1")
    assert await one.find("E", "o") == [("o", "t2")]


async def test_the_same_task_id_is_not_refused_by_its_own_reservation(sql: Sql) -> None:
    """A retry of the same create (same Idempotency-Key, on another node) may go on."""
    tasks, clock = _Tasks(), _Clock()

    def node() -> ExternalIds:
        return ExternalIds(sql, tasks.summary_of, clock=clock)

    assert await node().reserve("o", "E", "t1") is True
    assert await node().reserve("o", "E", "t1") is False  # mine: not written, not released
    assert await _reservations(sql) == [("o", "E", "t1", clock.now)]
    with pytest.raises(ExternalIdExistsError):
        await node().reserve("o", "E", "t3")
    # Past the grace, its own stale reservation is renewed (a take-over of itself), so
    # that another create cannot judge it stale while this one runs.
    clock.now += index.RESERVATION_GRACE
    retry = node()
    assert await retry.reserve("o", "E", "t1") is True
    assert await _reservations(sql) == [("o", "E", "t1", clock.now)]
    with pytest.raises(ExternalIdExistsError):
        await node().reserve("o", "E", "t3")
    # Once the task holds it, re-reserving answers False (the create says TASK_EXISTS).
    tasks.held["t1"] = ("o", "E")
    await retry.done("o", "E", "t1", reserved=True)
    assert await node().reserve("o", "E", "t1") is False
    clock.now += index.RESERVATION_GRACE
    assert await node().reserve("o", "E", "t1") is False
    with pytest.raises(ExternalIdExistsError):
        await node().reserve("o", "E", "t3")
    assert await _reservations(sql) == [("o", "E", "t1", clock.now - index.RESERVATION_GRACE)]


async def test_old_rows_and_the_triggers_rows_count_as_old(sql: Sql) -> None:
    """reserved_at NULL (rows from before the column, or a trigger's): judged by the task."""
    tasks = _Tasks()
    ids = ExternalIds(sql, tasks.summary_of)
    await sql.run(
        lambda conn: conn.execute(
            "INSERT INTO task_external_ids (owner, external_id, task_id)"
            " VALUES ('o', 'E', 'live'), ('o', 'F', 'dead')"
        ),
        write=True,
    )
    tasks.held["live"] = ("o", "E")
    with pytest.raises(ExternalIdExistsError):
        await ids.reserve("o", "E", "t1")
    assert await ids.reserve("o", "F", "t2") is True
    rows = await _reservations(sql)
    assert rows[0] == ("o", "E", "live", None)
    assert rows[1][:3] == ("o", "F", "t2") and rows[1][3] > 0


async def test_concurrent_reservations_have_exactly_one_winner(sql: Sql) -> None:
    """ROUND nodes reserve one external id at once, none of whose tasks exists yet."""
    tasks = _Tasks()
    nodes = [ExternalIds(sql, tasks.summary_of) for _ in range(ROUND)]
    won: list[str] = []
    lost: list[str] = []

    async def create(ids: ExternalIds, task_id: str, external_id: str) -> None:
        try:
            reserved = await ids.reserve("o", external_id, task_id)
        except ExternalIdExistsError:
            lost.append(task_id)
            return
        assert reserved is True
        won.append(task_id)

    async def race(external_id: str, prefix: str) -> None:
        won.clear()
        lost.clear()
        async with trio.open_nursery() as nursery:
            for n, ids in enumerate(nodes):
                nursery.start_soon(create, ids, f"{prefix}-{n}", external_id)
        assert len(won) == 1 and len(lost) == ROUND - 1, (won, lost)
        rows = await _reservations(sql)
        assert [r[2] for r in rows if r[1] == external_id] == won

    with trio.fail_after(120):
        for round_ in range(30):
            await race(f"E{round_}", f"t{round_}")
            # A stale reservation met by ROUND concurrent take-overs: again one winner.
            stale = f"S{round_}"
            await sql.run(
                _execute("INSERT INTO task_external_ids VALUES ('o', ?, 'dead', 1.0)", stale),
                write=True,
            )
            await race(stale, f"s{round_}")
