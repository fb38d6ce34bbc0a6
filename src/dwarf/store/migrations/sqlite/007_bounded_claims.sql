-- A claim ranks the due steps of a bounded window of fairness keys (see _claim_walk in queries.sql). When
-- a band has more keys with due work than the window holds, the window starts after the key stored here
-- and the claim moves it on, so that every key comes round. One row; '' until a window first fills.
CREATE TABLE dwarf_claim_cursor (
    cursor_id INTEGER PRIMARY KEY,
    after_key TEXT    NOT NULL
);
INSERT INTO dwarf_claim_cursor (cursor_id, after_key) VALUES (1, '');
