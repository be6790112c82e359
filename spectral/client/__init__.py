"""spectral.client: the Python SDK (docs/sdk.md). Imports nothing of the server."""
