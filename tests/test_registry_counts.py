"""The registry's per-(kind, owner, status) counts agree with the rows, whatever happens."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

from storage import ObjectRow, Registry


def test_listing_totals_match_the_rows_through_every_kind_of_change(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.sqlite")
    rng = random.Random(7)
    owners, statuses = ["alice", "bob", None], ["pending", "in-progress", "success", None]
    live: set[str] = set()
    for step in range(2000):
        object_id = f"o{rng.randrange(300)}"
        if object_id in live and rng.random() < 0.2:
            registry.stage_delete("task", object_id)
            live.discard(object_id)
        else:
            registry.stage(
                ObjectRow(
                    kind=rng.choice(["task", "room"]) if object_id not in live else "task",
                    id=object_id,
                    owner=rng.choice(owners),
                    status=rng.choice(statuses),
                    created_at=float(step),
                    updated_at=float(step),
                )
            )
            live.add(object_id)
        if step % 7 == 0:
            registry.flush_now()
    registry.flush_now()
    raw = sqlite3.connect(tmp_path / "registry.sqlite")
    for kind in ("task", "room"):
        assert (
            registry.count(kind)
            == raw.execute("SELECT count(*) FROM objects WHERE kind = ?", (kind,)).fetchone()[0]
        )
        for owner in ["alice", "bob"]:
            for status in ["pending", "in-progress", "success"]:
                expected = raw.execute(
                    "SELECT count(*) FROM objects WHERE kind = ? AND owner = ? AND status = ?",
                    (kind, owner, status),
                ).fetchone()[0]
                page = registry.list(kind, owner=owner, status=status, limit=1)
                assert page.total == expected, (kind, owner, status)
    assert registry.count() == raw.execute("SELECT count(*) FROM objects").fetchone()[0]
    assert (
        registry.list("task", id_prefix="o1").total
        == raw.execute(
            "SELECT count(*) FROM objects WHERE kind = 'task' AND id LIKE 'o1%'"
        ).fetchone()[0]
    )


def test_an_existing_registry_is_counted_when_it_migrates(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite"
    registry = Registry(path)
    for n in range(50):
        registry.stage(ObjectRow("task", f"t{n}", 1.0, 1.0, owner="o", status="pending"))
    registry.flush_now()
    registry.conn.execute("DELETE FROM object_counts")  # as before migration 3 existed
    registry.conn.execute("DELETE FROM _schema_versions WHERE stream = 'storage'")
    registry.conn.execute("INSERT INTO _schema_versions VALUES ('storage', 2)")
    registry.conn.execute("DROP TRIGGER objects_counted_insert")
    registry.conn.execute("DROP TRIGGER objects_counted_delete")
    registry.conn.execute("DROP TRIGGER objects_counted_update")
    registry.conn.execute("DROP TABLE object_counts")
    registry.conn.execute("ALTER TABLE objects DROP COLUMN file")  # as before migration 4
    registry.conn.close()
    assert Registry(path).list("task", status="pending").total == 50
