-- Findings of the slower (LLM) detectors (Kafka glitch.findings.v1). ReplacingMergeTree on
-- the finding id, same reasoning as exchanges.
CREATE TABLE IF NOT EXISTS findings
(
    id UUID,
    schema_version UInt16,
    exchange_id UUID,
    tenant_id LowCardinality(String),
    session_id Nullable(String),
    detector LowCardinality(String),
    detector_version LowCardinality(String),
    severity LowCardinality(String),
    category LowCardinality(String),
    summary String,
    evidence String CODEC(ZSTD(3)),
    recommended_action LowCardinality(String),
    created_at DateTime64(3, 'UTC'),
    kafka_topic LowCardinality(String),
    kafka_partition Int32,
    kafka_offset Int64,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_exchange exchange_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (tenant_id, created_at, id)
TTL toDateTime(created_at) + INTERVAL 90 DAY
SETTINGS non_replicated_deduplication_window = 1000;
