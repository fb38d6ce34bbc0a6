-- Lookups that do not grow with history. Every statement that looks for a cohort's members
-- (lineage_id = the spawn's id) must reach them through an index, or each join, each readiness check and
-- each idle poll with a cohort open reads every step row ever kept. The members' index is partial
-- (lineage_id > 0: trunk steps, most rows, stay out of it), and a partial index serves a query only when
-- the query's own WHERE implies the index's: "lineage_id = :spawn_id" does not, because the value is not
-- known when the plan is made (SQLite plans before binding; PostgreSQL reuses a generic plan after a few
-- runs of a prepared statement), and neither does "m.lineage_id = s.step_id" in the view. So those
-- statements now also say "lineage_id > 0", and the index holds arrived too, which the counts of
-- arrivals then read from the index alone.
DROP INDEX idx_dwarf_steps_lineage;
CREATE INDEX idx_dwarf_steps_lineage ON dwarf_steps (lineage_id, arrived) WHERE lineage_id > 0;
DROP VIEW dwarf_complete_cohorts;
CREATE VIEW dwarf_complete_cohorts AS
SELECT s.step_id, s.flow_id FROM dwarf_steps s
WHERE s.cohort_size > 0 AND s.cohort_joined = 0
  AND s.cohort_arrivals + (
      SELECT COUNT(*) FROM dwarf_steps m
      WHERE m.lineage_id = s.step_id AND m.lineage_id > 0 AND m.arrived IN (3, 4)
  ) >= s.cohort_size;
-- The steps parked on a child flow, which the wedge sweep checks (wedged_subgraph_parks): few at any
-- time, however many steps are kept.
CREATE INDEX idx_dwarf_steps_parked ON dwarf_steps (step_id) WHERE status = 'created' AND parked = 1;
