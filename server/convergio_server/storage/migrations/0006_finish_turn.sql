-- Ending a turn in one round trip. The steps are those the server used to send one by one
-- in a transaction; in a function each statement still sees what committed before it
-- (read committed), so a turn queued while the conversation was locked is promoted.
-- Returns whether this call ended the turn, and the queued turn it started, if any.
CREATE FUNCTION convergio_finish_turn(
    p_tenant text,
    p_conversation uuid,
    p_turn uuid,
    p_stop_reason text,
    p_stop_detail text,
    p_error jsonb,
    p_prompt_tokens bigint,
    p_completion_tokens bigint,
    p_cached_tokens bigint,
    p_model_calls bigint,
    p_cost_usd numeric,
    p_team_state jsonb  -- NULL: the saved state stays as it is
) RETURNS TABLE (ended boolean, promoted uuid)
LANGUAGE plpgsql AS $$
DECLARE
    v_active uuid;
    v_next_id uuid;
    v_next_message uuid;
    v_next_content text;
BEGIN
    PERFORM 1 FROM conversations
    WHERE tenant_id = p_tenant AND id = p_conversation FOR NO KEY UPDATE;

    UPDATE turns SET status = 'ENDED', stop_reason = p_stop_reason,
        stop_detail = p_stop_detail, error = p_error, prompt_tokens = p_prompt_tokens,
        completion_tokens = p_completion_tokens, cached_tokens = p_cached_tokens,
        model_calls = p_model_calls, cost_usd = p_cost_usd, end_time = now()
    WHERE tenant_id = p_tenant AND conversation_id = p_conversation AND id = p_turn
        AND status <> 'ENDED';
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, NULL::uuid;
        RETURN;
    END IF;

    IF p_team_state IS NOT NULL THEN
        INSERT INTO team_states (tenant_id, conversation_id, state, turn_id)
        VALUES (p_tenant, p_conversation, p_team_state, p_turn)
        ON CONFLICT (tenant_id, conversation_id) DO UPDATE
        SET state = EXCLUDED.state, turn_id = EXCLUDED.turn_id, update_time = now();
    END IF;

    UPDATE conversations SET prompt_tokens = prompt_tokens + p_prompt_tokens,
        completion_tokens = completion_tokens + p_completion_tokens,
        cached_tokens = cached_tokens + p_cached_tokens,
        model_calls = model_calls + p_model_calls,
        cost_usd = cost_usd + p_cost_usd, update_time = now(),
        active_turn_id = CASE WHEN active_turn_id = p_turn THEN NULL ELSE active_turn_id END
    WHERE tenant_id = p_tenant AND id = p_conversation
    RETURNING active_turn_id INTO v_active;
    IF v_active IS NOT NULL THEN
        RETURN QUERY SELECT true, NULL::uuid;
        RETURN;
    END IF;

    UPDATE turns SET status = 'RUNNING', start_time = now()
    WHERE (tenant_id, conversation_id, id) = (
        SELECT tenant_id, conversation_id, id FROM turns
        WHERE tenant_id = p_tenant AND conversation_id = p_conversation AND status = 'QUEUED'
        ORDER BY create_time, id LIMIT 1)
    RETURNING id, user_message_id, content INTO v_next_id, v_next_message, v_next_content;
    IF v_next_id IS NULL THEN
        RETURN QUERY SELECT true, NULL::uuid;
        RETURN;
    END IF;

    UPDATE conversations SET active_turn_id = v_next_id
    WHERE tenant_id = p_tenant AND id = p_conversation;
    -- The message that starts a turn enters the transcript when the turn starts running.
    INSERT INTO messages (tenant_id, conversation_id, id, turn_id, role, source, content)
    VALUES (p_tenant, p_conversation, v_next_message::text, v_next_id, 'USER', 'user',
        v_next_content)
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
        UPDATE conversations SET message_count = message_count + 1
        WHERE tenant_id = p_tenant AND id = p_conversation;
    END IF;
    RETURN QUERY SELECT true, v_next_id;
END
$$;
