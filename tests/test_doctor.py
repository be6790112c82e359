"""``spectral doctor``: the real CLI on data directories written by a real server."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import trio

from spectral.ops import doctor
from storage import (
    Migration,
    ObjectRow,
    ObjectStore,
    Registry,
    Report,
    locate,
    object_path,
    write_record,
)
from tests.conftest import ADMIN_HEADERS, SERVE_ENV, serve_argv
from tests.procs import ROOT, running

GARBAGE = b"\x13garbage" * 4096


def doctor_argv(data: Path, *flags: str) -> list[str]:
    """argv of ``spectral doctor`` on ``data``."""
    return [sys.executable, "-m", "spectral", "doctor", "--data-dir", str(data), *flags]


async def run_doctor(data: Path, *flags: str) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI to completion; its exit code and output."""
    with trio.fail_after(60):
        return await trio.run_process(
            doctor_argv(data, *flags),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
        )


def text(result: subprocess.CompletedProcess[bytes]) -> str:
    """stdout and stderr, for assertions and failure messages."""
    return result.stdout.decode() + result.stderr.decode()


async def stop(server: Any) -> None:
    """SIGTERM and wait for a clean exit."""
    server.terminate()
    with trio.fail_after(15):
        assert await server.wait() == 0, server.output


async def listing(http: httpx.AsyncClient) -> dict[str, Any]:
    """Every listed task by id (from the registry)."""
    body = (await http.get("/tasks", params={"limit": 100})).json()
    return {task["taskId"]: task for task in body["tasks"]}


TASKS = ("kept", "gone", "garbage", "orphan", "stale")


async def test_doctor_reports_and_repairs_a_damaged_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with (
        running(serve_argv(data), env=SERVE_ENV) as server,
        httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS) as http,
    ):
        for task_id in TASKS:
            body = {"id": task_id, "status": "in-progress", "metadata": {"n": task_id}}
            assert (await http.post("/tasks/create", json=body)).status_code == 201
        await http.post("/tasks/complete", json={"taskId": "kept"})
        await http.post("/tasks/fail", json={"taskId": "stale", "error": "boom"})
        assert (await http.post("/rooms/lobby/broadcast", json={"n": 1})).status_code == 200
        before = {task_id: (await http.get(f"/tasks/{task_id}")).json() for task_id in TASKS}
        await stop(server)

    with sqlite3.connect(data / "registry.sqlite") as db:  # lobby, and the owners' feed rooms
        (rooms,) = db.execute("SELECT count(*) FROM objects WHERE kind = 'room'").fetchone()
    db.close()
    assert rooms >= 1
    healthy = await run_doctor(data)
    assert healthy.returncode == 0, text(healthy)
    assert f"checked {5 + rooms} object files (task 5, room {rooms}): healthy" in text(healthy)

    # The damage: a deleted file, garbage in a file, an unlisted file, a stale row,
    # and a garbage file that no registry row points at.
    gone, garbage = locate(data, "task", "gone"), locate(data, "task", "garbage")
    assert gone != object_path(data, "task", "gone")  # tasks' files come from the pool
    os.unlink(gone)
    garbage.write_bytes(GARBAGE)
    stray = data / "objects" / "task" / "00" / ("0" * 64 + ".sqlite")
    stray.write_bytes(GARBAGE)
    with sqlite3.connect(data / "registry.sqlite") as db:
        db.execute("DELETE FROM objects WHERE kind = 'task' AND id = 'orphan'")
        stale_summary = json.dumps({**before["stale"], "status": "in-progress", "progress": 99})
        db.execute(
            "UPDATE objects SET status = 'in-progress', progress = 99, summary = ?"
            " WHERE kind = 'task' AND id = 'stale'",
            (stale_summary,),
        )
    db.close()

    found = await run_doctor(data)
    assert found.returncode == 1, text(found)
    lines = found.stdout.decode().splitlines()
    stray_name = str(stray.relative_to(data))
    assert sorted(lines[:-1]) == sorted(
        [
            f"task gone: missing: the registry lists it, its file {gone.relative_to(data)} is gone",
            "task orphan: orphaned: its file is readable, the registry does not list it",
            "task stale: stale: its registry row differs from its file in"
            " status, progress, summary",
            "task garbage: corrupt: unreadable: file is not a database "
            f"({garbage.relative_to(data)})",
            f"task {stray_name}: corrupt: unreadable: file is not a database",
        ]
    )
    assert lines[-1].endswith(
        f"checked {5 + rooms} object files (task 5, room {rooms}):"
        " 5 problems (1 missing, 1 orphaned, 1 stale, 2 corrupt)"
    )

    as_json = await run_doctor(data, "--json")
    assert as_json.returncode == 1, text(as_json)
    report = json.loads(as_json.stdout)
    assert not report["healthy"] and not report["repaired"]
    problems = [(p["kind"], p["id"], p["problem"]) for p in report["problems"]]
    assert sorted(problems, key=str) == sorted(
        [
            ("task", "gone", "missing"),
            ("task", "orphan", "orphaned"),
            ("task", "stale", "stale"),
            ("task", "garbage", "corrupt"),
            ("task", None, "corrupt"),
        ],
        key=str,
    )
    assert (await run_doctor(data)).stdout == found.stdout  # checking changed nothing

    repaired = await run_doctor(data, "--repair")
    assert repaired.returncode == 0, text(repaired)
    out = repaired.stdout.decode()
    assert "repair task gone: removed its registry row" in out
    assert "repair task orphan: listed it again from its file" in out
    assert "repair task stale: rewrote its registry row from its file" in out
    assert f"after repair: checked {3 + rooms} object files (task 3, room {rooms}): healthy" in out

    quarantined = {path.name: path for path in (data / "quarantine" / "task").iterdir()}
    garbage_name = garbage.name
    moved = [n for n in quarantined if n.endswith(f"-{garbage_name}")]
    stray_moved = [n for n in quarantined if n.endswith(f"-{stray.name}")]
    assert len(moved) == 1 and len(stray_moved) == 1, sorted(quarantined)
    assert quarantined[moved[0]].read_bytes() == GARBAGE
    assert quarantined[stray_moved[0]].read_bytes() == GARBAGE
    assert f"repair task garbage: moved it to quarantine/task/{moved[0]}" in out
    note = json.loads(quarantined[moved[0] + ".json"].read_text())
    assert (note["kind"], note["id"]) == ("task", "garbage")
    assert not garbage.exists() and not stray.exists()

    again = await run_doctor(data)
    assert again.returncode == 0, text(again)
    assert again.stdout.decode().rstrip().endswith("healthy")

    async with (
        running(serve_argv(data), env=SERVE_ENV) as server,
        httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS) as http,
    ):
        for task_id in ("kept", "orphan", "stale"):
            response = await http.get(f"/tasks/{task_id}")
            assert response.status_code == 200
            assert response.json() == before[task_id]
        for task_id in ("gone", "garbage"):
            assert (await http.get(f"/tasks/{task_id}")).status_code == 404
        listed = await listing(http)
        assert listed == {task_id: before[task_id] for task_id in ("kept", "orphan", "stale")}
        await stop(server)


