"""SQLite storage: one file per object, the registry database, migrations.

This layer knows nothing of actors or tasks.
"""

from storage.errors import MigrationError, ObjectCorruptError, ObjectMissingError, StorageError
from storage.migrations import Migration, migrate, schema_version
from storage.objects import ObjectFile, ObjectStore, read_record, write_record
from storage.paths import is_file_name, named_path, object_digest, object_path, pool_dir
from storage.pool import FilePool, PoolStatistics
from storage.reconcile import Report, reconcile, refresh_changed, wake_time
from storage.registry import ObjectRow, Page, Registry, locate

__all__ = [
    "FilePool",
    "Migration",
    "MigrationError",
    "ObjectCorruptError",
    "ObjectFile",
    "ObjectMissingError",
    "ObjectRow",
    "ObjectStore",
    "Page",
    "PoolStatistics",
    "Registry",
    "Report",
    "StorageError",
    "is_file_name",
    "locate",
    "migrate",
    "named_path",
    "object_digest",
    "object_path",
    "pool_dir",
    "read_record",
    "reconcile",
    "refresh_changed",
    "schema_version",
    "wake_time",
    "write_record",
]
