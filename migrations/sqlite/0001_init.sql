-- fulfilld schema v1. Times are INTEGER milliseconds since the Unix epoch; money is INTEGER
-- minor units + ISO currency. The Postgres twin of this file must stay equivalent.

CREATE TABLE skus (
    sku          TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    price_minor  INTEGER NOT NULL CHECK (price_minor >= 0),
    currency     TEXT NOT NULL,
    on_hand      INTEGER NOT NULL CHECK (on_hand >= 0),
    reserved     INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    updated_at   INTEGER NOT NULL
);

CREATE TABLE orders (
    id              TEXT PRIMARY KEY,
    customer_email  TEXT NOT NULL,
    status          TEXT NOT NULL,
    total_minor     INTEGER NOT NULL,
    currency        TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

CREATE TABLE order_items (
    order_id          TEXT NOT NULL REFERENCES orders(id),
    line_no           INTEGER NOT NULL,
    sku               TEXT NOT NULL REFERENCES skus(sku),
    name              TEXT NOT NULL,
    qty               INTEGER NOT NULL CHECK (qty > 0),
    unit_price_minor  INTEGER NOT NULL,
    PRIMARY KEY (order_id, line_no)
);

-- held → consumed (stock deducted) | released (payment failed, expired, or no stock).
CREATE TABLE stock_reservations (
    order_id    TEXT NOT NULL REFERENCES orders(id),
    sku         TEXT NOT NULL REFERENCES skus(sku),
    qty         INTEGER NOT NULL CHECK (qty > 0),
    status      TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (order_id, sku)
);

-- created → pending (completed, money not settled) → paid → refunded; failed; expired.
CREATE TABLE payments (
    id                   TEXT PRIMARY KEY,
    order_id             TEXT NOT NULL REFERENCES orders(id),
    provider             TEXT NOT NULL,
    provider_order_id    TEXT NOT NULL,
    provider_payment_id  TEXT,
    status               TEXT NOT NULL,
    amount_minor         INTEGER NOT NULL,
    currency             TEXT NOT NULL,
    checkout_url         TEXT,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL,
    UNIQUE (provider, provider_order_id)
);
CREATE INDEX payments_order ON payments (order_id);

-- Every verified webhook, raw bytes kept for replay; the unique key is the dedup.
CREATE TABLE webhook_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    provider     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    raw_body     BLOB NOT NULL,
    payment_id   TEXT,
    outcome      TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    UNIQUE (provider, event_id)
);

-- The durable queue: one row per fulfilment step of an order.
-- waiting (an earlier step is not done) → pending (due at next_run_at) → running (leased)
-- → done | skipped | dead. A failed attempt goes back to pending with a later next_run_at.
CREATE TABLE steps (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id     TEXT NOT NULL REFERENCES orders(id),
    payment_id   TEXT NOT NULL REFERENCES payments(id),
    kind         TEXT NOT NULL,
    position     INTEGER NOT NULL,
    status       TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_run_at  INTEGER NOT NULL,
    enqueued_at  INTEGER,
    lease_token  TEXT,
    lease_until  INTEGER,
    last_error   TEXT,
    outcome      TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    UNIQUE (order_id, kind)
);
CREATE INDEX steps_due ON steps (status, next_run_at);

CREATE TABLE invoice_counters (
    series       TEXT PRIMARY KEY,
    last_number  INTEGER NOT NULL
);

CREATE TABLE invoices (
    id              TEXT PRIMARY KEY,
    series          TEXT NOT NULL,
    number          INTEGER NOT NULL,
    invoice_number  TEXT NOT NULL,
    order_id        TEXT NOT NULL UNIQUE REFERENCES orders(id),
    payment_id      TEXT NOT NULL REFERENCES payments(id),
    currency        TEXT NOT NULL,
    subtotal_minor  INTEGER NOT NULL,
    tax_minor       INTEGER NOT NULL,
    total_minor     INTEGER NOT NULL,
    tax_name        TEXT NOT NULL,
    tax_rate_bps    INTEGER NOT NULL,
    html            TEXT NOT NULL,
    issued_at       INTEGER NOT NULL,
    UNIQUE (series, number)
);

CREATE TABLE ledger_entries (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id      TEXT NOT NULL REFERENCES orders(id),
    reference     TEXT NOT NULL,   -- the document: an invoice id
    account       TEXT NOT NULL,
    debit_minor   INTEGER NOT NULL,
    credit_minor  INTEGER NOT NULL,
    currency      TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE INDEX ledger_order ON ledger_entries (order_id);

CREATE TABLE refunds (
    id                  TEXT PRIMARY KEY,
    payment_id          TEXT NOT NULL UNIQUE REFERENCES payments(id),
    provider_refund_id  TEXT NOT NULL,
    amount_minor        INTEGER NOT NULL,
    currency            TEXT NOT NULL,
    reason              TEXT NOT NULL,
    created_at          INTEGER NOT NULL
);

CREATE TABLE emails_sent (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    payment_id  TEXT NOT NULL REFERENCES payments(id),
    kind        TEXT NOT NULL,
    to_addr     TEXT NOT NULL,
    subject     TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    transport   TEXT NOT NULL,
    sent_at     INTEGER NOT NULL,
    UNIQUE (payment_id, kind)
);

CREATE TABLE entitlements (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id        TEXT NOT NULL REFERENCES orders(id),
    sku             TEXT NOT NULL,
    customer_email  TEXT NOT NULL,
    feature         TEXT NOT NULL,
    granted_at      INTEGER NOT NULL,
    expires_at      INTEGER,
    revoked_at      INTEGER,
    UNIQUE (order_id, sku)
);
