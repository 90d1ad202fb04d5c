-- GET /sessions/{id}: the statement SessionStore::load runs (src/store/sessions.rs),
-- for a live session picked at random (bench-sessions.sh names them live_<n>).
\set n random(1, :live)
SELECT session_id, username, session_data, created_at, updated_at, expires_at
FROM user_sessions
WHERE session_id = 'live_' || lpad(:n::text, 38, '0') AND is_active AND expires_at > (now() AT TIME ZONE 'UTC');
