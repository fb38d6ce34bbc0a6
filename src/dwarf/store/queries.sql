-- Every statement the engine runs, by name. Parameters are :name; {now} is the database clock in epoch
-- seconds. A dialect file (queries_<dialect>.sql) may redefine a statement where the SQL differs.

-- name: ping
-- Health check for shard_info.
SELECT 1 AS ok

-- name: count_rows
-- Sizes for shard_info.
SELECT (SELECT COUNT(*) FROM dwarf_flows) AS flows, (SELECT COUNT(*) FROM dwarf_steps) AS steps

-- name: insert_flow
-- A new flow; root_flow_id and thread_id are fixed up by set_flow_lineage once the id is known.
INSERT INTO dwarf_flows (
    flow_token, workflow_url, workflow_name, graph, baggage, status, parent_flow_id, parent_step_id,
    root_flow_id, thread_id, thread_token, forked_from_step_id, notify_on_stop, delete_on_completion,
    priority, fairness_key, fairness_weight, time_budget_ms, trace_parent, retain_for, retain_completed_for,
    created_at, started_at, updated_at
) VALUES (
    :flow_token, :workflow_url, :workflow_name, :graph, :baggage, 'running', :parent_flow_id, :parent_step_id,
    :root_flow_id, :thread_id, :thread_token, :forked_from_step_id, :notify_on_stop, :delete_on_completion,
    :priority, :fairness_key, :fairness_weight, :time_budget_ms, :trace_parent, :retain_for,
    :retain_completed_for, {now}, {now}, {now}
)
RETURNING flow_id, created_at

-- name: set_flow_lineage
-- Point a root flow at itself as its root and, when it starts a thread, as its thread.
UPDATE dwarf_flows
SET root_flow_id = CASE WHEN root_flow_id = 0 THEN flow_id ELSE root_flow_id END,
    thread_id = CASE WHEN thread_id = 0 THEN flow_id ELSE thread_id END,
    thread_token = CASE WHEN thread_token = '' THEN flow_token ELSE thread_token END
WHERE flow_id = :flow_id

-- name: insert_step
-- A step waiting to be claimed (or, with status interrupted/created, parked). Its input state is whole, or
-- '' with state_base naming the step whose output it is (see 008_state_deltas.sql).
INSERT INTO dwarf_steps (
    flow_id, step_token, step_depth, task_name, task_url, state, changes, carry, status, attempt,
    time_budget_ms, priority, fairness_key, fairness_weight, predecessor_id, lineage_id, fan_out_ordinal,
    state_base, delta_depth, delta_bytes, snapshot_bytes, not_before, created_at, updated_at
) VALUES (
    :flow_id, :step_token, :step_depth, :task_name, :task_url, :state, :changes, :carry, :status, :attempt,
    :time_budget_ms, :priority, :fairness_key, :fairness_weight, :predecessor_id, :lineage_id,
    :fan_out_ordinal, :state_base, :delta_depth, :delta_bytes, :snapshot_bytes, {now} + :delay, {now}, {now}
)
RETURNING step_id

-- name: get_flow
-- Everything about one flow.
SELECT * FROM dwarf_flows WHERE flow_id = :flow_id AND purge_marked = 0

-- name: get_flow_by_key
-- One flow by its key's id and token. The token is part of the lookup so that a wrong token on an existing
-- id takes the same path as an unknown id: one query, no row (tokens are URL-safe ASCII: = is exact).
SELECT * FROM dwarf_flows WHERE flow_id = :flow_id AND flow_token = :flow_token AND purge_marked = 0

-- name: flow_holding_idempotency_key
-- The flow that holds an idempotency key for a workflow URL (010_idempotency.sql), purged or not. The
-- "<> ''" repeats the unique index's predicate, without which no plan made before the key is bound
-- could use that partial index.
SELECT flow_id, flow_token, status, purge_marked FROM dwarf_flows
WHERE workflow_url = :workflow_url AND idempotency_key = :idempotency_key AND idempotency_key <> ''

