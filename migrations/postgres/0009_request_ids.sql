-- The request that caused a webhook event or a step (its X-Request-Id, or the id the intake
-- gave it), so one id finds the intake's log lines and every step's lines after it.
-- NULL for what no request caused (reconciliation, housekeeping) and for older rows.
ALTER TABLE webhook_events ADD COLUMN request_id TEXT;
ALTER TABLE steps ADD COLUMN request_id TEXT;
