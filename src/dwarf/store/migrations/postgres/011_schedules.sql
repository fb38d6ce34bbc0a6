-- Durable schedules (engine.schedule, docs/schedules.md). One row per schedule, named uniquely. Only shard
-- 1's table is used (the table exists on every shard so that every shard has one schema). A schedule ticks
-- at next_tick_ms (integer milliseconds since the epoch: tick times must format alike on every engine,
-- since each flow's idempotency key is built from its schedule's name and tick). An engine that finds a
-- tick due claims the schedule (claim_token, claimed_until on the database clock), creates the tick's
-- flow with that key, then moves next_tick_ms on with a compare-and-set: an engine that dies in between
-- leaves the claim to lapse, and the next one creates the same key again and gets the same flow.
-- Timing: cron (with timezone) or every_ms; options is the JSON of the FlowOptions fields the flows get.
-- The partial index serves the tickers' poll, which asks for the unpaused schedules due soon.
CREATE TABLE dwarf_schedules (
    schedule_id    BIGSERIAL PRIMARY KEY,
    name           TEXT    NOT NULL UNIQUE,
    workflow_url   TEXT    NOT NULL,
    cron           TEXT    NOT NULL DEFAULT '',
    every_ms       BIGINT  NOT NULL DEFAULT 0,
    timezone       TEXT    NOT NULL DEFAULT 'UTC',
    catch_up       TEXT    NOT NULL DEFAULT 'skip',
    state          TEXT    NOT NULL DEFAULT '{}',
    options        TEXT    NOT NULL DEFAULT '{}',
    paused         BIGINT  NOT NULL DEFAULT 0,
    next_tick_ms   BIGINT  NOT NULL,
    claim_token    TEXT    NOT NULL DEFAULT '',
    claimed_until  DOUBLE PRECISION NOT NULL DEFAULT 0,
    last_tick_ms   BIGINT  NOT NULL DEFAULT 0,
    last_flow_key  TEXT    NOT NULL DEFAULT '',
    last_error     TEXT    NOT NULL DEFAULT '',
    created_at     DOUBLE PRECISION NOT NULL,
    updated_at     DOUBLE PRECISION NOT NULL
);
CREATE INDEX idx_dwarf_schedules_due ON dwarf_schedules (next_tick_ms) WHERE paused = 0;