-- name: release_idempotency_key
-- A flow gives up its idempotency key so that a new flow can take it: only a purged flow, or (with
-- :when_ended = 1, the "start_new_if_ended" policy) one that has ended. The key is kept, outside the
-- unique index, in released_idempotency_key. A racing create that released it first leaves nothing to
-- match (PostgreSQL rechecks the WHERE after waiting for that create's row lock): 0 rows.
UPDATE dwarf_flows
SET released_idempotency_key = idempotency_key, idempotency_key = ''
WHERE flow_id = :flow_id AND idempotency_key = :idempotency_key AND idempotency_key <> ''
  AND (purge_marked = 1 OR (:when_ended = 1 AND status IN ('completed', 'failed', 'cancelled')))

-- name: get_flow_for_update
-- One flow, locked against concurrent status changes (SQLite's write transaction already serializes).
SELECT * FROM dwarf_flows WHERE flow_id = :flow_id AND purge_marked = 0

-- name: get_step
-- Everything about one step.
SELECT * FROM dwarf_steps WHERE step_id = :step_id

-- name: latest_step
-- The newest step of a flow: its state plus changes is the flow's current state.
SELECT * FROM dwarf_steps WHERE flow_id = :flow_id ORDER BY step_id DESC LIMIT 1

-- name: flow_steps
-- History: the steps of one flow in depth order.
SELECT * FROM dwarf_steps WHERE flow_id = :flow_id ORDER BY step_depth, step_id

-- name: child_flows_of_flow
-- Child flows started by steps of a flow (sub_history).
SELECT * FROM dwarf_flows WHERE parent_flow_id = :flow_id AND purge_marked = 0

-- name: _claim_walk
-- The candidates of a claim (claim_due_steps), found by index seeks so that a claim's work does not grow
-- with the backlog. The order to serve: strict priority bands (lower number first); inside a band,
-- weighted-fair turns across fairness keys; oldest (lowest step_id) first inside a key. A key's j-th
-- oldest due step gets the turn (sum of j random exponential gaps) / weight: the arrival times of a
-- Poisson process whose rate is the key's weight. Merging the keys' processes picks the next key with
-- probability weight / total weight at every slot, whatever the backlogs, and a key's own steps keep
-- their order because its sums only grow. The key's weight is that of its oldest due step, so a flow
-- cannot promote its key by a larger weight.
--
-- A claim of :limit steps takes at most :limit steps of one key, so each key's :limit oldest due steps
-- (its head) are all the candidates it needs: ranking the heads picks what ranking the whole backlog
-- would. claim_walk visits the (band, key) pairs that have due steps, best band first, one index seek
-- per pair, and counts each pair's head; got is the candidates of the rows before. A row whose key is
-- NULL ends a band (the first row ends the band -1, below every priority); the walk enters the next band
-- only while it has fewer than :limit candidates, since no step of a worse band could be picked
-- otherwise. Inside a band, keys are visited in key order from the first key after claim_pivot, wrapping
-- round to the smallest.
--
-- The window (claim_window) is bounded: about 32 keys while fewer than 256 candidates are found, more
-- only while there are fewer than :limit. The ranking above is exact among the window's keys; when the
-- window left keys out, claim_cursor_move is its last key, which the claim stores in dwarf_claim_cursor
-- as the next claim's pivot, so the window moves on and every key comes round. Past the window's size
-- (more than 32 keys with due work in a band, or fewer when a large claim meets deep keys: 256 / :limit
-- of them) weights hold inside each window and the windows take turns. Steps that are pending but not
-- due yet (sleeping, backing off) are passed one index entry at a time: very many of them ahead of the
-- due ones in a band or key still cost time.
--
-- A head is read as the range fairness_key >= k AND fairness_key <= k, in key order, not as an equality:
-- with an equality PostgreSQL may read it through the primary key in step_id order instead, past every
-- step claimed since the last vacuum (statistics taken right after a burst of creates make it choose
-- to); only the due index gives the key order without sorting the whole key.
--
-- This walk is for a database without limits: it stops at its first row while limits exist (see
-- _claim_pivot), at no cost but a column of the row it reads anyway. _limited_claim_walk is the other.
{_claim_pivot},
claim_walk(n, priority, fairness_key, got) AS (
    SELECT 0, CAST(-1 AS BIGINT), CAST(NULL AS TEXT), CAST(0 AS BIGINT)
    UNION ALL
    SELECT w.n + 1,
{_claim_walk_next},
        w.got + CASE WHEN w.fairness_key IS NULL THEN 0 ELSE (
            SELECT COUNT(*) FROM (
                SELECT 1 FROM dwarf_steps s
                WHERE s.status = 'pending' AND s.priority = w.priority AND s.fairness_key >= w.fairness_key
                  AND s.fairness_key <= w.fairness_key AND s.not_before <= {now}
                ORDER BY s.fairness_key
                LIMIT :limit) AS head) END
    FROM claim_walk AS w, claim_pivot
    WHERE w.priority IS NOT NULL AND claim_pivot.limit_count = 0
      AND (w.got < :limit OR (w.fairness_key IS NOT NULL AND w.n <= 32 AND w.got < 256))
),
claim_window(priority, fairness_key) AS (
    SELECT priority, fairness_key FROM claim_walk
    WHERE fairness_key IS NOT NULL AND (got < :limit OR (n <= 32 AND got < 256))
),
claim_cursor_move(after_key) AS (
    SELECT last.fairness_key FROM claim_walk AS beyond JOIN claim_walk AS last ON last.n = beyond.n - 1
    WHERE beyond.fairness_key IS NOT NULL
      AND NOT (beyond.got < :limit OR (beyond.n <= 32 AND beyond.got < 256))
)

-- name: _claim_pivot
-- Where a claim's walk starts in each band's key order (see _claim_walk), and how many limits exist
-- (012_limits.sql): one read of the claim's control row. A claim that expects no limits claims nothing
-- while there are some (it stops its walk at once); the claim under limits (_limited_claim_walk) does.
claim_pivot(after_key, limit_count) AS MATERIALIZED (
    SELECT COALESCE(MAX(after_key), ''), COALESCE(MAX(limit_count), 0) FROM dwarf_claim_cursor
    WHERE cursor_id = 1
)

-- name: _claim_walk_next
-- The (priority, fairness_key) of the walk's next pair after pair w (see _claim_walk): the next key of
-- w's band in key order from the pivot on, wrapping round, or NULL when the band has no more keys; after
-- a NULL, the first key of the next band with due steps.
        CASE WHEN w.fairness_key IS NOT NULL THEN w.priority ELSE (
            SELECT s.priority FROM dwarf_steps s
            WHERE s.status = 'pending' AND s.priority > w.priority AND s.not_before <= {now}
            ORDER BY s.priority LIMIT 1) END,
        CASE WHEN w.fairness_key IS NULL THEN (
            SELECT COALESCE(
                (SELECT s.fairness_key FROM dwarf_steps s
                 WHERE s.status = 'pending' AND s.priority = band.priority
                   AND s.fairness_key > claim_pivot.after_key AND s.not_before <= {now}
                 ORDER BY s.fairness_key LIMIT 1),
                (SELECT s.fairness_key FROM dwarf_steps s
                 WHERE s.status = 'pending' AND s.priority = band.priority AND s.not_before <= {now}
                 ORDER BY s.fairness_key LIMIT 1))
            FROM (
                SELECT s.priority FROM dwarf_steps s
                WHERE s.status = 'pending' AND s.priority > w.priority AND s.not_before <= {now}
                ORDER BY s.priority LIMIT 1) AS band)
        WHEN w.fairness_key > claim_pivot.after_key THEN COALESCE(
            (SELECT s.fairness_key FROM dwarf_steps s
             WHERE s.status = 'pending' AND s.priority = w.priority AND s.fairness_key > w.fairness_key
               AND s.not_before <= {now}
             ORDER BY s.fairness_key LIMIT 1),
            (SELECT s.fairness_key FROM dwarf_steps s
             WHERE s.status = 'pending' AND s.priority = w.priority
               AND s.fairness_key <= claim_pivot.after_key AND s.not_before <= {now}
             ORDER BY s.fairness_key LIMIT 1))
        ELSE (
            SELECT s.fairness_key FROM dwarf_steps s
            WHERE s.status = 'pending' AND s.priority = w.priority AND s.fairness_key > w.fairness_key
              AND s.fairness_key <= claim_pivot.after_key AND s.not_before <= {now}
            ORDER BY s.fairness_key LIMIT 1) END

-- name: _limited_claim_walk
-- _claim_walk for a database with limits (012_limits.sql, docs/limits.md): the same walk over (band, key)
-- pairs, in which a pair offers only as many steps as its fairness key's limit has room for (a key at
-- its limit offers none, so the walk goes on to other keys and bands instead of stopping behind it), and
-- steps of a task URL without room are passed over. A pair's take is its share of got (the next row's
-- got minus its own). Past 128 pairs the walk stops (most of them may be keys at their limit) and the
-- cursor moves on to its last key, so that every key still comes round.
--
-- claim_url_room is the room of every task URL limit (few: one per limited task): a URL without room is
-- passed over in the heads; one with some keeps that many of its best turns (see the claims).
{_claim_pivot},
claim_url_room(limit_key, room) AS (
    SELECT l.limit_key, {_limit_room} FROM dwarf_limits AS l WHERE l.scope = 'task_url'
),
claim_walk(n, priority, fairness_key, got) AS (
    SELECT 0, CAST(-1 AS BIGINT), CAST(NULL AS TEXT), CAST(0 AS BIGINT)
    UNION ALL
    SELECT w.n + 1,
{_claim_walk_next},
        w.got + CASE WHEN w.fairness_key IS NULL THEN 0 ELSE {_least}(
            (SELECT COUNT(*) FROM (
                SELECT 1 FROM dwarf_steps s
                WHERE s.status = 'pending' AND s.priority = w.priority AND s.fairness_key >= w.fairness_key
                  AND s.fairness_key <= w.fairness_key AND s.not_before <= {now}
                  AND s.task_url NOT IN (SELECT b.limit_key FROM claim_url_room AS b WHERE b.room <= 0)
                ORDER BY s.fairness_key
                LIMIT :limit) AS head),
            COALESCE((SELECT {_limit_room} FROM dwarf_limits AS l
                      WHERE l.scope = 'fairness_key' AND l.limit_key = w.fairness_key), :limit)) END
    FROM claim_walk AS w, claim_pivot
    WHERE w.priority IS NOT NULL AND w.n < 128
      AND (w.got < :limit OR (w.fairness_key IS NOT NULL AND w.n <= 32 AND w.got < 256))
),
claim_window(priority, fairness_key, take) AS (
    SELECT w.priority, w.fairness_key, nxt.got - w.got
    FROM claim_walk AS w JOIN claim_walk AS nxt ON nxt.n = w.n + 1
    WHERE w.fairness_key IS NOT NULL AND (w.got < :limit OR (w.n <= 32 AND w.got < 256))
      AND nxt.got > w.got
),
claim_cursor_move(after_key) AS (
    SELECT last.fairness_key FROM claim_walk AS beyond JOIN claim_walk AS last ON last.n = beyond.n - 1
    WHERE beyond.fairness_key IS NOT NULL
      AND (beyond.n >= 128 OR NOT (beyond.got < :limit OR (beyond.n <= 32 AND beyond.got < 256)))
)

-- name: _limit_slot
-- Whether a step claimed under limits holds slots (012_limits.sql): some limit names its fairness key or
-- its task URL (two primary-key lookups). Steps that held one keep it.
CASE WHEN limit_slot = 1
    OR EXISTS (SELECT 1 FROM dwarf_limits AS k WHERE k.scope = 'fairness_key' AND k.limit_key = fairness_key)
    OR EXISTS (SELECT 1 FROM dwarf_limits AS u WHERE u.scope = 'task_url' AND u.limit_key = task_url)
    THEN 1 ELSE 0 END

