"""``spectral doctor``: check every object file against the registry; ``--repair`` fixes it.

Files are the source of truth (:mod:`storage.reconcile`): every file's record names
its kind and id, so a repair rebuilds the registry's rows and its id -> file map
from them, moves unreadable files and duplicates (a second file claiming an id)
aside into ``<data-dir>/quarantine/``, and removes only files that hold nothing
(pre-created files handed out to a creation that never committed). Files in
``<data-dir>/pool/`` were never handed out: they are not checked (the server
clears that directory when it starts). The doctor holds the server's own data-directory lock
(``spectral.lock``) while it runs: it refuses a directory a server is serving (live
objects hold their files with exclusive locks, which would look like corruption),
and no server can start on the directory until it is done.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from spectral.server import DataDirLockedError, kinds, lock_data_dir
from spectral.settings import Settings
from storage import (
    ObjectStore,
    Registry,
    Report,
    StorageError,
    object_digest,
    object_path,
    reconcile,
)

#: Exit codes: healthy (also after a successful repair), problems found or left,
#: nothing checked (usage, no data directory, a server holds it, unreadable registry).
EXIT_HEALTHY = 0
EXIT_PROBLEMS = 1
EXIT_REFUSED = 2

#: The kinds of problem, in the order they are reported.
PROBLEMS = ("missing", "orphaned", "stale", "corrupt", "abandoned", "duplicate")
#: What a repair does about each kind of problem (corrupt files: see :func:`quarantine`).
REPAIRS = {
    "missing": "removed its registry row",
    "orphaned": "listed it again from its file",
    "stale": "rewrote its registry row from its file",
    "abandoned": "removed it (it held no record)",
}
REGISTRY = "registry.sqlite"
QUARANTINE = "quarantine"
#: Files that belong to an object file and move with it; the database itself moves last.
SIDECARS = ("-wal", "-shm", "-journal")


@dataclass
class Problem:
    """One thing wrong with one object file or registry row, and what a repair did."""

    kind: str
    id: str | None  # None: a corrupt file that no registry row points at
    path: str  # the object file, relative to the data directory
    problem: str  # one of PROBLEMS
    detail: str
    repair: str | None = None

    @property
    def subject(self) -> str:
        """How the problem names its object: the id, else the file's path."""
        return self.path if self.id is None else show_id(self.id)

    def line(self) -> str:
        """The problem as one line of text."""
        return f"{self.kind} {self.subject}: {self.problem}: {self.detail}"

    def as_json(self) -> dict[str, Any]:
        """The problem as a JSON object."""
        return {
            "kind": self.kind,
            "id": self.id,
            "path": self.path,
            "problem": self.problem,
            "detail": self.detail,
            "repair": self.repair,
        }


