-- PostgreSQL's versions of statements whose SQL differs from queries.sql.

-- name: get_flow_for_update
-- One flow, locked against concurrent status changes.
SELECT * FROM dwarf_flows WHERE flow_id = :flow_id AND purge_marked = 0 FOR UPDATE

-- name: claim_due_steps
-- Lease up to :limit due steps in the weighted-fair order of _claim_walk (see queries.sql). SKIP LOCKED
-- lets replicas claim side by side: each pair's head is the :limit oldest due steps no other claimer has
-- locked, so a claimer passes over the steps another one is taking and still finds :limit candidates.
-- The heads stay locked until this statement ends; only the :limit best turns are leased. The CTEs are
-- MATERIALIZED on purpose: inlined, the planner may rescan the SKIP LOCKED part in a nested loop, and
-- every rescan locks further rows. When the window left keys out, the cursor moves on to its last key,
-- unless another claimer holds the cursor's row: then that claimer moves it.
WITH RECURSIVE {_claim_walk},
heads AS MATERIALIZED (
    SELECT h.step_id, w.priority, w.fairness_key, h.fairness_weight
    FROM claim_window AS w CROSS JOIN LATERAL (
        SELECT s.step_id, s.fairness_weight FROM dwarf_steps AS s
        WHERE s.status = 'pending' AND s.priority = w.priority AND s.fairness_key >= w.fairness_key
          AND s.fairness_key <= w.fairness_key AND s.not_before <= {now}
        ORDER BY s.fairness_key, s.step_id LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ) AS h
), ranked AS MATERIALIZED (
    SELECT step_id, priority,
        SUM(-ln(1.0 - random())) OVER fair
            / FIRST_VALUE(CASE WHEN fairness_weight > 0 THEN fairness_weight ELSE 1.0 END) OVER fair AS turn
    FROM heads
    WINDOW fair AS (PARTITION BY priority, fairness_key ORDER BY step_id ROWS UNBOUNDED PRECEDING)
), due AS MATERIALIZED (
    SELECT step_id FROM ranked ORDER BY priority, turn LIMIT :limit
), cursor_row AS MATERIALIZED (
    SELECT c.cursor_id, m.after_key FROM dwarf_claim_cursor AS c, claim_cursor_move AS m
    WHERE c.cursor_id = 1
    FOR UPDATE OF c SKIP LOCKED
), cursor_moved AS (
    UPDATE dwarf_claim_cursor AS c SET after_key = r.after_key FROM cursor_row AS r
    WHERE c.cursor_id = r.cursor_id
)
UPDATE dwarf_steps AS s
SET status = 'running', lease_token = :lease_token,
    lease_expires = {now} + :lease_seconds,
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
    SET status = 'completed', changes = :changes, appends = :appends, carry = :carry, error = '',
        interrupt_payload = '{}',
        parked = 0, successor_id = (SELECT step_id FROM next_step), lease_token = '', lease_expires = 0,
        updated_at = {now}, version = version + 1
    WHERE step_id = :step_id AND lease_token = :lease_token AND status = 'running'
    RETURNING step_id
)
INSERT INTO dwarf_steps (
    step_id, flow_id, step_token, step_depth, task_name, task_url, state, changes, carry, status, attempt,
    time_budget_ms, priority, fairness_key, fairness_weight, predecessor_id, lineage_id, fan_out_ordinal,
    state_base, delta_depth, delta_bytes, snapshot_bytes, lease_token, lease_expires, version, not_before,
    created_at, started_at, updated_at
)
SELECT (SELECT step_id FROM next_step), :flow_id, :step_token, :step_depth, :task_name, :task_url, :state,
    '{}', :next_carry, 'running', 0, :time_budget_ms, :priority, :fairness_key, :fairness_weight,
    finished.step_id, :lineage_id, :fan_out_ordinal, :state_base, :delta_depth, :delta_bytes,
    :snapshot_bytes, :lease_token,
    {now} + :lease_seconds, 1, {now}, {now}, {now}, {now}
FROM finished
RETURNING *

