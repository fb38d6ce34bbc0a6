-- PostgreSQL's versions of statements whose SQL differs from queries.sql.

-- name: get_flow_for_update
-- One flow, locked against concurrent status changes.
SELECT * FROM dwarf_flows WHERE flow_id = :flow_id AND purge_marked = 0 FOR UPDATE

-- name: claim_due_steps
-- Lease up to :limit due steps; SKIP LOCKED lets replicas claim side by side without waiting. The CTE
-- is MATERIALIZED on purpose: as an IN (subquery) the planner may rescan the LIMIT/SKIP LOCKED subquery
-- in a nested loop, and every rescan locks further rows, so more than :limit steps would be leased.
WITH due AS MATERIALIZED (
    SELECT step_id FROM dwarf_steps
    WHERE status = 'pending' AND not_before <= {now}
    ORDER BY priority, step_id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE dwarf_steps AS s
SET status = 'running', lease_token = :lease_token,
    lease_expires = {now} + s.time_budget_ms / 1000.0 + :lease_margin,
    started_at = COALESCE(s.started_at, {now}), updated_at = {now}, version = s.version + 1
FROM due
WHERE s.step_id = due.step_id
RETURNING s.*
