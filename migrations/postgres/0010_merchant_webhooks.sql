-- Webhooks to the merchant's own systems (the notify_merchant step), signed per the Standard
-- Webhooks specification.

-- Where to send, what, and with which secrets. The secrets are the engine's own (made when
-- the endpoint is, shown to the admin once), not configuration. While a rotation's grace
-- lasts (previous_secret_until), deliveries are signed with both.
CREATE TABLE merchant_endpoints (
    id                     TEXT PRIMARY KEY,
    url                    TEXT NOT NULL,
    description            TEXT NOT NULL,
    -- The subscribed event types, space-separated, or '*' for all.
    event_types            TEXT NOT NULL,
    enabled                BIGINT NOT NULL,
    disabled_reason        TEXT,
    secret                 TEXT NOT NULL,
    previous_secret        TEXT,
    previous_secret_until  BIGINT,
    -- When the current run of failed attempts began (NULL after a success): an endpoint
    -- failing for merchant_webhooks.disable_after is disabled.
    failing_since          BIGINT,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL
);

-- One message to one endpoint. message_id is the webhook-id: the same for every endpoint
-- and every attempt of one event, so receivers deduplicate by it. The body is fixed when
-- the event happens; each attempt signs it with the time of sending.
CREATE TABLE merchant_deliveries (
    id            BIGSERIAL PRIMARY KEY,
    message_id    TEXT NOT NULL,
    endpoint_id   TEXT NOT NULL REFERENCES merchant_endpoints(id),
    event_type    TEXT NOT NULL,
    order_id      TEXT,
    payload       TEXT NOT NULL,
    -- pending → sending → delivered | dead (an admin's retry makes a dead one pending).
    status        TEXT NOT NULL,
    -- Attempts ever, and since the latest admin retry (the schedule's position).
    attempts      BIGINT NOT NULL,
    tries         BIGINT NOT NULL,
    next_run_at   BIGINT NOT NULL,
    lease_token   TEXT,
    lease_until   BIGINT,
    last_error    TEXT,
    delivered_at  BIGINT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    UNIQUE (message_id, endpoint_id)
);
CREATE INDEX merchant_deliveries_due ON merchant_deliveries (status, next_run_at);
CREATE INDEX merchant_deliveries_endpoint ON merchant_deliveries (endpoint_id, id);
CREATE INDEX merchant_deliveries_order ON merchant_deliveries (order_id);

-- Each attempt, as the admin's delivery log shows it.
CREATE TABLE merchant_attempts (
    delivery_id   BIGINT NOT NULL REFERENCES merchant_deliveries(id),
    attempt       BIGINT NOT NULL,
    started_at    BIGINT NOT NULL,
    latency_ms    BIGINT NOT NULL,
    -- The HTTP status, or NULL when there was no answer (refused, timed out).
    status_code   BIGINT,
    -- The first bytes of the answer, or why there was none.
    response      TEXT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
