-- Webhook intake only appends: an event is stored with outcome 'received' and its 200 goes
-- out once that commit is durable; the event applier gives it its real outcome afterwards.
-- This index finds the events not applied yet (a handful at any time, however many are kept).
CREATE INDEX webhook_events_unapplied ON webhook_events (id) WHERE outcome = 'received';
