-- A cohort's join runs once: the transaction that performs it first flips cohort_joined on the spawn row.
-- The last member's arrival is counted in its own short statement and the join follows in a transaction
-- of its own, so the flag (and the wedge sweep, for a worker that died in between) keeps it exactly once.
ALTER TABLE dwarf_steps ADD COLUMN cohort_joined INTEGER NOT NULL DEFAULT 0;
UPDATE dwarf_steps SET cohort_joined = 1 WHERE cohort_size > 0 AND cohort_arrivals >= cohort_size;
-- The cohorts still open: few rows however large the table, for the claimers' look for stranded joins.
CREATE INDEX idx_dwarf_steps_open_cohorts ON dwarf_steps (step_id) WHERE cohort_size > 0 AND cohort_joined = 0;