-- name: create_flow
-- A new running flow and its pending entry step in one statement (one round trip, no explicit
-- transaction). The flow's id is drawn first so that a root flow can name itself as root and thread.
WITH new_flow AS (
    SELECT nextval(pg_get_serial_sequence('dwarf_flows', 'flow_id')) AS flow_id
), flow AS (
    INSERT INTO dwarf_flows (
        flow_id, flow_token, workflow_url, workflow_name, graph, baggage, status, parent_flow_id,
        parent_step_id, root_flow_id, thread_id, thread_token, forked_from_step_id, notify_on_stop,
        delete_on_completion, priority, fairness_key, fairness_weight, time_budget_ms, trace_parent,
        retain_for, retain_completed_for, deadline, created_at, started_at, updated_at
    )
    SELECT new_flow.flow_id, :flow_token, :workflow_url, :workflow_name, :graph, :baggage, 'running',
        :parent_flow_id, :parent_step_id,
        CASE WHEN :root_flow_id = 0 THEN new_flow.flow_id ELSE :root_flow_id END,
        CASE WHEN :thread_id = 0 THEN new_flow.flow_id ELSE :thread_id END,
        CASE WHEN :thread_token = '' THEN :flow_token ELSE :thread_token END,
        :forked_from_step_id, :notify_on_stop, :delete_on_completion, :priority, :fairness_key,
        :fairness_weight, :time_budget_ms, :trace_parent,
        CAST(:retain_for AS DOUBLE PRECISION), CAST(:retain_completed_for AS DOUBLE PRECISION),
        {now} + CAST(:deadline_in AS DOUBLE PRECISION), {now}, {now}, {now}
    FROM new_flow
    RETURNING flow_id, created_at
), entry AS (
    INSERT INTO dwarf_steps (
        flow_id, step_token, step_depth, task_name, task_url, state, changes, carry, status, attempt,
        time_budget_ms, priority, fairness_key, fairness_weight, predecessor_id, lineage_id, fan_out_ordinal,
        snapshot_bytes, not_before, created_at, updated_at
    )
    SELECT flow.flow_id, :step_token, 1, :task_name, :task_url, :state, '{}', '{}', 'pending', 0,
        :time_budget_ms, :priority, :fairness_key, :fairness_weight, 0, 0, 0, :snapshot_bytes, {now}, {now},
        {now}
    FROM flow
    RETURNING step_id
)
SELECT flow.flow_id, flow.created_at FROM flow, entry

-- name: create_keyed_flow
-- create_flow for a flow with an idempotency key (010_idempotency.sql): the same statement, except that
-- the flow is not inserted when another flow of the same workflow URL holds the key. Then nothing is
-- inserted and no row comes back; the caller reads the holder with a statement of its own, which sees it
-- (ON CONFLICT waits for a holder whose insert is not committed yet, and this statement's snapshot,
-- taken before that commit, would not).
WITH new_flow AS (
    SELECT nextval(pg_get_serial_sequence('dwarf_flows', 'flow_id')) AS flow_id
), flow AS (
    INSERT INTO dwarf_flows (
        flow_id, flow_token, workflow_url, workflow_name, graph, baggage, status, parent_flow_id,
        parent_step_id, root_flow_id, thread_id, thread_token, forked_from_step_id, notify_on_stop,
        delete_on_completion, priority, fairness_key, fairness_weight, time_budget_ms, trace_parent,
        idempotency_key, retain_for, retain_completed_for, deadline, created_at, started_at, updated_at
    )
    SELECT new_flow.flow_id, :flow_token, :workflow_url, :workflow_name, :graph, :baggage, 'running',
        :parent_flow_id, :parent_step_id,
        CASE WHEN :root_flow_id = 0 THEN new_flow.flow_id ELSE :root_flow_id END,
        CASE WHEN :thread_id = 0 THEN new_flow.flow_id ELSE :thread_id END,
        CASE WHEN :thread_token = '' THEN :flow_token ELSE :thread_token END,
        :forked_from_step_id, :notify_on_stop, :delete_on_completion, :priority, :fairness_key,
        :fairness_weight, :time_budget_ms, :trace_parent, :idempotency_key,
        CAST(:retain_for AS DOUBLE PRECISION), CAST(:retain_completed_for AS DOUBLE PRECISION),
        {now} + CAST(:deadline_in AS DOUBLE PRECISION), {now}, {now}, {now}
    FROM new_flow
    ON CONFLICT (workflow_url, idempotency_key) WHERE idempotency_key <> '' DO NOTHING
    RETURNING flow_id, created_at
), entry AS (
    INSERT INTO dwarf_steps (
        flow_id, step_token, step_depth, task_name, task_url, state, changes, carry, status, attempt,
        time_budget_ms, priority, fairness_key, fairness_weight, predecessor_id, lineage_id, fan_out_ordinal,
        snapshot_bytes, not_before, created_at, updated_at
    )
    SELECT flow.flow_id, :step_token, 1, :task_name, :task_url, :state, '{}', '{}', 'pending', 0,
        :time_budget_ms, :priority, :fairness_key, :fairness_weight, 0, 0, 0, :snapshot_bytes, {now}, {now},
        {now}
    FROM flow
    RETURNING step_id
)
SELECT flow.flow_id, flow.created_at FROM flow, entry

