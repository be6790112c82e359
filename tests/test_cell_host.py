"""The cell's narrow interface to its host (actors/host.py).

The import graph of ``actors/`` has no cycle and neither the cell nor the kind's base
class imports the router; the router provides every member of ``CellHost``; and a cell
runs its turns against a fake host that only records what it was asked.
"""

from __future__ import annotations

import ast
import inspect
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from actors import ActorBrokenError, Router, RouterConfig, SocketSet
from actors.host import ActorCell, CellHost
from actors.mailbox import Cell, Envelope
from storage import ObjectFile, ObjectRow, ObjectStore
from tests.kinds import Append, Delete, Ledger, SetAlarm, reset

ACTORS = Path(__file__).resolve().parent.parent / "actors"


def _imports(module: Path) -> set[str]:
    """Every ``actors.*`` module imported by ``module``, TYPE_CHECKING blocks included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("actors"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("actors"))
    return found


def _graph() -> dict[str, set[str]]:
    return {
        f"actors.{path.stem}": _imports(path) - {"actors"}
        for path in ACTORS.glob("*.py")
        if path.stem != "__init__"
    }


def test_neither_the_cell_nor_the_actor_imports_the_router() -> None:
    graph = _graph()
    assert "actors.router" not in graph["actors.mailbox"]
    assert graph["actors.actor"] <= {"actors.host", "actors.messaging", "actors.sockets"}
    assert "actors.mailbox" not in graph["actors.host"]


def test_the_runtime_has_no_import_cycle() -> None:
    graph = _graph()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path, module))}"
        for target in graph.get(module, ()):
            visit(target, (*path, module))

    for module in graph:
        visit(module, ())


def _members(protocol: type) -> set[str]:
    names = set(getattr(protocol, "__annotations__", {}))
    names.update(
        name
        for name, value in vars(protocol).items()
        if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, property))
    )
    return names


def test_the_router_provides_every_member_of_cell_host() -> None:
    router_members = set(dir(Router)) | {"config", "context", "clock"}  # set in __init__
    missing = _members(CellHost) - router_members
    assert not missing


def test_the_cell_provides_every_member_of_actor_cell() -> None:
    cell_members = set(dir(Cell)) | {"object_id", "conn", "record"}  # set in __init__
    assert not _members(ActorCell) - cell_members


class FakeHost:
    """A CellHost that keeps what it is asked in lists (no router, no registry)."""

    def __init__(self, store: ObjectStore) -> None:
        self.commit_allowed = True
        self.config = RouterConfig()
        self.context = "the context"
        self.now = 1000.0
        self.store = store
        self.rows: list[tuple[str, Any]] = []
        self.alarms: list[tuple[str, str, float | None]] = []
        self.deleted_files: list[str] = []
        self.forgotten: list[tuple[str, str]] = []
        self.turns: list[int] = []
        self.commits = 0
        self.settled = 0
        self.posted: list[Any] = []
        self.socket_set = SocketSet()

    def clock(self) -> float:
        """Fixed time."""
        return self.now

    def open_file(self, file: ObjectFile) -> sqlite3.Connection:
        """Reopen through the store."""
        return self.store.open_file(file, fresh=False)

    def settle_file(self, conn: sqlite3.Connection) -> None:
        """Count."""
        self.settled += 1
        self.store.settle(conn)

    def delete_file(self, file: ObjectFile) -> None:
        """Remember and delete."""
        self.deleted_files.append(file.path.name)
        self.store.delete_file(file)

    async def write_row(self, row: ObjectRow) -> None:
        """Remember."""
        self.rows.append(("write", row))

    def stage_row(self, row: ObjectRow) -> None:
        """Remember."""
        self.rows.append(("stage", row))

    async def delete_row(self, kind: str, object_id: str) -> None:
        """Remember."""
        self.rows.append(("delete", object_id))

    def schedule_alarm(self, kind: str, object_id: str, when: float | None) -> None:
        """Remember."""
        self.alarms.append((kind, object_id, when))

    def sockets_of(self, kind: str, object_id: str) -> SocketSet:
        """One set."""
        return self.socket_set

    def post_messages(self, sender: tuple[str, str], messages: list[Any]) -> None:
        """Remember."""
        self.posted.extend(messages)

    def is_broken(self, key: tuple[str, str]) -> bool:
        """Never."""
        return False

    def mark_broken(self, key: tuple[str, str]) -> None:
        """Not expected here."""
        raise AssertionError(f"{key} marked broken")

    def leftover_error(self, key: tuple[str, str]) -> Exception:
        """A plain error."""
        return RuntimeError("left over")

    def forget(self, key: tuple[str, str], cell: object) -> None:
        """Remember."""
        self.forgotten.append(key)

    def may_commit(self) -> bool:
        """As the test sets it (a cluster node that lost its lease answers False)."""
        return self.commit_allowed

    def record_commit(self, seconds: float) -> None:
        """Count."""
        self.commits += 1

    def record_turn(self, messages: int) -> None:
        """Remember."""
        self.turns.append(messages)

    def record_restart(self) -> None:
        """Not expected here."""
        raise AssertionError("restart")


@pytest.fixture(autouse=True)
def _reset_kinds() -> Iterator[None]:
    reset()
    yield
    reset()


async def test_a_cell_runs_its_turns_against_a_fake_host(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    store.register_kind(Ledger.kind, Ledger.migrations)
    host = FakeHost(store)
    typed: CellHost = host  # the fake satisfies the protocol (checked by type checkers)
    file = store.create_named("ledger")
    cell = Cell(typed, Ledger, "l1", file, store.open_file(file, fresh=True))
    cell.load()
    assert cell.instance.context == "the context"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cell.run)
        cell.reserved = False
        envelopes = [Envelope(Append("a")), Envelope(SetAlarm(2000.0))]
        for envelope in envelopes:
            cell.send(envelope)
        assert [await e.wait() for e in envelopes] == [1, 2000.0]
        deletion = Envelope(Delete())
        cell.send(deletion)
        assert await deletion.wait() == "deleted"
    assert host.settled == 1
    assert sum(host.turns) == 3 and host.commits == len(host.turns)
    first_write = host.rows[0]
    assert first_write[0] == "write" and first_write[1].created_at == 1000.0
    assert first_write[1].file == file.name
    assert host.rows[-1] == ("delete", "l1")
    assert ("ledger", "l1", 2000.0) in host.alarms and host.alarms[-1] == ("ledger", "l1", None)
    assert host.deleted_files == [file.path.name]
    assert host.forgotten == [("ledger", "l1")]
    assert not file.path.exists()


async def test_a_host_that_refuses_commits_gets_no_change_and_no_crash(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    store.register_kind(Ledger.kind, Ledger.migrations)
    host = FakeHost(store)
    file = store.create_named("ledger")
    cell = Cell(host, Ledger, "l1", file, store.open_file(file, fresh=True))
    cell.load()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cell.run)
        cell.reserved = False
        first = Envelope(Append("a"))
        cell.send(first)
        assert await first.wait() == 1
        host.commit_allowed = False  # e.g. the lease lapsed
        refused = Envelope(Append("b"))
        cell.send(refused)
        with pytest.raises(ActorBrokenError, match="may not commit"):
            await refused.wait()
        host.commit_allowed = True
        again = Envelope(Append("c"))
        cell.send(again)
        assert await again.wait() == 2  # "b" was rolled back, in the file and in memory
        cell.close()
    assert cell.crashes == 0 and host.commits == 2
