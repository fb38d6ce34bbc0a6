-- Concurrency and rate limits per fairness key or task URL (docs/limits.md). A row of dwarf_limits holds
-- one key's limit: at most `concurrency` of its steps running at once (0: no such limit), at most `rate`
-- step starts per second with bursts of up to `burst` (0: no such limit). `tokens` and `refilled_at` are
-- the rate's token bucket, in the database clock: a claim takes a token per step it starts, and the
-- bucket refills at `rate` tokens per second up to `burst`. Every claim of this database reads the limits
-- in its own transaction, so they hold across every replica.
CREATE TABLE dwarf_limits (
    scope       TEXT    NOT NULL,
    limit_key   TEXT    NOT NULL,
    concurrency INTEGER NOT NULL DEFAULT 0,
    rate        DOUBLE PRECISION NOT NULL DEFAULT 0,
    burst       DOUBLE PRECISION NOT NULL DEFAULT 0,
    tokens      DOUBLE PRECISION NOT NULL DEFAULT 0,
    refilled_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    created_at  DOUBLE PRECISION NOT NULL,
    updated_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (scope, limit_key)
);
-- How many limits exist, and a number that changes with every change to them. The claim already reads
-- this row (its cursor): a claim made for a database without limits claims nothing once one exists, so
-- an engine that has not heard of a new limit yet cannot start steps past it; it learns of it from its
-- next idle poll (next_wake_time), the peer signal or its next limited claim.
ALTER TABLE dwarf_claim_cursor ADD COLUMN limit_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE dwarf_claim_cursor ADD COLUMN limit_version INTEGER NOT NULL DEFAULT 0;
-- 1 on a step that a claim under limits leased while a limit applied to its fairness key or task URL:
-- while it runs it holds a slot of those keys' concurrency limits. The two partial indexes count the
-- slots of a key; a step leaves them when it stops running (completes, fails, retries, is cancelled, or
-- its lease lapses and it is queued again), so no count has to be given back and none leaks when a
-- process dies. Steps claimed without limits keep 0: the indexes cost them nothing.
ALTER TABLE dwarf_steps ADD COLUMN limit_slot INTEGER NOT NULL DEFAULT 0;
CREATE INDEX idx_dwarf_steps_key_slots ON dwarf_steps (fairness_key)
    WHERE status = 'running' AND limit_slot = 1;
CREATE INDEX idx_dwarf_steps_url_slots ON dwarf_steps (task_url)
    WHERE status = 'running' AND limit_slot = 1;
