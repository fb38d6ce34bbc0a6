-- list pages through flows newest first in one total order, (created_at, flow_id) descending, with a keyset
-- cursor on the same pair: this index lets a page start at the cursor instead of scanning past every newer
-- flow. (Ordering by flow_id alone disagreed with created_at under concurrent inserts on PostgreSQL.)
CREATE INDEX idx_dwarf_flows_created ON dwarf_flows (created_at, flow_id);
