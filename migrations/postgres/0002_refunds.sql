-- fulfilld schema v2: several refunds per payment (partial refunds; refunds an admin asks
-- for, the engine makes when stock ran out, or the provider reports from its dashboard),
-- and credit notes. The SQLite twin of this file must stay equivalent.

-- requested (the provider call is not answered yet) → succeeded | failed. A succeeded
-- refund's effects (credit note, reversing ledger rows, order status, entitlements, stock)
-- are applied once, when applied_at is set — at once if the payment is captured, else when
-- it is (a refund event may overtake the capture event).
CREATE TABLE refunds_v2 (
    id                   TEXT PRIMARY KEY,
    payment_id           TEXT NOT NULL REFERENCES payments(id),
    order_id             TEXT NOT NULL REFERENCES orders(id),
    provider             TEXT NOT NULL,
    provider_refund_id   TEXT,
    amount_minor         BIGINT NOT NULL CHECK (amount_minor > 0),
    currency             TEXT NOT NULL,
    reason               TEXT NOT NULL,
    source               TEXT NOT NULL,   -- engine | admin | provider
    status               TEXT NOT NULL,
    restock              BIGINT NOT NULL DEFAULT 0,   -- 1: return the stock once fully refunded
    idempotency_key      TEXT UNIQUE,
    request_fingerprint  TEXT,
    last_error           TEXT,
    applied_at           BIGINT,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    UNIQUE (provider, provider_refund_id)
);
INSERT INTO refunds_v2 (id, payment_id, order_id, provider, provider_refund_id, amount_minor,
                        currency, reason, source, status, applied_at, created_at, updated_at)
SELECT r.id, r.payment_id, p.order_id, p.provider, r.provider_refund_id, r.amount_minor,
       r.currency, r.reason, 'engine', 'succeeded', r.created_at, r.created_at, r.created_at
FROM refunds r JOIN payments p ON p.id = r.payment_id;
DROP TABLE refunds;
ALTER TABLE refunds_v2 RENAME TO refunds;
CREATE INDEX refunds_payment ON refunds (payment_id);
CREATE INDEX refunds_order ON refunds (order_id);

-- One per applied refund of an invoiced order: the invoice's negative twin, numbered
-- gaplessly in its own series.
CREATE TABLE credit_notes (
    id                  TEXT PRIMARY KEY,
    series              TEXT NOT NULL,
    number              BIGINT NOT NULL,
    credit_note_number  TEXT NOT NULL,
    order_id            TEXT NOT NULL REFERENCES orders(id),
    refund_id           TEXT NOT NULL UNIQUE REFERENCES refunds(id),
    invoice_id          TEXT NOT NULL REFERENCES invoices(id),
    currency            TEXT NOT NULL,
    total_minor         BIGINT NOT NULL,
    tax_minor           BIGINT NOT NULL,
    html                TEXT NOT NULL,
    issued_at           BIGINT NOT NULL,
    UNIQUE (series, number)
);

-- Refund events name the provider's payment id, not the checkout.
CREATE INDEX payments_provider_payment ON payments (provider, provider_payment_id);

-- Refund events that name a provider payment id we do not know yet: the event overtook the
-- capture event that tells us that id. Adopted into refunds when the id is recorded.
CREATE TABLE unplaced_refunds (
    provider             TEXT NOT NULL,
    provider_refund_id   TEXT NOT NULL,
    provider_payment_id  TEXT NOT NULL,
    amount_minor         BIGINT NOT NULL,
    refund_ref           TEXT,
    restock              BIGINT NOT NULL,
    received_at          BIGINT NOT NULL,
    PRIMARY KEY (provider, provider_refund_id)
);
CREATE INDEX unplaced_refunds_payment ON unplaced_refunds (provider, provider_payment_id);

-- Steps are unique per order, kind and payment (was: order and kind): a payment that
-- failed at capture keeps its steps as history while the next one runs its own, and the
-- steps that may concern several payments of one order (refunding an extra capture,
-- re-reading a contradicted payment, telling the buyer a payment failed) get one each.
ALTER TABLE steps DROP CONSTRAINT steps_order_id_kind_key;
ALTER TABLE steps ADD CONSTRAINT steps_order_id_kind_payment_id_key UNIQUE (order_id, kind, payment_id);
