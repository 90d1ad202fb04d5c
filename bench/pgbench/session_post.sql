-- POST /sessions: the call SessionStore::create makes, for a random user,
-- with the data examples/sessionload.rs sends (its colons written \x3a: pgbench
-- reads any :name, even inside a string, as a variable).
\set u random(1, 200000)
SELECT o_session_data, o_created_at, o_updated_at, o_expires_at
FROM sw_session_create(md5(random()::text) || substr(md5(random()::text), 1, 11),
                       'user_' || lpad(:u::text, 6, '0'),
                       E'"_fresh"\x3atrue,"csrf_token"\x3a"0123456789abcdef0123456789abcdef","_flashes"\x3a[]',
                       86400, FALSE);
