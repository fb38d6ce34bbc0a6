-- SQLite's versions of statements whose SQL differs from queries.sql. (SQLite's write transaction,
-- taken with BEGIN IMMEDIATE, already serializes writers: no row locks are needed.)

-- name: claim_due_steps
-- Lease up to :limit due steps in the weighted-fair order of _claim_walk (see queries.sql): each pair of
-- the window offers its head, every head gets its turn, the best :limit turns are leased. The second
-- statement moves the cursor on when the window left keys out. It walks again, after the lease: keys the
-- lease drained have dropped out by then, so the cursor may land a few keys further on than the window
-- ended (those keys come round again on the next turn of the cursor).
UPDATE dwarf_steps
SET status = 'running', lease_token = :lease_token,
    lease_expires = {now} + :lease_seconds,
    started_at = COALESCE(started_at, {now}), updated_at = {now}, version = version + 1
WHERE step_id IN (
    WITH RECURSIVE {_claim_walk},
    heads AS (
        SELECT s.step_id, s.priority, s.fairness_key, s.fairness_weight
        FROM claim_window AS w JOIN dwarf_steps AS s ON s.step_id IN (
            SELECT h.step_id FROM dwarf_steps AS h
            WHERE h.status = 'pending' AND h.priority = w.priority AND h.fairness_key >= w.fairness_key
              AND h.fairness_key <= w.fairness_key AND h.not_before <= {now}
            ORDER BY h.fairness_key, h.step_id LIMIT :limit)
    ),
    ranked AS (
        SELECT step_id, priority,
            SUM(dwarf_random_gap()) OVER fair
                / FIRST_VALUE(CASE WHEN fairness_weight > 0 THEN fairness_weight ELSE 1.0 END) OVER fair
                AS turn
        FROM heads
        WINDOW fair AS (PARTITION BY priority, fairness_key ORDER BY step_id ROWS UNBOUNDED PRECEDING)
    )
    SELECT step_id FROM ranked ORDER BY priority, turn LIMIT :limit
) AND status = 'pending'
RETURNING *;
WITH RECURSIVE {_claim_walk}
UPDATE dwarf_claim_cursor SET after_key = (SELECT after_key FROM claim_cursor_move)
WHERE cursor_id = 1 AND EXISTS (SELECT 1 FROM claim_cursor_move)

-- name: claim_limited_steps
-- claim_due_steps for a database with limits (012_limits.sql): the walk of _limited_claim_walk, whose
-- window pairs offer `take` steps each. A pair's head is its oldest due steps of task URLs with room,
-- cut to take; the heads are ranked as in claim_due_steps, a task URL with a limit keeps as many of its
-- best turns as it has room for, and the best :limit of the rest are leased. A leased step under a limit
-- holds slots (limit_slot). Writers are serialized (BEGIN IMMEDIATE), so the counts the walk reads cannot
-- change before the lease commits; the claim's rate tokens are taken by take_rate_tokens in the same
-- transaction.
UPDATE dwarf_steps
SET status = 'running', lease_token = :lease_token,
    lease_expires = {now} + :lease_seconds,
    started_at = COALESCE(started_at, {now}), updated_at = {now}, version = version + 1,
    limit_slot = {_limit_slot}
WHERE step_id IN (
    WITH RECURSIVE {_limited_claim_walk},
    heads AS (
        SELECT s.step_id, s.priority, s.fairness_key, s.fairness_weight, s.task_url,
            ROW_NUMBER() OVER (PARTITION BY s.priority, s.fairness_key ORDER BY s.step_id) AS place, w.take
        FROM claim_window AS w JOIN dwarf_steps AS s ON s.step_id IN (
            SELECT h.step_id FROM dwarf_steps AS h
            WHERE h.status = 'pending' AND h.priority = w.priority AND h.fairness_key >= w.fairness_key
              AND h.fairness_key <= w.fairness_key AND h.not_before <= {now}
              AND h.task_url NOT IN (SELECT b.limit_key FROM claim_url_room AS b WHERE b.room <= 0)
            ORDER BY h.fairness_key, h.step_id LIMIT :limit)
    ),
    ranked AS (
        SELECT step_id, priority, task_url,
            SUM(dwarf_random_gap()) OVER fair
                / FIRST_VALUE(CASE WHEN fairness_weight > 0 THEN fairness_weight ELSE 1.0 END) OVER fair
                AS turn
        FROM heads WHERE place <= take
        WINDOW fair AS (PARTITION BY priority, fairness_key ORDER BY step_id ROWS UNBOUNDED PRECEDING)
    ),
    capped AS (
        SELECT step_id, priority, turn, task_url,
            ROW_NUMBER() OVER (PARTITION BY task_url ORDER BY priority, turn) AS url_place
        FROM ranked
    )
    SELECT c.step_id FROM capped AS c
    WHERE c.url_place <= COALESCE((SELECT u.room FROM claim_url_room AS u WHERE u.limit_key = c.task_url), :limit)
    ORDER BY c.priority, c.turn LIMIT :limit
) AND status = 'pending'
RETURNING *;
WITH RECURSIVE {_limited_claim_walk}
UPDATE dwarf_claim_cursor SET after_key = (SELECT after_key FROM claim_cursor_move)
WHERE cursor_id = 1 AND EXISTS (SELECT 1 FROM claim_cursor_move)

