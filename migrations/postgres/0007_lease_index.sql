-- A step's status changes three or four times in its life (waiting → pending → running →
-- done), and a change of an indexed column writes a new entry into every index of the row.
-- (status, next_run_at) served only the sweep for expired leases; this partial index serves
-- it and is written once per run, at the claim. Due steps are found by steps_kind_due.
DROP INDEX IF EXISTS steps_due;
CREATE INDEX steps_leased ON steps (lease_until) WHERE status = 'running';
