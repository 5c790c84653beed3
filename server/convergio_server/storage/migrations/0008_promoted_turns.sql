-- A queued turn that the end of the turn before it promotes to RUNNING has not started until a
-- server says so (`started`). A server that stops, or dies, between the promotion and the
-- start leaves it for another server to start, instead of it being ended later as a turn
-- that failed mid-way. Set by a trigger, so that every promotion (convergio_finish_turn
-- included) marks it.
ALTER TABLE turns ADD COLUMN started boolean NOT NULL DEFAULT true;

CREATE FUNCTION convergio_turn_promoted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.started := false;
    RETURN NEW;
END
$$;

CREATE TRIGGER turns_promoted BEFORE UPDATE OF status ON turns
    FOR EACH ROW WHEN (OLD.status = 'QUEUED' AND NEW.status = 'RUNNING')
    EXECUTE FUNCTION convergio_turn_promoted();

-- What every server looks for now and then: promoted turns nobody started.
CREATE INDEX turns_unstarted_idx ON turns (start_time) WHERE status = 'RUNNING' AND NOT started;
