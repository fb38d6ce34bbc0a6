-- Vacuum and analyze the two hot tables early and often (issue 14: history must not slow the engine).
--
-- Which updates can be HOT (a new row version on the same page and no new index entries), and so which
-- fillfactor: an update is HOT only if it changes no column that an index uses, as key or in its WHERE.
-- A step is inserted (pending, or leased at once as a successor), leased, then finished; the lease and
-- the finish change status (in the predicates of idx_dwarf_steps_due and idx_dwarf_steps_leased), and
-- so do retries, recoveries, releases, cancels, resumes and wakes; lease renewals change lease_expires
-- (the key of idx_dwarf_steps_leased). Every flow update changes status (a key of idx_dwarf_flows_status
-- and idx_dwarf_flows_root) or purge_marked (idx_dwarf_flows_purge). None of these can be HOT. The
-- updates that can be HOT touch a finished row's unindexed columns: the fan-in bookkeeping on a spawn
-- (count_arrival, settle_cancelled_siblings, fold_cohort_arrivals, set_fan_in_step) and its members
-- (mark_arrived, mark_arrivals_counted, link_members_to_fan_in), and fork fix-ups (remap_successor,
-- set_step_child). Those already find room on their page: measured, 0 of linear3's updates and about a
-- third of a fan-out's (width 20) were HOT at fillfactor 100, 90 and 80 alike, while at 90 the heaps
-- of linear3's tables grew by a third. So fillfactor stays 100, stated here so that nobody lowers it
-- expecting HOT updates the indexes rule out.
--
-- Every non-HOT update leaves a dead row version and index entries pointing at it, which only VACUUM
-- removes. Until it does, the statements that look for work (status = 'pending' / 'running' on the
-- partial indexes) step over them. By default autovacuum waits for dead versions to reach 20% of a
-- table: 60,000 dead step versions once the steps of 100,000 linear3 flows are kept. Autovacuum
-- processes a table once its dead versions exceed threshold + scale factor x rows; 2% (and at least
-- 1,000) keeps them few at any history size, and a vacuum, which reads each index of the table whole,
-- still runs only once per 2% of the table rewritten. A busy table is vacuumed at most once per
-- autovacuum_naptime (a server setting, one minute by default), so under heavy load the naptime bounds
-- the dead versions, not these settings: at the end of a 100,000-flow run there were 59,107 with the
-- defaults and 6,322 with these at 530 steps/s, but 56,490 with these at 1,250 steps/s. With fresh
-- statistics (below) such numbers cost little: linear3 ran within noise of its clean-table speed beside
-- 62,000 dead step versions.
--
-- Statistics as often: the plans of the statements that look for work depend on them. Without any, the
-- planner prefers bitmap scans of the partial indexes, which visit the heap page of every dead version
-- each time and never mark an index entry dead, and it overestimates the idle poll (next_wake_time)
-- enough to JIT-compile it at every call. Measured on never-analyzed tables beside 100,000 finished
-- flows: the claim of the time (before 007) took 139 ms to find nothing (132,000 index entries, 18,000
-- heap pages); the idle poll takes 190 ms, 160 of them JIT, and 3 ms once the tables are analyzed.
--
-- vacuum_index_cleanup = on: by default a vacuum that finds dead versions on fewer than 2% of a table's
-- pages skips the indexes (PostgreSQL 14's bypass), which is what frequent vacuums of a large table
-- find, and the dead entries of the partial indexes, the ones claims pay for, would stay.
ALTER TABLE dwarf_steps SET (
    fillfactor = 100,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 1000,
    vacuum_index_cleanup = on
);
ALTER TABLE dwarf_flows SET (
    fillfactor = 100,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 1000,
    vacuum_index_cleanup = on
);
