-- What the durable event log holds of each turn, kept on the turn itself by a trigger on the
-- log (whichever code path writes it): the sequence of its first event (TurnQueued or
-- TurnStarted), of its TurnCompleted, and whether that end was logged. Reading them costs an
-- index lookup; looking a turn's events up by turn read every event of its conversation
-- (nothing indexes turn_id), and the sweep for ends missing from the log read every turn of
-- the last day with a lookup each.
--
-- No backfill (it would hold the table's lock for minutes on a big one): the turns from
-- before this migration keep `log_marked` false and are looked up as before, and count as
-- logged (until their processes stopped, the sweep of the earlier version looked at them),
-- but for those not ended yet.
ALTER TABLE turns ADD COLUMN log_marked boolean NOT NULL DEFAULT false;
ALTER TABLE turns ALTER COLUMN log_marked SET DEFAULT true;
ALTER TABLE turns ADD COLUMN end_logged boolean NOT NULL DEFAULT true;
ALTER TABLE turns ALTER COLUMN end_logged SET DEFAULT false;
UPDATE turns SET end_logged = false WHERE status <> 'ENDED';

CREATE FUNCTION convergio_turn_log_marks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind = 'turn_completed' THEN
        UPDATE turns SET end_logged = true, last_sequence = NEW.sequence
        WHERE tenant_id = NEW.tenant_id AND conversation_id = NEW.conversation_id
          AND id = NEW.turn_id;
    ELSE
        -- A queued turn's TurnQueued comes first, its TurnStarted later.
        UPDATE turns SET first_sequence = NEW.sequence
        WHERE tenant_id = NEW.tenant_id AND conversation_id = NEW.conversation_id
          AND id = NEW.turn_id AND first_sequence = 0;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER conversation_events_turn_log_marks
    AFTER INSERT ON conversation_events
    FOR EACH ROW WHEN (NEW.kind IN ('turn_queued', 'turn_started', 'turn_completed'))
    EXECUTE FUNCTION convergio_turn_log_marks();

DROP INDEX turns_ended_idx;
CREATE INDEX turns_end_unlogged_idx ON turns (end_time)
    WHERE status = 'ENDED' AND NOT end_logged;
