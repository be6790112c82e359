"""SQLite storage: one file per object, the registry database, migrations.

This layer knows nothing of actors or tasks.
"""

from storage.errors import MigrationError, ObjectCorruptError, ObjectMissingError, StorageError
from storage.migrations import Migration, migrate, schema_version
from storage.objects import ObjectStore, read_record, write_record
from storage.paths import object_digest, object_path
from storage.reconcile import Report, reconcile, refresh_changed
from storage.registry import ObjectRow, Page, Registry

__all__ = [
    "Migration",
    "MigrationError",
    "ObjectCorruptError",
    "ObjectMissingError",
    "ObjectRow",
    "ObjectStore",
    "Page",
    "Registry",
    "Report",
    "StorageError",
    "migrate",
    "object_digest",
    "object_path",
    "read_record",
    "reconcile",
    "refresh_changed",
    "schema_version",
    "write_record",
]
