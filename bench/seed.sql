-- Seeds the benchmark database (after `session-worker migrate`): a web app's
-- user_sessions table as it looks after a while in production, and the
-- worker's own tables for the users who pay.
--
-- Names (examples/loadgen.rs and bench/pgbench/*.sql build the same ones):
--   user u (1..200000)        username  user_<u, 6 digits>
--   paying user (u % 100 = 0) customer  cus_SW<u, 8 digits>
--                             subscription sub_SW<u, 8 digits>g0 (active)
--   lapsed user (u % 100 = 50) the same names, subscription canceled
--
-- Sessions: 1,000,000 rows, 5 per user, in the order a live table fills
-- (row g belongs to user ((g - 1) % 200000) + 1). About half are expired and
-- about 3 % deactivated. Each paying user has exactly 3 active sessions, one
-- expired and one deactivated (these two must come through the run
-- untouched). session_data is what a Python web app (Flask-Login style)
-- writes with json.dumps: 395-500 bytes, 440 on average.
\set ON_ERROR_STOP on
SET synchronous_commit = off;

CREATE TEMP TABLE seed_clock AS SELECT (now() AT TIME ZONE 'UTC') AS now_utc;

INSERT INTO user_sessions (session_id, username, session_data, created_at, updated_at, expires_at, is_active)
SELECT
    md5('session' || g) || substr(md5('token' || g), 1, 11),
    'user_' || lpad(u::text, 6, '0'),
    format('{"_user_id": "%s", "_fresh": %s, "_id": "%s", "csrf_token": "%s", '
           '"login_at": "%s", "ip": "%s", "user_agent": "%s", "_flashes": []%s}',
        u,
        CASE WHEN g % 3 = 0 THEN 'true' ELSE 'false' END,
        md5('id' || g) || md5('id2' || g) || md5('id3' || g) || md5('id4' || g),
        sha1,
        to_char(created, 'YYYY-MM-DD"T"HH24:MI:SS.US'),
        '203.0.' || (g % 250) || '.' || (u % 250 + 1),
        (ARRAY[
            'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36',
            'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15',
            'Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0',
            'Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1'
        ])[g % 4 + 1],
        CASE WHEN paying THEN ', "subscribed": true, "subscription_status": "active"' ELSE '' END),
    created,
    created + make_interval(secs => g % 3600),
    expires,
    active
FROM (
    SELECT g, u, paying, expired, active,
           substr(md5('csrf' || g) || md5('csrf2' || g), 1, 40) AS sha1,
           CASE WHEN expired
                THEN c.now_utc - interval '1 hour' - make_interval(secs => g % 2592000)
                ELSE c.now_utc + interval '1 hour' + make_interval(secs => g % 1209600)
           END AS expires
    FROM (
        SELECT g, u, k, paying,
               CASE WHEN paying THEN k = 3 ELSE (u + k) % 2 = 0 END AS expired,
               CASE WHEN paying THEN k <> 4 ELSE (g * 37) % 100 >= 3 END AS active
        FROM (
            SELECT g, ((g - 1) % 200000) + 1 AS u, (g - 1) / 200000 AS k,
                   ((g - 1) % 200000 + 1) % 100 = 0 AS paying
            FROM generate_series(1, 1000000) AS g
        ) AS rows
    ) AS flags, seed_clock AS c
) AS s,
LATERAL (SELECT s.expires - interval '15 days' AS created) AS t
ORDER BY g;

-- Customers and subscriptions: paying users (active) and lapsed users (canceled).
INSERT INTO sw_customers (customer_id, username, updated_at)
SELECT 'cus_SW' || lpad(u::text, 8, '0'), 'user_' || lpad(u::text, 6, '0'), now() - interval '60 days'
FROM generate_series(50, 200000, 50) AS u;

INSERT INTO sw_subscriptions (subscription_id, username, customer_id, status, subscribed,
    current_period_end, event_created, event_id, from_checkout, updated_at)
SELECT 'sub_SW' || lpad(u::text, 8, '0') || 'g0',
       'user_' || lpad(u::text, 6, '0'),
       'cus_SW' || lpad(u::text, 8, '0'),
       CASE WHEN u % 100 = 0 THEN 'active' ELSE 'canceled' END,
       u % 100 = 0,
       now() + interval '10 days',
       now() - interval '20 days',
       'evt_1Seed' || lpad(u::text, 19, '0'),
       FALSE,
       now() - interval '20 days'
FROM generate_series(50, 200000, 50) AS u;

-- Months of processed events.
INSERT INTO sw_events (event_id, event_type, created, username, outcome, received_at)
SELECT 'evt_1Hist' || lpad(n::text, 19, '0'),
       (ARRAY['customer.subscription.updated', 'customer.subscription.updated', 'invoice.paid',
              'checkout.session.completed', 'customer.subscription.created'])[n % 5 + 1],
       now() - make_interval(secs => 8000000 - n * 40),
       'user_' || lpad((n % 4000 * 50 + 50)::text, 6, '0'),
       'applied',
       now() - make_interval(secs => 8000000 - n * 40)
FROM generate_series(1, 100000) AS n;

VACUUM ANALYZE;
