-- Hourly usage by tenant and model, maintained by a materialized view on every insert into
-- exchanges. SummingMergeTree merges rows of one (tenant, model, hour) eventually, so always
-- read it with sum(…) GROUP BY. It has no TTL: cost history outlives raw exchanges.
--
-- Exactly-once: a deduplicated insert into exchanges (same insert_deduplication_token) is
-- also deduplicated here (the inserters set deduplicate_blocks_in_dependent_materialized_views
-- and this table keeps a deduplication window); ingest never re-inserts offsets at or below
-- what exchanges already holds, so a restart does not double-count either.
CREATE TABLE IF NOT EXISTS usage_hourly
(
    tenant_id LowCardinality(String),
    model LowCardinality(String),
    hour DateTime('UTC'),
    requests UInt64,
    errors UInt64,
    blocked UInt64,
    client_aborted UInt64,
    input_tokens UInt64,
    output_tokens UInt64,
    cache_read_input_tokens UInt64,
    cache_creation_input_tokens UInt64,
    request_bytes UInt64,
    response_bytes UInt64
)
ENGINE = SummingMergeTree
ORDER BY (tenant_id, model, hour)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_hourly_mv TO usage_hourly AS
SELECT
    tenant_id,
    coalesce(model, '') AS model,
    toStartOfHour(received_at) AS hour,
    count() AS requests,
    countIf(status = 0 OR status >= 400 OR error_code IS NOT NULL) AS errors,
    countIf(verdict_action = 'block') AS blocked,
    countIf(client_aborted) AS client_aborted,
    sum(coalesce(input_tokens, 0)) AS input_tokens,
    sum(coalesce(output_tokens, 0)) AS output_tokens,
    sum(coalesce(cache_read_input_tokens, 0)) AS cache_read_input_tokens,
    sum(coalesce(cache_creation_input_tokens, 0)) AS cache_creation_input_tokens,
    sum(request_body_bytes) AS request_bytes,
    sum(response_body_bytes) AS response_bytes
FROM exchanges
GROUP BY tenant_id, model, hour;
