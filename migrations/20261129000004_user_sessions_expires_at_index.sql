-- no-transaction
-- The purge walks expired sessions in expires_at order, a batch at a time,
-- instead of scanning the whole table for each batch. CONCURRENTLY: the web
-- app keeps writing while it builds. The webhook's update changes neither
-- this column nor is_active, so it stays a HOT update.
CREATE INDEX CONCURRENTLY IF NOT EXISTS user_sessions_expires_at_idx ON user_sessions (expires_at);
