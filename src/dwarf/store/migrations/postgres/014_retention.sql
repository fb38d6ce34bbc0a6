-- Retention built in (FlowOptions.retain_for, Engine.set_retain_for, delete_on_completion's grace window;
-- docs/operations.md#retention). A root flow carries, from its create, how long it is kept once it ends:
-- retain_for after it fails or is cancelled, retain_completed_for after it completes (the grace window
-- when it was created with delete_on_completion, else retain_for); NULL keeps it for ever. The write that
-- ends the flow, which happens anyway, sets purge_after = the database's clock + that time, in the same
-- statement; the retention pass of every engine with workers marks the flows whose purge_after passed
-- for the reaper, and clears purge_after as it marks them. Child flows carry nothing (they go with their
-- root's tree), nor do flows from before this migration: NULL everywhere keeps today's behaviour.
--
-- The index is partial: flows kept for ever (the default) stay out of it, so ending them costs no index
-- write and the pass reads only flows that will be purged, the due ones first.
ALTER TABLE dwarf_flows ADD COLUMN retain_for DOUBLE PRECISION;
ALTER TABLE dwarf_flows ADD COLUMN retain_completed_for DOUBLE PRECISION;
ALTER TABLE dwarf_flows ADD COLUMN purge_after DOUBLE PRECISION;
CREATE INDEX idx_dwarf_flows_purge_after ON dwarf_flows (purge_after) WHERE purge_after IS NOT NULL;
