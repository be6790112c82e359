"""The pure part of task trees (spectral/tasks/tree.py): reports, the family, roll-up."""

from __future__ import annotations

from dataclasses import replace

from spectral.tasks import state as sm
from spectral.tasks.tree import Family, Report, report_of, reports_change, rollup


def parent(**fields: object) -> sm.TaskState:
    state, _ = sm.apply(None, sm.Create(task_id="p", owner="o", epoch="e"), 1.0)
    return replace(state, **fields)  # type: ignore[arg-type]


def child(child_id: str, seq: int, status: str = "in-progress", progress: float = 0, *,
          weight: float = 1, error: str | None = None) -> Report:  # fmt: skip
    return Report(child_id, seq, weight, status, progress, error)


def test_the_weighted_mean_counts_success_as_100() -> None:
    family = Family()
    family.apply(child("a", 1, progress=50, weight=3))
    family.apply(child("b", 1, "success", 20, weight=1))
    assert family.progress(ignore_failures=False) == (3 * 50 + 100) / 4
    assert rollup(parent(), family) == sm.Progress(progress=62.5, message="Children at 62.5%")


def test_a_stale_or_removed_childs_report_is_ignored() -> None:
    family = Family()
    assert family.apply(child("a", 5, progress=50))
    assert not family.apply(child("a", 4, progress=10))
    assert not family.apply(child("a", 5, progress=10))
    assert family.children["a"].progress == 50
    assert family.remove("a")
    assert not family.apply(child("a", 9, progress=70))
    assert len(family) == 0
    assert rollup(parent(), family) is None
    # The same id made again (another epoch) is another child, from its seq 1.
    assert family.apply(replace(child("a", 1, progress=20), epoch="again"))
    assert not family.remove("a", epoch="")  # the old epoch's removal leaves it
    assert family.children["a"].progress == 20
    assert family.apply(replace(child("a", 2, progress=30), epoch="again"))
    assert not family.apply(replace(child("a", 1, progress=5), epoch="again"))


def test_failure_policies() -> None:
    family = Family([child("b", 2, "failed", error="boom"), child("a", 1, progress=10)])
    assert rollup(parent(), family) == sm.Fail(error="child 'b' failed: boom")
    canceled = Family([child("c", 2, "canceled")])
    assert rollup(parent(), canceled) == sm.Fail(error="child 'c' was canceled")
    ignoring = parent(on_child_failure="ignore")
    assert rollup(ignoring, family) == sm.Progress(progress=55.0, message="Children at 55%")


def test_complete_with_children() -> None:
    waiting = parent(complete_with_children=True)
    family = Family([child("a", 3, "success", 100), child("b", 1, progress=0)])
    assert isinstance(rollup(waiting, family), sm.Progress)
    family.apply(child("b", 2, "success", 100))
    assert rollup(waiting, family) == sm.Complete()
    # Under "ignore", finished is enough; under "fail" the failure wins.
    mixed = Family([child("a", 1, "success"), child("b", 1, "failed", error="x")])
    assert rollup(replace(waiting, on_child_failure="ignore"), mixed) == sm.Complete()
    assert isinstance(rollup(waiting, mixed), sm.Fail)


def test_a_terminal_parent_never_changes_and_no_move_is_no_command() -> None:
    family = Family([child("a", 1, "failed", error="x")])
    assert rollup(parent(status=sm.Status.SUCCESS), family) is None
    assert rollup(parent(progress=40.0), Family([child("a", 1, progress=40)])) is None


def test_a_child_reports_creation_and_moves_only() -> None:
    created, _ = sm.apply(
        None, sm.Create(task_id="c", owner="o", epoch="e", parent_id="p", weight=2), 1.0
    )
    assert reports_change(None, created)
    logged, _ = sm.apply(created, sm.Log(message="hi"), 2.0)
    assert not reports_change(created, replace(logged, status=created.status))
    moved, _ = sm.apply(created, sm.Progress(progress=5), 2.0)
    assert reports_change(created, moved)
    assert report_of(moved) == Report("c", 2, 2.0, "in-progress", 5.0, None, "e")
    assert Report.from_json(report_of(moved).to_json()) == report_of(moved)
    root, _ = sm.apply(None, sm.Create(task_id="r", owner="o", epoch="e"), 1.0)
    assert not reports_change(None, root)


def test_create_validates_the_tree_fields() -> None:
    for fields, name in [
        ({"weight": 0}, "weight"),
        ({"weight": float("nan")}, "weight"),
        ({"on_child_failure": "explode"}, "onChildFailure"),
        ({"depth": 9}, "parentId"),
    ]:
        try:
            sm.apply(None, sm.Create(task_id="t", owner="o", epoch="e", **fields), 1.0)  # type: ignore[arg-type]
        except sm.InvalidCommandError as error:
            assert error.field == name
        else:
            raise AssertionError(f"{fields} accepted")
