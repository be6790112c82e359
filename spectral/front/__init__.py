"""The HTTP front: HTTP/1.1 on trio with llhttp, handing requests to the application."""

from spectral.front.messages import Answer, Request, Response, StreamingResponse
from spectral.front.server import Application, Limits, PrefixedStream, Server

__all__ = [
    "Answer",
    "Application",
    "Limits",
    "PrefixedStream",
    "Request",
    "Response",
    "Server",
    "StreamingResponse",
]
