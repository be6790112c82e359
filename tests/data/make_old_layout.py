"""Build tests/data/old-layout.tar.gz: a data directory written by the hashed layout.

Run it with the *old* code on the path (commit 7bea45a, before the id -> file map)::

    git archive 7bea45a | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old python tests/data/make_old_layout.py /tmp/old

It serves the old tree on 127.0.0.1, creates a few tasks (one completed, one with an
alarm, one with progress), broadcasts to a room, stops the server cleanly and packs
the data directory with ``expected.json``: every task's GET answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import httpx

KEY = "spectral-test-admin-key-0123456789"
OUT = Path(__file__).resolve().parent / "old-layout.tar.gz"


def main() -> None:
    """Serve the old tree, write some tasks, pack the data directory."""
    old_tree = Path(sys.argv[1]).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        env = {**os.environ, "PYTHONPATH": str(old_tree), "SPECTRAL_ADMIN_KEY": KEY}
        argv = [sys.executable, "-m", "spectral", "serve", "--port", "18765"]
        argv += ["--data-dir", str(data), "--log-level", "WARNING"]
        server = subprocess.Popen(argv, env=env, cwd=old_tree)
        try:
            url = "http://127.0.0.1:18765"
            for _ in range(100):
                try:
                    httpx.get(f"{url}/health", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            http = httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=10)
            for task_id in ("old-done", "old-running", "old-timed", "old-pending"):
                body = {"id": task_id, "status": "in-progress", "metadata": {"n": task_id}}
                assert http.post("/tasks/create", json=body).status_code == 201
            http.post("/tasks/updateProgress", json={"taskId": "old-running", "progress": 42})
            http.post("/tasks/complete", json={"taskId": "old-done"})
            http.post("/tasks/heartbeat", json={"taskId": "old-timed", "timeoutSeconds": 3600})
            http.post("/rooms/lobby/broadcast", json={"hello": "old"})
            expected = {
                task_id: http.get(f"/tasks/{task_id}").json()
                for task_id in ("old-done", "old-running", "old-timed", "old-pending")
            }
        finally:
            server.terminate()
            server.wait(timeout=30)
        (data / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True))
        with tarfile.open(OUT, "w:gz") as tar:
            for path in sorted(data.rglob("*")):
                skip = path.name == "spectral.lock" or "templates" in path.parts
                if path.is_file() and not skip:
                    tar.add(path, arcname=str(path.relative_to(data.parent)))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
