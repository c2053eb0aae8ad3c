-- One row per ExchangeRecord (Kafka glitch.exchanges.v1).
--
-- ReplacingMergeTree on the record id: a record is immutable, so (tenant_id, received_at)
-- are functions of its id and the sorting key identifies a record. A replay that slips past
-- insert deduplication adds a second copy that merges away; `SELECT … FINAL` never sees it.
-- The 90-day TTL is the default retention; `migrate({ ttlDays })` rewrites it when changed.
CREATE TABLE IF NOT EXISTS exchanges
(
    id UUID,
    schema_version UInt16,
    tenant_id LowCardinality(String),
    key_id LowCardinality(String),
    session_id Nullable(String),
    device_id Nullable(String),
    received_at DateTime64(3, 'UTC'),
    method LowCardinality(String),
    route String,
    query String,
    model LowCardinality(Nullable(String)),
    stream Bool,
    status UInt16,
    -- Header maps as JSON objects (a value may be a list); secrets are already [REDACTED].
    request_headers String CODEC(ZSTD(3)),
    -- Bodies exactly as they crossed the wire: the text when it is valid UTF-8, else base64
    -- (see *_encoding). Query JSON bodies with JSONExtract*(request_body, …).
    request_body String CODEC(ZSTD(3)),
    request_body_encoding LowCardinality(String),
    request_body_bytes UInt64,
    response_headers String CODEC(ZSTD(3)),
    response_body String CODEC(ZSTD(3)),
    response_body_encoding LowCardinality(String),
    response_body_bytes UInt64,
    -- SSE only: the raw event stream as relayed; NULL for non-streaming responses.
    response_events Nullable(String) CODEC(ZSTD(3)),
    response_events_encoding LowCardinality(Nullable(String)),
    response_events_bytes Nullable(UInt64),
    -- NULL when upstream reported no usage (errors, aborted streams).
    input_tokens Nullable(UInt64),
    output_tokens Nullable(UInt64),
    cache_read_input_tokens Nullable(UInt64),
    cache_creation_input_tokens Nullable(UInt64),
    upstream_first_byte_ms Nullable(Float64),
    done_ms Float64,
    added_overhead_ms Float64,
    verdict_action LowCardinality(String),
    -- Inline findings as a JSON array, plus their rule ids for cheap filtering.
    findings String,
    finding_rule_ids Array(LowCardinality(String)),
    client_aborted Bool,
    error_code Nullable(String),
    error_message Nullable(String),
    -- Where ingest read the record: the offset of the message that completed it (its last
    -- chunk when chunked). Ingest resumes from max(kafka_offset) per partition.
    kafka_topic LowCardinality(String),
    kafka_partition Int32,
    kafka_offset Int64,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_id id TYPE bloom_filter GRANULARITY 4,
    INDEX idx_session session_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (tenant_id, received_at, id)
TTL toDateTime(received_at) + INTERVAL 90 DAY
SETTINGS non_replicated_deduplication_window = 1000;
