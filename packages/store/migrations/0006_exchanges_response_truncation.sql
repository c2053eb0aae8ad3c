-- The forwarder keeps at most its capture limit of a response body (the client still gets
-- every byte). A record says when it kept only the first part, and how large the body was.
-- Rows stored before this migration read as not truncated, with the size unknown (NULL).
ALTER TABLE exchanges
    -- response_body / response_events hold only the first part of the body.
    ADD COLUMN IF NOT EXISTS response_body_truncated Bool DEFAULT false AFTER response_events_bytes,
    -- Body bytes upstream sent, as on the wire (content-encoded; for SSE the event stream),
    -- counted in full even when truncated.
    ADD COLUMN IF NOT EXISTS response_body_wire_bytes Nullable(UInt64) AFTER response_body_truncated;
