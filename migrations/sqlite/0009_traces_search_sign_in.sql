-- The request that caused a webhook event or a step (its X-Request-Id, or the id the intake
-- gave it), so one id finds the intake's log lines and every step's lines after it.
-- NULL for what no request caused (reconciliation, housekeeping) and for older rows.
ALTER TABLE webhook_events ADD COLUMN request_id TEXT;
ALTER TABLE steps ADD COLUMN request_id TEXT;

-- A buyer is one address whatever its case (Ann@example.com is ann@example.com): the admin's
-- order search and the buyer's access checks and sign-in read by lower(customer_email).
CREATE INDEX orders_email ON orders (lower(customer_email), id);
DROP INDEX entitlements_email;
CREATE INDEX entitlements_email ON entitlements (lower(customer_email));

-- Emailed sign-in links (POST /api/entitlements/sign-in), each good once until expires_at.
-- Only the token's SHA-256 is kept: the token itself is in the buyer's email alone.
CREATE TABLE sign_in_links (
    token_hash  TEXT PRIMARY KEY,
    email       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
-- How many links an address was sent lately (a cap, so nobody floods a buyer's inbox).
CREATE INDEX sign_in_links_email ON sign_in_links (email, created_at);
