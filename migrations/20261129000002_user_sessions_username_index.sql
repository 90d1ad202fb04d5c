-- no-transaction
-- The webhook updates a user's sessions by username; the web app's table has
-- no index on it. CONCURRENTLY: the web app keeps writing while it builds.
-- Neither column is changed by the webhook's update, so it stays a HOT update.
CREATE INDEX CONCURRENTLY IF NOT EXISTS user_sessions_username_idx ON user_sessions (username);
