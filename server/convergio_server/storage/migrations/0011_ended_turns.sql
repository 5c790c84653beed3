-- Where each process's sweep looks for turns that ended without their end in the event log
-- (their process stopped or died while Redis was out of reach).
CREATE INDEX turns_ended_idx ON turns (end_time) WHERE status = 'ENDED';
