-- Sessions that say what the user bought (issue 11): the durable record
-- keeps each subscription's items, cancellation and trial, and each
-- customer's entitlement features; the view user_subscription_status keeps
-- its four columns and gains the contract's after them; every active
-- session gets a "subscription" object beside "subscribed" and
-- "subscription_status".

ALTER TABLE sw_subscriptions
    ADD COLUMN items JSONB NOT NULL DEFAULT '[]',
    ADD COLUMN cancel_at_period_end BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN cancel_at TIMESTAMPTZ,
    ADD COLUMN trial_end TIMESTAMPTZ,
    -- A subscription event (or the API) said the four above; a checkout does not.
    ADD COLUMN details_known BOOLEAN NOT NULL DEFAULT FALSE;

-- Each customer's active entitlement features (their lookup keys), as the
-- newest summary by `created` says.
CREATE TABLE sw_entitlements (
    customer_id     TEXT PRIMARY KEY,
    features        TEXT[] NOT NULL,
    summary_created TIMESTAMPTZ NOT NULL,
    event_id        TEXT NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Lookups by user and by customer, made for every event (a user's
-- customers, a customer's subscriptions when a checkout re-maps it). The
-- worker's own small tables: built in the migration's transaction.
CREATE INDEX sw_customers_username_idx ON sw_customers (username);
CREATE INDEX sw_subscriptions_customer_idx ON sw_subscriptions (customer_id);

-- A user's features: those of every customer of theirs (mapped to them, or
-- of one of their subscriptions), each once, sorted.
CREATE FUNCTION sw_user_features(p_username TEXT) RETURNS TEXT[]
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(array_agg(DISTINCT f.feature ORDER BY f.feature), '{}')
    FROM sw_entitlements e CROSS JOIN LATERAL unnest(e.features) AS f(feature)
    WHERE e.customer_id IN (
        SELECT c.customer_id FROM sw_customers c WHERE c.username = p_username
        UNION
        SELECT s.customer_id FROM sw_subscriptions s
        WHERE s.username = p_username AND s.customer_id IS NOT NULL)
$$;

-- RFC 3339 in UTC with a Z, as the session object shows times. STABLE as
-- to_char is, so that it is inlined.
CREATE FUNCTION sw_rfc3339(t TIMESTAMPTZ) RETURNS TEXT
LANGUAGE sql STABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
$$;

-- The keys the worker keeps in every active session of `p_username`, as
-- JSON texts in the order of `names`: "subscribed", "subscription_status"
-- and "subscription", the primary subscription (a subscribed one with the
-- newest event if any, else the one with the newest event) as an object,
-- or null when none is known. PL/pgSQL: its plans are kept per connection
-- (a SQL function with a FROM is planned per call).
CREATE FUNCTION sw_session_values(p_username TEXT, OUT names TEXT[], OUT vals TEXT[])
LANGUAGE plpgsql STABLE AS $$
DECLARE
    p sw_subscriptions%ROWTYPE;
    v_features TEXT[];
BEGIN
    names := ARRAY['subscribed', 'subscription_status', 'subscription'];
    SELECT * INTO p FROM sw_subscriptions s
    WHERE s.username = p_username
    ORDER BY s.subscribed DESC, s.event_created DESC, s.subscription_id
    LIMIT 1;
    IF NOT FOUND THEN
        vals := ARRAY['false', '"none"', 'null'];
        RETURN;
    END IF;
    -- sw_user_features, inline: a query here keeps its plan.
    SELECT COALESCE(array_agg(DISTINCT f.feature ORDER BY f.feature), '{}') INTO v_features
    FROM sw_entitlements e CROSS JOIN LATERAL unnest(e.features) AS f(feature)
    WHERE e.customer_id IN (
        SELECT c.customer_id FROM sw_customers c WHERE c.username = p_username
        UNION
        SELECT s.customer_id FROM sw_subscriptions s
        WHERE s.username = p_username AND s.customer_id IS NOT NULL);
    vals := ARRAY[p.subscribed::text, to_json(p.status)::text, json_build_object(
        'id', CASE WHEN p.subscription_id LIKE 'checkout:%' THEN NULL ELSE p.subscription_id END,
        'status', p.status,
        'items', p.items,
        'current_period_end', sw_rfc3339(p.current_period_end),
        'cancel_at_period_end', p.cancel_at_period_end,
        'cancel_at', sw_rfc3339(p.cancel_at),
        'trial_end', sw_rfc3339(p.trial_end),
        'features', v_features)::text];
END
$$;

-- The same as one JSON object. The session API calls it when it creates a
-- session.
CREATE OR REPLACE FUNCTION sw_session_keys(p_username TEXT) RETURNS JSON
LANGUAGE sql STABLE AS $$
    SELECT ('{' || string_agg(to_json(k.name)::text || ': ' || k.val, ', ' ORDER BY k.n) || '}')::json
    FROM sw_session_values(p_username) AS v
    CROSS JOIN LATERAL unnest(v.names, v.vals) WITH ORDINALITY AS k(name, val, n)
$$;

-- As in 20261207100001, with the keys from sw_session_values.
CREATE OR REPLACE FUNCTION sw_refresh_user(
    p_username TEXT,
    OUT out_updated INTEGER,
    OUT out_skipped_ids INTEGER[]
) LANGUAGE plpgsql AS $$
DECLARE
    v_names TEXT[];
    v_vals TEXT[];
BEGIN
    SELECT v.names, v.vals INTO v_names, v_vals FROM sw_session_values(p_username) AS v;
    WITH active AS (
        SELECT u.id, u.session_data AS old, sw_session_with(u.session_data, v_names, v_vals) AS data
        FROM user_sessions u
        WHERE u.username = p_username AND u.is_active
          AND u.expires_at > (now() AT TIME ZONE 'UTC')
        ORDER BY u.id
        FOR UPDATE
    ), written AS (
        UPDATE user_sessions u
        SET session_data = a.data, updated_at = (now() AT TIME ZONE 'UTC')
        FROM active a
        WHERE u.id = a.id AND a.data IS NOT NULL AND a.data IS DISTINCT FROM a.old
        RETURNING u.id
    )
    SELECT (SELECT count(*) FROM written),
           COALESCE((SELECT array_agg(a.id ORDER BY a.id) FROM active a WHERE a.data IS NULL), '{}')
    INTO out_updated, out_skipped_ids;
END
$$;

-- The first four columns as they were; the primary subscription's after
-- them (its first item's price, product, lookup key and quantity).
CREATE OR REPLACE VIEW user_subscription_status AS
SELECT username, any_subscribed AS subscribed, status, current_period_end,
       subscription_id, price_id, product_id, lookup_key, quantity,
       cancel_at_period_end, cancel_at, trial_end, sw_user_features(username) AS features
FROM (
    SELECT DISTINCT ON (s.username)
        s.username,
        bool_or(s.subscribed) OVER (PARTITION BY s.username) AS any_subscribed,
        s.status,
        (s.current_period_end AT TIME ZONE 'UTC') AS current_period_end,
        CASE WHEN s.subscription_id LIKE 'checkout:%' THEN NULL ELSE s.subscription_id END AS subscription_id,
        s.items -> 0 ->> 'price' AS price_id,
        s.items -> 0 ->> 'product' AS product_id,
        s.items -> 0 ->> 'lookup_key' AS lookup_key,
        (s.items -> 0 ->> 'quantity')::integer AS quantity,
        s.cancel_at_period_end,
        (s.cancel_at AT TIME ZONE 'UTC') AS cancel_at,
        (s.trial_end AT TIME ZONE 'UTC') AS trial_end
    FROM sw_subscriptions s
    WHERE s.username IS NOT NULL
    ORDER BY s.username, s.subscribed DESC, s.event_created DESC, s.subscription_id
) AS known
UNION ALL
SELECT c.username, FALSE, NULL::TEXT, NULL::TIMESTAMP,
       NULL::TEXT, NULL::TEXT, NULL::TEXT, NULL::TEXT, NULL::INTEGER,
       NULL::BOOLEAN, NULL::TIMESTAMP, NULL::TIMESTAMP, sw_user_features(c.username)
FROM (SELECT DISTINCT username FROM sw_customers) AS c
WHERE NOT EXISTS (SELECT 1 FROM sw_subscriptions s WHERE s.username = c.username);

-- Applies an entitlement summary: the customer's features become the
-- listed lookup keys, unless a newer summary (by `created`) was recorded;
-- the active sessions of every user of that customer follow. Recorded once
-- per event id, like sw_apply_event.
CREATE FUNCTION sw_apply_entitlements(
    p_event_id TEXT,
    p_event_type TEXT,
    p_created BIGINT,
    p_customer TEXT,
    p_features TEXT[],
    OUT out_outcome TEXT,
    OUT out_username TEXT,
    OUT out_sessions_updated INTEGER,
    OUT out_sessions_skipped INTEGER,
    OUT out_skipped_ids INTEGER[]
) LANGUAGE plpgsql AS $$
DECLARE
    v_created CONSTANT TIMESTAMPTZ := to_timestamp(p_created);
    v_users TEXT[];
    v_user TEXT;
    v_refresh RECORD;
BEGIN
    out_sessions_updated := 0;
    out_sessions_skipped := 0;
    out_skipped_ids := '{}';
    INSERT INTO sw_events (event_id, event_type, created)
    VALUES (p_event_id, p_event_type, v_created)
    ON CONFLICT (event_id) DO NOTHING;
    IF NOT FOUND THEN
        out_outcome := 'duplicate';
        RETURN;
    END IF;

    IF p_customer IS NULL THEN
        out_outcome := 'ignored';
    ELSE
        -- The same locks, in the same order, as sw_apply_event.
        PERFORM pg_advisory_xact_lock(1398210561, hashtext(p_customer));
        INSERT INTO sw_entitlements AS e (customer_id, features, summary_created, event_id)
        VALUES (p_customer, p_features, v_created, p_event_id)
        ON CONFLICT (customer_id) DO UPDATE SET
            features = EXCLUDED.features,
            summary_created = EXCLUDED.summary_created,
            event_id = EXCLUDED.event_id,
            updated_at = now()
        -- A tie: the later delivery wins.
        WHERE EXCLUDED.summary_created >= e.summary_created;
        IF NOT FOUND THEN
            out_outcome := 'stale';
        ELSE
            v_users := ARRAY(
                SELECT c.username FROM sw_customers c WHERE c.customer_id = p_customer
                UNION
                SELECT s.username FROM sw_subscriptions s
                WHERE s.customer_id = p_customer AND s.username IS NOT NULL);
            out_username := v_users[1];
            IF out_username IS NULL THEN
                -- Kept: the features are the user's once the customer is tied to one.
                out_outcome := 'unknown_user';
            ELSE
                FOR v_user IN SELECT u FROM unnest(v_users) AS u ORDER BY hashtext(u), u LOOP
                    PERFORM pg_advisory_xact_lock(1398210562, hashtext(v_user));
                END LOOP;
                FOREACH v_user IN ARRAY v_users LOOP
                    SELECT * INTO v_refresh FROM sw_refresh_user(v_user);
                    out_sessions_updated := out_sessions_updated + v_refresh.out_updated;
                    out_skipped_ids := out_skipped_ids || v_refresh.out_skipped_ids;
                END LOOP;
                out_sessions_skipped := cardinality(out_skipped_ids);
                out_outcome := 'applied';
            END IF;
        END IF;
    END IF;

    UPDATE sw_events e SET outcome = out_outcome, username = out_username WHERE e.event_id = p_event_id;
END
$$;

DROP FUNCTION sw_apply_event(TEXT, TEXT, BIGINT, TEXT, TEXT, TEXT, TEXT, TEXT, BIGINT, TEXT, BIGINT, TEXT, TEXT[]);

-- The whole effect of one event, as one function: one round trip from the
-- worker, one statement, so atomic without an explicit transaction. The same
-- call is what the benchmark's pgbench limit runs.
--
-- p_action: 'checkout' | 'subscription' | 'invoice' | 'unhandled'.
-- p_key: the subscription id ('checkout:<id>' for a paid one-off checkout).
-- p_status, p_period_end: what the payload says; p_status is NULL when it
-- says no status (an unpaid checkout, an invoice).
-- p_truth_status, p_truth_period_end: the subscription as Stripe's API
-- answered just now (NULL: not asked), read after the subscription's state
-- was recorded by event p_truth_expect (NULL: no state was recorded). The
-- answer stands only if that is still so (but a final state stays final);
-- otherwise the payload is applied under the ordering rules.
-- p_details, p_truth_details: what the payload and the API say of the
-- subscription's items, cancellation and trial (`{"items": [{"price",
-- "product", "lookup_key", "quantity"}], "cancel_at_period_end", "cancel_at",
-- "trial_end"}`, times in Unix seconds); NULL when they say nothing of it.
CREATE FUNCTION sw_apply_event(
    p_event_id TEXT,
    p_event_type TEXT,
    p_created BIGINT,
    p_action TEXT,
    p_key TEXT,
    p_customer TEXT,
    p_username TEXT,
    p_status TEXT,
    p_period_end BIGINT,
    p_truth_status TEXT,
    p_truth_period_end BIGINT,
    p_truth_expect TEXT,
    p_details JSONB,
    p_truth_details JSONB,
    p_subscribed_statuses TEXT[],
    OUT out_outcome TEXT,
    OUT out_username TEXT,
    OUT out_sessions_updated INTEGER,
    OUT out_sessions_skipped INTEGER,
    OUT out_skipped_ids INTEGER[]
) LANGUAGE plpgsql AS $$
DECLARE
    v_created CONSTANT TIMESTAMPTZ := to_timestamp(p_created);
    v_current sw_subscriptions%ROWTYPE;
    v_mapped sw_customers%ROWTYPE;
    v_status TEXT := p_status;
    v_period_end BIGINT := p_period_end;
    v_details JSONB := p_details;
    v_truth BOOLEAN := FALSE;
    v_changes BOOLEAN := FALSE;
    -- This checkout is the newest of its customer: the mapping follows it.
    v_remap BOOLEAN := FALSE;
    v_moved INTEGER := 0;
    -- Every user whose subscriptions this event changes.
    v_users TEXT[];
    v_user TEXT;
    v_refresh RECORD;
BEGIN
    out_sessions_updated := 0;
    out_sessions_skipped := 0;
    out_skipped_ids := '{}';

    -- Exactly once: a concurrent delivery of the same id waits here for the
    -- first one's commit, then finds the id taken.
    INSERT INTO sw_events (event_id, event_type, created)
    VALUES (p_event_id, p_event_type, v_created)
    ON CONFLICT (event_id) DO NOTHING;
    IF NOT FOUND THEN
        out_outcome := 'duplicate';
        RETURN;
    END IF;

    IF p_action NOT IN ('checkout', 'subscription') AND p_status IS NULL AND p_truth_status IS NULL THEN
        out_username := COALESCE(p_username,
            (SELECT c.username FROM sw_customers c WHERE c.customer_id = p_customer));
        out_outcome := 'ignored';
    ELSE
        -- Locks, always in this order so that two events cannot deadlock:
        -- the subscription's owner (its customer), then its users, by lock
        -- key. Every writer of a customer's subscriptions and mapping holds
        -- the first, every writer of a user's sessions the second. They end
        -- with the transaction, even when the instance dies.
        PERFORM pg_advisory_xact_lock(1398210561, hashtext(COALESCE(p_customer, p_key)));
        SELECT * INTO v_current FROM sw_subscriptions s WHERE s.subscription_id = p_key;
        SELECT * INTO v_mapped FROM sw_customers c WHERE c.customer_id = p_customer;

        -- Compare and set: the API's answer, unless a newer event was
        -- recorded for the subscription while the call was in flight.
        IF p_truth_status IS NOT NULL AND v_current.event_id IS NOT DISTINCT FROM p_truth_expect THEN
            v_truth := TRUE;
            v_status := p_truth_status;
            v_period_end := p_truth_period_end;
            v_details := p_truth_details;
        END IF;

        IF p_action = 'checkout' THEN
            IF p_username IS NOT NULL AND p_customer IS NOT NULL THEN
                -- The newest checkout names the customer's user (a tie: the
                -- later delivery); one delivered late changes nothing.
                v_remap := v_mapped.customer_id IS NULL OR v_mapped.checkout_created IS NULL
                    OR v_created >= v_mapped.checkout_created;
                IF v_remap THEN
                    INSERT INTO sw_customers (customer_id, username, checkout_created)
                    VALUES (p_customer, p_username, v_created)
                    ON CONFLICT (customer_id) DO UPDATE SET
                        username = EXCLUDED.username,
                        checkout_created = EXCLUDED.checkout_created,
                        updated_at = now();
                END IF;
            END IF;
            out_username := CASE
                WHEN p_username IS NULL OR p_customer IS NULL OR v_remap THEN p_username
                ELSE v_mapped.username
            END;
        ELSE
            -- The subscription's metadata, else its customer's user.
            out_username := COALESCE(p_username, v_mapped.username, v_current.username);
            IF p_username IS NOT NULL AND p_customer IS NOT NULL THEN
                -- Remember who the customer is, unless a checkout said so already.
                INSERT INTO sw_customers (customer_id, username) VALUES (p_customer, p_username)
                ON CONFLICT (customer_id) DO NOTHING;
            END IF;
        END IF;

        IF p_action = 'checkout' AND out_username IS NULL THEN
            out_outcome := 'unknown_user';
        ELSE
            IF v_status IS NOT NULL THEN
                -- Even the API's answer does not reopen a final state: it
                -- may have been read just before the event that ended it.
                v_changes := v_current.subscription_id IS NULL
                    OR (v_truth AND v_current.status NOT IN ('canceled', 'incomplete_expired'))
                    OR sw_supersedes(v_status, v_created, v_current.status, v_current.event_created);
            END IF;

            -- Who loses a subscription: its previous owner, and on a newer
            -- checkout, every user the customer's subscriptions followed.
            v_users := ARRAY[out_username];
            IF v_changes AND v_current.username <> out_username THEN
                v_users := v_users || v_current.username;
            END IF;
            IF v_remap THEN
                v_users := v_users || ARRAY(
                    SELECT s.username FROM sw_subscriptions s
                    WHERE s.customer_id = p_customer AND NOT s.named_by_metadata
                      AND s.username <> out_username);
            END IF;
            IF cardinality(v_users) = 1 THEN
                -- The common case: one user (or none yet).
                IF out_username IS NULL THEN
                    v_users := '{}';
                ELSE
                    PERFORM pg_advisory_xact_lock(1398210562, hashtext(out_username));
                END IF;
            ELSE
                v_users := ARRAY(SELECT DISTINCT u FROM unnest(v_users) AS u WHERE u IS NOT NULL);
                FOR v_user IN SELECT u FROM unnest(v_users) AS u ORDER BY hashtext(u), u LOOP
                    PERFORM pg_advisory_xact_lock(1398210562, hashtext(v_user));
                END LOOP;
            END IF;

            IF p_action = 'checkout' AND p_customer IS NOT NULL AND out_username IS NOT NULL THEN
                -- The customer's subscriptions follow its user (those that
                -- came before any checkout had none yet); those named by
                -- their own metadata stay.
                UPDATE sw_subscriptions s SET username = out_username, updated_at = now()
                WHERE s.customer_id = p_customer
                  AND (s.username IS NULL OR (v_remap AND NOT s.named_by_metadata))
                  AND s.username IS DISTINCT FROM out_username;
                GET DIAGNOSTICS v_moved = ROW_COUNT;
            END IF;

            IF v_changes THEN
                INSERT INTO sw_subscriptions AS s (subscription_id, username, customer_id, status, subscribed,
                    current_period_end, event_created, event_id, from_checkout, named_by_metadata,
                    items, cancel_at_period_end, cancel_at, trial_end, details_known)
                VALUES (p_key, out_username, p_customer, v_status, v_status = ANY (p_subscribed_statuses),
                    to_timestamp(v_period_end), v_created, p_event_id, p_action = 'checkout',
                    p_action <> 'checkout' AND p_username IS NOT NULL,
                    COALESCE(v_details -> 'items', '[]'),
                    COALESCE((v_details ->> 'cancel_at_period_end')::boolean, FALSE),
                    to_timestamp((v_details ->> 'cancel_at')::bigint),
                    to_timestamp((v_details ->> 'trial_end')::bigint),
                    v_details IS NOT NULL)
                ON CONFLICT (subscription_id) DO UPDATE SET
                    username = COALESCE(EXCLUDED.username, s.username),
                    customer_id = COALESCE(EXCLUDED.customer_id, s.customer_id),
                    status = EXCLUDED.status,
                    subscribed = EXCLUDED.subscribed,
                    current_period_end = COALESCE(EXCLUDED.current_period_end, s.current_period_end),
                    event_created = GREATEST(EXCLUDED.event_created, s.event_created),
                    event_id = EXCLUDED.event_id,
                    from_checkout = EXCLUDED.from_checkout,
                    named_by_metadata = EXCLUDED.named_by_metadata,
                    -- A checkout says nothing of these: what a subscription
                    -- event said stays.
                    items = CASE WHEN EXCLUDED.details_known THEN EXCLUDED.items ELSE s.items END,
                    cancel_at_period_end = CASE WHEN EXCLUDED.details_known
                        THEN EXCLUDED.cancel_at_period_end ELSE s.cancel_at_period_end END,
                    cancel_at = CASE WHEN EXCLUDED.details_known THEN EXCLUDED.cancel_at ELSE s.cancel_at END,
                    trial_end = CASE WHEN EXCLUDED.details_known THEN EXCLUDED.trial_end ELSE s.trial_end END,
                    details_known = s.details_known OR EXCLUDED.details_known,
                    updated_at = now();
                IF p_action <> 'checkout' AND out_username IS NOT NULL THEN
                    -- A paid checkout without a subscription of its own stood
                    -- in for one until now.
                    DELETE FROM sw_subscriptions s
                    WHERE s.username = out_username AND s.from_checkout
                      AND s.subscription_id LIKE 'checkout:%' AND s.event_created <= v_created;
                END IF;
            END IF;

            IF out_username IS NULL THEN
                -- The state is kept until a checkout ties the customer to a user.
                out_outcome := 'unknown_user';
            ELSIF v_changes OR v_moved > 0 THEN
                FOREACH v_user IN ARRAY v_users LOOP
                    SELECT * INTO v_refresh FROM sw_refresh_user(v_user);
                    out_sessions_updated := out_sessions_updated + v_refresh.out_updated;
                    out_skipped_ids := out_skipped_ids || v_refresh.out_skipped_ids;
                END LOOP;
                out_sessions_skipped := cardinality(out_skipped_ids);
                out_outcome := 'applied';
            ELSIF v_status IS NULL THEN
                out_outcome := 'ignored';
            ELSE
                out_outcome := 'stale';
            END IF;
        END IF;
    END IF;

    UPDATE sw_events e SET outcome = out_outcome, username = out_username WHERE e.event_id = p_event_id;
END
$$;
