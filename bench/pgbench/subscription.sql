-- pgbench (scripts/bench-webhook.sh): the database work of one
-- customer.subscription.updated webhook, exactly the worker's call
-- (src/store/apply.rs) with the arguments it binds for such an event. A
-- paying user of bench/seed.sql, a fresh event id, the worker's status mix;
-- :created (set with -D) is newer than the seeded state, so every call is
-- applied, as every event of the worker's run is.
\set u 100 * random(1, 2000)
\set r random(1, 1000000000000000)
\set s random(1, 10)
SELECT out_outcome, out_username, out_sessions_updated, out_sessions_skipped, out_skipped_ids
FROM sw_apply_event('evt_1Pgb' || :r, 'customer.subscription.updated', :created, 'subscription',
    'sub_SW' || lpad(:u::text, 8, '0') || 'g0', 'cus_SW' || lpad(:u::text, 8, '0'),
    'user_' || lpad(:u::text, 6, '0'),
    (ARRAY['active', 'active', 'active', 'active', 'active', 'active',
           'past_due', 'past_due', 'trialing', 'unpaid'])[:s],
    :period_end, NULL, NULL, NULL,
    '{"items": [{"price": "price_1", "product": "prod_1", "lookup_key": "pro", "quantity": 1}], "cancel_at_period_end": false, "cancel_at": null, "trial_end": null}'::jsonb,
    NULL, '{active,trialing}'::text[]);
