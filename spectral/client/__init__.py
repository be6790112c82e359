"""spectral.client: the Python SDK (docs/sdk.md). Imports nothing of the server's runtime.

from spectral.client import Client

with Client("http://127.0.0.1:8094", api_key="...") as client:
    task = client.create_task("export-42")
    client.update_progress(task.task_id, 50, "half way")
"""

from spectral.client.client import AsyncClient, Client
from spectral.client.errors import (
    AuthError,
    CircuitOpenError,
    ConflictError,
    NotFoundError,
    RateLimitedError,
    SpectralError,
    UnavailableError,
    ValidationError,
)
from spectral.client.retry import CircuitBreaker, RetryPolicy

__all__ = [
    "AsyncClient",
    "AuthError",
    "CircuitBreaker",
    "CircuitOpenError",
    "Client",
    "ConflictError",
    "NotFoundError",
    "RateLimitedError",
    "RetryPolicy",
    "SpectralError",
    "UnavailableError",
    "ValidationError",
]
