-- Admitting a turn in one round trip, in a function so that what it counts is read after the
-- conversation's lock is taken. As one statement, its subqueries read the snapshot taken
-- before it waited for that lock: turns queued by the calls it waited for went uncounted, so
-- concurrent calls got the same queue position and could overrun the queue's limit.
-- Decides: EXISTING (a turn of this request_id exists), RUNNING (added, runs now), BUSY,
-- FULL (refused) or QUEUED (added behind `queued` others); NULL when the conversation does
-- not exist.
CREATE FUNCTION convergio_admit_turn(
    p_tenant text,
    p_conversation uuid,
    p_turn uuid,
    p_request text,
    p_content text,
    p_options jsonb,
    p_user_message uuid,
    p_created_by text,
    p_enqueue boolean,
    p_max_queued bigint
) RETURNS TABLE (
    outcome text, existing uuid, queued bigint, create_time timestamptz, start_time timestamptz
)
LANGUAGE plpgsql AS $$
DECLARE
    v_active uuid;
    v_existing uuid;
    v_queued bigint;
    v_outcome text;
    v_created timestamptz;
    v_started timestamptz;
BEGIN
    SELECT c.active_turn_id INTO v_active FROM conversations c
    WHERE c.tenant_id = p_tenant AND c.id = p_conversation FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    SELECT t.id INTO v_existing FROM turns t
    WHERE t.tenant_id = p_tenant AND t.conversation_id = p_conversation
        AND t.request_id = p_request;
    IF v_existing IS NOT NULL THEN
        RETURN QUERY SELECT 'EXISTING'::text, v_existing, 0::bigint, NULL::timestamptz,
            NULL::timestamptz;
        RETURN;
    END IF;

    SELECT count(*) INTO v_queued FROM turns q
    WHERE q.tenant_id = p_tenant AND q.conversation_id = p_conversation
        AND q.status = 'QUEUED';
    v_outcome := CASE WHEN v_active IS NULL THEN 'RUNNING'
        WHEN NOT p_enqueue THEN 'BUSY'
        WHEN v_queued >= p_max_queued THEN 'FULL'
        ELSE 'QUEUED' END;
    IF v_outcome IN ('BUSY', 'FULL') THEN
        RETURN QUERY SELECT v_outcome, NULL::uuid, v_queued, NULL::timestamptz,
            NULL::timestamptz;
        RETURN;
    END IF;

    -- Created when admitted, not when the call began waiting for the lock: queued turns run in
    -- the order of create_time, which is then the order of the places they were told.
    INSERT INTO turns AS t (tenant_id, conversation_id, id, request_id, status, content,
        options, user_message_id, created_by, create_time, start_time)
    VALUES (p_tenant, p_conversation, p_turn, p_request, v_outcome, p_content, p_options,
        p_user_message, p_created_by, clock_timestamp(),
        CASE WHEN v_outcome = 'RUNNING' THEN clock_timestamp() END)
    RETURNING t.create_time, t.start_time INTO v_created, v_started;
    IF v_outcome = 'RUNNING' THEN
        -- A queued turn's message enters the transcript when the turn starts.
        INSERT INTO messages (tenant_id, conversation_id, id, turn_id, role, source, content)
        VALUES (p_tenant, p_conversation, p_user_message::text, p_turn, 'USER', 'user',
            p_content);
    END IF;
    UPDATE conversations SET turn_count = turn_count + 1, update_time = now(),
        message_count = message_count + CASE WHEN v_outcome = 'RUNNING' THEN 1 ELSE 0 END,
        active_turn_id = COALESCE(active_turn_id, p_turn)
    WHERE tenant_id = p_tenant AND id = p_conversation;
    RETURN QUERY SELECT v_outcome, NULL::uuid, v_queued, v_created, v_started;
END
$$;
