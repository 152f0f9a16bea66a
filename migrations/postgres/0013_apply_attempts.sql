-- How many times applying a stored webhook event failed (issue 21): after a few, the event
-- is parked with its reason instead of heading every applier batch forever.
ALTER TABLE webhook_events ADD COLUMN apply_failures BIGINT NOT NULL DEFAULT 0;
