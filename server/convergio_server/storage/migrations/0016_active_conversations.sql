-- Listing a tenant's running (or waiting) conversations, newest first: the conversations with
-- a turn alone, instead of all of the tenant's (or every tenant's) filtered one by one.
CREATE INDEX conversations_active_idx ON conversations (tenant_id, update_time DESC, id DESC)
    WHERE active_turn_id IS NOT NULL;
