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

-- name: claim_limited_steps
-- claim_due_steps for a database with limits (012_limits.sql): the walk of _limited_claim_walk, whose
-- window pairs offer `take` steps each. A pair's head is its `take` oldest due steps of task URLs with
-- room; the heads are ranked as in claim_due_steps, a task URL with a limit keeps as many of its best
-- turns as it has room for, and the best :limit of the rest are leased. A leased step under a limit holds
-- slots (limit_slot). The claim runs after lock_limits in its transaction: the counts it reads (a
-- snapshot taken once the lock is held) cannot change before it commits but by steps ending, which only
-- frees room. Its rate tokens are taken by take_rate_tokens in the same transaction.
WITH RECURSIVE {_limited_claim_walk},
heads AS MATERIALIZED (
    SELECT h.step_id, w.priority, w.fairness_key, h.fairness_weight, h.task_url
    FROM claim_window AS w CROSS JOIN LATERAL (
        SELECT s.step_id, s.fairness_weight, s.task_url FROM dwarf_steps AS s
        WHERE s.status = 'pending' AND s.priority = w.priority AND s.fairness_key >= w.fairness_key
          AND s.fairness_key <= w.fairness_key AND s.not_before <= {now}
          AND s.task_url NOT IN (SELECT b.limit_key FROM claim_url_room AS b WHERE b.room <= 0)
        ORDER BY s.fairness_key, s.step_id LIMIT w.take
        FOR UPDATE SKIP LOCKED
    ) AS h
), ranked AS MATERIALIZED (
    SELECT step_id, priority, task_url,
        SUM(-ln(1.0 - random())) OVER fair
            / FIRST_VALUE(CASE WHEN fairness_weight > 0 THEN fairness_weight ELSE 1.0 END) OVER fair AS turn
    FROM heads
    WINDOW fair AS (PARTITION BY priority, fairness_key ORDER BY step_id ROWS UNBOUNDED PRECEDING)
), capped AS MATERIALIZED (
    SELECT step_id, priority, turn, task_url,
        ROW_NUMBER() OVER (PARTITION BY task_url ORDER BY priority, turn) AS url_place
    FROM ranked
), due AS MATERIALIZED (
    SELECT c.step_id FROM capped AS c
    WHERE c.url_place <= COALESCE((SELECT u.room FROM claim_url_room AS u WHERE u.limit_key = c.task_url), :limit)
    ORDER BY c.priority, c.turn LIMIT :limit
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
    started_at = COALESCE(s.started_at, {now}), updated_at = {now}, version = s.version + 1,
    limit_slot = {_limit_slot}
FROM due
WHERE s.step_id = due.step_id
RETURNING s.*

-- name: take_rate_tokens
-- The rate tokens a claim under limits used (012_limits.sql): :used is a JSON array of [scope, key,
-- steps started] for the keys of the steps it leased. Each limit with a rate is refilled up to now and
-- charged; the answer is what is left, for the claimer to wake when the next token is due.
UPDATE dwarf_limits AS l
SET tokens = LEAST(l.burst, l.tokens + ({now} - l.refilled_at) * l.rate) - t.used, refilled_at = {now}
FROM (
    SELECT u.value ->> 0 AS scope, u.value ->> 1 AS limit_key, (u.value ->> 2)::bigint AS used
    FROM json_array_elements(CAST(:used AS json)) AS u(value)
) AS t
WHERE l.scope = t.scope AND l.limit_key = t.limit_key AND l.rate > 0
RETURNING l.scope, l.limit_key, l.tokens, l.rate

-- name: lock_limits
-- Serializes the claims under limits, and the changes of limits, of every replica: the first statement
-- of their transactions, so that the next one reads what the previous holder committed. A transaction
-- lock (released at commit); the constant (0x64776c696d74, "dwlimt") must never change once deployed.
-- Answers the limits' count and version (see limit_state) as of before the lock: a hint, one claim late
-- at worst.
SELECT c.limit_count, c.limit_version
FROM dwarf_claim_cursor AS c, (SELECT pg_advisory_xact_lock(110464082734452)) AS lock
WHERE c.cursor_id = 1

-- name: _least
LEAST

-- name: _limit_room
-- How many more steps a limit lets start now (l is its dwarf_limits row; :limit stands for no bound):
-- its concurrency less its running steps that hold slots, and the whole rate tokens in its bucket once
-- refilled up to now. The slot counts read idx_dwarf_steps_key_slots or _url_slots, whose rows are the
-- running steps holding slots (no more than the limit, which claims keep).
CAST(GREATEST(0, LEAST(
    CASE WHEN l.concurrency <= 0 THEN CAST(:limit AS BIGINT)
        WHEN l.scope = 'task_url' THEN l.concurrency - (
            SELECT COUNT(*) FROM dwarf_steps AS r
            WHERE r.status = 'running' AND r.limit_slot = 1 AND r.task_url = l.limit_key)
        ELSE l.concurrency - (
            SELECT COUNT(*) FROM dwarf_steps AS r
            WHERE r.status = 'running' AND r.limit_slot = 1 AND r.fairness_key = l.limit_key) END,
    CASE WHEN l.rate <= 0 THEN CAST(:limit AS DOUBLE PRECISION)
        ELSE FLOOR(LEAST(l.burst, l.tokens + ({now} - l.refilled_at) * l.rate) + 0.000001) END)) AS BIGINT)

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
