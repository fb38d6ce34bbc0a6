-- PostgreSQL's 006 tunes autovacuum for the two hot tables. SQLite has nothing to tune: it updates rows
-- in place and drops a row's old index entries as it changes, so no dead row versions pile up behind
-- the steps (linear3 measured as fast beside 100,000 finished flows as on an empty database). The one
-- statement does nothing; it keeps the dialects' migration numbers in step (every migration holds a
-- statement: see tests/store/test_loader.py).
SELECT 1;
