-- Cost and safety: the ledger of model calls, budgets, recorded budget alerts and circuit
-- breaker events. Amounts are exact NUMERIC in USD. Every table carries tenant_id.

-- One row per model call (agent replies, speaker selection, tool choice; cancelled calls too).
CREATE TABLE cost_ledger (
    tenant_id          text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id                 uuid NOT NULL,
    time               timestamptz NOT NULL,
    principal          text NOT NULL,
    conversation_id    text NOT NULL DEFAULT '',
    turn_id            text NOT NULL DEFAULT '',
    execution_id       text NOT NULL DEFAULT '',
    step_id            text NOT NULL DEFAULT '',
    agent              text NOT NULL DEFAULT '',
    provider           text NOT NULL,
    model              text NOT NULL,
    -- AGENT_REPLY | SPEAKER_SELECTION | TOOL_CHOICE
    call_kind          text NOT NULL,
    prompt_tokens      bigint NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens  bigint NOT NULL CHECK (completion_tokens >= 0),
    cached_tokens      bigint NOT NULL CHECK (cached_tokens >= 0),
    cost_usd           numeric NOT NULL CHECK (cost_usd >= 0),
    -- TABLE | FALLBACK
    price_source       text NOT NULL,
    input_price        numeric NOT NULL,
    output_price       numeric NOT NULL,
    cached_input_price numeric NOT NULL,
    latency_ms         bigint NOT NULL,
    -- OK | ERROR | CANCELLED | CLIENT_GONE
    outcome            text NOT NULL,
    error_reason       text NOT NULL DEFAULT '',
    PRIMARY KEY (tenant_id, id)
);

CREATE INDEX cost_ledger_time_idx ON cost_ledger (tenant_id, time DESC, id DESC);
CREATE INDEX cost_ledger_principal_idx ON cost_ledger (tenant_id, principal, time DESC);
CREATE INDEX cost_ledger_conversation_idx ON cost_ledger (tenant_id, conversation_id, time DESC);

-- Limits per scope and subject; subject '' is the tenant budget (TENANT) or the scope default
-- (USER, CONVERSATION). NULL limit = none for that period.
CREATE TABLE cost_budgets (
    tenant_id          text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- TENANT | USER | CONVERSATION
    scope              text NOT NULL,
    subject            text NOT NULL,
    daily_limit        numeric,
    monthly_limit      numeric,
    total_limit        numeric,
    per_turn_limit     numeric,
    alert_thresholds   integer[] NOT NULL,
    update_time        timestamptz NOT NULL DEFAULT now(),
    updated_by         text NOT NULL,
    PRIMARY KEY (tenant_id, scope, subject)
);

-- A tenant gets the default budgets once (on first use); deleting them later is respected.
CREATE TABLE cost_budget_seeds (
    tenant_id   text PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    seed_time   timestamptz NOT NULL DEFAULT now()
);

-- Every alert threshold crossed (70%, 85%, 100% by default), once per budget, period and threshold.
CREATE TABLE cost_budget_alerts (
    tenant_id         text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id                bigserial,
    time              timestamptz NOT NULL DEFAULT now(),
    scope             text NOT NULL,
    subject           text NOT NULL,
    -- DAILY | MONTHLY | TOTAL | PER_TURN
    period            text NOT NULL,
    -- e.g. 2026-11-22 (daily), 2026-11 (monthly), the turn id (per turn), '' (total)
    period_id         text NOT NULL,
    threshold_percent integer NOT NULL,
    spent_usd         numeric NOT NULL,
    limit_usd         numeric NOT NULL,
    conversation_id   text NOT NULL DEFAULT '',
    turn_id           text NOT NULL DEFAULT '',
    PRIMARY KEY (tenant_id, id)
);

-- Circuit breaker transitions (opened, half-open, closed, reset), for the audit trail.
CREATE TABLE cost_breaker_events (
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id          bigserial,
    time        timestamptz NOT NULL DEFAULT now(),
    scope       text NOT NULL,
    provider    text NOT NULL DEFAULT '',
    event       text NOT NULL,
    cause       text NOT NULL DEFAULT '',
    reason      text NOT NULL DEFAULT '',
    actor       text NOT NULL DEFAULT '',
    PRIMARY KEY (tenant_id, id)
);
