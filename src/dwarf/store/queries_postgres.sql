-- PostgreSQL's versions of statements whose SQL differs from queries.sql.

-- name: get_flow_for_update
-- One flow, locked against concurrent status changes.
SELECT * FROM dwarf_flows WHERE flow_id = :flow_id AND purge_marked = 0 FOR UPDATE

-- name: claim_due_steps
-- Lease up to :limit due steps in the weighted-fair order of the generic query (see queries.sql). SKIP
-- LOCKED lets replicas claim side by side: a step another claimer holds is passed over for the next in
-- turn order. The CTEs are MATERIALIZED on purpose: inlined, the planner may rescan the LIMIT/SKIP LOCKED
-- part in a nested loop, and every rescan locks further rows, so more than :limit steps would be leased.
WITH ranked AS MATERIALIZED (
    SELECT step_id, priority,
        SUM(-ln(1.0 - random())) OVER fair
            / FIRST_VALUE(CASE WHEN fairness_weight > 0 THEN fairness_weight ELSE 1.0 END) OVER fair AS turn
    FROM dwarf_steps
    WHERE status = 'pending' AND not_before <= {now}
    WINDOW fair AS (PARTITION BY priority, fairness_key ORDER BY step_id ROWS UNBOUNDED PRECEDING)
), due AS MATERIALIZED (
    SELECT s.step_id FROM ranked JOIN dwarf_steps AS s ON s.step_id = ranked.step_id
    WHERE s.status = 'pending'
    ORDER BY ranked.priority, ranked.turn
    LIMIT :limit
    FOR UPDATE OF s SKIP LOCKED
)
UPDATE dwarf_steps AS s
SET status = 'running', lease_token = :lease_token,
    lease_expires = {now} + s.time_budget_ms / 1000.0 + :lease_margin,
    started_at = COALESCE(s.started_at, {now}), updated_at = {now}, version = s.version + 1
FROM due
WHERE s.step_id = due.step_id
RETURNING s.*

-- name: finish_and_continue
-- The hot path of a chain in one round trip: complete a step (only under its lease) and insert its lone
-- successor leased to the same worker. The successor's id is drawn first so the finished step can point
-- at it; a lost lease finishes nothing, inserts nothing and returns no row.
WITH next_step AS (
    SELECT nextval(pg_get_serial_sequence('dwarf_steps', 'step_id')) AS step_id
), finished AS (
    UPDATE dwarf_steps
    SET status = 'completed', changes = :changes, carry = :carry, error = '', interrupt_payload = '{}',
        parked = 0, successor_id = (SELECT step_id FROM next_step), lease_token = '', lease_expires = 0,
        updated_at = {now}, version = version + 1
    WHERE step_id = :step_id AND lease_token = :lease_token AND status = 'running'
    RETURNING step_id
)
INSERT INTO dwarf_steps (
    step_id, flow_id, step_token, step_depth, task_name, task_url, state, changes, carry, status, attempt,
    time_budget_ms, priority, fairness_key, fairness_weight, predecessor_id, lineage_id, fan_out_ordinal,
    lease_token, lease_expires, version, not_before, created_at, started_at, updated_at
)
SELECT (SELECT step_id FROM next_step), :flow_id, :step_token, :step_depth, :task_name, :task_url, :state,
    '{}', :next_carry, 'running', 0, :time_budget_ms, :priority, :fairness_key, :fairness_weight,
    finished.step_id, :lineage_id, :fan_out_ordinal, :lease_token,
    {now} + :time_budget_ms / 1000.0 + :lease_margin, 1, {now}, {now}, {now}, {now}
FROM finished
RETURNING *
