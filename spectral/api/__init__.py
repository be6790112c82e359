"""The HTTP surfaces of spectral: REST, WebSocket, SSE (and later RPC), one module each."""
