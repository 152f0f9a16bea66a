-- One queue per step kind: the sweeper looks for the due steps of one kind at a time.
CREATE INDEX steps_kind_due ON steps (kind, next_run_at) WHERE status = 'pending';