@dataclass
class Findings:
    """What one pass over the data directory found."""

    checked: dict[str, int] = field(default_factory=dict)  # object files per kind
    problems: list[Problem] = field(default_factory=list)
    registry_missing: bool = False

    @property
    def healthy(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems and not self.registry_missing

    def summary(self) -> str:
        """One line: how many files were checked and what was wrong."""
        files = sum(self.checked.values())
        per_kind = ", ".join(f"{kind} {n}" for kind, n in self.checked.items())
        head = f"checked {files} object {_plural(files, 'file')} ({per_kind})"
        if self.healthy:
            return f"{head}: healthy"
        counts = Counter(problem.problem for problem in self.problems)
        parts = [f"{counts[name]} {name}" for name in PROBLEMS if counts[name]]
        if self.registry_missing:
            parts.insert(0, f"{REGISTRY} missing")
        total = len(self.problems) + self.registry_missing
        return f"{head}: {total} {_plural(total, 'problem')} ({', '.join(parts)})"

    def as_json(self) -> dict[str, Any]:
        """The findings as a JSON object."""
        return {
            "checked": self.checked,
            "registryMissing": self.registry_missing,
            "problems": [problem.as_json() for problem in self.problems],
            "healthy": self.healthy,
            "summary": self.summary(),
        }


@dataclass
class Outcome:
    """A doctor run: what it found and, after a repair, what a second check found."""

    found: Findings
    after: Findings | None = None  # None: nothing was repaired

    @property
    def final(self) -> Findings:
        """The state the data directory is left in."""
        return self.found if self.after is None else self.after

    def exit_code(self) -> int:
        """0 when the data directory is (now) healthy, else 1."""
        return EXIT_HEALTHY if self.final.healthy else EXIT_PROBLEMS


def _plural(n: int, word: str) -> str:
    return word if n == 1 else f"{word}s"


def show_id(object_id: str) -> str:
    """An id as printed: as is when plain, JSON-quoted when blank or holding odd characters."""
    plain = (
        object_id
        and object_id.isprintable()
        and not any(c.isspace() or c in "\"'\\" for c in object_id)
    )
    return object_id if plain else json.dumps(object_id)


def unusable(root: Path) -> str | None:
    """Why ``root`` cannot be checked (missing, not a directory, no data in it), or None."""
    if not root.exists():
        return f"no data directory at {root} (give --data-dir or SPECTRAL_DATA_DIR)"
    if not root.is_dir():
        return f"{root} is not a directory"
    if not (root / REGISTRY).exists() and not (root / "objects").is_dir():
        return f"{root} is not a spectral data directory (no {REGISTRY}, no objects/)"
    return None


def describe(
    root: Path, kind: str, report: Report, ids_by_digest: Mapping[str, str]
) -> list[Problem]:
    """Turn one kind's reconcile report into problems.

    A corrupt file is named by the id of the registry row whose file it is
    (``ids_by_digest``: file stem -> id, hashed or named), else by its path.
    """

    def relative(path: Path | str) -> str:
        path = Path(path)
        return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)

    def file_of(object_id: str) -> str:
        return relative(report.paths.get(object_id) or object_path(root, kind, object_id))

    problems = [
        Problem(
            kind, i, file_of(i), "missing", f"the registry lists it, its file {file_of(i)} is gone"
        )
        for i in report.missing
    ]
    problems += [
        Problem(
            kind, i, file_of(i), "orphaned", "its file is readable, the registry does not list it"
        )
        for i in report.orphaned
    ]
    for object_id in report.stale:
        fields = ", ".join(report.stale_fields.get(object_id, ())) or "some fields"
        detail = f"its registry row differs from its file in {fields}"
        problems.append(Problem(kind, object_id, file_of(object_id), "stale", detail))
    for path in report.corrupt:
        object_id = ids_by_digest.get(Path(path).stem)
        reason = report.corrupt_reasons.get(path, "unreadable")
        detail = reason if object_id is None else f"{reason} ({relative(path)})"
        problems.append(Problem(kind, object_id, relative(path), "corrupt", detail))
    for path in report.abandoned:
        detail = "a pre-created file that never got a record (its creation never committed)"
        problems.append(Problem(kind, None, relative(path), "abandoned", detail))
    for path in report.duplicates:
        object_id = report.duplicate_ids[path]
        detail = (
            f"a second file holding its record ({relative(path)});"
            f" the registry uses {file_of(object_id)}"
        )
        problems.append(Problem(kind, object_id, relative(path), "duplicate", detail))
    return problems


def examine(
    root: Path, store: ObjectStore, registry: Registry, kind_names: Sequence[str], *, repair: bool
) -> Findings:
    """Reconcile every kind (with ``repair``, rewriting the registry from the files)."""
    findings = Findings()
    for kind in kind_names:
        report = reconcile(store, registry, kind, repair=repair)
        findings.checked[kind] = report.checked
        ids_by_digest: dict[str, str] = {}
        if report.corrupt:
            ids_by_digest = {
                name or object_digest(kind, i): i for i, name in registry.files(kind).items()
            }
        findings.problems += describe(root, kind, report, ids_by_digest)
    return findings


