-- Budget counters missing from Redis are seeded with sums of cost_usd from the ledger (per
-- tenant, user or conversation, since a day, a month or ever). With cost_usd in the index
-- those sums are index-only scans: a user's total read one heap page per ledger row before
-- (1,600 rows, 1,613 pages), now 15 index pages. Each index has the keys of the one it
-- replaces, so ledger listings and summaries keep their plans.
--
-- The new indexes are built before the old ones are dropped: building only blocks writes to
-- the ledger (which are queued and retried), while DROP INDEX also blocks reads, and holds
-- that lock until the migration commits.
CREATE INDEX cost_ledger_time_cost_idx
    ON cost_ledger (tenant_id, time DESC, id DESC) INCLUDE (cost_usd);
CREATE INDEX cost_ledger_principal_cost_idx
    ON cost_ledger (tenant_id, principal, time DESC) INCLUDE (cost_usd);
CREATE INDEX cost_ledger_conversation_cost_idx
    ON cost_ledger (tenant_id, conversation_id, time DESC) INCLUDE (cost_usd);

DROP INDEX cost_ledger_time_idx;
DROP INDEX cost_ledger_principal_idx;
DROP INDEX cost_ledger_conversation_idx;
