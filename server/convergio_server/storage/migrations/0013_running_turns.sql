-- Where each process's sweep looks for running turns older than a lease (their process may
-- have died): the running turns alone, by start time, instead of every conversation.
CREATE INDEX turns_running_idx ON turns (start_time) WHERE status = 'RUNNING' AND started;