def quarantine_target(folder: Path, name: str, now: float) -> Path:
    """A free path in ``folder`` for file ``name``: ``<UTC time>-<name>``, numbered on a clash."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    candidate, n = folder / f"{stamp}-{name}", 1
    while any(Path(f"{candidate}{suffix}").exists() for suffix in ("", *SIDECARS, ".json")):
        n += 1
        candidate = folder / f"{stamp}-{n}-{name}"
    return candidate


def quarantine(root: Path, problem: Problem, now: float) -> Path:
    """Move a corrupt object file and its -wal/-shm into ``<root>/quarantine/<kind>/``.

    The sidecars move first: a WAL left behind could be replayed into a new file at
    the same path. A ``.json`` note beside the file records its kind, id and reason
    (the file's name is a hash). Returns the file's new path.
    """
    source = root / problem.path
    folder = root / QUARANTINE / problem.kind
    folder.mkdir(parents=True, exist_ok=True)
    target = quarantine_target(folder, source.name, now)
    moved = []
    for suffix in (*SIDECARS, ""):
        try:
            os.rename(f"{source}{suffix}", f"{target}{suffix}")
        except FileNotFoundError:
            if not suffix:
                raise
            continue
        moved.append(f"{target.name}{suffix}")
    note = {
        "kind": problem.kind,
        "id": problem.id,
        "from": problem.path,
        "reason": problem.detail,
        "quarantinedAt": now,
        "files": moved,
    }
    Path(f"{target}.json").write_text(json.dumps(note, indent=2) + "\n")
    for directory in (folder, source.parent):
        _fsync_dir(directory)
    return target


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def repair_corrupt(root: Path, registry: Registry, problems: Sequence[Problem], now: float) -> None:
    """Quarantine every corrupt file (removing its registry row) and every duplicate
    (the row stays with the file it names); note each repair."""
    for problem in problems:
        if problem.problem not in ("corrupt", "duplicate"):
            problem.repair = REPAIRS[problem.problem]  # done by reconcile(repair=True)
            continue
        try:
            target = quarantine(root, problem, now)
        except OSError as exc:
            problem.repair = f"not repaired: cannot move it to quarantine: {exc}"
            continue
        problem.repair = f"moved it to {target.relative_to(root)}"
        if problem.id is not None and problem.problem == "corrupt":
            registry.stage_delete(problem.kind, problem.id)
            problem.repair += " and removed its registry row"
    registry.flush_now()


def diagnose(root: Path, kind_names: Sequence[str], *, repair: bool, now: float) -> Outcome:
    """Check the data directory ``root`` (locked by the caller); with ``repair``, fix it
    and check again.

    Without a registry a plain check compares the files with an empty one in memory
    (writing nothing); a repair creates it and lists every readable file.
    """
    registry_path = root / REGISTRY
    registry_missing = not registry_path.exists()
    store = ObjectStore(root)
    registry = Registry(Path(":memory:") if registry_missing and not repair else registry_path)
    try:
        found = examine(root, store, registry, kind_names, repair=repair)
        found.registry_missing = registry_missing
        if not repair or found.healthy:
            return Outcome(found)
        repair_corrupt(root, registry, found.problems, now)
        return Outcome(found, examine(root, store, registry, kind_names, repair=False))
    finally:
        registry.close()


def print_text(root: Path, outcome: Outcome, out: TextIO) -> None:
    """The outcome as lines: problems, a summary; after a repair, each repair and a re-check."""
    found = outcome.found
    if found.registry_missing:
        print(f"{REGISTRY} is missing: every object file is unlisted", file=out)
    for problem in found.problems:
        print(problem.line(), file=out)
    print(f"{root}: {found.summary()}", file=out)
    if outcome.after is None:
        return
    if found.registry_missing:
        print(f"repair: created {REGISTRY}", file=out)
    for problem in found.problems:
        print(f"repair {problem.kind} {problem.subject}: {problem.repair}", file=out)
    for problem in outcome.after.problems:
        print(problem.line(), file=out)
    print(f"after repair: {outcome.after.summary()}", file=out)


def as_json(root: Path, outcome: Outcome) -> dict[str, Any]:
    """The outcome as one JSON object."""
    return {
        "dataDir": str(root),
        **outcome.found.as_json(),
        "repaired": outcome.after is not None,
        "after": None if outcome.after is None else outcome.after.as_json(),
        "healthy": outcome.final.healthy,
    }


def run(
    settings: Settings,
    *,
    repair: bool,
    json_output: bool,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """``spectral doctor [--repair] [--json]`` on the settings' data directory; the exit code."""
    root = settings.data_dir
    why = unusable(root)
    if why is not None:
        print(f"spectral doctor: {why}", file=err)
        return EXIT_REFUSED
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(lock_data_dir(root))
        except DataDirLockedError:
            print(
                f"spectral doctor: refused: a running spectral server holds {root}"
                f" ({root / 'spectral.lock'}); stop it, then run the doctor again",
                file=err,
            )
            return EXIT_REFUSED
        except OSError as exc:
            print(f"spectral doctor: cannot lock {root}: {exc}", file=err)
            return EXIT_REFUSED
        names = [kind.kind for kind in kinds(settings)]
        try:
            outcome = diagnose(root, names, repair=repair, now=time.time())
        except (sqlite3.Error, StorageError) as exc:
            print(f"spectral doctor: cannot use {root / REGISTRY}: {exc}", file=err)
            return EXIT_REFUSED
        except OSError as exc:
            print(f"spectral doctor: cannot check {root}: {exc}", file=err)
            return EXIT_REFUSED
    if json_output:
        print(json.dumps(as_json(root, outcome)), file=out)
    else:
        print_text(root, outcome, out)
    return outcome.exit_code()
