-- A request_id whose first call ended in a definitive error (a version conflict, a refused
-- precondition) answers every repeat with that error: the error is kept with the record.
-- status: 'pending' while the first call runs, 'done' with a response, 'failed' with an error.
ALTER TABLE idempotency_keys ADD COLUMN error jsonb;