-- name: take_rate_tokens
-- The rate tokens a claim under limits used (012_limits.sql): :used is a JSON array of [scope, key,
-- steps started] for the keys of the steps it leased. Each limit with a rate is refilled up to now and
-- charged; the answer is what is left, for the claimer to wake when the next token is due.
UPDATE dwarf_limits
SET tokens = MIN(burst, tokens + ({now} - refilled_at) * rate) - json_extract(t.value, '$[2]'),
    refilled_at = {now}
FROM json_each(:used) AS t
WHERE dwarf_limits.scope = json_extract(t.value, '$[0]')
  AND dwarf_limits.limit_key = json_extract(t.value, '$[1]') AND dwarf_limits.rate > 0
RETURNING scope, limit_key, tokens, rate

-- name: lock_limits
-- Serializes the claims under limits and the changes of limits: SQLite's writers already are. Answers
-- the limits' count and version (see limit_state).
SELECT limit_count, limit_version FROM dwarf_claim_cursor WHERE cursor_id = 1

-- name: _least
MIN

-- name: _limit_room
-- How many more steps a limit lets start now (l is its dwarf_limits row; :limit stands for no bound):
-- its concurrency less its running steps that hold slots, and the whole rate tokens in its bucket once
-- refilled up to now. The slot counts read idx_dwarf_steps_key_slots or _url_slots, whose rows are the
-- running steps holding slots (no more than the limit, which claims keep).
MAX(0, MIN(
    CASE WHEN l.concurrency <= 0 THEN :limit
        WHEN l.scope = 'task_url' THEN l.concurrency - (
            SELECT COUNT(*) FROM dwarf_steps AS r
            WHERE r.status = 'running' AND r.limit_slot = 1 AND r.task_url = l.limit_key)
        ELSE l.concurrency - (
            SELECT COUNT(*) FROM dwarf_steps AS r
            WHERE r.status = 'running' AND r.limit_slot = 1 AND r.fairness_key = l.limit_key) END,
    CASE WHEN l.rate <= 0 THEN :limit
        ELSE CAST(MIN(l.burst, l.tokens + ({now} - l.refilled_at) * l.rate) + 0.000001 AS INTEGER) END))

-- name: finish_and_continue
-- The hot path of a chain: complete a step (only under its lease) and insert its lone successor leased
-- to the same worker. Three statements: each later one acts only if the one before changed a row, so a
-- lost lease inserts nothing and returns no row.
UPDATE dwarf_steps
SET status = 'completed', changes = :changes, appends = :appends, carry = :carry, error = '',
    interrupt_payload = '{}',
    parked = 0, lease_token = '', lease_expires = 0, updated_at = {now}, version = version + 1
WHERE step_id = :step_id AND lease_token = :lease_token AND status = 'running';
INSERT INTO dwarf_steps (
    flow_id, step_token, step_depth, task_name, task_url, state, changes, carry, status, attempt,
    time_budget_ms, priority, fairness_key, fairness_weight, predecessor_id, lineage_id, fan_out_ordinal,
    state_base, delta_depth, delta_bytes, snapshot_bytes, lease_token, lease_expires, version, not_before,
    created_at, started_at, updated_at
)
SELECT :flow_id, :step_token, :step_depth, :task_name, :task_url, :state, '{}', :next_carry, 'running', 0,
    :time_budget_ms, :priority, :fairness_key, :fairness_weight, :step_id, :lineage_id, :fan_out_ordinal,
    :state_base, :delta_depth, :delta_bytes, :snapshot_bytes, :lease_token, {now} + :lease_seconds, 1, {now},
    {now}, {now}, {now}
WHERE changes() = 1
RETURNING *;
UPDATE dwarf_steps SET successor_id = last_insert_rowid() WHERE step_id = :step_id AND changes() = 1

