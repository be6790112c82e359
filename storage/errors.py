"""Storage errors: what can go wrong with an object file or the registry."""

from __future__ import annotations


class StorageError(Exception):
    """Base class for every error raised by :mod:`storage`."""


class ObjectMissingError(StorageError):
    """The object's file does not exist and the caller did not ask to create it."""


class ObjectCorruptError(StorageError):
    """The object's file exists but cannot be opened, read or migrated.

    Only that object is affected: the runtime reports it as unavailable (503)
    while every other object keeps serving.
    """


class MigrationError(StorageError):
    """A migration failed; the file is left at its previous version."""
