-- A learner may give up a run: it ends `gave_up`, and the solution is shown (a stopped run,
-- `abandoned`, shows nothing).
ALTER TABLE runs DROP CONSTRAINT runs_state_check;
ALTER TABLE runs ADD CONSTRAINT runs_state_check
    CHECK (state IN ('setup', 'baseline', 'incident', 'recovering', 'resolved', 'abandoned', 'gave_up'));
ALTER TABLE runs DROP CONSTRAINT runs_check;
ALTER TABLE runs ADD CONSTRAINT runs_ended_check
    CHECK ((ended_at IS NULL) = (state NOT IN ('resolved', 'abandoned', 'gave_up')));
