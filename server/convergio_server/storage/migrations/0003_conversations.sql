-- Conversations: their settings, turns, transcript, saved AutoGen team state and the durable
-- part of their event log. Every table carries tenant_id and every query filters on it.

CREATE TABLE conversations (
    tenant_id             text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id                    uuid NOT NULL,
    title                 text NOT NULL DEFAULT '',
    -- {"preset": "core"} | {"agents": ["amy", "luca"]} | {"single_agent": "ali"}
    team                  jsonb NOT NULL,
    participants          text[] NOT NULL,
    -- ModelSelection as JSON ({} = server default) and per-agent overrides.
    model                 jsonb NOT NULL DEFAULT '{}',
    agent_models          jsonb NOT NULL DEFAULT '{}',
    max_turns_per_message int NOT NULL,
    speaker_policy        text NOT NULL DEFAULT '',
    labels                jsonb NOT NULL DEFAULT '{}',
    turn_timeout_seconds  double precision NOT NULL,
    created_by            text NOT NULL,
    active_turn_id        uuid,
    turn_count            int NOT NULL DEFAULT 0,
    message_count         int NOT NULL DEFAULT 0,
    prompt_tokens         bigint NOT NULL DEFAULT 0,
    completion_tokens     bigint NOT NULL DEFAULT 0,
    cached_tokens         bigint NOT NULL DEFAULT 0,
    model_calls           bigint NOT NULL DEFAULT 0,
    cost_usd              numeric(20, 6) NOT NULL DEFAULT 0,
    create_time           timestamptz NOT NULL DEFAULT now(),
    update_time           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

CREATE INDEX conversations_recent_idx ON conversations (tenant_id, update_time DESC, id DESC);
CREATE INDEX conversations_labels_idx ON conversations USING gin (labels jsonb_path_ops);

CREATE TABLE turns (
    tenant_id         text NOT NULL,
    conversation_id   uuid NOT NULL,
    id                uuid NOT NULL,
    -- Per conversation: a repeated SendMessage with the same request_id re-attaches.
    request_id        text NOT NULL,
    -- QUEUED | RUNNING | WAITING_FOR_APPROVAL | ENDED
    status            text NOT NULL,
    -- COMPLETED | MAX_TURNS | CANCELLED | ... once ENDED
    stop_reason       text NOT NULL DEFAULT '',
    stop_detail       text NOT NULL DEFAULT '',
    error             jsonb,
    content           text NOT NULL,
    -- What the turn was started with (max_turns, on_disconnect, documents...), kept so that a
    -- queued turn started later, or a re-attach, uses the same options.
    options           jsonb NOT NULL DEFAULT '{}',
    user_message_id   uuid NOT NULL,
    message_count     int NOT NULL DEFAULT 0,
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    cached_tokens     bigint NOT NULL DEFAULT 0,
    model_calls       bigint NOT NULL DEFAULT 0,
    cost_usd          numeric(20, 6) NOT NULL DEFAULT 0,
    created_by        text NOT NULL,
    create_time       timestamptz NOT NULL DEFAULT now(),
    start_time        timestamptz,
    end_time          timestamptz,
    first_sequence    bigint NOT NULL DEFAULT 0,
    last_sequence     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, conversation_id, id),
    UNIQUE (tenant_id, conversation_id, request_id),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES conversations (tenant_id, id)
        ON DELETE CASCADE
);

CREATE INDEX turns_recent_idx ON turns (tenant_id, conversation_id, create_time DESC, id DESC);
CREATE INDEX turns_queued_idx ON turns (tenant_id, conversation_id, create_time)
    WHERE status = 'QUEUED';

-- The transcript: the users' messages and every completed agent message.
CREATE TABLE messages (
    tenant_id         text NOT NULL,
    conversation_id   uuid NOT NULL,
    id                text NOT NULL,
    -- Insertion order within the conversation (ids are not ordered).
    position          bigserial,
    turn_id           uuid NOT NULL,
    role              text NOT NULL,
    source            text NOT NULL,
    content           text NOT NULL,
    model             text NOT NULL DEFAULT '',
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    cached_tokens     bigint NOT NULL DEFAULT 0,
    model_calls       bigint NOT NULL DEFAULT 0,
    cost_usd          numeric(20, 6),
    create_time       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, conversation_id, id),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES conversations (tenant_id, id)
        ON DELETE CASCADE
);

CREATE INDEX messages_order_idx ON messages (tenant_id, conversation_id, position);

-- AutoGen team state (team.save_state()) after the latest turn that ended cleanly.
CREATE TABLE team_states (
    tenant_id       text NOT NULL,
    conversation_id uuid NOT NULL,
    state           jsonb NOT NULL,
    turn_id         uuid,
    update_time     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, conversation_id),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES conversations (tenant_id, id)
        ON DELETE CASCADE
);

-- The durable part of the event log: every event except token deltas (which live only in the
-- Redis window). Sequence numbers are allocated by Redis, atomically with the live append.
CREATE TABLE conversation_events (
    tenant_id       text NOT NULL,
    conversation_id uuid NOT NULL,
    sequence        bigint NOT NULL,
    turn_id         uuid NOT NULL,
    kind            text NOT NULL,
    payload         jsonb NOT NULL,
    event_time      timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id, sequence),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES conversations (tenant_id, id)
        ON DELETE CASCADE
);
