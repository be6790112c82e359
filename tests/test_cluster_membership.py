"""Membership (epochs, leases, self-fencing) and placement, against the private PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from spectral.cluster import schema
from spectral.cluster.membership import Lease, Membership, MemberStatus, NodeRef
from spectral.cluster.pg import Database, DatabaseUnavailableError, open_database
from spectral.cluster.placement import NodeNotCurrentError, NotHomeError, Placements
from tests.engines import Postgres

# Short leases so the fencing test is quick; the tests wait on status changes, not on time.
TTL, INTERVAL, MARGIN = 1.5, 0.2, 0.5


# --- the pure lease ------------------------------------------------------------------------


def test_lease_never_renewed_is_fenced() -> None:
    assert Lease(5, 1).status(0) is MemberStatus.FENCED


def test_lease_fences_ttl_minus_margin_after_the_renewal_was_sent() -> None:
    lease = Lease(5, 1).renewed(sent_at=100)
    assert lease.status(100) is MemberStatus.CURRENT
    assert lease.status(103.999) is MemberStatus.CURRENT
    assert lease.status(104) is MemberStatus.FENCED
    assert lease.renewed(sent_at=103.5).status(104) is MemberStatus.CURRENT


def test_lease_superseded_is_final_until_a_new_lease() -> None:
    lease = Lease(5, 1).renewed(sent_at=0).lost()
    assert lease.status(0) is MemberStatus.SUPERSEDED


def test_membership_rejects_a_margin_that_cannot_work() -> None:
    with pytest.raises(ValueError):
        Membership(None, "a", "x", ttl=5, interval=4.5, margin=1)  # type: ignore[arg-type]


# --- against PostgreSQL --------------------------------------------------------------------


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[Database]:
    """A pool on a fresh, migrated database."""
    async with open_database(pg_url, size=4) as database:
        await database.run(schema.migrate)
        yield database


def member(db: Database, node_id: str) -> Membership:
    """A membership with the tests' short lease."""
    return Membership(
        db, node_id, f"127.0.0.1:{node_id}", ttl=TTL, interval=INTERVAL, margin=MARGIN
    )


async def expire(db: Database, node_id: str) -> None:
    """Make a node's lease lapse in PostgreSQL (what not renewing for TTL does)."""
    await db.run(
        lambda c: c.execute(
            "UPDATE nodes SET lease_until = now() - interval '1 second' WHERE node_id = %s",
            (node_id,),
        )
    )


async def test_join_bumps_the_epoch_and_supersedes_the_old_incarnation(db: Database) -> None:
    with trio.fail_after(30):
        first = member(db, "a")
        assert await first.join() == NodeRef("a", 1)
        assert first.status is MemberStatus.CURRENT
        second = member(db, "a")
        assert await second.join() == NodeRef("a", 2)
        assert not await first.renew()
        assert first.status is MemberStatus.SUPERSEDED and first.fenced
        assert await second.renew()


async def test_two_nodes_race_to_place_one_winner_per_id(db: Database, pg_url: str) -> None:
    with trio.fail_after(120):
        async with open_database(pg_url, size=4) as other_db:
            a, b = member(db, "a"), member(other_db, "b")
            node_a, node_b = await a.join(), await b.join()
            places = {node_a: Placements(db), node_b: Placements(other_db)}
            outcomes: dict[str, list[tuple[NodeRef, str, bool]]] = {}

            async def place(node: NodeRef, task_id: str) -> None:
                placed = await places[node].place("task", task_id, node)
                outcomes.setdefault(task_id, []).append((node, placed.home, placed.created))

            ids = [f"t{i}" for i in range(100)]
            async with trio.open_nursery() as nursery:
                for task_id in ids:
                    for _ in range(2):  # two concurrent creates per node per id
                        nursery.start_soon(place, node_a, task_id)
                        nursery.start_soon(place, node_b, task_id)

        for task_id in ids:
            results = outcomes[task_id]
            assert len(results) == 4
            winners = [node for node, _, created in results if created]
            assert len(winners) == 1, results  # exactly one create won
            assert {home for _, home, _ in results} == {winners[0].node_id}  # all learn it
            home = await Placements(db).home_of("task", task_id)
            assert home is not None and home.node_id == winners[0].node_id
            assert home.rpc_addr == f"127.0.0.1:{home.node_id}"


async def test_only_the_current_home_activates_and_tokens_only_grow(db: Database) -> None:
    with trio.fail_after(60):
        placements = Placements(db)
        a, b = member(db, "a"), member(db, "b")
        node_a, node_b = await a.join(), await b.join()
        assert await placements.home_of("task", "x") is None
        assert (await placements.place("task", "x", node_a)).created
        tokens = [await placements.activate("task", "x", node_a) for _ in range(3)]
        assert tokens == [1, 2, 3]
        assert await placements.check("task", "x", 3)
        assert not await placements.check("task", "x", 2)

        with pytest.raises(NotHomeError) as not_home:
            await placements.activate("task", "x", node_b)
        assert not_home.value.home == "a"
        with pytest.raises(NotHomeError):
            await placements.activate("task", "never-placed", node_a)

        # A lapsed lease: no activation, no new placement; the token does not move.
        await expire(db, "a")
        with pytest.raises(NodeNotCurrentError):
            await placements.activate("task", "x", node_a)
        with pytest.raises(NodeNotCurrentError):
            await placements.place("task", "y", node_a)
        assert await placements.check("task", "x", 3)

        # A stale epoch (the process restarted): the old incarnation cannot activate.
        node_a2 = await member(db, "a").join()
        with pytest.raises(NodeNotCurrentError):
            await placements.activate("task", "x", node_a)
        assert await placements.activate("task", "x", node_a2) == 4
        assert not await placements.check("task", "x", 3)


async def test_concurrent_activations_get_distinct_growing_tokens(db: Database) -> None:
    with trio.fail_after(60):
        node = await member(db, "a").join()
        placements = Placements(db)
        await placements.place("task", "busy", node)
        tokens: list[int] = []

        async def activate() -> None:
            tokens.append(await placements.activate("task", "busy", node))

        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(activate)
        assert sorted(tokens) == list(range(1, 51))  # no token handed out twice
        assert await placements.check("task", "busy", 50)


async def test_self_fencing_when_postgres_stops_and_recovery(
    postgres: Postgres, db: Database
) -> None:
    with trio.fail_after(120):
        membership = member(db, "a")
        placements = Placements(db)
        async with trio.open_nursery() as nursery:
            node = await nursery.start(membership.serve)
            await placements.place("task", "z", node)
            assert await placements.activate("task", "z", node) == 1
            async with postgres.stopped():
                await membership.wait_status(MemberStatus.FENCED)
                assert membership.fenced
                with pytest.raises(DatabaseUnavailableError):
                    await placements.activate("task", "z", node)
            # PostgreSQL is back: the next renewal succeeds, the node is current again.
            await membership.wait_status(MemberStatus.CURRENT)
            assert membership.node == node  # same incarnation: its epoch still matches
            assert await placements.activate("task", "z", node) == 2
            nursery.cancel_scope.cancel()
