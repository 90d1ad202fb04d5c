-- no-transaction
-- Deactivated sessions that have not expired yet, for the purge's second
-- walk. Partial: it holds only the few rows the web app has deactivated, and
-- costs an active session nothing.
CREATE INDEX CONCURRENTLY IF NOT EXISTS user_sessions_deactivated_idx ON user_sessions (expires_at) WHERE is_active = false;
