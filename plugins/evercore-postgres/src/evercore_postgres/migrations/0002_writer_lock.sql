-- evercore PostgreSQL schema, version 2: subscription readers wait only for writers
-- of this store, not for every transaction of the cluster (see horizon.py).

-- The store's writer lock key: fixed when the schema is created (a hash of its
-- name), so that every writer and reader agrees on it even after a rename or a
-- dump and restore. Immutable, so the planner folds it into a constant.
DO $$
BEGIN
    EXECUTE format('CREATE FUNCTION writer_lock_key() RETURNS bigint '
                   'LANGUAGE sql IMMUTABLE PARALLEL SAFE AS %L',
                   format('SELECT %L::bigint',
                          hashtextextended('evercore-postgres:writers:' || current_schema(), 0)));
END $$;

-- The CASE fixes the order of evaluation: a transaction holds its transaction id
-- (what readers of version 1 still running during an upgrade rely on), then the
-- store's shared writer lock (transaction-scoped; shared locks do not contend with
-- each other), before it draws an event id. The lock is taken per row, so a
-- savepoint rolled back after the first row cannot leave a later id unprotected.
ALTER TABLE events ALTER COLUMN id SET DEFAULT
    (CASE WHEN pg_current_xact_id() IS NULL THEN NULL
          WHEN pg_advisory_xact_lock_shared(writer_lock_key()) IS NULL THEN NULL
          ELSE nextval('events_id_seq') END);

-- The transactions holding the writer lock right now, by virtual transaction id;
-- pid is null for a prepared transaction (its lock moved to another holder).
CREATE VIEW event_writers AS
    SELECT l.virtualtransaction, l.pid
      FROM pg_locks l
     WHERE l.locktype = 'advisory'
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND l.classid = ((writer_lock_key() >> 32) & 4294967295)::oid
       AND l.objid = (writer_lock_key() & 4294967295)::oid
       AND l.objsubid = 1
       AND l.granted;