-- name: next_wake_time
-- When the claimer has something to do again: the earliest not-before of a pending step, the earliest
-- expiry of a lease, the earliest timer (a deadline, a timed wait's end: see next_timer; each NULL when
-- there is none), the next schedule tick (for the ticker: see _next_schedule), and whether a complete
-- cohort waits for its join (its last member's replica died before looking: see stranded_cohorts). Also how many limits exist and their version (012_limits.sql),
-- so that an engine that missed a change of limits learns of it here.
SELECT
    (SELECT MIN(not_before) FROM dwarf_steps WHERE status = 'pending') AS next_due,
    (SELECT MIN(lease_expires) FROM dwarf_steps WHERE status = 'running') AS next_expiry,
    {_next_timers},
    {_next_schedule},
    (SELECT COUNT(*) FROM dwarf_complete_cohorts) AS stranded,
    (SELECT limit_count FROM dwarf_claim_cursor WHERE cursor_id = 1) AS limit_count,
    (SELECT limit_version FROM dwarf_claim_cursor WHERE cursor_id = 1) AS limit_version,
    {now} AS now

-- name: next_timer
-- The earliest timer of the shard (the dialect files' _next_timers) and the database's clock: a busy
-- claimer, which never reaches next_wake_time, asks this once per poll interval, and so does an engine
-- after it fired timers.
SELECT {_next_timers}, {_next_schedule}, {now} AS now

-- name: _next_schedule
-- The next tick of an unpaused schedule, the first entry of its partial index (011_schedules.sql); NULL
-- when there is none (always, but on shard 1). The claimers hand it to the schedule ticker, which then
-- need not read the schedules on its own while they poll (engine/schedule_hints.py).
(SELECT MIN(next_tick_ms) FROM dwarf_schedules WHERE paused = 0) AS next_schedule_ms

-- name: due_deadlines
-- Root flows whose deadline passed and that have not stopped, earliest first (cancelled by the caller,
-- through cancel_tree, which decides between engines racing for one).
SELECT flow_id FROM {_flows_by_deadline}
WHERE deadline IS NOT NULL AND status IN ('running', 'interrupted') AND deadline <= {now}
  AND purge_marked = 0
ORDER BY deadline
LIMIT :limit

-- name: due_wakeups
-- Parked steps whose timed wait ended, earliest first: interrupts (status interrupted) and signal waits
-- (status created), with the root of their tree, whose lock the wake-up takes.
SELECT s.step_id, s.status, f.root_flow_id FROM dwarf_steps s JOIN dwarf_flows f ON f.flow_id = s.flow_id
WHERE s.wake_at IS NOT NULL AND s.status IN ('interrupted', 'created') AND s.wake_at <= {now}
ORDER BY s.wake_at
LIMIT :limit

-- name: set_step_wake_at
-- A timed interrupt: the step, parked in this transaction, is resumed with {"timedOut": true} once
-- :delay seconds have passed without a resume.
UPDATE dwarf_steps SET wake_at = {now} + :delay WHERE step_id = :step_id

-- name: park_for_signal
-- A step waits for signal :name (Flow.wait_for_signal); only the lease holder may park it (0 rows = the
-- lease was lost). parked = 2 marks a signal wait; wake_at is NULL without a timeout.
UPDATE dwarf_steps
SET status = 'created', parked = 2, wait_signal = :name, wake_at = {now} + :timeout, changes = :changes,
    appends = :appends, carry = :carry, error = '', interrupt_payload = '{}', lease_token = '',
    lease_expires = 0, updated_at = {now}, version = version + 1
WHERE step_id = :step_id AND lease_token = :lease_token AND status = 'running'

-- name: wake_signal_waiter
-- A step waiting for a signal runs again with :resume_data (the signal's data, or {"timedOut": true}).
-- Only a step still waiting matches: of a signal and a timeout racing for it, one wins.
UPDATE dwarf_steps
SET status = 'pending', parked = 0, resume_data = :resume_data, not_before = {now}, updated_at = {now},
    version = version + 1
WHERE step_id = :step_id AND status = 'created' AND parked = 2

-- name: tree_signal_waiter
-- The oldest step anywhere in a tree that waits for signal :name (the caller holds the root's lock).
SELECT s.step_id FROM dwarf_flows f JOIN dwarf_steps s ON s.flow_id = f.flow_id
WHERE f.root_flow_id = :root_flow_id AND s.status = 'created' AND s.parked = 2 AND s.wait_signal = :name
ORDER BY s.step_id
LIMIT 1

-- name: store_signal
-- Keep a signal no step of the tree waits for yet (the caller holds the root's lock).
INSERT INTO dwarf_signals (root_flow_id, name, resume_data, created_at)
VALUES (:root_flow_id, :name, :resume_data, {now})

-- name: take_stored_signal
-- The oldest kept signal :name of a tree, removed as a step takes it (the caller holds the root's lock).
DELETE FROM dwarf_signals
WHERE signal_id = (
    SELECT signal_id FROM dwarf_signals WHERE root_flow_id = :root_flow_id AND name = :name
    ORDER BY signal_id LIMIT 1)
RETURNING resume_data

-- name: reap_marked_signals
-- Delete a batch of the kept signals of flows marked for deletion.
DELETE FROM dwarf_signals WHERE signal_id IN (
    SELECT s.signal_id FROM dwarf_flows f JOIN dwarf_signals s ON s.root_flow_id = f.flow_id
    WHERE f.purge_marked = 1 LIMIT :batch
)

-- name: stranded_cohorts
-- Complete cohorts nobody joined: the replica that committed the last arrival died (or failed) before
-- its claimer looked. Joining one is guarded by claim_cohort_join, so a race with that claimer is safe.
-- The open cohorts drive the lookup (an EXISTS, not a join): driven from the flows, it read every running
-- flow, which a backlog of 100,000 queued flows made a 150 ms read once a second.
SELECT c.step_id, c.flow_id FROM dwarf_complete_cohorts c
WHERE EXISTS (
    SELECT 1 FROM dwarf_flows f
    WHERE f.flow_id = c.flow_id AND f.status IN ('running', 'interrupted') AND f.purge_marked = 0
)

-- name: count_due_steps
-- The pending-steps gauge: due steps waiting for a worker, per priority band.
SELECT priority, COUNT(*) AS pending FROM dwarf_steps
WHERE status = 'pending' AND not_before <= {now}
GROUP BY priority

-- name: recover_expired_leases
-- Put steps whose worker vanished back in the queue; their partial work was never committed. Each time
-- counts towards the step's limit of lost workers (recoveries).
UPDATE dwarf_steps
SET status = 'pending', lease_token = '', lease_expires = 0, recoveries = recoveries + 1, updated_at = {now},
    version = version + 1
WHERE status = 'running' AND lease_expires < {now}
RETURNING step_id, flow_id

-- name: renew_leases
-- A live worker's heartbeat: extend the leases it still holds on :step_ids (JSON array) under any of its
-- :lease_tokens (JSON array), and say which those were. Neither updated_at nor version changes: a renewal
-- is not something that happened to the flow.
UPDATE dwarf_steps SET lease_expires = {now} + :lease_seconds
WHERE step_id IN (SELECT value FROM json_each(:step_ids))
  AND lease_token IN (SELECT value FROM json_each(:lease_tokens))
  AND status = 'running'
RETURNING step_id

-- name: release_lease
-- A replica shutting down hands a claimed step back at once.
UPDATE dwarf_steps
SET status = 'pending', lease_token = '', lease_expires = 0, updated_at = {now}, version = version + 1
WHERE step_id = :step_id AND lease_token = :lease_token AND status = 'running'

-- name: finish_step
-- Record a step's outcome; only the current lease holder may (0 rows = the lease was lost).
UPDATE dwarf_steps
SET status = :status, changes = :changes, appends = :appends, error = :error,
    interrupt_payload = :interrupt_payload,
    successor_id = :successor_id, carry = :carry, arrived = :arrived, cohort_size = :cohort_size,
    parked = :parked, child_flow_id = CASE WHEN :child_flow_id = 0 THEN child_flow_id ELSE :child_flow_id END,
    cohort_arrivals = :cohort_arrivals, for_each_as = :for_each_as, join_target = :join_target,
    lease_token = '', lease_expires = 0, updated_at = {now}, version = version + 1
WHERE step_id = :step_id AND lease_token = :lease_token AND status = 'running'

-- name: retry_step
-- Schedule another attempt of a step; the attempt's changes (and appends) become part of the next
-- attempt's input, which is stored whole.
UPDATE dwarf_steps
SET status = 'pending', state = :state, changes = '{}', appends = '{}', carry = :carry, attempt = attempt + 1,
    error = :error, recoveries = 0, state_base = 0, delta_depth = 0, delta_bytes = 0,
    snapshot_bytes = :snapshot_bytes,
    not_before = {now} + :delay, lease_token = '', lease_expires = 0, updated_at = {now},
    version = version + 1
WHERE step_id = :step_id AND lease_token = :lease_token AND status = 'running'

-- name: finish_flow
-- A flow stops: completed, failed or interrupted (interrupted is a stop, not an end). A flow that is
-- interrupted (one branch parked) can still end: a sibling branch may fail it. An end starts the flow's
-- retention (014_retention.sql): purge_after stays NULL for a flow kept for ever.
UPDATE dwarf_flows
SET status = :status, final_state = :final_state, error = :error, interrupt_payload = :interrupt_payload,
    surfaced_step_id = :surfaced_step_id, updated_at = {now}, version = version + 1,
    purge_after = CASE WHEN :status = 'completed' THEN {now} + retain_completed_for
                       WHEN :status = 'failed' THEN {now} + retain_for ELSE purge_after END
WHERE flow_id = :flow_id
  AND (status = 'running' OR (status = 'interrupted' AND :status IN ('completed', 'failed')))

-- name: cancel_flow_tree
-- Cancel every running or interrupted flow of a tree (its root's retention starts: see finish_flow).
UPDATE dwarf_flows
SET status = 'cancelled', cancel_reason = :reason, updated_at = {now}, version = version + 1,
    purge_after = {now} + retain_for
WHERE root_flow_id = :root_flow_id AND status IN ('running', 'interrupted')

-- name: cancel_steps_of_tree
-- Cancel every unfinished step of a tree's flows; a worker running one of them then commits nothing.
UPDATE dwarf_steps
SET status = 'cancelled', lease_token = '', lease_expires = 0, updated_at = {now}, version = version + 1
WHERE flow_id IN (SELECT flow_id FROM dwarf_flows WHERE root_flow_id = :root_flow_id)
  AND status IN ('created', 'pending', 'running', 'interrupted')

-- name: cancel_orphaned_flows
-- Cancel the running or interrupted child flows of a tree whose calling step ended without them (it was
-- cancelled when its flow failed or a sibling branch failed): nothing would ever read their result.
UPDATE dwarf_flows
SET status = 'cancelled', cancel_reason = :reason, updated_at = {now}, version = version + 1,
    purge_after = {now} + retain_for
WHERE root_flow_id = :root_flow_id AND parent_flow_id > 0 AND status IN ('running', 'interrupted')
  AND EXISTS (
      SELECT 1 FROM dwarf_steps s
      WHERE s.step_id = dwarf_flows.parent_step_id AND s.status IN ('cancelled', 'failed')
  )

-- name: cancel_steps_of_cancelled_flows
-- Cancel the unfinished steps of a tree's cancelled flows (those cancel_orphaned_flows just cancelled).
UPDATE dwarf_steps
SET status = 'cancelled', lease_token = '', lease_expires = 0, updated_at = {now}, version = version + 1
WHERE flow_id IN (SELECT flow_id FROM dwarf_flows WHERE root_flow_id = :root_flow_id AND status = 'cancelled')
  AND status IN ('created', 'pending', 'running', 'interrupted')

-- name: flow_fingerprint
-- The inputs of the fingerprint: anything observable about a flow changes one of them.
SELECT f.status, f.version AS flow_version, f.updated_at,
       (SELECT COUNT(*) FROM dwarf_steps s WHERE s.flow_id = f.flow_id) AS step_count,
       (SELECT COALESCE(SUM(s.version), 0) FROM dwarf_steps s WHERE s.flow_id = f.flow_id) AS step_versions
FROM dwarf_flows f WHERE f.flow_id = :flow_id AND f.purge_marked = 0

-- name: _flow_filter
-- The filters of a Query over dwarf_flows f (shared by list_flows and mark_for_purge).
f.purge_marked = 0
  AND (:include_subgraphs = 1 OR f.parent_flow_id = 0)
  AND (:status = '' OR f.status = :status)
  AND (:workflow_url = '' OR f.workflow_url = :workflow_url)
  AND (:workflow_name = '' OR f.workflow_name = :workflow_name)
  AND (:thread_id = 0 OR (f.thread_id = :thread_id AND f.thread_token = :thread_token))
  AND (:fairness_key = '' OR f.fairness_key = :fairness_key)
  AND (:priority = 0 OR f.priority = :priority)
  AND (:older_than < 0 OR f.created_at < {now} - :older_than)
  AND (:newer_than < 0 OR f.created_at > {now} - :newer_than)
  AND (:task_name = '' OR :task_name = COALESCE((SELECT s.task_name FROM dwarf_steps s
                                                 WHERE s.flow_id = f.flow_id
                                                 ORDER BY s.step_id DESC LIMIT 1), ''))
  AND (:search = '' OR f.workflow_url LIKE :pattern ESCAPE '!' OR f.workflow_name LIKE :pattern ESCAPE '!'
       OR f.fairness_key LIKE :pattern ESCAPE '!' OR f.error LIKE :pattern ESCAPE '!'
       OR f.cancel_reason LIKE :pattern ESCAPE '!')

-- name: list_flows
-- A page of flows, newest first: (created_at, flow_id) descending, the one total order list pages by
-- (idx_dwarf_flows_created serves it). Only rows at or below (:before_created, :through_id) qualify: the
-- engine derives that bound per shard from the cursor's last row (see Engine.list).
SELECT f.flow_id, f.flow_token, f.thread_id, f.thread_token, f.workflow_url, f.workflow_name, f.status,
       f.error, f.cancel_reason, f.created_at, f.started_at, f.updated_at, f.priority, f.fairness_key,
       f.parent_flow_id, f.trace_parent,
       COALESCE((SELECT s.task_name FROM dwarf_steps s WHERE s.flow_id = f.flow_id
                 ORDER BY s.step_id DESC LIMIT 1), '') AS task_name
FROM dwarf_flows f
WHERE (f.created_at, f.flow_id) <= (:before_created, :through_id) AND {_flow_filter}
ORDER BY f.created_at DESC, f.flow_id DESC
LIMIT :limit

-- name: mark_for_purge
-- Mark up to :limit matching stopped root flows, and their whole trees, for the reaper. Marked flows
-- vanish from every read at once; the reaper deletes their rows in bounded batches later.
UPDATE dwarf_flows SET purge_marked = 1, purge_after = NULL
WHERE purge_marked = 0 AND root_flow_id IN (
    SELECT f.flow_id FROM dwarf_flows f
    WHERE f.parent_flow_id = 0 AND f.status <> 'running'
      AND NOT EXISTS (SELECT 1 FROM dwarf_flows d WHERE d.root_flow_id = f.flow_id AND d.status = 'running')
      AND {_flow_filter}
    ORDER BY f.flow_id
    LIMIT :limit
)
RETURNING flow_id, parent_flow_id

-- name: reap_marked_steps
-- Delete a batch of steps of flows marked for deletion.
DELETE FROM dwarf_steps WHERE step_id IN (
    SELECT s.step_id FROM dwarf_steps s JOIN dwarf_flows f ON f.flow_id = s.flow_id
    WHERE f.purge_marked = 1 LIMIT :batch
)

-- name: reap_marked_flows
-- Delete a batch of marked flows whose steps are gone.
DELETE FROM dwarf_flows WHERE flow_id IN (
    SELECT f.flow_id FROM dwarf_flows f
    WHERE f.purge_marked = 1 AND NOT EXISTS (SELECT 1 FROM dwarf_steps s WHERE s.flow_id = f.flow_id)
    LIMIT :batch
)

-- name: any_marked
-- Whether the reaper has work on this shard.
SELECT COUNT(*) AS marked FROM (SELECT 1 FROM dwarf_flows WHERE purge_marked = 1 LIMIT 1) AS m

-- name: retention_due
-- The retention pass's look (014_retention.sql): whether a flow's retention has run out (due), and in
-- how many seconds the next one runs out (NULL when no flow waits for it). Two seeks in the partial
-- index; a due root that cannot be marked yet (a flow of its tree still runs) does not hide the next.
-- The clock is read in a subquery: PostgreSQL bounds an index scan only by a value fixed for the whole
-- statement, and clock_timestamp() is not one (compared directly, every entry is read and filtered).
SELECT
    (SELECT COUNT(*) FROM (
        SELECT 1 FROM dwarf_flows WHERE purge_after IS NOT NULL AND purge_after <= (SELECT {now}) LIMIT 1
    ) AS d) AS due,
    (SELECT MIN(purge_after) FROM dwarf_flows
     WHERE purge_after IS NOT NULL AND purge_after > (SELECT {now})) - {now} AS next_in

-- name: mark_retention_due
-- Mark up to :batch root flows whose retention ran out, with their trees, for the reaper, the longest
-- due first; purge_after is cleared as they are marked. As purge does, it passes over a root while a
-- flow of its tree still runs (a failed root's child may still be finishing): a later pass takes it.
-- Only the statements that end a flow set purge_after, so no status test is needed (one would let SQLite
-- read every ended flow through idx_dwarf_flows_status instead of the due ones; "+ 0" likewise keeps it
-- from reading every root flow through idx_dwarf_flows_list; the clock is read as in retention_due).
UPDATE dwarf_flows SET purge_marked = 1, purge_after = NULL
WHERE purge_marked = 0 AND root_flow_id IN (
    SELECT f.flow_id FROM dwarf_flows f
    WHERE f.purge_after IS NOT NULL AND f.purge_after <= (SELECT {now}) AND f.parent_flow_id + 0 = 0
      AND f.purge_marked = 0
      AND NOT EXISTS (SELECT 1 FROM dwarf_flows d WHERE d.root_flow_id = f.flow_id AND d.status = 'running')
    ORDER BY f.purge_after
    LIMIT :batch
)
RETURNING flow_id, parent_flow_id

-- name: delete_flow_steps
-- Remove the steps of a tree (delete).
DELETE FROM dwarf_steps WHERE flow_id IN (SELECT flow_id FROM dwarf_flows WHERE root_flow_id = :root_flow_id)

-- name: count_arrival
-- An arrival counted on the spawn itself (an onError handler reaching the fan-in, a nested cohort's spawn
-- reaching END), not by finish_and_arrive; whether the cohort is then complete is asked after commit.
UPDATE dwarf_steps
SET cohort_arrivals = cohort_arrivals + 1, cohort_failures = cohort_failures + :abandoned,
    join_target = CASE WHEN :target = '' OR :target = 'END' THEN join_target ELSE :target END,
    updated_at = {now}, version = version + 1
WHERE step_id = :spawn_id

-- name: settle_cancelled_siblings
-- A branch failed and onError routed it: its cancelled siblings count as arrived (with nothing to
-- contribute), so only the routed branch is still awaited.
UPDATE dwarf_steps SET cohort_arrivals = cohort_size - 1, updated_at = {now}, version = version + 1
WHERE step_id = :spawn_id

-- name: arrived_members
-- The members that reached a cohort's join, in fan-out position order (the order reducers apply in).
SELECT step_id, carry, step_depth, fan_out_ordinal FROM dwarf_steps
WHERE lineage_id = :spawn_id AND lineage_id > 0 AND arrived = 1
ORDER BY fan_out_ordinal, step_id

-- name: link_members_to_fan_in
-- Point the arrived members (and the spawn) at the fan-in step that joined them.
UPDATE dwarf_steps SET successor_id = :fan_in_id, version = version + 1
WHERE lineage_id = :spawn_id AND lineage_id > 0 AND arrived = 1

-- name: set_fan_in_step
-- Record on a spawn step which fan-in step joined its cohort.
UPDATE dwarf_steps SET fan_in_step_id = :fan_in_id, version = version + 1 WHERE step_id = :spawn_id

-- name: mark_arrived
-- A spawn whose cohort ended at END becomes an arrived member of its own enclosing cohort.
UPDATE dwarf_steps SET arrived = 1, carry = :carry, version = version + 1 WHERE step_id = :step_id

-- name: unfinished_steps
-- The steps of a flow that can still change, with their cohort (to cancel a failed branch's siblings).
SELECT step_id, lineage_id FROM dwarf_steps
WHERE flow_id = :flow_id AND status IN ('created', 'pending', 'running', 'interrupted')

-- name: spawn_steps
-- The fan-out sources of a flow with their own cohort, to walk nested cohorts upward.
SELECT step_id, lineage_id FROM dwarf_steps WHERE flow_id = :flow_id AND cohort_size > 0

-- name: cancel_step
-- Cancel one unfinished step.
UPDATE dwarf_steps
SET status = 'cancelled', lease_token = '', lease_expires = 0, updated_at = {now}, version = version + 1
WHERE step_id = :step_id AND status IN ('created', 'pending', 'running', 'interrupted')

-- name: cancel_unfinished_steps
-- Cancel every unfinished step of one flow but :keep_step_id.
UPDATE dwarf_steps
SET status = 'cancelled', lease_token = '', lease_expires = 0, updated_at = {now}, version = version + 1
WHERE flow_id = :flow_id AND step_id <> :keep_step_id AND status IN ('created', 'pending', 'running', 'interrupted')

-- name: resume_step
-- Re-queue an interrupted step with the caller's resume data.
UPDATE dwarf_steps
SET status = 'pending', resume_data = :resume_data, not_before = {now}, updated_at = {now},
    version = version + 1
WHERE step_id = :step_id AND status = 'interrupted'

-- name: latest_completed_in_thread
-- The newest completed flow of a thread: continue_thread starts from its final state.
SELECT * FROM dwarf_flows
WHERE thread_id = :thread_id AND status = 'completed' AND purge_marked = 0
ORDER BY flow_id DESC LIMIT 1

-- name: running_flows_in_tree
-- How many flows of a tree are still running (delete refuses those).
SELECT COUNT(*) AS running FROM dwarf_flows WHERE root_flow_id = :root_flow_id AND status = 'running'

-- name: get_step_with_flow_by_key
-- A step by its key's id and token, and the identity of its flow (the token in the lookup: see
-- get_flow_by_key).
SELECT s.*, f.flow_token, f.purge_marked FROM dwarf_steps s JOIN dwarf_flows f ON f.flow_id = s.flow_id
WHERE s.step_id = :step_id AND s.step_token = :step_token AND f.purge_marked = 0

-- name: wake_parent_step
-- A child flow stopped: its parent's parked step runs again with the child's result or error.
UPDATE dwarf_steps
SET status = 'pending', parked = 0, subgraph_result = :subgraph_result, subgraph_error = :subgraph_error,
    not_before = {now}, updated_at = {now}, version = version + 1
WHERE step_id = :step_id AND status = 'created' AND parked = 1

-- name: mark_flow_interrupted
-- Surface an interrupt on a flow (an ancestor of the flow whose step interrupted). A flow that already
-- surfaces another interrupt keeps it: one interrupt at a time.
UPDATE dwarf_flows
SET status = 'interrupted', interrupt_payload = :interrupt_payload, surfaced_step_id = :step_id,
    updated_at = {now}, version = version + 1
WHERE flow_id = :flow_id AND status = 'running'

-- name: tree_interrupted_steps
-- The parked interrupts anywhere in a tree of flows, oldest first (the caller holds the root's lock).
SELECT s.step_id, s.flow_id, s.interrupt_payload FROM dwarf_steps s
JOIN dwarf_flows f ON f.flow_id = s.flow_id
WHERE f.root_flow_id = :root_flow_id AND s.status = 'interrupted'
ORDER BY s.step_id

-- name: resume_interrupted_flows_of_tree
-- After a resume, every interrupted flow of the tree runs again (another parked interrupt is re-surfaced).
UPDATE dwarf_flows
SET status = 'running', interrupt_payload = '{}', surfaced_step_id = 0, updated_at = {now},
    version = version + 1
WHERE root_flow_id = :root_flow_id AND status = 'interrupted'

-- name: flow_parent
-- The parent of a flow (0 for a root), to walk a tree upward.
SELECT parent_flow_id FROM dwarf_flows WHERE flow_id = :flow_id

-- name: clone_step
-- Copy a step into a forked flow; ids that point at other steps (state_base too) are remapped afterwards.
-- The signal a step waited for stays with its data (resume_data): a re-queued copy replays the answer.
-- A member's uncounted arrival (3, 4) is copied as counted (1, 2): the fork recounts the copied spawn.
INSERT INTO dwarf_steps (
    flow_id, step_token, step_depth, task_name, task_url, state, changes, appends, carry, interrupt_payload,
    status, error, attempt, time_budget_ms, priority, fairness_key, fairness_weight, predecessor_id,
    successor_id, lineage_id, fan_out_ordinal, cohort_size, cohort_arrivals, cohort_failures, cohort_joined,
    arrived, for_each_as, join_target, fan_in_step_id, parked, child_flow_id, resume_data, subgraph_result,
    subgraph_error, wait_signal, wake_at, state_base, delta_depth, delta_bytes, snapshot_bytes, not_before,
    created_at, started_at, updated_at
)
SELECT :flow_id, :step_token, step_depth, task_name, task_url, state, changes, appends, carry,
    interrupt_payload, status, error, attempt, time_budget_ms, :priority, :fairness_key, :fairness_weight,
    predecessor_id, successor_id, lineage_id, fan_out_ordinal, cohort_size, cohort_arrivals, cohort_failures,
    cohort_joined, CASE WHEN arrived > 2 THEN arrived - 2 ELSE arrived END,
    for_each_as, join_target, fan_in_step_id, 0, 0, resume_data, subgraph_result, subgraph_error,
    wait_signal, wake_at, state_base, delta_depth, delta_bytes, snapshot_bytes, not_before, created_at,
    started_at, {now}
FROM dwarf_steps WHERE step_id = :source_step_id
RETURNING step_id

-- name: remap_step_links
-- Point a cloned step's links at the clones of the steps they named (0 where no clone exists).
UPDATE dwarf_steps
SET predecessor_id = :predecessor_id, successor_id = :successor_id, lineage_id = :lineage_id,
    fan_in_step_id = :fan_in_step_id, state_base = :state_base
WHERE step_id = :step_id

-- name: set_step_state
-- Store a step's input state whole (or as a delta on :state_base): a fork's copy whose state referred to
-- a step the fork did not copy.
UPDATE dwarf_steps
SET state = :state, state_base = :state_base, delta_depth = :delta_depth, delta_bytes = :delta_bytes,
    snapshot_bytes = :snapshot_bytes
WHERE step_id = :step_id

-- name: clone_parked_step
-- Copy the step that ran a child flow into a fork, parked again on the fork's copy of that child.
INSERT INTO dwarf_steps (
    flow_id, step_token, step_depth, task_name, task_url, state, changes, appends, carry, status, attempt,
    time_budget_ms, priority, fairness_key, fairness_weight, predecessor_id, lineage_id, fan_out_ordinal,
    parked, child_flow_id, state_base, delta_depth, delta_bytes, snapshot_bytes, not_before, created_at,
    started_at, updated_at
)
SELECT :flow_id, :step_token, step_depth, task_name, task_url, state, changes, appends, carry, 'created',
    attempt, time_budget_ms, :priority, :fairness_key, :fairness_weight, :predecessor_id, :lineage_id,
    fan_out_ordinal, 1, :child_flow_id, :state_base, delta_depth, delta_bytes, snapshot_bytes, {now}, {now},
    started_at, {now}
FROM dwarf_steps WHERE step_id = :source_step_id
RETURNING step_id

-- name: set_step_child
-- Point a parked step at the child flow it waits for.
UPDATE dwarf_steps SET child_flow_id = :child_flow_id WHERE step_id = :step_id

-- name: remap_successor
-- Point a copied step at its successor's copy.
UPDATE dwarf_steps SET successor_id = :successor_id WHERE step_id = :step_id

-- name: flow_steps_by_id
-- Every step of a flow in creation order (fork's planning pass).
SELECT * FROM dwarf_steps WHERE flow_id = :flow_id ORDER BY step_id

-- name: requeue_step
-- A copied branch step that was cancelled in the original runs again in the fork.
UPDATE dwarf_steps
SET status = 'pending', changes = '{}', appends = '{}', error = '', attempt = 0, successor_id = 0,
    arrived = 0, lease_token = '', lease_expires = 0, not_before = {now}, updated_at = {now}
WHERE step_id = :step_id

-- name: set_cohort_counts
-- A copied spawn's arrival counts, recomputed for the members the fork kept; its join is still to come.
UPDATE dwarf_steps
SET cohort_arrivals = :arrivals, cohort_failures = :failures, fan_in_step_id = 0, cohort_joined = 0
WHERE step_id = :step_id

-- name: wedged_subgraph_parks
-- Wedge sweep: parent steps parked on a child flow that has ended or no longer exists, untouched for
-- :min_age seconds. A child's end wakes its parent in the same transaction, so a hit means a bug (or a
-- hand-edited database); the sweep re-delivers the child's result so the parent can go on.
SELECT s.step_id, s.flow_id, s.child_flow_id, c.status AS child_status, c.final_state AS child_state,
    c.error AS child_error, c.cancel_reason AS child_cancel_reason
FROM dwarf_steps s
LEFT JOIN dwarf_flows c ON c.flow_id = s.child_flow_id AND c.purge_marked = 0
WHERE s.status = 'created' AND s.parked = 1 AND s.child_flow_id > 0 AND s.updated_at < {now} - :min_age
  AND (c.flow_id IS NULL OR c.status IN ('completed', 'failed', 'cancelled'))

-- name: flows_window
-- Wedge sweep: the last flow id of the next :batch flows of :status after :after (NULL past the last
-- one). The sweep looks at running flows one such window at a time: a backlog of queued flows is all
-- running, and reading them in one statement held SQLite's only connection for a quarter of a second.
SELECT MAX(flow_id) AS upto FROM (
    SELECT flow_id FROM dwarf_flows WHERE status = :status AND flow_id > :after
    ORDER BY flow_id LIMIT :batch
) w

-- name: orphaned_flow_roots
-- Wedge sweep: the roots of child flows of :status in the window (:after, :upto] whose calling step
-- ended :min_age seconds ago or more. The step commit that ended it cancels them right after (see
-- cancel_orphaned_flows); a hit means that follow-up was lost, e.g. its replica died in between.
SELECT DISTINCT f.root_flow_id
FROM dwarf_flows f JOIN dwarf_steps s ON s.step_id = f.parent_step_id
WHERE f.status = :status AND f.flow_id > :after AND f.flow_id <= :upto AND f.parent_flow_id > 0
  AND s.status IN ('cancelled', 'failed') AND s.updated_at < {now} - :min_age

-- name: wedged_running_flows
-- Wedge sweep: flows of the window (:after, :upto] still marked running, untouched for :min_age seconds,
-- with no step left that could move them (none created, pending or running, no complete cohort waiting for its join).
-- `interrupted_step_id` is a parked interrupt the flow
-- should be surfacing (0 when there is none).
SELECT f.flow_id, f.parent_flow_id, f.parent_step_id,
    COALESCE((SELECT MIN(i.step_id) FROM dwarf_steps i
              WHERE i.flow_id = f.flow_id AND i.status = 'interrupted'), 0) AS interrupted_step_id
FROM dwarf_flows f
WHERE f.status = 'running' AND f.flow_id > :after AND f.flow_id <= :upto
  AND f.purge_marked = 0 AND f.updated_at < {now} - :min_age
  AND NOT EXISTS (
      SELECT 1 FROM dwarf_steps s
      WHERE s.flow_id = f.flow_id AND s.status IN ('created', 'pending', 'running')
  )
  AND NOT EXISTS (
      SELECT 1 FROM dwarf_flows c WHERE c.parent_flow_id = f.flow_id AND c.status IN ('running', 'interrupted')
  )
  AND NOT EXISTS (SELECT 1 FROM dwarf_complete_cohorts j WHERE j.flow_id = f.flow_id)

-- name: fail_wedged_flow
-- Wedge sweep: end a running flow that nothing can move any more.
UPDATE dwarf_flows
SET status = 'failed', error = :error, updated_at = {now}, version = version + 1,
    purge_after = {now} + retain_for
WHERE flow_id = :flow_id AND status = 'running'

-- name: claim_cohort_join
-- Take the right to join a cohort: exactly one transaction flips the flag (its row lock serializes the
-- contenders: the workers of the last members, a wedge sweep). Callers checked it complete first.
-- A flow cancelled meanwhile is not joined: its fan-in step would run the rest of the graph under a
-- cancelled flow.
UPDATE dwarf_steps SET cohort_joined = 1, updated_at = {now}, version = version + 1
WHERE step_id = :spawn_id AND cohort_joined = 0
  AND EXISTS (SELECT 1 FROM dwarf_flows f
              WHERE f.flow_id = dwarf_steps.flow_id AND f.status IN ('running', 'interrupted'))

-- name: fold_cohort_arrivals
-- Count the members that arrived on their own rows into the spawn (arrivals, failures, join target);
-- mark_arrivals_counted then marks them counted. Both run in the join's transaction, after its claim.
-- "lineage_id > 0" lets the partial members' index serve (see 009_cohort_lookups.sql).
UPDATE dwarf_steps
SET cohort_arrivals = cohort_arrivals + (
        SELECT COUNT(*) FROM dwarf_steps m
        WHERE m.lineage_id = :spawn_id AND m.lineage_id > 0 AND m.arrived IN (3, 4)),
    cohort_failures = cohort_failures + (
        SELECT COUNT(*) FROM dwarf_steps m
        WHERE m.lineage_id = :spawn_id AND m.lineage_id > 0 AND m.arrived = 4),
    join_target = COALESCE((
        SELECT MAX(m.join_target) FROM dwarf_steps m
        WHERE m.lineage_id = :spawn_id AND m.lineage_id > 0 AND m.arrived IN (3, 4)
          AND m.join_target NOT IN ('', 'END')
    ), join_target)
WHERE step_id = :spawn_id

-- name: mark_arrivals_counted
-- The members fold_cohort_arrivals counted become ordinary arrived members (3 -> 1, 4 -> 2).
UPDATE dwarf_steps SET arrived = arrived - 2
WHERE lineage_id = :spawn_id AND lineage_id > 0 AND arrived IN (3, 4)

-- name: finish_and_arrive
-- A cohort member completes (only under its lease) and arrives at its cohort's join, touching only its
-- own row: arrived = 3 (or 4, abandoned) marks an arrival not yet counted on the spawn, and join_target
-- keeps where it arrived. The spawn row stays untouched, so the members of a wide fan-out never wait on
-- each other; the join folds these arrivals into the spawn's counts (fold_cohort_arrivals).
UPDATE dwarf_steps
SET status = 'completed', changes = :changes, appends = :appends, error = :error, interrupt_payload = '{}',
    successor_id = 0, carry = :carry, arrived = :arrived, cohort_size = 0, cohort_arrivals = 0,
    for_each_as = '', join_target = :target, parked = 0, lease_token = '', lease_expires = 0,
    updated_at = {now}, version = version + 1
WHERE step_id = :step_id AND lease_token = :lease_token AND status = 'running'
RETURNING step_id

-- name: state_chain
-- What rebuilds a step's input state: the step, then the steps its state refers to (state_base) back to
-- the nearest one stored whole, oldest first. The input of each is the output of the one before it (see
-- 008_state_deltas.sql). The hop bound only guards against a damaged row pointing in a circle; the
-- engine writes a whole state long before (states.MAX_DELTA_DEPTH).
WITH RECURSIVE chain(step_id, state_base, state, changes, appends, hops) AS (
    SELECT step_id, state_base, state, changes, appends, 0 FROM dwarf_steps WHERE step_id = :step_id
    UNION ALL
    SELECT s.step_id, s.state_base, s.state, s.changes, s.appends, c.hops + 1
    FROM chain AS c JOIN dwarf_steps AS s ON s.step_id = c.state_base
    WHERE c.state = '' AND c.hops < 100000
)
SELECT step_id, state_base, state, changes, appends FROM chain ORDER BY hops DESC

-- name: flow_open_steps
-- Why a flow is not moving (Engine.why): the steps of one flow that have not ended, in groups that wait
-- the same way (task, status, parked, on a child flow, after a failed attempt, not due yet), each with
-- its count, its oldest step and its earliest times. It reads the flow's steps through
-- idx_dwarf_steps_flow, as flow_fingerprint does: only when someone asks, never on a step's path.
SELECT task_name, status, parked,
    CASE WHEN child_flow_id > 0 THEN 1 ELSE 0 END AS on_child,
    CASE WHEN attempt > 0 THEN 1 ELSE 0 END AS retried,
    CASE WHEN not_before > {now} THEN 1 ELSE 0 END AS later,
    COUNT(*) AS steps, MIN(step_id) AS first_step_id, MIN(not_before) AS due, MAX(attempt) AS attempt,
    MIN(created_at) AS created, MIN(started_at) AS started, MIN(updated_at) AS changed,
    MIN(priority) AS priority, MIN(wake_at) AS wake_at, MIN(wait_signal) AS wait_signal
FROM dwarf_steps
WHERE flow_id = :flow_id AND status IN ('created', 'pending', 'running', 'interrupted')
GROUP BY task_name, status, parked, on_child, retried, later
ORDER BY first_step_id
LIMIT :limit

-- name: due_steps_ahead
-- Engine.why's "queued behind N steps": the due steps a claim serves before step :step_id of band
-- :priority, counted up to :limit (one bounded range of the due index). Every due step of a better band
-- comes first; inside the band fair turns mix the fairness keys, so its older due steps are an estimate.
SELECT COUNT(*) AS ahead FROM (
    SELECT 1 FROM dwarf_steps
    WHERE status = 'pending' AND priority <= :priority AND not_before <= {now}
      AND (priority < :priority OR step_id < :step_id)
    LIMIT :limit
) AS ahead

-- name: flow_activity
-- The dashboard's overview (Engine.activity): the newest :limit root flows created since :since, counted
-- by status, by the :bucket-second slot they were created in, and by the slot of their last change (when
-- a stopped flow stopped). ROUND(x - 0.5) is floor(x) on both dialects (CAST truncates on SQLite but
-- rounds on PostgreSQL). idx_dwarf_flows_created serves the range, newest first, and the limit bounds
-- the work ("+ 0" keeps SQLite from reading every root flow through idx_dwarf_flows_list instead).
SELECT status,
    CAST(ROUND((created_at - :since) / :bucket - 0.5) AS BIGINT) AS created_slot,
    CAST(ROUND((updated_at - :since) / :bucket - 0.5) AS BIGINT) AS updated_slot,
    COUNT(*) AS flows
FROM (
    SELECT status, created_at, updated_at FROM dwarf_flows
    WHERE created_at >= :since AND parent_flow_id + 0 = 0 AND purge_marked = 0
    ORDER BY created_at DESC, flow_id DESC
    LIMIT :limit
) AS recent
GROUP BY status, created_slot, updated_slot

-- name: _limit_columns
-- A limit as Engine.list_limits and Engine.why show it (l is its dwarf_limits row): its settings, its
-- running steps that hold slots (counted only for a concurrency limit), and the whole tokens its bucket
-- holds now (for a rate).
l.scope, l.limit_key, l.concurrency, l.rate, l.burst,
    CASE WHEN l.concurrency <= 0 THEN 0
        WHEN l.scope = 'task_url' THEN (
            SELECT COUNT(*) FROM dwarf_steps AS r
            WHERE r.status = 'running' AND r.limit_slot = 1 AND r.task_url = l.limit_key)
        ELSE (
            SELECT COUNT(*) FROM dwarf_steps AS r
            WHERE r.status = 'running' AND r.limit_slot = 1 AND r.fairness_key = l.limit_key) END AS running,
    CASE WHEN l.rate <= 0 THEN 0
        ELSE {_least}(l.burst, l.tokens + ({now} - l.refilled_at) * l.rate) END AS tokens

-- name: limit_state
-- How many limits the database has, and their version (see note_limits_changed).
SELECT limit_count, limit_version FROM dwarf_claim_cursor WHERE cursor_id = 1

-- name: list_limits
-- Every limit of the database (Engine.list_limits), in scope and key order: a handful of rows, read
-- whole.
SELECT {_limit_columns} FROM dwarf_limits AS l ORDER BY l.scope, l.limit_key

-- name: limits_of_step
-- The limits that apply to a step, by its fairness key and task URL (Engine.why): two primary-key
-- lookups.
SELECT {_limit_columns} FROM dwarf_limits AS l
WHERE (l.scope = 'fairness_key' AND l.limit_key = :fairness_key)
   OR (l.scope = 'task_url' AND l.limit_key = :task_url)

-- name: put_limit
-- Set a limit (Engine.limit), replacing the one the key had. A new rate starts with a full bucket;
-- a changed rate keeps the tokens its bucket holds now, up to the new burst.
INSERT INTO dwarf_limits (
    scope, limit_key, concurrency, rate, burst, tokens, refilled_at, created_at, updated_at
) VALUES (:scope, :limit_key, :concurrency, :rate, :burst, :burst, {now}, {now}, {now})
ON CONFLICT (scope, limit_key) DO UPDATE
SET concurrency = excluded.concurrency, rate = excluded.rate, burst = excluded.burst,
    tokens = CASE WHEN dwarf_limits.rate <= 0 THEN excluded.burst
        ELSE {_least}(excluded.burst,
                      dwarf_limits.tokens + ({now} - dwarf_limits.refilled_at) * dwarf_limits.rate) END,
    refilled_at = {now}, updated_at = {now}

-- name: delete_limit
-- Remove a limit (Engine.clear_limit); answers its row when there was one.
DELETE FROM dwarf_limits WHERE scope = :scope AND limit_key = :limit_key
RETURNING scope

-- name: mark_limit_slots
-- A new limit counts the steps of its key already running (claimed before it existed, or by an engine
-- that did not know of it yet): they take slots. Every running step is looked at (through
-- idx_dwarf_steps_leased: as many as the workers of every replica), once per change of a limit.
UPDATE dwarf_steps SET limit_slot = 1
WHERE status = 'running' AND lease_expires > -1 AND limit_slot = 0
  AND ((:scope = 'fairness_key' AND fairness_key = :limit_key) OR (:scope = 'task_url' AND task_url = :limit_key))

-- name: note_limits_changed
-- After a change of limits, in its transaction: how many there are now (claims read it: see
-- _claim_pivot), and a new version, by which engines tell that their copy of the limits is out of date.
UPDATE dwarf_claim_cursor
SET limit_count = (SELECT COUNT(*) FROM dwarf_limits), limit_version = limit_version + 1
WHERE cursor_id = 1
RETURNING limit_count, limit_version

-- name: database_now
-- The database clock (epoch seconds): schedules compute their next tick from it, as the tickers do.
SELECT {now} AS now

-- name: upsert_schedule
-- Create a schedule, or change the one of that name (011_schedules.sql). A changed timing (cron, every,
-- zone) takes :next_tick_ms and drops any claim; an unchanged one keeps its next tick, so that declaring
-- the same schedule again at every start skips no tick. Nothing is written when nothing changed (no row
-- returned then). The paused flag is left as it is: a redeploy does not resume what an operator paused.
INSERT INTO dwarf_schedules (
    name, workflow_url, cron, every_ms, timezone, catch_up, state, options, next_tick_ms, created_at, updated_at
) VALUES (
    :name, :workflow_url, :cron, :every_ms, :timezone, :catch_up, :state, :options, :next_tick_ms, {now}, {now}
)
ON CONFLICT (name) DO UPDATE SET
    workflow_url = excluded.workflow_url, catch_up = excluded.catch_up, state = excluded.state,
    options = excluded.options, cron = excluded.cron, every_ms = excluded.every_ms, timezone = excluded.timezone,
    next_tick_ms = CASE WHEN dwarf_schedules.cron = excluded.cron AND dwarf_schedules.every_ms = excluded.every_ms
        AND dwarf_schedules.timezone = excluded.timezone THEN dwarf_schedules.next_tick_ms
        ELSE excluded.next_tick_ms END,
    claim_token = CASE WHEN dwarf_schedules.cron = excluded.cron AND dwarf_schedules.every_ms = excluded.every_ms
        AND dwarf_schedules.timezone = excluded.timezone THEN dwarf_schedules.claim_token ELSE '' END,
    claimed_until = CASE WHEN dwarf_schedules.cron = excluded.cron
        AND dwarf_schedules.every_ms = excluded.every_ms AND dwarf_schedules.timezone = excluded.timezone
        THEN dwarf_schedules.claimed_until ELSE 0 END,
    updated_at = {now}
WHERE dwarf_schedules.workflow_url <> excluded.workflow_url OR dwarf_schedules.cron <> excluded.cron
    OR dwarf_schedules.every_ms <> excluded.every_ms OR dwarf_schedules.timezone <> excluded.timezone
    OR dwarf_schedules.catch_up <> excluded.catch_up OR dwarf_schedules.state <> excluded.state
    OR dwarf_schedules.options <> excluded.options
RETURNING *

-- name: get_schedule
-- One schedule by name.
SELECT * FROM dwarf_schedules WHERE name = :name

-- name: list_schedules
-- Every schedule, by name (an application defines a handful; the table holds nothing else).
SELECT * FROM dwarf_schedules ORDER BY name

-- name: due_schedules
-- A ticker's poll: the unpaused schedules whose next tick comes within :ahead_ms, earliest first, with the
-- database clock. Paused ones are not in the partial index it reads; none at all costs one index probe.
SELECT schedule_id, name, workflow_url, cron, every_ms, timezone, catch_up, state, options, next_tick_ms,
    claim_token, claimed_until, {now} AS now
FROM dwarf_schedules
WHERE paused = 0 AND next_tick_ms <= CAST({now} * 1000 AS BIGINT) + :ahead_ms
ORDER BY next_tick_ms
LIMIT :limit

-- name: claim_schedule
-- A ticker takes a due tick for :lease_seconds: only while the tick is still the schedule's next, the
-- schedule is not paused, and no other ticker's claim is current (its own may be renewed).
UPDATE dwarf_schedules SET claim_token = :claim_token, claimed_until = {now} + :lease_seconds
WHERE schedule_id = :schedule_id AND next_tick_ms = :next_tick_ms AND paused = 0
  AND (claimed_until <= {now} OR claim_token = :claim_token)

-- name: advance_schedule
-- After a tick's flow was created (or the tick passed over), move the schedule on to :next_tick_ms: a
-- compare-and-set on the tick and the claim, so that a ticker whose claim lapsed and was taken changes
-- nothing, and a paused schedule stops a catch-up after the flow being created. :fired_ms > 0 records
-- the tick acted on, its flow (kept when '') and why it started none; :release = 1 ends the claim, 0
-- renews it for the next due tick of a catch-up.
UPDATE dwarf_schedules
SET next_tick_ms = :next_tick_ms,
    last_tick_ms = CASE WHEN :fired_ms > 0 THEN :fired_ms ELSE last_tick_ms END,
    last_flow_key = CASE WHEN :flow_key <> '' THEN :flow_key ELSE last_flow_key END,
    last_error = CASE WHEN :fired_ms > 0 THEN :error ELSE last_error END,
    claim_token = CASE WHEN :release = 1 THEN '' ELSE claim_token END,
    claimed_until = CASE WHEN :release = 1 THEN 0 ELSE {now} + :lease_seconds END
WHERE schedule_id = :schedule_id AND next_tick_ms = :expected_ms AND claim_token = :claim_token AND paused = 0

-- name: pause_schedule
-- Stop a schedule's ticks (a tick being created right now may still start its flow).
UPDATE dwarf_schedules SET paused = 1, updated_at = {now} WHERE name = :name AND paused = 0

-- name: resume_schedule
-- Let a paused schedule tick again from :next_tick_ms (computed for the timing read, which must still be
-- the schedule's); ticks that fell while it was paused are never run.
UPDATE dwarf_schedules
SET paused = 0, next_tick_ms = :next_tick_ms, claim_token = '', claimed_until = 0, updated_at = {now}
WHERE name = :name AND paused = 1 AND cron = :cron AND every_ms = :every_ms AND timezone = :timezone

-- name: delete_schedule
-- Remove a schedule; the flows it started stay.
DELETE FROM dwarf_schedules WHERE name = :name

-- name: reencode_steps_page
-- Engine.reencode: the next :limit steps after :after (by id, the primary key), with their JSON columns
-- as stored, to write them again with the engine's current codecs (store/encoded.py).
SELECT step_id, state, changes, appends, carry, interrupt_payload, resume_data, subgraph_result
FROM dwarf_steps WHERE step_id > :after ORDER BY step_id LIMIT :limit

-- name: reencode_step
-- Engine.reencode: write a step's JSON columns in their new stored form, only if none of them changed
-- since they were read (a live engine may have written the row meanwhile: then 0 rows, and nothing is
-- lost). Columns are compared as stored text; resume_data and subgraph_result may be NULL.
UPDATE dwarf_steps
SET state = :new_state, changes = :new_changes, appends = :new_appends, carry = :new_carry,
    interrupt_payload = :new_interrupt_payload, resume_data = :new_resume_data,
    subgraph_result = :new_subgraph_result
WHERE step_id = :step_id AND state = :old_state AND changes = :old_changes AND appends = :old_appends
  AND carry = :old_carry AND interrupt_payload = :old_interrupt_payload
  AND (resume_data = :old_resume_data OR (resume_data IS NULL AND CAST(:old_resume_data AS TEXT) IS NULL))
  AND (subgraph_result = :old_subgraph_result
       OR (subgraph_result IS NULL AND CAST(:old_subgraph_result AS TEXT) IS NULL))

-- name: reencode_signals_page
-- Engine.reencode: the next :limit kept signals after :after (by id), with their data as stored.
SELECT signal_id, resume_data FROM dwarf_signals WHERE signal_id > :after ORDER BY signal_id LIMIT :limit

-- name: reencode_signal
-- Engine.reencode: a kept signal's data in its new stored form, only if unchanged since read (a step
-- may have taken and deleted it meanwhile: 0 rows).
UPDATE dwarf_signals SET resume_data = :new_resume_data
WHERE signal_id = :signal_id AND resume_data = :old_resume_data

-- name: reencode_flows_page
-- Engine.reencode: the next :limit flows after :after (by id), with their JSON columns as stored.
SELECT flow_id, baggage, final_state, interrupt_payload
FROM dwarf_flows WHERE flow_id > :after ORDER BY flow_id LIMIT :limit

-- name: reencode_flow
-- Engine.reencode: a flow's JSON columns in their new stored form, only if unchanged since read.
UPDATE dwarf_flows
SET baggage = :new_baggage, final_state = :new_final_state, interrupt_payload = :new_interrupt_payload
WHERE flow_id = :flow_id AND baggage = :old_baggage AND final_state = :old_final_state
  AND interrupt_payload = :old_interrupt_payload