async def test_doctor_refuses_while_a_server_runs_on_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with (
        running(serve_argv(data), env=SERVE_ENV) as server,
        httpx.AsyncClient(base_url=server.url, headers=ADMIN_HEADERS) as http,
    ):
        for task_id in ("live", "unlisted"):
            assert (await http.post("/tasks/create", json={"id": task_id})).status_code == 201
        # Something a repair would change: a row the registry lost.
        with sqlite3.connect(data / "registry.sqlite", timeout=10) as db:
            db.execute("DELETE FROM objects WHERE kind = 'task' AND id = 'unlisted'")
        db.close()

        repair = await run_doctor(data, "--repair")
        assert repair.returncode == 2, text(repair)
        assert repair.stdout == b""
        assert "refused: a running spectral server holds" in repair.stderr.decode()
        check = await run_doctor(data)
        assert check.returncode == 2, text(check)
        assert "refused: a running spectral server holds" in check.stderr.decode()
        assert "corrupt" not in text(check)  # live actors' locked files are not misreported

        assert "unlisted" not in await listing(http)  # the refused repair changed nothing
        assert (await http.get("/tasks/live")).status_code == 200
        await stop(server)

    stopped = await run_doctor(data)
    assert stopped.returncode == 1, text(stopped)
    assert "task unlisted: orphaned" in stopped.stdout.decode()


