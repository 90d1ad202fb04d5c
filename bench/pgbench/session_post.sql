-- POST /sessions: the call SessionStore::create makes, for a random user,
-- with the data examples/sessionload.rs sends.
\set u random(1, 200000)
SELECT o_session_data, o_created_at, o_updated_at, o_expires_at
FROM sw_session_create(md5(random()::text) || substr(md5(random()::text), 1, 11),
                       'user_' || lpad(:u::text, 6, '0'),
                       '"_fresh":true,"csrf_token":"0123456789abcdef0123456789abcdef","_flashes":[]',
                       86400, FALSE);
