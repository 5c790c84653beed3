-- A conversation being deleted with force takes no new turn: its turns are stopped, then it is
-- deleted once none runs or waits, and a client sending again and again (each turn queued as
-- the one before ends) could otherwise keep it alive for ever. Set by the delete; checked
-- where turns are added, so that every way of adding one respects it.
ALTER TABLE conversations ADD COLUMN deleting boolean NOT NULL DEFAULT false;

CREATE FUNCTION convergio_turn_refused_while_deleting() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM conversations c WHERE c.tenant_id = NEW.tenant_id
               AND c.id = NEW.conversation_id AND c.deleting) THEN
        RAISE EXCEPTION 'conversation % is being deleted', NEW.conversation_id
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER turns_refused_while_deleting
    BEFORE INSERT ON turns
    FOR EACH ROW EXECUTE FUNCTION convergio_turn_refused_while_deleting();
