"""The SDK's types as a user's type checker sees them (the package ships ``py.typed``).

mypy reads a snippet using ``Client`` and ``AsyncClient``: every method has its
builder's exact parameters (spectral/client/calls.py) and returns the answer's model
(a coroutine of it for ``AsyncClient``); a wrong argument is an error. And
``spectral/client`` itself passes ``mypy --strict``.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

from spectral.client import AsyncClient, Client

ROOT = Path(__file__).resolve().parent.parent

SNIPPET = """\
from spectral.client import AsyncClient, Client

client = Client()
reveal_type(client.get_task("x"))  # line 4
reveal_type(client.update_progress("x", 5))
reveal_type(client.history("x"))
reveal_type(client.delete_task("x"))
reveal_type(client.create_task())
reveal_type(client.batch_update_progress([{"taskId": "x", "progress": 1}]))
reveal_type(client.iter_tasks(status="running"))  # line 10
reveal_type(client.watch("x"))
reveal_type(Client.get_task)


async def main() -> None:
    aclient = AsyncClient()
    reveal_type(await aclient.get_task("x"))  # line 17
    reveal_type(await aclient.list_tasks())
    await reveal_type(aclient.get_task("x"))  # not yet awaited: a coroutine
    async for task in aclient.iter_tasks():
        reveal_type(task)  # line 21


client.update_progress("x", "five")  # line 24: error
client.get_task()  # line 25: error
"""

EXPECTED = {
    4: "spectral.api.schemas.Task",
    5: "spectral.api.schemas.Task",
    6: "spectral.api.schemas.HistoryPage",
    7: "None",
    8: "spectral.api.schemas.Task",
    9: "list[spectral.api.schemas.BatchItem]",
    10: "typing.Iterator[spectral.api.schemas.Task]",
    11: "typing.Iterator[dict[str, Any]]",
    12: "def (spectral.client.client.Client, task_id: str) -> spectral.api.schemas.Task",
    17: "spectral.api.schemas.Task",
    18: "spectral.api.schemas.TaskPage",
    19: "typing.Coroutine[Any, Any, spectral.api.schemas.Task]",
    21: "spectral.api.schemas.Task",
}


def mypy(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    """mypy on ``args`` from the repository's root, reading this worktree's package."""
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    command = [sys.executable, "-m", "mypy", "--cache-dir", str(cache), "--no-color-output"]
    return subprocess.run(
        [*command, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_user_code_sees_answer_types_and_exact_parameters(tmp_path: Path) -> None:
    snippet = tmp_path / "snippet.py"
    snippet.write_text(SNIPPET)
    result = mypy("--follow-imports=silent", str(snippet), cache=tmp_path / "cache")
    output = result.stdout + result.stderr
    revealed = {
        int(line): kind.replace("builtins.", "")  # mypy < 2 names builtins in full
        for line, kind in re.findall(r"snippet\.py:(\d+): note: Revealed type is \"(.+)\"", output)
    }
    assert revealed == EXPECTED, output
    errors = re.findall(r"snippet\.py:(\d+): error: (.+)", output)
    assert [int(line) for line, _ in errors] == [24, 25], output
    assert "incompatible type" in errors[0][1] and '"float"' in errors[0][1], output
    assert re.search(r'Too few arguments|Missing positional argument "task_id"', errors[1][1])
    assert result.returncode == 1, output


def test_the_sdk_passes_mypy_strict(tmp_path: Path) -> None:
    # Modules the SDK imports from the server (its answer models) are read, not checked.
    result = mypy(
        "--strict", "--follow-imports=silent", "spectral/client", cache=tmp_path / "cache"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


def test_methods_keep_their_builders_signatures_at_run_time() -> None:
    # help() and inspect show the parameters, self, and the answer's type.
    assert str(inspect.signature(Client.get_task)) == (
        "(self, task_id: str) -> spectral.api.schemas.Task"
    )
    assert str(inspect.signature(Client().update_progress)).startswith(
        "(task_id: str, progress: float, message: str | None = None"
    )
    assert str(inspect.signature(AsyncClient.delete_task)) == (
        "(self, task_id: str) -> collections.abc.Coroutine[typing.Any, typing.Any, None]"
    )
    assert Client.history.__doc__ == AsyncClient.history.__doc__
    assert "history" in Client.history.__doc__
    assert AsyncClient.get_task.__qualname__ == "AsyncClient.get_task"
