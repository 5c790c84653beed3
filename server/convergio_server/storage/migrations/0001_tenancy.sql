-- Tenancy: tenants, their API keys, and idempotency records of mutating calls.
-- Every table except tenants itself carries tenant_id, and every query filters on it.

CREATE TABLE tenants (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now()
);

-- The secret is stored only as a hash; key_id is the public half of the presented key.
CREATE TABLE api_keys (
    key_id         text PRIMARY KEY,
    tenant_id      text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name           text NOT NULL,
    principal      text NOT NULL,
    roles          text[] NOT NULL,
    secret_hash    bytea NOT NULL,
    create_time    timestamptz NOT NULL DEFAULT now(),
    revoke_time    timestamptz,
    last_used_time timestamptz
);

CREATE INDEX api_keys_tenant_id_idx ON api_keys (tenant_id);

-- A retried call with the same request_id gets the stored response instead of running again;
-- request_hash detects a reused request_id with a different request.
CREATE TABLE idempotency_keys (
    tenant_id    text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    method       text NOT NULL,
    request_id   text NOT NULL,
    request_hash bytea NOT NULL,
    response     bytea,
    status       text NOT NULL,
    create_time  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, method, request_id)
);