-- name: create_flow
-- A new running flow and its pending entry step in one query. The flow's id is the connection's last
-- inserted row id until the step is inserted, which sets root and thread to the flow itself when the
-- flow starts them; the answer is the first statement's row.
INSERT INTO dwarf_flows (
    flow_token, workflow_url, workflow_name, graph, baggage, status, parent_flow_id, parent_step_id,
    root_flow_id, thread_id, thread_token, forked_from_step_id, notify_on_stop, delete_on_completion,
    priority, fairness_key, fairness_weight, time_budget_ms, trace_parent, retain_for, retain_completed_for,
    deadline, created_at, started_at, updated_at
) VALUES (
    :flow_token, :workflow_url, :workflow_name, :graph, :baggage, 'running', :parent_flow_id, :parent_step_id,
    :root_flow_id, :thread_id, :thread_token, :forked_from_step_id, :notify_on_stop, :delete_on_completion,
    :priority, :fairness_key, :fairness_weight, :time_budget_ms, :trace_parent, :retain_for,
    :retain_completed_for, {now} + :deadline_in, {now}, {now}, {now}
)
RETURNING flow_id, created_at;
UPDATE dwarf_flows
SET root_flow_id = CASE WHEN root_flow_id = 0 THEN flow_id ELSE root_flow_id END,
    thread_id = CASE WHEN thread_id = 0 THEN flow_id ELSE thread_id END,
    thread_token = CASE WHEN thread_token = '' THEN flow_token ELSE thread_token END
WHERE flow_id = last_insert_rowid();
INSERT INTO dwarf_steps (
    flow_id, step_token, step_depth, task_name, task_url, state, changes, carry, status, attempt,
    time_budget_ms, priority, fairness_key, fairness_weight, predecessor_id, lineage_id, fan_out_ordinal,
    snapshot_bytes, not_before, created_at, updated_at
) VALUES (
    last_insert_rowid(), :step_token, 1, :task_name, :task_url, :state, '{}', '{}', 'pending', 0,
    :time_budget_ms, :priority, :fairness_key, :fairness_weight, 0, 0, 0, :snapshot_bytes, {now}, {now},
    {now}
)

-- name: create_keyed_flow
-- create_flow for a flow with an idempotency key (010_idempotency.sql): nothing is inserted, and no row
-- comes back, when another flow of the same workflow URL holds the key. last_insert_rowid() then still
-- names whatever this connection inserted before, so the later statements also match the new flow's
-- token, which only a flow inserted by the first statement has.
INSERT INTO dwarf_flows (
    flow_token, workflow_url, workflow_name, graph, baggage, status, parent_flow_id, parent_step_id,
    root_flow_id, thread_id, thread_token, forked_from_step_id, notify_on_stop, delete_on_completion,
    priority, fairness_key, fairness_weight, time_budget_ms, trace_parent, idempotency_key, retain_for,
    retain_completed_for, deadline, created_at, started_at, updated_at
) VALUES (
    :flow_token, :workflow_url, :workflow_name, :graph, :baggage, 'running', :parent_flow_id, :parent_step_id,
    :root_flow_id, :thread_id, :thread_token, :forked_from_step_id, :notify_on_stop, :delete_on_completion,
    :priority, :fairness_key, :fairness_weight, :time_budget_ms, :trace_parent, :idempotency_key,
    :retain_for, :retain_completed_for, {now} + :deadline_in, {now}, {now}, {now}
)
ON CONFLICT (workflow_url, idempotency_key) WHERE idempotency_key <> '' DO NOTHING
RETURNING flow_id, created_at;
UPDATE dwarf_flows
SET root_flow_id = CASE WHEN root_flow_id = 0 THEN flow_id ELSE root_flow_id END,
    thread_id = CASE WHEN thread_id = 0 THEN flow_id ELSE thread_id END,
    thread_token = CASE WHEN thread_token = '' THEN flow_token ELSE thread_token END
WHERE flow_id = last_insert_rowid() AND flow_token = :flow_token;
INSERT INTO dwarf_steps (
    flow_id, step_token, step_depth, task_name, task_url, state, changes, carry, status, attempt,
    time_budget_ms, priority, fairness_key, fairness_weight, predecessor_id, lineage_id, fan_out_ordinal,
    snapshot_bytes, not_before, created_at, updated_at
)
SELECT flow_id, :step_token, 1, :task_name, :task_url, :state, '{}', '{}', 'pending', 0,
    :time_budget_ms, :priority, :fairness_key, :fairness_weight, 0, 0, 0, :snapshot_bytes, {now}, {now},
    {now}
FROM dwarf_flows WHERE flow_id = last_insert_rowid() AND flow_token = :flow_token

