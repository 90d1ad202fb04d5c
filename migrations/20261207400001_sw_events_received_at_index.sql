-- no-transaction
-- The purge rounds delete recorded events older than EVENT_RETENTION in
-- batches, walking this index in received_at order instead of scanning the
-- whole table for each batch. CONCURRENTLY: webhooks keep recording events
-- while it builds.
CREATE INDEX CONCURRENTLY IF NOT EXISTS sw_events_received_at_idx ON sw_events (received_at);
