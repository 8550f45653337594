-- evercore SQLite schema, version 1.
--
-- Global event ids are the events table's rowid (INTEGER PRIMARY KEY without
-- AUTOINCREMENT). SQLite admits one writer at a time and a new rowid is the highest
-- one + 1, so ids are handed out in commit order: a reader that has seen id n has
-- seen every id below n, and a rolled-back id is reused, leaving no gaps.
--
-- Foreign keys are enforced (PRAGMA foreign_keys = ON on every connection): an
-- event or snapshot for a missing aggregate, or of an unregistered type, is refused.
--
-- Times are INTEGER microseconds since the Unix epoch, UTC: exact to the
-- microsecond, compact, and ordered as numbers.

CREATE TABLE aggregate_types (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

CREATE TABLE event_types (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

-- Natural keys are unique across all aggregate types, as in the Go engines.
CREATE TABLE aggregates (
    id                INTEGER PRIMARY KEY,
    aggregate_type_id INTEGER NOT NULL REFERENCES aggregate_types (id),
    natural_key       TEXT UNIQUE
);

CREATE TABLE events (
    id            INTEGER PRIMARY KEY,
    aggregate_id  INTEGER NOT NULL REFERENCES aggregates (id),
    sequence      INTEGER NOT NULL,
    event_type_id INTEGER NOT NULL REFERENCES event_types (id),
    state         TEXT NOT NULL,
    event_time    INTEGER NOT NULL,
    reference     TEXT NOT NULL DEFAULT '',
    UNIQUE (aggregate_id, sequence)
);

-- Every snapshot is kept; the latest is the one with the highest sequence.
CREATE TABLE snapshots (
    aggregate_id INTEGER NOT NULL REFERENCES aggregates (id),
    sequence     INTEGER NOT NULL,
    state        TEXT NOT NULL,
    PRIMARY KEY (aggregate_id, sequence)
) WITHOUT ROWID;

-- lease_expires_at is judged by SQLite's clock (julianday('now')) in every process.
CREATE TABLE subscriptions (
    id                INTEGER PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    aggregate_type_id INTEGER,
    event_type_id     INTEGER,
    aggregate_key     TEXT,
    start_from        TEXT NOT NULL,
    start_event_id    INTEGER NOT NULL DEFAULT 0,
    start_timestamp   INTEGER,
    last_event_id     INTEGER NOT NULL DEFAULT 0,
    active            INTEGER NOT NULL DEFAULT 1,
    lease_owner       TEXT,
    lease_expires_at  INTEGER
);

CREATE TABLE subscription_event_types (
    subscription_id INTEGER NOT NULL REFERENCES subscriptions (id),
    event_type_id   INTEGER NOT NULL,
    PRIMARY KEY (subscription_id, event_type_id)
) WITHOUT ROWID;