def test_a_missing_or_empty_data_dir_is_refused_without_creating_anything(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "nowhere"
    result = subprocess.run(
        doctor_argv(missing), capture_output=True, text=True, check=False, timeout=60, cwd=ROOT
    )
    assert result.returncode == 2
    assert f"spectral doctor: no data directory at {missing}" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not missing.exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run(
        doctor_argv(empty, "--repair"),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert f"{empty} is not a spectral data directory" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(empty.iterdir()) == []


# -- the pure parts and the doctor in-process ---------------------------------------------

NOTES = (Migration(1, "CREATE TABLE note (body TEXT)"),)


def make_note(store: ObjectStore, object_id: str, status: str = "open") -> ObjectRow:
    """A created ``note`` object file, as the runtime writes it; its registry row."""
    conn = store.open("note", object_id, create=True)
    record = {"kind": "note", "id": object_id, "created_at": 1.0, "updated_at": 2.0}
    write_record(conn, {**record, "status": status})
    conn.close()
    return ObjectRow("note", object_id, 1.0, 2.0, status=status)


def test_show_id_quotes_only_ids_that_would_be_ambiguous() -> None:
    assert doctor.show_id("task-1:a.b") == "task-1:a.b"
    assert doctor.show_id("two words") == '"two words"'
    assert doctor.show_id("line\nbreak") == '"line\\nbreak"'
    assert doctor.show_id("") == '""'
    assert doctor.show_id('q"uote') == '"q\\"uote"'


def test_describe_names_a_corrupt_file_by_its_registry_row_else_by_its_path(
    tmp_path: Path,
) -> None:
    known = object_path(tmp_path, "note", "known")
    stray = tmp_path / "objects" / "note" / "ff" / "ff.sqlite"
    report = Report(checked=3, stale=["s"], corrupt=[str(known), str(stray)])
    report.stale_fields["s"] = ["status", "alarm_at"]
    report.corrupt_reasons[str(known)] = "unreadable: file is not a database"
    problems = doctor.describe(tmp_path, "note", report, {known.stem: "known"})
    assert [p.line() for p in problems] == [
        "note s: stale: its registry row differs from its file in status, alarm_at",
        f"note known: corrupt: unreadable: file is not a database ({known.relative_to(tmp_path)})",
        "note objects/note/ff/ff.sqlite: corrupt: unreadable",
    ]
    assert [p.id for p in problems] == ["s", "known", None]


def test_findings_summary_counts_each_kind_of_problem() -> None:
    findings = doctor.Findings(checked={"task": 1, "room": 0})
    assert findings.summary() == "checked 1 object file (task 1, room 0): healthy"
    findings.problems = [
        doctor.Problem("task", "a", "p", "corrupt", "x"),
        doctor.Problem("task", "b", "p", "missing", "x"),
        doctor.Problem("task", "c", "p", "missing", "x"),
    ]
    assert findings.summary().endswith(": 3 problems (2 missing, 1 corrupt)")
    assert doctor.Outcome(findings).exit_code() == doctor.EXIT_PROBLEMS
    assert doctor.Outcome(findings, doctor.Findings()).exit_code() == doctor.EXIT_HEALTHY


def test_quarantine_moves_the_wal_and_shm_and_never_overwrites(tmp_path: Path) -> None:
    source = tmp_path / "objects" / "note" / "ab" / "abc.sqlite"
    source.parent.mkdir(parents=True)
    problem = doctor.Problem("note", "n1", str(source.relative_to(tmp_path)), "corrupt", "bad")
    moved = []
    for round_ in range(2):
        source.write_bytes(b"db%d" % round_)
        Path(f"{source}-wal").write_bytes(b"wal%d" % round_)
        Path(f"{source}-shm").write_bytes(b"shm")
        moved.append(doctor.quarantine(tmp_path, problem, now=0.0))  # same second both times
    first, second = moved
    assert first.name == "19700101T000000Z-abc.sqlite"
    assert second.name == "19700101T000000Z-2-abc.sqlite"
    for n, target in enumerate(moved):
        assert target.read_bytes() == b"db%d" % n
        assert Path(f"{target}-wal").read_bytes() == b"wal%d" % n
        assert Path(f"{target}-shm").exists()
        note = json.loads(Path(f"{target}.json").read_text())
        assert note["id"] == "n1" and note["from"] == problem.path
    assert sorted(p.name for p in source.parent.iterdir()) == []


def test_without_a_registry_a_check_writes_nothing_and_a_repair_rebuilds_it(
    tmp_path: Path,
) -> None:
    store = ObjectStore(tmp_path)
    store.register_kind("note", NOTES)
    rows = {make_note(store, name) for name in ("a", "b")}
    assert doctor.unusable(tmp_path) is None  # objects/ alone makes a data directory

    checked = doctor.diagnose(tmp_path, ["note"], repair=False, now=0.0)
    assert checked.found.registry_missing and not checked.found.healthy
    assert sorted(p.id for p in checked.found.problems if p.problem == "orphaned") == ["a", "b"]
    assert checked.exit_code() == doctor.EXIT_PROBLEMS
    assert not (tmp_path / "registry.sqlite").exists()

    repaired = doctor.diagnose(tmp_path, ["note"], repair=True, now=0.0)
    assert repaired.after is not None and repaired.after.healthy
    registry = Registry(tmp_path / "registry.sqlite")
    assert {registry.get("note", name) for name in ("a", "b")} == rows
    registry.close()


def test_unusable_explains_what_is_wrong_with_the_path(tmp_path: Path) -> None:
    assert "no data directory" in str(doctor.unusable(tmp_path / "none"))
    (tmp_path / "file").write_text("")
    assert "is not a directory" in str(doctor.unusable(tmp_path / "file"))
    assert "not a spectral data directory" in str(doctor.unusable(tmp_path))
    (tmp_path / "registry.sqlite").write_bytes(b"")
    assert doctor.unusable(tmp_path) is None
