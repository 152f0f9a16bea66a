-- fulfilld schema v3: attempt history, dead letters an admin acts on, idempotency keys on
-- the API. The Postgres twin of this file must stay equivalent.

-- One row per run of a step that did not succeed: failed (rescheduled or dead), or cut off
-- when its worker died (lease expired). A run's start is the moment it was claimed.
CREATE TABLE step_attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    step_id     INTEGER NOT NULL REFERENCES steps(id),
    attempt     INTEGER NOT NULL,
    worker      TEXT NOT NULL,   -- the process that ran it (fulfilld-<pid>-<id>)
    started_at  INTEGER NOT NULL,
    ended_at    INTEGER NOT NULL,
    outcome     TEXT NOT NULL,   -- retry | dead | lease_expired
    error       TEXT,
    retry_at    INTEGER,         -- when outcome = retry: when the next run is due
    UNIQUE (step_id, attempt)
);

-- The latest run: which process ran it and when it started. A step's successful run is
-- read from here (its end is updated_at); step_attempts holds the runs before it.
ALTER TABLE steps ADD COLUMN worker TEXT;
ALTER TABLE steps ADD COLUMN run_started_at INTEGER;

-- 1: the step was armed again while it ran (a second refund while the first one's notice
-- was being sent); when the run finishes, the step is due again instead of done.
ALTER TABLE steps ADD COLUMN rearm INTEGER NOT NULL DEFAULT 0;

-- How many times a worker died holding the step: past queue.max_lease_expiries the step is
-- a poison job and goes dead instead of killing another worker.
ALTER TABLE steps ADD COLUMN lease_expiries INTEGER NOT NULL DEFAULT 0;
-- attempts counts every run ever (the attempt history is numbered by it); a step armed
-- again or retried by an admin gets a fresh retry budget from attempt_base on.
ALTER TABLE steps ADD COLUMN attempt_base INTEGER NOT NULL DEFAULT 0;
-- Partial indexes: only the rows they find are in them, so the hot path's updates of every
-- other row do not maintain them.
CREATE INDEX steps_dead ON steps (kind, updated_at) WHERE status = 'dead';

-- The status an order had when it was moved to needs_review, so that an admin retry of the
-- step that stopped it can put it back.
ALTER TABLE orders ADD COLUMN review_from TEXT;

-- When housekeeping next asks the provider about a payment still open (no webhook came).
ALTER TABLE payments ADD COLUMN next_check_at INTEGER;
CREATE INDEX payments_open ON payments (created_at) WHERE status IN ('created', 'pending');
CREATE INDEX reservations_expiry ON stock_reservations (expires_at) WHERE status = 'held';

-- The request headers a webhook came with (a JSON object; no credentials), so that a
-- stored event can be verified again before an admin replays it.
ALTER TABLE webhook_events ADD COLUMN headers TEXT;

-- Every admin action that changes something: who, when, what, why.
CREATE TABLE admin_actions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    reason     TEXT,
    at         INTEGER NOT NULL
);

-- Idempotency-Key on POST /api/…: the first request locks the key, its response is kept
-- for replay; a response that says "try again" (5xx) unlocks it instead.
CREATE TABLE idempotency_keys (
    scope             TEXT NOT NULL,   -- whose key: a hash of the caller's credentials
    key               TEXT NOT NULL,
    fingerprint       TEXT NOT NULL,   -- hash of method, path and body
    locked_until      INTEGER,         -- set while the first request runs
    response_status   INTEGER,
    response_body     BLOB,
    content_type      TEXT,
    created_at        INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- Reconciliation runs: what the providers listed, what was repaired, what needs a human.
-- A scheduled run takes its slot (one per interval) so that several processes run it once.
CREATE TABLE reconciliations (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    slot         INTEGER UNIQUE,     -- scheduled runs: start time / interval; NULL on demand
    trigger      TEXT NOT NULL,    -- schedule | admin:<actor>
    since_s      INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    report       TEXT              -- JSON, when finished
);
