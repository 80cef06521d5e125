-- Runs of scenarios and their timelines. Applied with search_path = orchestrator, so these
-- tables (and sqlx's own _sqlx_migrations bookkeeping) live in the `orchestrator` schema and
-- never collide with the shop's tables in the same database.

CREATE TABLE runs (
    id              uuid PRIMARY KEY,
    scenario_id     text NOT NULL,
    -- The scenario as it was when the run started, so history reads right after a file changes.
    scenario        jsonb NOT NULL,
    -- Start parameters, e.g. {"time_scale": 0.1}.
    params          jsonb NOT NULL,
    state           text NOT NULL CHECK (state IN ('setup', 'baseline', 'incident', 'recovering', 'resolved', 'abandoned')),
    started_by      text NOT NULL,
    started_by_role text NOT NULL,
    started_at      timestamptz NOT NULL,
    baseline_at     timestamptz,
    incident_at     timestamptz,
    recovering_at   timestamptz,
    ended_at        timestamptz,
    end_reason      text,
    -- The `completed` message of a resolved run.
    result          jsonb,
    CHECK ((ended_at IS NULL) = (state NOT IN ('resolved', 'abandoned')))
);

-- One active run at a time, whatever the API layer believes.
CREATE UNIQUE INDEX runs_one_active ON runs ((true)) WHERE ended_at IS NULL;
CREATE INDEX runs_by_start ON runs (started_at DESC);

CREATE TABLE run_events (
    run_id  uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq     integer NOT NULL,
    at      timestamptz NOT NULL,
    -- state | milestone | config_change | hint | completed
    kind    text NOT NULL,
    payload jsonb NOT NULL,
    PRIMARY KEY (run_id, seq)
);
