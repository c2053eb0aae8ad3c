-- usage_hourly.response_bytes summed response_body_bytes: the body the record keeps, which
-- is the decoded body, for a stream the reassembled message, and at most the capture limit.
-- From now on it sums the bytes upstream sent to the client (response_body_wire_bytes, as
-- request_bytes counts the request as received), falling back to the kept size for rows
-- stored before that column existed. Hours already rolled up keep what they counted.
-- MODIFY QUERY swaps the view's query in place, so no insert runs without the view.
ALTER TABLE usage_hourly_mv MODIFY QUERY
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
    sum(coalesce(response_body_wire_bytes, response_body_bytes)) AS response_bytes
FROM exchanges
GROUP BY tenant_id, model, hour;
