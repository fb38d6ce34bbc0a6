-- SQLite's versions of statements whose SQL differs from queries.sql. (SQLite's write transaction,
-- taken with BEGIN IMMEDIATE, already serializes writers: no row locks are needed.)

-- name: finish_and_continue
-- The hot path of a chain: complete a step (only under its lease) and insert its lone successor leased
-- to the same worker. Three statements: each later one acts only if the one before changed a row, so a
-- lost lease inserts nothing and returns no row.
UPDATE dwarf_steps
SET status = 'completed', changes = :changes, carry = :carry, error = '', interrupt_payload = '{}',
    parked = 0, lease_token = '', lease_expires = 0, updated_at = {now}, version = version + 1
WHERE step_id = :step_id AND lease_token = :lease_token AND status = 'running';
INSERT INTO dwarf_steps (
    flow_id, step_token, step_depth, task_name, task_url, state, changes, carry, status, attempt,
    time_budget_ms, priority, fairness_key, fairness_weight, predecessor_id, lineage_id, fan_out_ordinal,
    lease_token, lease_expires, version, not_before, created_at, started_at, updated_at
)
SELECT :flow_id, :step_token, :step_depth, :task_name, :task_url, :state, '{}', :next_carry, 'running', 0,
    :time_budget_ms, :priority, :fairness_key, :fairness_weight, :step_id, :lineage_id, :fan_out_ordinal,
    :lease_token, {now} + :time_budget_ms / 1000.0 + :lease_margin, 1, {now}, {now}, {now}, {now}
WHERE changes() = 1
RETURNING *;
UPDATE dwarf_steps SET successor_id = last_insert_rowid() WHERE step_id = :step_id AND changes() = 1