-- name: finish_last_step
-- A root flow's last step completes and the flow with it, in one statement; the flow stops only if this
-- worker still held the step's lease. Answers (finished, stopped).
WITH finished AS (
    UPDATE dwarf_steps
    SET status = 'completed', changes = :changes, appends = :appends, error = '', interrupt_payload = '{}',
        successor_id = 0,
        carry = '{}', arrived = 0, cohort_size = 0, cohort_arrivals = 0, for_each_as = '', join_target = '',
        parked = 0, lease_token = '', lease_expires = 0, updated_at = {now}, version = version + 1
    WHERE step_id = :step_id AND lease_token = :lease_token AND status = 'running'
    RETURNING step_id
), stopped AS (
    UPDATE dwarf_flows
    SET status = 'completed', final_state = :final_state, error = '', interrupt_payload = '{}',
        surfaced_step_id = 0, updated_at = {now}, version = version + 1,
        purge_after = {now} + retain_completed_for
    WHERE flow_id = :flow_id AND status IN ('running', 'interrupted') AND EXISTS (SELECT 1 FROM finished)
    RETURNING flow_id
)
SELECT (SELECT COUNT(*) FROM finished) AS finished, (SELECT COUNT(*) FROM stopped) AS stopped

-- name: insert_branch_steps
-- The pending first steps of a fan-out's branches, in one statement (one round trip however wide the
-- fan-out): :branches is a JSON array of objects (token, task, url, state as JSON text, ordinal); the
-- rest is common to every branch; bytes, when present, is the plain state's length (queries_sqlite.sql).
INSERT INTO dwarf_steps (
    flow_id, step_token, step_depth, task_name, task_url, state, changes, carry, status, attempt,
    time_budget_ms, priority, fairness_key, fairness_weight, predecessor_id, lineage_id, fan_out_ordinal,
    snapshot_bytes, not_before, created_at, updated_at
)
SELECT :flow_id, b.value ->> 'token', :step_depth, b.value ->> 'task', b.value ->> 'url',
    b.value ->> 'state', '{}', '{}', 'pending', 0, :time_budget_ms, :priority, :fairness_key,
    :fairness_weight, :predecessor_id, :lineage_id, (b.value ->> 'ordinal')::integer,
    COALESCE((b.value ->> 'bytes')::bigint, length(b.value ->> 'state')), {now} + :delay, {now}, {now}
FROM json_array_elements(CAST(:branches AS json)) WITH ORDINALITY AS b(value, position)
ORDER BY b.position
RETURNING step_id, fan_out_ordinal

-- name: cohorts_ready
-- Which of the cohorts in :spawn_ids (a JSON array) can be joined now. Asked after the arrivals
-- committed, in a fresh snapshot: of members arriving at once, the last to commit sees every other one.
SELECT step_id FROM dwarf_complete_cohorts
WHERE step_id IN (SELECT json_array_elements_text(CAST(:spawn_ids AS json))::bigint)

-- name: renew_leases
-- See queries.sql; PostgreSQL reads the JSON arrays with its own functions.
UPDATE dwarf_steps SET lease_expires = {now} + :lease_seconds
WHERE step_id IN (SELECT json_array_elements_text(CAST(:step_ids AS json))::bigint)
  AND lease_token IN (SELECT json_array_elements_text(CAST(:lease_tokens AS json)))
  AND status = 'running'
RETURNING step_id

-- name: set_lock_timeout
-- Bound every later lock wait of this transaction (a tree write, once it holds the root flow): in a
-- lock cycle with a step commit it errs (lock_not_available) and is retried, long before the deadlock
-- detector would pick a victim. Transaction-scoped (set_config's is_local).
SELECT set_config('lock_timeout', :lock_timeout, true) AS lock_timeout

-- name: delete_flow_rows
-- Remove the flows of a tree, and the signals kept for it that no step took (013_timed_waits.sql), in one
-- statement.
WITH signals AS (DELETE FROM dwarf_signals WHERE root_flow_id = :root_flow_id)
DELETE FROM dwarf_flows WHERE root_flow_id = :root_flow_id

-- name: _flows_by_deadline
-- dwarf_flows, whose deadline index (013_timed_waits.sql) PostgreSQL's planner picks by its statistics:
-- it holds only the flows with a deadline (see the SQLite version).
dwarf_flows

-- name: _next_timers
-- The earliest deadline of a flow that has not stopped, and the earliest end of a timed wait (a parked
-- step's wake_at), each the first entry of its partial index (013_timed_waits.sql), NULL when none.
(SELECT MIN(deadline) FROM dwarf_flows
 WHERE deadline IS NOT NULL AND status IN ('running', 'interrupted') AND purge_marked = 0) AS next_deadline,
(SELECT MIN(wake_at) FROM dwarf_steps
 WHERE wake_at IS NOT NULL AND status IN ('interrupted', 'created')) AS next_wakeup

-- name: get_flows
-- See queries_sqlite.sql; PostgreSQL reads the JSON array with its own function.
SELECT * FROM dwarf_flows
WHERE flow_id IN (SELECT json_array_elements_text(CAST(:flow_ids AS json))::bigint) AND purge_marked = 0
