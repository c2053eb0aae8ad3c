-- Security events: one per inline finding (derived by ingest from each exchange's verdict,
-- with an id derived from the exchange id so a replay maps to the same row), plus events
-- written by detectors or policy. ReplacingMergeTree on the event id.
CREATE TABLE IF NOT EXISTS security_events
(
    id UUID,
    schema_version UInt16,
    exchange_id Nullable(UUID),
    tenant_id LowCardinality(String),
    session_id Nullable(String),
    source LowCardinality(String),
    rule_id LowCardinality(String),
    severity LowCardinality(String),
    action LowCardinality(String),
    message String,
    at DateTime64(3, 'UTC'),
    -- Empty topic / -1 when the event did not come through Kafka.
    kafka_topic LowCardinality(String),
    kafka_partition Int32,
    kafka_offset Int64,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (tenant_id, at, id)
TTL toDateTime(at) + INTERVAL 90 DAY
SETTINGS non_replicated_deduplication_window = 1000;
