-- Proof of purchase (issue 20). POST /api/orders answers a buyer token once, as Stripe's
-- client_secret is answered: only its SHA-256 is kept, so a copy of the store proves
-- nothing. NULL for orders made before: their buyers prove the address (sign-in link).
ALTER TABLE orders ADD COLUMN buyer_token_hash TEXT;

-- Webhook messages seen, by the provider's own id for one transmission (PayPal's
-- paypal-transmission-id) and the SHA-256 of the body it signed: the same message again is a
-- duplicate (answered as one), but the same transmission with another body — one forged to
-- the same CRC32 — is refused. Rows outlive the freshness tolerance; housekeeping then
-- removes them, and a message that old is refused as stale anyway.
CREATE TABLE webhook_transmissions (
    provider         TEXT NOT NULL,
    transmission_id  TEXT NOT NULL,
    body_sha256      TEXT NOT NULL,
    seen_at          BIGINT NOT NULL,
    PRIMARY KEY (provider, transmission_id)
);
CREATE INDEX webhook_transmissions_seen ON webhook_transmissions (seen_at);
