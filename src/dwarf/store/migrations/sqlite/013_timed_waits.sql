-- Deadlines and timed waits (docs/waits.md): FlowOptions.deadline, flow.interrupt(..., timeout=...),
-- flow.wait_for_signal(name, timeout=...) and Engine.signal. Every new column is NULL unless the feature
-- is used, and every new index is partial, holding only the rows that wait for a time or a signal: a flow
-- or step that uses none of it costs nothing more than the predicates' tests on write.
--
-- deadline     a root flow's deadline (epoch seconds, the database's clock): once it passes, the flow and
--              its tree are cancelled with the reason "deadline passed" by whichever engine's claimer
--              sees it first (cancel_tree decides, exactly once).
-- wake_at      when a parked step stops waiting: a timed interrupt (status interrupted) or a timed signal
--              wait (status created, parked = 2) is then resumed with {"timedOut": true}.
-- wait_signal  the name of the signal a step waits for (wait_for_signal), kept after it woke for history.
--              Such a step is 'created' with parked = 2 (1 is a step parked on a child flow, which the
--              wedge sweep's idx_dwarf_steps_parked holds; signal waits stay out of that index).
ALTER TABLE dwarf_flows ADD COLUMN deadline REAL;
CREATE INDEX idx_dwarf_flows_deadline ON dwarf_flows (deadline)
    WHERE deadline IS NOT NULL AND status IN ('running', 'interrupted');
ALTER TABLE dwarf_steps ADD COLUMN wake_at REAL;
ALTER TABLE dwarf_steps ADD COLUMN wait_signal TEXT;
CREATE INDEX idx_dwarf_steps_wake ON dwarf_steps (wake_at)
    WHERE wake_at IS NOT NULL AND status IN ('interrupted', 'created');
CREATE INDEX idx_dwarf_steps_signal_waits ON dwarf_steps (flow_id, wait_signal)
    WHERE status = 'created' AND parked = 2;
-- Signals sent to a flow tree that no step was waiting for (yet): the next wait_for_signal of that name
-- anywhere in the tree takes the oldest one. A taken signal is deleted (its data lives on in the step
-- that took it, as resume_data); the rest go with their flow (delete, purge). resume_data is the
-- signal's data, named as the column that receives it (a codec encodes both alike: docs/codecs.md).
CREATE TABLE dwarf_signals (
    signal_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    root_flow_id INTEGER NOT NULL,
    name         TEXT    NOT NULL,
    resume_data  TEXT    NOT NULL,
    created_at   REAL    NOT NULL
);
CREATE INDEX idx_dwarf_signals_tree ON dwarf_signals (root_flow_id, name, signal_id);
