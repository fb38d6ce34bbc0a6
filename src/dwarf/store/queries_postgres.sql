-- PostgreSQL's versions of statements whose SQL differs from queries.sql.

-- name: get_flow_for_update
-- One flow, locked against concurrent status changes.
SELECT * FROM dwarf_flows WHERE flow_id = :flow_id AND purge_marked = 0 FOR UPDATE

-- name: claim_due_steps
-- Lease up to :limit due steps; SKIP LOCKED lets replicas claim side by side without waiting.
UPDATE dwarf_steps
SET status = 'running', lease_token = :lease_token,
    lease_expires = {now} + time_budget_ms / 1000.0 + :lease_margin,
    started_at = COALESCE(started_at, {now}), updated_at = {now}, version = version + 1
WHERE step_id IN (
    SELECT step_id FROM dwarf_steps
    WHERE status = 'pending' AND not_before <= {now}
    ORDER BY priority, step_id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
) AND status = 'pending'
RETURNING *
