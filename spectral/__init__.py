"""spectral: a self-hosted server that tracks long-running tasks in real time."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("spectral-notify")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
