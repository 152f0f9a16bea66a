-- When a sweeper last took the step into a worker lane (queue.url = postgres://): a step
-- whose wake-up (enqueued_at) is newer than that has not been handed to any process yet.
ALTER TABLE steps ADD COLUMN taken_at BIGINT;
