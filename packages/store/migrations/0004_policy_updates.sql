-- Audit trail of retroactive policy updates (block session / key / tenant, add signature,
-- lift). Kept outside the retention TTL: it is small and explains past blocks.
CREATE TABLE IF NOT EXISTS policy_updates
(
    id UUID,
    schema_version UInt16,
    version UInt64,
    tenant_id LowCardinality(String),
    update LowCardinality(String),
    target String,
    pattern Nullable(String),
    ttl_seconds Nullable(UInt32),
    reason String,
    created_by String,
    created_at DateTime64(3, 'UTC'),
    kafka_topic LowCardinality(String),
    kafka_partition Int32,
    kafka_offset Int64,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant_id, created_at, id)
SETTINGS non_replicated_deduplication_window = 1000;
