-- How many times applying a stored webhook event failed (issue 21): after a few, the event
-- is parked with its reason instead of heading every applier batch forever.
ALTER TABLE webhook_events ADD COLUMN apply_failures INTEGER NOT NULL DEFAULT 0;

-- Parked events (kept, not applied: unreadable, failing, or signed but senseless), counted
-- at every /metrics scrape and listed by GET /api/admin/events?parked=true: a partial index
-- holds just them. Its predicate is `store::events::PARKED`, word for word.
CREATE INDEX webhook_events_parked ON webhook_events (id)
    WHERE outcome LIKE 'not applied:%' OR outcome LIKE 'parked for review:%';
