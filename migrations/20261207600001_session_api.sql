-- The session API (docs/session-api.md): what a session created through it
-- starts with, and the one call that creates it.

-- The lifetime of a session created with its own `ttl_secs` (sliding expiry
-- extends a session by its lifetime); a session without a row here lives
-- SESSION_TTL. Rows of purged sessions are deleted by the session API's
-- upkeep, not by a foreign key: a cascade would cost the purge a trigger
-- call per deleted session.
CREATE TABLE sw_session_lifetimes (
    session_row_id INTEGER PRIMARY KEY,
    lifetime_secs  INTEGER NOT NULL CHECK (lifetime_secs > 0)
);

-- Creates a session in one round trip. p_members: the members of the app's
-- `data` object as written, without the braces ('' for none); the
-- subscription keys are appended. The user's lock is the one the webhook
-- takes before it reads the user's subscriptions and writes their sessions
-- (sw_apply_event): a webhook committing now either commits before the keys
-- are read here (and they are its keys) or waits for this insert and then
-- updates the new session too. Each statement below takes a new snapshot
-- (READ COMMITTED), so the read after the lock sees what the lock waited for.
CREATE FUNCTION sw_session_create(
    p_session_id TEXT,
    p_username TEXT,
    p_members TEXT,
    p_lifetime_secs INTEGER,
    p_record_lifetime BOOLEAN,
    OUT o_session_data TEXT,
    OUT o_created_at TIMESTAMP,
    OUT o_updated_at TIMESTAMP,
    OUT o_expires_at TIMESTAMP
) LANGUAGE plpgsql AS $$
DECLARE
    v_keys TEXT;
    v_row_id INTEGER;
    -- UTC in TIMESTAMP columns, whatever the connection's TimeZone.
    v_now CONSTANT TIMESTAMP := clock_timestamp() AT TIME ZONE 'UTC';
BEGIN
    PERFORM pg_advisory_xact_lock(1398210562, hashtext(p_username));
    -- The keys the webhook writes (sw_session_keys, migration 20261207100002).
    v_keys := regexp_replace(sw_session_keys(p_username)::text, '^\s*\{', '');
    INSERT INTO user_sessions AS u (session_id, username, session_data, created_at, updated_at, expires_at, is_active)
    VALUES (p_session_id, p_username,
            CASE WHEN p_members = '' THEN '{' ELSE '{' || p_members || ', ' END || v_keys,
            v_now, v_now, v_now + make_interval(secs => p_lifetime_secs), TRUE)
    RETURNING u.id, u.session_data, u.created_at, u.updated_at, u.expires_at
    INTO v_row_id, o_session_data, o_created_at, o_updated_at, o_expires_at;
    IF p_record_lifetime THEN
        INSERT INTO sw_session_lifetimes (session_row_id, lifetime_secs) VALUES (v_row_id, p_lifetime_secs);
    END IF;
END
$$;
