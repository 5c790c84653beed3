-- Whether a turn's TurnCompleted reached the durable event log, kept on the turn itself so
-- that each process's sweep for ends that never reached the log reads only the turns that
-- lack one (through a partial index), instead of every turn of the last day and a lookup
-- of its events.
ALTER TABLE turns ADD COLUMN end_logged boolean NOT NULL DEFAULT false;

-- Set by the log itself, whichever code path writes the event.
CREATE FUNCTION convergio_turn_end_logged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE turns SET end_logged = true
    WHERE tenant_id = NEW.tenant_id AND conversation_id = NEW.conversation_id
      AND id = NEW.turn_id AND NOT end_logged;
    RETURN NULL;
END;
$$;

CREATE TRIGGER conversation_events_turn_end_logged
    AFTER INSERT ON conversation_events
    FOR EACH ROW WHEN (NEW.kind = 'turn_completed')
    EXECUTE FUNCTION convergio_turn_end_logged();

UPDATE turns t SET end_logged = true
WHERE EXISTS (
    SELECT 1 FROM conversation_events e
    WHERE e.tenant_id = t.tenant_id AND e.conversation_id = t.conversation_id
      AND e.turn_id = t.id AND e.kind = 'turn_completed'
);

DROP INDEX turns_ended_idx;
CREATE INDEX turns_end_unlogged_idx ON turns (end_time)
    WHERE status = 'ENDED' AND NOT end_logged;
