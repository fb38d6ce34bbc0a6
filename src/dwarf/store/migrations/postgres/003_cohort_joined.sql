-- Fan-in without a shared hot row. A cohort member arrives on its own row (arrived = 3, or 4 when it
-- abandoned the cohort), not yet counted on the spawn; the cohort is joined once, by the transaction that
-- first flips cohort_joined on the spawn, which also folds those arrivals into the spawn's counts.
ALTER TABLE dwarf_steps ADD COLUMN cohort_joined INTEGER NOT NULL DEFAULT 0;
UPDATE dwarf_steps SET cohort_joined = 1 WHERE cohort_size > 0 AND cohort_arrivals >= cohort_size;
-- The cohorts still open: few rows however large the table.
CREATE INDEX idx_dwarf_steps_open_cohorts ON dwarf_steps (step_id) WHERE cohort_size > 0 AND cohort_joined = 0;
-- The open cohorts that can be joined now: the arrivals counted on the spawn plus the members that
-- arrived on their own rows reach the cohort's size. The one definition of a complete cohort.
CREATE VIEW dwarf_complete_cohorts AS
SELECT s.step_id, s.flow_id FROM dwarf_steps s
WHERE s.cohort_size > 0 AND s.cohort_joined = 0
  AND s.cohort_arrivals + (
      SELECT COUNT(*) FROM dwarf_steps m WHERE m.lineage_id = s.step_id AND m.arrived IN (3, 4)
  ) >= s.cohort_size;
