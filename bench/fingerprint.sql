-- Fingerprint of everything a run must leave as it was (scripts/bench-webhook.sh
-- prints it before and after the worker's run and compares):
--   1. every session row that is not an active session of a paying user
--      (other users, expired, deactivated), whole;
--   2. the paying users' active sessions, all but updated_at and the keys the
--      worker writes ("subscribed", "subscription_status", "subscription").
-- Paying users are user_<u> with u % 100 = 0 (bench/seed.sql). Nothing expires
-- during a run: expiries are at least an hour away from when the seed ran.
\set ON_ERROR_STOP on
SELECT count(*) || ' ' || md5(string_agg(md5(s::text), '' ORDER BY id))
FROM user_sessions s
WHERE NOT (right(username, 2) = '00' AND is_active AND expires_at > (now() AT TIME ZONE 'UTC'));
SELECT count(*) || ' ' || md5(string_agg(
           concat_ws('|', id, session_id, username, created_at, expires_at, is_active,
                     (session_data::jsonb - 'subscribed' - 'subscription_status' - 'subscription')::text),
           ',' ORDER BY id))
FROM user_sessions s
WHERE right(username, 2) = '00' AND is_active AND expires_at > (now() AT TIME ZONE 'UTC');