-- name: finish_last_step
-- A root flow's last step completes and the flow with it, in one query. The flow stops only if this
-- worker still held the step's lease. Answers (finished, stopped): the second statement's row when the
-- flow stopped, else the third's, which tells from the step's version whether this worker finished it.
UPDATE dwarf_steps
SET status = 'completed', changes = :changes, appends = :appends, error = '', interrupt_payload = '{}',
    successor_id = 0,
    carry = '{}', arrived = 0, cohort_size = 0, cohort_arrivals = 0, for_each_as = '', join_target = '',
    parked = 0, lease_token = '', lease_expires = 0, updated_at = {now}, version = version + 1
WHERE step_id = :step_id AND lease_token = :lease_token AND status = 'running';
UPDATE dwarf_flows
SET status = 'completed', final_state = :final_state, error = '', interrupt_payload = '{}',
    surfaced_step_id = 0, updated_at = {now}, version = version + 1,
    purge_after = {now} + retain_completed_for
WHERE flow_id = :flow_id AND status IN ('running', 'interrupted') AND changes() = 1
RETURNING 1 AS finished, 1 AS stopped;
SELECT COUNT(*) AS finished, 0 AS stopped FROM dwarf_steps
WHERE step_id = :step_id AND status = 'completed' AND version = :version + 1

-- name: insert_branch_steps
-- The pending first steps of a fan-out's branches, in one statement: :branches is a JSON array of
-- objects (token, task, url, state as JSON text, ordinal); the rest is common to every branch. A branch
-- whose state the codec layer encoded (store/encoded.py) brings the plain state's length as bytes.
INSERT INTO dwarf_steps (
    flow_id, step_token, step_depth, task_name, task_url, state, changes, carry, status, attempt,
    time_budget_ms, priority, fairness_key, fairness_weight, predecessor_id, lineage_id, fan_out_ordinal,
    snapshot_bytes, not_before, created_at, updated_at
)
SELECT :flow_id, json_extract(b.value, '$.token'), :step_depth, json_extract(b.value, '$.task'),
    json_extract(b.value, '$.url'), json_extract(b.value, '$.state'), '{}', '{}', 'pending', 0,
    :time_budget_ms, :priority, :fairness_key, :fairness_weight, :predecessor_id, :lineage_id,
    json_extract(b.value, '$.ordinal'),
    COALESCE(json_extract(b.value, '$.bytes'), length(json_extract(b.value, '$.state'))), {now} + :delay, {now},
    {now}
FROM json_each(:branches) AS b
ORDER BY b.key
RETURNING step_id, fan_out_ordinal

-- name: cohorts_ready
-- Which of the cohorts in :spawn_ids (a JSON array) can be joined now. Asked after the arrivals
-- committed, in a fresh snapshot: of members arriving at once, the last to commit sees every other one.
SELECT step_id FROM dwarf_complete_cohorts WHERE step_id IN (SELECT value FROM json_each(:spawn_ids))

-- name: set_lock_timeout
-- Nothing to bound: SQLite has no row locks (its writers are serialized). Answers the value it was given.
SELECT :lock_timeout AS lock_timeout

-- name: delete_flow_rows
-- Remove the flows of a tree, and the signals kept for it that no step took (013_timed_waits.sql).
DELETE FROM dwarf_signals WHERE root_flow_id = :root_flow_id;
DELETE FROM dwarf_flows WHERE root_flow_id = :root_flow_id

-- name: _flows_by_deadline
-- dwarf_flows read through the deadline index (013_timed_waits.sql). Without statistics SQLite prefers
-- idx_dwarf_flows_status for the status test, which reads every running flow to find the few with a
-- deadline; the partial index holds only those.
dwarf_flows INDEXED BY idx_dwarf_flows_deadline

-- name: _next_timers
-- The earliest deadline of a flow that has not stopped, and the earliest end of a timed wait (a parked
-- step's wake_at), each the first entry of its partial index (013_timed_waits.sql), NULL when none. The
-- deadlines are read through their index by name (see _flows_by_deadline).
(SELECT MIN(deadline) FROM dwarf_flows INDEXED BY idx_dwarf_flows_deadline
 WHERE deadline IS NOT NULL AND status IN ('running', 'interrupted') AND purge_marked = 0) AS next_deadline,
(SELECT MIN(wake_at) FROM dwarf_steps
 WHERE wake_at IS NOT NULL AND status IN ('interrupted', 'created')) AS next_wakeup

-- name: get_flows
-- The flows of :flow_ids (a JSON array), as get_flow reads one: a claim caches its steps' flows at once.
SELECT * FROM dwarf_flows WHERE flow_id IN (SELECT value FROM json_each(:flow_ids)) AND purge_marked = 0
