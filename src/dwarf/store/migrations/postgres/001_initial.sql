-- The flows and steps tables. Times are seconds since the Unix epoch (REAL) in the database's clock, so
-- that leases, not-before times and ages compare with plain arithmetic on both dialects.

CREATE TABLE dwarf_flows (
    flow_id              BIGSERIAL PRIMARY KEY,
    flow_token           TEXT    NOT NULL,
    workflow_url         TEXT    NOT NULL,
    workflow_name        TEXT    NOT NULL,
    graph                TEXT    NOT NULL,
    baggage              TEXT    NOT NULL DEFAULT 'null',
    status               TEXT    NOT NULL,
    parent_flow_id       BIGINT  NOT NULL DEFAULT 0,
    parent_step_id       BIGINT  NOT NULL DEFAULT 0,
    root_flow_id         BIGINT  NOT NULL DEFAULT 0,
    thread_id            BIGINT  NOT NULL DEFAULT 0,
    thread_token         TEXT    NOT NULL DEFAULT '',
    forked_from_step_id  BIGINT  NOT NULL DEFAULT 0,
    notify_on_stop       BIGINT  NOT NULL DEFAULT 0,
    delete_on_completion BIGINT  NOT NULL DEFAULT 0,
    final_state          TEXT    NOT NULL DEFAULT '{}',
    error                TEXT    NOT NULL DEFAULT '',
    cancel_reason        TEXT    NOT NULL DEFAULT '',
    interrupt_payload    TEXT    NOT NULL DEFAULT '{}',
    surfaced_step_id     BIGINT  NOT NULL DEFAULT 0,
    priority             BIGINT  NOT NULL,
    fairness_key         TEXT    NOT NULL DEFAULT '',
    fairness_weight      DOUBLE PRECISION NOT NULL DEFAULT 1,
    time_budget_ms       BIGINT  NOT NULL,
    trace_parent         TEXT    NOT NULL DEFAULT '',
    version              BIGINT  NOT NULL DEFAULT 0,
    purge_marked         BIGINT  NOT NULL DEFAULT 0,
    created_at           DOUBLE PRECISION NOT NULL,
    started_at           DOUBLE PRECISION,
    updated_at           DOUBLE PRECISION NOT NULL
);
CREATE INDEX idx_dwarf_flows_list ON dwarf_flows (parent_flow_id, flow_id);
CREATE INDEX idx_dwarf_flows_status ON dwarf_flows (status, flow_id);
-- (root_flow_id, status): tree-wide status checks (delete, purge) must not walk every running flow.
CREATE INDEX idx_dwarf_flows_root ON dwarf_flows (root_flow_id, status);
CREATE INDEX idx_dwarf_flows_parent ON dwarf_flows (parent_flow_id) WHERE parent_flow_id > 0;
CREATE INDEX idx_dwarf_flows_thread ON dwarf_flows (thread_id, flow_id);
CREATE INDEX idx_dwarf_flows_purge ON dwarf_flows (purge_marked) WHERE purge_marked = 1;

CREATE TABLE dwarf_steps (
    step_id           BIGSERIAL PRIMARY KEY,
    flow_id           BIGINT  NOT NULL,
    step_token        TEXT    NOT NULL,
    step_depth        BIGINT  NOT NULL,
    task_name         TEXT    NOT NULL,
    task_url          TEXT    NOT NULL,
    state             TEXT    NOT NULL DEFAULT '{}',
    changes           TEXT    NOT NULL DEFAULT '{}',
    interrupt_payload TEXT    NOT NULL DEFAULT '{}',
    status            TEXT    NOT NULL,
    error             TEXT    NOT NULL DEFAULT '',
    attempt           BIGINT  NOT NULL DEFAULT 0,
    time_budget_ms    BIGINT  NOT NULL,
    priority          BIGINT  NOT NULL,
    fairness_key      TEXT    NOT NULL DEFAULT '',
    fairness_weight   DOUBLE PRECISION NOT NULL DEFAULT 1,
    predecessor_id    BIGINT  NOT NULL DEFAULT 0,
    successor_id      BIGINT  NOT NULL DEFAULT 0,
    lineage_id        BIGINT  NOT NULL DEFAULT 0,
    fan_out_ordinal   BIGINT  NOT NULL DEFAULT 0,
    cohort_size       BIGINT  NOT NULL DEFAULT 0,
    cohort_arrivals   BIGINT  NOT NULL DEFAULT 0,
    cohort_failures   BIGINT  NOT NULL DEFAULT 0,
    carry             TEXT    NOT NULL DEFAULT '{}',
    arrived           BIGINT  NOT NULL DEFAULT 0,
    for_each_as       TEXT    NOT NULL DEFAULT '',
    join_target       TEXT    NOT NULL DEFAULT '',
    fan_in_step_id    BIGINT  NOT NULL DEFAULT 0,
    parked            BIGINT  NOT NULL DEFAULT 0,
    child_flow_id     BIGINT  NOT NULL DEFAULT 0,
    resume_data       TEXT,
    subgraph_result   TEXT,
    subgraph_error    TEXT    NOT NULL DEFAULT '',
    not_before        DOUBLE PRECISION NOT NULL,
    version           BIGINT  NOT NULL DEFAULT 0,
    lease_token       TEXT    NOT NULL DEFAULT '',
    lease_expires     DOUBLE PRECISION NOT NULL DEFAULT 0,
    created_at        DOUBLE PRECISION NOT NULL,
    started_at        DOUBLE PRECISION,
    updated_at        DOUBLE PRECISION NOT NULL
);
CREATE INDEX idx_dwarf_steps_flow ON dwarf_steps (flow_id, step_id);
CREATE INDEX idx_dwarf_steps_due ON dwarf_steps (priority, step_id) WHERE status = 'pending';
CREATE INDEX idx_dwarf_steps_leased ON dwarf_steps (lease_expires) WHERE status = 'running';
CREATE INDEX idx_dwarf_steps_lineage ON dwarf_steps (lineage_id) WHERE lineage_id > 0;
