-- Idempotent create (FlowOptions.idempotency_key, docs/flows.md#idempotent-create). A root flow created
-- with a key holds it in idempotency_key; '' (every other flow, and all flows from before this migration)
-- holds none. The partial unique index lets at most one flow per workflow URL hold a key, across every
-- engine on this database: a keyed create inserts with ON CONFLICT DO NOTHING and reads the winner, so
-- two replicas racing with one key start one flow. Unkeyed flows stay out of the index (it costs their
-- insert nothing but the predicate's test). A flow gives its key up only to a keyed create that is allowed
-- to start anew (the "start_new_if_ended" policy, once the flow has ended; or any policy once the flow
-- is purged): the key then moves to released_idempotency_key, which keeps the record and is not indexed.
ALTER TABLE dwarf_flows ADD COLUMN idempotency_key TEXT NOT NULL DEFAULT '';
ALTER TABLE dwarf_flows ADD COLUMN released_idempotency_key TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX idx_dwarf_flows_idempotency ON dwarf_flows (workflow_url, idempotency_key)
    WHERE idempotency_key <> '';
