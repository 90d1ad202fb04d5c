-- pgbench (scripts/bench-webhook.sh): the database work of one paid
-- checkout.session.completed webhook of a subscription, exactly the worker's
-- call (src/store/apply.rs) with the arguments it binds for such an event: a
-- paying user of bench/seed.sql starts a new subscription (a fresh id).
\set u 100 * random(1, 2000)
\set r random(1, 1000000000000000)
SELECT out_outcome, out_username, out_sessions_updated, out_sessions_skipped, out_skipped_ids
FROM sw_apply_event('evt_1Pgb' || :r, 'checkout.session.completed', :created, 'checkout',
    'sub_Pgb' || :r, 'cus_SW' || lpad(:u::text, 8, '0'), 'user_' || lpad(:u::text, 6, '0'),
    'active', NULL, NULL, NULL, NULL, NULL, NULL, '{active,trialing}'::text[]);
