-- State deltas (issue 14): a step may store its input state as a reference instead of a copy, so that a
-- state that grows a little every step is not rewritten whole at every step.
--
-- state          the step's input state as JSON text, or '' when it is the output of step state_base
--                (that step's input with its changes, then its appends, applied): see
--                docs/design.md#state-storage. Rows written before this migration all hold whole states.
-- state_base     0 for a whole state; else the step whose output is this step's input (its predecessor).
-- delta_depth    how many references lead from this step back to the nearest whole state (0 if whole).
-- delta_bytes    the bytes of changes and appends on that path: what rebuilding the state applies.
-- snapshot_bytes the size of that nearest whole state. A new whole state is written once the path gets
--                longer than a bound or its bytes outgrow the whole state's, which bounds both the work
--                of a rebuild and the storage a growing state takes (a few times its final size).
-- appends        the items the task appended to array fields (Flow.append), per field; JSON object.
ALTER TABLE dwarf_steps ADD COLUMN state_base INTEGER NOT NULL DEFAULT 0;
ALTER TABLE dwarf_steps ADD COLUMN delta_depth INTEGER NOT NULL DEFAULT 0;
ALTER TABLE dwarf_steps ADD COLUMN delta_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE dwarf_steps ADD COLUMN snapshot_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE dwarf_steps ADD COLUMN appends TEXT NOT NULL DEFAULT '{}';
