-- After the worker's run (scripts/bench-webhook.sh): does the database say
-- what the events say? Standard input: the CSV that examples/loadgen.rs wrote
-- from the events alone (username,subscribed,status). Prints one line of
-- counts; the script compares them.
\set ON_ERROR_STOP on
CREATE TEMP TABLE expected (username TEXT PRIMARY KEY, subscribed BOOLEAN NOT NULL, status TEXT NOT NULL);
\copy expected FROM pstdin WITH (FORMAT csv)
SELECT
    (SELECT count(*) FROM expected) AS expected_users,
    (SELECT count(*) FROM expected WHERE right(username, 2) = '00') AS expected_paying_users,
    -- Every active session of every user the events named carries the state.
    -- (Not necessarily written in this run: a session whose keys already
    -- held the final values is not written at all.)
    (SELECT count(*) FROM user_sessions s JOIN expected e USING (username)
     WHERE s.is_active AND s.expires_at > (now() AT TIME ZONE 'UTC')) AS active_sessions,
    (SELECT count(*) FROM user_sessions s JOIN expected e USING (username)
     WHERE s.is_active AND s.expires_at > (now() AT TIME ZONE 'UTC')
       AND ((s.session_data::jsonb -> 'subscribed') IS DISTINCT FROM to_jsonb(e.subscribed)
            OR (s.session_data::jsonb ->> 'subscription_status') IS DISTINCT FROM e.status)) AS wrong_sessions,
    -- What the web app reads at login agrees.
    (SELECT count(*) FROM expected e LEFT JOIN user_subscription_status v USING (username)
     WHERE v.subscribed IS DISTINCT FROM e.subscribed OR v.status IS DISTINCT FROM e.status) AS wrong_view_rows,
    -- Each event recorded once, and applied.
    (SELECT count(*) FROM sw_events WHERE event_id LIKE 'evt\_1Bench%') AS events_recorded,
    (SELECT count(*) FROM sw_events WHERE event_id LIKE 'evt\_1Bench%' AND outcome = 'applied') AS events_applied,
    (SELECT count(*) FROM sw_events WHERE event_id LIKE 'evt\_1Warm%' AND outcome = 'ignored') AS warmup_ignored,
    (SELECT count(*) FROM sw_events) AS events_total,
    (SELECT count(*) FROM user_sessions) AS sessions_total;
