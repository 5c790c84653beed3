-- Costs of conversations, turns and messages as exact as the ledger's (they were rounded
-- to six decimals, so a tenant's per-turn costs did not add up to its ledger).
ALTER TABLE conversations ALTER COLUMN cost_usd TYPE numeric;
ALTER TABLE turns ALTER COLUMN cost_usd TYPE numeric;
ALTER TABLE messages ALTER COLUMN cost_usd TYPE numeric;
