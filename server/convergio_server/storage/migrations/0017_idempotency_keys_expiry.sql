-- Request ids are remembered for 24 hours (common.proto), then deleted by every server's
-- periodic cleanup, oldest first, a bounded batch per statement: without this index each
-- batch would scan the table for the rows past their retention.
--
-- Built in the migration's transaction: calls that record a request id wait for the build,
-- one pass over every request id kept so far.
CREATE INDEX idempotency_keys_create_time_idx ON idempotency_keys (create_time);
