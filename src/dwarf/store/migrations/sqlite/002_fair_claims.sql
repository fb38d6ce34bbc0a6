-- Claims order due steps by priority band, then by a weighted-fair turn within each fairness key (FIFO
-- inside a key). The index serves that partitioning: band, key, then age.
DROP INDEX IF EXISTS idx_dwarf_steps_due;
CREATE INDEX idx_dwarf_steps_due ON dwarf_steps (priority, fairness_key, step_id) WHERE status = 'pending';
