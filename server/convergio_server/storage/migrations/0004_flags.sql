-- Feature flags per tenant, their full history (applied changes and refused attempts), and
-- which tenants have received the default flags.

-- The current flags. `spec` holds the flag's configuration as the domain encodes it
-- (description, enabled, strategy, percentage, groups, users, variants, gradual);
-- `change_seq` is the id of the history entry that produced this version, a global order of
-- changes that caches use to ignore stale notifications.
CREATE TABLE flags (
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key         text NOT NULL,
    spec        jsonb NOT NULL,
    version     bigint NOT NULL CHECK (version > 0),
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    updated_by  text NOT NULL,
    change_seq  bigint NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

-- Every change and every attempt refused for a stale expected_version, kept after a delete.
-- kind: created | updated | deleted; outcome: applied | version_conflict.
CREATE TABLE flag_history (
    id               bigserial PRIMARY KEY,
    tenant_id        text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key              text NOT NULL,
    version          bigint NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('created', 'updated', 'deleted')),
    outcome          text NOT NULL CHECK (outcome IN ('applied', 'version_conflict')),
    spec             jsonb NOT NULL,
    expected_version bigint NOT NULL,
    actor            text NOT NULL,
    change_time      timestamptz NOT NULL DEFAULT now(),
    comment          text NOT NULL DEFAULT '',
    request_id       text NOT NULL DEFAULT ''
);

CREATE INDEX flag_history_tenant_key_idx ON flag_history (tenant_id, key, id DESC);

-- A tenant listed here has received the default flags once; deleting them later does not
-- bring them back.
CREATE TABLE flag_tenants (
    tenant_id   text PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    seeded_time timestamptz NOT NULL DEFAULT now()
);
