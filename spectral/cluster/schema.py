"""The cluster's PostgreSQL schema as numbered migrations, recorded in ``cluster_schema``.

Every node runs :func:`migrate` when it starts; an advisory lock makes concurrent nodes
apply each migration once, and the whole run is one transaction (PostgreSQL's DDL is
transactional), so a crash mid-way leaves the previous version.
"""

from __future__ import annotations

import psycopg

#: (version, SQL). Append only; never edit a released entry.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE nodes (
            node_id     text PRIMARY KEY,
            epoch       bigint NOT NULL,
            rpc_addr    text NOT NULL,
            lease_until timestamptz NOT NULL
        );
        CREATE TABLE placements (
            kind    text NOT NULL,
            id      text NOT NULL,
            node_id text NOT NULL REFERENCES nodes (node_id),
            token   bigint NOT NULL DEFAULT 0 CHECK (token >= 0),
            PRIMARY KEY (kind, id)
        );
        CREATE INDEX placements_node ON placements (node_id);
        """,
    ),
    # The registry and the product's shared tables: twins of the SQLite tables of
    # storage/registry.py (not registry_state, which stays node-local), spectral/tasks/index.py,
    # access/keys.py, api/idempotency.py, webhooks/store.py and integrations/store.py, in
    # their state after every SQLite migration (tests/test_cluster_sqlschema.py checks it).
    # Text is COLLATE "C": byte order, as SQLite's BINARY, for ORDER BY id and prefix
    # ranges. objects adds the writer's home node and fencing token; webhook_deliveries
    # adds SQLite's implicit rowid (its listing breaks created_at ties by rowid).
    # The triggers re-create SQLite's, statement for statement; json_each and json_extract
    # become sqlite_json_each / sqlite_json_text over summary::jsonb. No backfills: the
    # tables start empty.
    (
        2,
        """
        CREATE TABLE objects (
            kind       text COLLATE "C" NOT NULL,
            id         text COLLATE "C" NOT NULL,
            owner      text COLLATE "C",
            status     text COLLATE "C",
            progress   double precision,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            alarm_at   double precision,
            summary    text COLLATE "C",
            file       text COLLATE "C",
            node_id    text COLLATE "C",
            token      bigint,
            PRIMARY KEY (kind, id)
        );
        CREATE INDEX objects_by_created ON objects (kind, created_at DESC, id DESC);
        CREATE INDEX objects_by_owner ON objects (kind, owner, created_at DESC, id DESC);
        CREATE INDEX objects_by_status ON objects (kind, status, created_at DESC, id DESC);
        CREATE INDEX objects_by_owner_status
            ON objects (kind, owner, status, created_at DESC, id DESC);
        CREATE INDEX objects_by_alarm ON objects (alarm_at) WHERE alarm_at IS NOT NULL;
        CREATE INDEX objects_by_node ON objects (node_id);

        CREATE TABLE object_counts (
            kind   text COLLATE "C" NOT NULL,
            owner  text COLLATE "C" NOT NULL,
            status text COLLATE "C" NOT NULL,
            n      bigint NOT NULL,
            PRIMARY KEY (kind, owner, status)
        );
        -- objects_counted_{insert,delete,update}: storage/registry.py migration 3.
        CREATE FUNCTION objects_counted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP <> 'INSERT' THEN
                UPDATE object_counts SET n = n - 1
                    WHERE kind = OLD.kind AND owner = coalesce(OLD.owner, '')
                    AND status = coalesce(OLD.status, '');
            END IF;
            IF TG_OP <> 'DELETE' THEN
                INSERT INTO object_counts (kind, owner, status, n)
                    VALUES (NEW.kind, coalesce(NEW.owner, ''), coalesce(NEW.status, ''), 1)
                    ON CONFLICT (kind, owner, status) DO UPDATE SET n = object_counts.n + 1;
            END IF;
            RETURN NULL;
        END
        $$;
        CREATE TRIGGER objects_counted_insert AFTER INSERT ON objects
            FOR EACH ROW EXECUTE FUNCTION objects_counted();
        CREATE TRIGGER objects_counted_delete AFTER DELETE ON objects
            FOR EACH ROW EXECUTE FUNCTION objects_counted();
        CREATE TRIGGER objects_counted_update AFTER UPDATE OF kind, owner, status ON objects
            FOR EACH ROW WHEN (OLD.kind IS DISTINCT FROM NEW.kind
                OR OLD.owner IS DISTINCT FROM NEW.owner OR OLD.status IS DISTINCT FROM NEW.status)
            EXECUTE FUNCTION objects_counted();

        CREATE TABLE task_tags (
            owner      text COLLATE "C" NOT NULL,
            tag        text COLLATE "C" NOT NULL,
            created_at double precision NOT NULL,
            id         text COLLATE "C" NOT NULL,
            status     text COLLATE "C",
            PRIMARY KEY (owner, tag, created_at, id)
        );
        CREATE INDEX task_tags_by_tag ON task_tags (tag, created_at, id, status);
        CREATE TABLE task_external_ids (
            owner       text COLLATE "C" NOT NULL,
            external_id text COLLATE "C" NOT NULL,
            task_id     text COLLATE "C" NOT NULL,
            PRIMARY KEY (owner, external_id)
        );
        CREATE INDEX task_external_ids_by_id ON task_external_ids (external_id);
        CREATE TABLE task_tag_counts (
            tag    text COLLATE "C" NOT NULL,
            owner  text COLLATE "C" NOT NULL,
            status text COLLATE "C" NOT NULL,
            n      bigint NOT NULL,
            PRIMARY KEY (tag, owner, status)
        );

        -- SQLite's json_each(...).value / json_extract(...) of one JSON value, as stored in
        -- a TEXT column: strings unquoted, true/false 1/0, null NULL, others their JSON text.
        CREATE FUNCTION sqlite_json_text(v jsonb) RETURNS text
            LANGUAGE sql IMMUTABLE AS $$
            SELECT CASE jsonb_typeof(v)
                WHEN 'string' THEN v #>> '{}'
                WHEN 'null' THEN NULL
                WHEN 'boolean' THEN CASE WHEN v = 'true'::jsonb THEN '1' ELSE '0' END
                ELSE v::text END
        $$;
        -- SQLite's json_each(v): an array's elements, an object's values, else v itself
        -- (one row, NULL for a JSON null); no rows for SQL NULL (a missing path).
        CREATE FUNCTION sqlite_json_each(v jsonb) RETURNS SETOF text
            LANGUAGE sql IMMUTABLE AS $$
            SELECT sqlite_json_text(e.value)
                FROM jsonb_array_elements(CASE WHEN jsonb_typeof(v) = 'array' THEN v END) e
            UNION ALL
            SELECT sqlite_json_text(e.value)
                FROM jsonb_each(CASE WHEN jsonb_typeof(v) = 'object' THEN v END) e
            UNION ALL
            SELECT sqlite_json_text(v) WHERE jsonb_typeof(v) NOT IN ('array', 'object')
        $$;
        -- The tags a task's summary indexes: its tags and its parent's pseudo-tag.
        CREATE FUNCTION task_index_tags(summary text) RETURNS SETOF text
            LANGUAGE sql IMMUTABLE AS $$
            SELECT sqlite_json_each(summary::jsonb -> 'tags')
            UNION ALL
            SELECT chr(31) || 'parent:' || p.id
                FROM (SELECT sqlite_json_text(summary::jsonb -> 'parentId')) p (id)
                WHERE p.id IS NOT NULL
        $$;
        -- task_index_{insert,delete,update}: spectral/tasks/index.py migrations 1 and 3.
        -- An update drops the old row's tags and indexes the new row's; external ids
        -- are only dropped with the row and only added where absent.
        CREATE FUNCTION task_index() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP <> 'INSERT' THEN
                DELETE FROM task_tags WHERE owner = coalesce(OLD.owner, '')
                    AND tag IN (SELECT task_index_tags(OLD.summary))
                    AND created_at = OLD.created_at AND id = OLD.id;
            END IF;
            IF TG_OP = 'DELETE' THEN
                DELETE FROM task_external_ids WHERE owner = coalesce(OLD.owner, '')
                    AND external_id = sqlite_json_text(OLD.summary::jsonb -> 'externalId')
                    AND task_id = OLD.id;
                RETURN NULL;
            END IF;
            INSERT INTO task_tags (owner, tag, created_at, id, status)
                SELECT DISTINCT coalesce(NEW.owner, ''), t.tag, NEW.created_at, NEW.id,
                    NEW.status
                FROM task_index_tags(NEW.summary) t (tag)
                ON CONFLICT (owner, tag, created_at, id) DO NOTHING;
            INSERT INTO task_external_ids (owner, external_id, task_id)
                SELECT coalesce(NEW.owner, ''), e.id, NEW.id
                FROM (SELECT sqlite_json_text(NEW.summary::jsonb -> 'externalId')) e (id)
                WHERE e.id IS NOT NULL
                ON CONFLICT (owner, external_id) DO NOTHING;
            RETURN NULL;
        END
        $$;
        CREATE TRIGGER task_index_insert AFTER INSERT ON objects
            FOR EACH ROW WHEN (NEW.kind = 'task' AND NEW.summary IS NOT NULL)
            EXECUTE FUNCTION task_index();
        CREATE TRIGGER task_index_delete AFTER DELETE ON objects
            FOR EACH ROW WHEN (OLD.kind = 'task' AND OLD.summary IS NOT NULL)
            EXECUTE FUNCTION task_index();
        CREATE TRIGGER task_index_update AFTER UPDATE ON objects
            FOR EACH ROW WHEN (NEW.kind = 'task' AND (OLD.status IS DISTINCT FROM NEW.status
                OR OLD.owner IS DISTINCT FROM NEW.owner
                OR OLD.created_at IS DISTINCT FROM NEW.created_at
                OR (OLD.summary IS NULL) IS DISTINCT FROM (NEW.summary IS NULL)))
            EXECUTE FUNCTION task_index();
        -- task_tags_counted_{insert,delete}: spectral/tasks/index.py migration 2.
        CREATE FUNCTION task_tags_counted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' THEN
                UPDATE task_tag_counts SET n = n - 1
                    WHERE tag = OLD.tag AND owner = OLD.owner
                    AND status = coalesce(OLD.status, '');
            ELSE
                INSERT INTO task_tag_counts (tag, owner, status, n)
                    VALUES (NEW.tag, NEW.owner, coalesce(NEW.status, ''), 1)
                    ON CONFLICT (tag, owner, status) DO UPDATE SET n = task_tag_counts.n + 1;
            END IF;
            RETURN NULL;
        END
        $$;
        CREATE TRIGGER task_tags_counted_insert AFTER INSERT ON task_tags
            FOR EACH ROW EXECUTE FUNCTION task_tags_counted();
        CREATE TRIGGER task_tags_counted_delete AFTER DELETE ON task_tags
            FOR EACH ROW EXECUTE FUNCTION task_tags_counted();

        CREATE TABLE api_keys (
            id           text COLLATE "C" PRIMARY KEY,
            name         text COLLATE "C",
            owner        text COLLATE "C" NOT NULL,
            role         text COLLATE "C" NOT NULL,
            hash         bytea NOT NULL,
            created_at   double precision NOT NULL,
            last_used_at double precision,
            revoked_at   double precision
        );

        CREATE TABLE idempotency (
            owner       text COLLATE "C" NOT NULL,
            key         text COLLATE "C" NOT NULL,
            fingerprint text COLLATE "C" NOT NULL,
            status      bigint NOT NULL,
            answer      text COLLATE "C" NOT NULL,
            created_at  double precision NOT NULL,
            PRIMARY KEY (owner, key)
        );
        CREATE INDEX idempotency_by_age ON idempotency (created_at);

        CREATE TABLE webhooks (
            id             text COLLATE "C" PRIMARY KEY,
            owner          text COLLATE "C" NOT NULL,
            url            text COLLATE "C" NOT NULL,
            event_type     text COLLATE "C" NOT NULL,
            description    text COLLATE "C",
            task_id_prefix text COLLATE "C",
            active         bigint NOT NULL DEFAULT 1,
            secret         text COLLATE "C" NOT NULL,
            created_at     double precision NOT NULL,
            updated_at     double precision NOT NULL
        );
        CREATE INDEX webhooks_by_owner ON webhooks (owner, created_at);
        CREATE TABLE webhook_deliveries (
            id              text COLLATE "C" PRIMARY KEY,
            webhook_id      text COLLATE "C" NOT NULL,
            task_id         text COLLATE "C" NOT NULL,
            seq             bigint NOT NULL,
            event_type      text COLLATE "C" NOT NULL,
            body            bytea NOT NULL,
            status          text COLLATE "C" NOT NULL,
            attempts        bigint NOT NULL DEFAULT 0,
            next_attempt_at double precision,
            response_code   bigint,
            error           text COLLATE "C",
            created_at      double precision NOT NULL,
            updated_at      double precision NOT NULL,
            rowid           bigint GENERATED BY DEFAULT AS IDENTITY
        );
        CREATE INDEX deliveries_due ON webhook_deliveries (next_attempt_at)
            WHERE status = 'pending';
        CREATE INDEX deliveries_by_webhook
            ON webhook_deliveries (webhook_id, created_at DESC, rowid DESC);
        CREATE INDEX deliveries_by_age ON webhook_deliveries (updated_at)
            WHERE status != 'pending';
        CREATE INDEX deliveries_due_by_webhook
            ON webhook_deliveries (webhook_id, next_attempt_at) WHERE status = 'pending';
        CREATE TABLE webhook_attempts (
            delivery_id   text COLLATE "C" NOT NULL,
            attempt       bigint NOT NULL,
            at            double precision NOT NULL,
            response_code bigint,
            error         text COLLATE "C",
            duration_ms   double precision NOT NULL,
            PRIMARY KEY (delivery_id, attempt)
        );
        CREATE TABLE webhook_cursors (
            task_id text COLLATE "C" PRIMARY KEY,
            owner   text COLLATE "C" NOT NULL,
            seq     bigint NOT NULL
        );

        CREATE TABLE integrations (
            id                 text COLLATE "C" PRIMARY KEY,
            owner              text COLLATE "C" NOT NULL,
            name               text COLLATE "C" NOT NULL,
            signing            text COLLATE "C" NOT NULL,
            header             text COLLATE "C",
            delivery_id_header text COLLATE "C",
            external_id_path   text COLLATE "C" NOT NULL,
            status_path        text COLLATE "C" NOT NULL,
            status_map         text COLLATE "C" NOT NULL,
            progress_path      text COLLATE "C",
            error_path         text COLLATE "C",
            secret             text COLLATE "C" NOT NULL,
            created_at         double precision NOT NULL,
            updated_at         double precision NOT NULL
        );
        CREATE INDEX integrations_by_owner ON integrations (owner, created_at);
        CREATE TABLE integration_deliveries (
            integration_id text COLLATE "C" NOT NULL,
            delivery_id    text COLLATE "C" NOT NULL,
            status         bigint NOT NULL,
            answer         text COLLATE "C" NOT NULL,
            created_at     double precision NOT NULL,
            PRIMARY KEY (integration_id, delivery_id)
        );
        CREATE INDEX integration_deliveries_by_age ON integration_deliveries (created_at);
        """,
    ),
    # The secrets every node must share (spectral/cluster/secrets.py): the server secret
    # (API-key pepper, watch-token signing) and the bootstrap admin key.
    (
        3,
        """
        CREATE TABLE cluster_secrets (
            name  text COLLATE "C" PRIMARY KEY,
            value text NOT NULL
        );
        """,
    ),
    # When an external id's reservation was written: spectral/tasks/index.py migration 4.
    # The trigger's rows (a task that holds its external id) leave it NULL, as SQLite's.
    (
        4,
        """
        ALTER TABLE task_external_ids ADD COLUMN reserved_at double precision;
        """,
    ),
    # A webhook's bodies' shape: spectral/webhooks/store.py migration 3.
    (
        5,
        """
        ALTER TABLE webhooks ADD COLUMN format text COLLATE "C" NOT NULL DEFAULT 'spectral';
        """,
    ),
)

#: Key of the transaction-level advisory lock that serialises migrations across nodes.
_LOCK_KEY = 0x5EC7_C105


def migrate(conn: psycopg.Connection) -> list[int]:
    """Apply the missing migrations (call inside a transaction); returns the versions applied."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
    conn.execute(
        "CREATE TABLE IF NOT EXISTS cluster_schema ("
        " version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    row = conn.execute("SELECT coalesce(max(version), 0) FROM cluster_schema").fetchone()
    current = row[0] if row else 0
    applied = []
    for version, sql in MIGRATIONS:
        if version <= current:
            continue
        conn.execute(sql)  # type: ignore[arg-type]  # trusted, constant DDL
        conn.execute("INSERT INTO cluster_schema (version) VALUES (%s)", (version,))
        applied.append(version)
    return applied


def version(conn: psycopg.Connection) -> int:
    """The schema version of the database (0 before the first migration)."""
    row = conn.execute("SELECT to_regclass('cluster_schema') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM cluster_schema").fetchone()
    return row[0] if row else 0
