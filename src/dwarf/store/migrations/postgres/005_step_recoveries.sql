-- How many times in a row a step's lease lapsed while it ran (its worker died, was killed or stalled). A
-- step that takes its worker down with it (a crash in native code, an out-of-memory kill) would otherwise
-- be claimed and lose its worker for ever; past a limit it fails instead (see executor.run_claimed_step).
ALTER TABLE dwarf_steps ADD COLUMN recoveries INTEGER NOT NULL DEFAULT 0;
