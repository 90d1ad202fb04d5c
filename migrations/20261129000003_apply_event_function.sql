-- The whole effect of one event, as one function: one round trip from the
-- worker, one statement, so atomic without an explicit transaction. The same
-- call is what the benchmark's pgbench limit runs.

-- Whether a state said at `in_created` replaces the recorded one. Stripe's
-- life cycle: a subscription starts `incomplete` and never returns to it;
-- `canceled` and `incomplete_expired` are final (a renewal gets a new id).
-- Otherwise the newer wins, and on a tie (one-second resolution) the later
-- delivery.
CREATE FUNCTION sw_supersedes(in_status TEXT, in_created TIMESTAMPTZ, cur_status TEXT, cur_created TIMESTAMPTZ)
RETURNS BOOLEAN LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN cur_status IN ('canceled', 'incomplete_expired') THEN FALSE
        WHEN in_status = 'incomplete' AND cur_status <> 'incomplete' THEN FALSE
        ELSE in_created >= cur_created
    END
$$;

-- A session's data as a JSON object, or NULL when it is not one (such a
-- session is left untouched). NULL data counts as an empty object.
CREATE FUNCTION sw_session_object(data TEXT) RETURNS JSONB LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF data IS NULL THEN
        RETURN '{}'::jsonb;
    END IF;
    -- Text that cannot be an object skips the exception block below (each
    -- entry into one is a subtransaction).
    IF ltrim(data, E' \t\n\r') NOT LIKE '{%' THEN
        RETURN NULL;
    END IF;
    BEGIN
        RETURN data::jsonb;
    EXCEPTION WHEN OTHERS THEN
        -- Not JSON, or JSON that jsonb cannot hold (a \u0000 escape).
        RETURN NULL;
    END;
END
$$;

-- p_action: 'checkout' | 'subscription' | 'invoice' | 'unhandled'.
-- p_key: the subscription id ('checkout:<id>' for a paid one-off checkout).
-- p_status: the status the event states; NULL when it states none (an unpaid
-- checkout, an invoice).
-- p_authoritative: the status was read from Stripe's API just now, so it is
-- the truth whatever the recorded state says (but a final state stays final).
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
    p_authoritative BOOLEAN,
    p_subscribed_statuses TEXT[],
    OUT out_outcome TEXT,
    OUT out_username TEXT,
    OUT out_sessions_updated INTEGER,
    OUT out_sessions_skipped INTEGER
) LANGUAGE plpgsql AS $$
DECLARE
    v_created CONSTANT TIMESTAMPTZ := to_timestamp(p_created);
    v_current sw_subscriptions%ROWTYPE;
    v_changes BOOLEAN := FALSE;
    v_adopted INTEGER := 0;
    v_subscribed BOOLEAN;
    v_status TEXT;
BEGIN
    out_sessions_updated := 0;
    out_sessions_skipped := 0;

    -- Exactly once: a concurrent delivery of the same id waits here for the
    -- first one's commit, then finds the id taken.
    INSERT INTO sw_events (event_id, event_type, created)
    VALUES (p_event_id, p_event_type, v_created)
    ON CONFLICT (event_id) DO NOTHING;
    IF NOT FOUND THEN
        out_outcome := 'duplicate';
        RETURN;
    END IF;

    IF p_action NOT IN ('checkout', 'subscription') AND p_status IS NULL THEN
        out_username := COALESCE(p_username,
            (SELECT c.username FROM sw_customers c WHERE c.customer_id = p_customer));
        out_outcome := 'ignored';
    ELSE
        -- Locks, always in this order so that two events cannot deadlock:
        -- the subscription's owner (its customer), then the user. Every
        -- writer of a subscription holds the first, every writer of a user's
        -- subscriptions and sessions the second. They end with the
        -- transaction, even when the instance dies.
        PERFORM pg_advisory_xact_lock(1398210561, hashtext(COALESCE(p_customer, p_key)));
        SELECT * INTO v_current FROM sw_subscriptions s WHERE s.subscription_id = p_key;

        IF p_action = 'checkout' THEN
            out_username := p_username;
            IF p_username IS NOT NULL AND p_customer IS NOT NULL THEN
                INSERT INTO sw_customers (customer_id, username) VALUES (p_customer, p_username)
                ON CONFLICT (customer_id) DO UPDATE SET username = EXCLUDED.username, updated_at = now();
            END IF;
        ELSE
            out_username := COALESCE(p_username, v_current.username,
                (SELECT c.username FROM sw_customers c WHERE c.customer_id = p_customer));
            IF p_username IS NOT NULL AND p_customer IS NOT NULL THEN
                -- Remember who the customer is, unless a checkout said so already.
                INSERT INTO sw_customers (customer_id, username) VALUES (p_customer, p_username)
                ON CONFLICT (customer_id) DO NOTHING;
            END IF;
        END IF;

        IF p_action = 'checkout' AND out_username IS NULL THEN
            out_outcome := 'unknown_user';
        ELSE
            IF out_username IS NOT NULL THEN
                PERFORM pg_advisory_xact_lock(1398210562, hashtext(out_username));
            END IF;
            IF p_action = 'checkout' AND p_customer IS NOT NULL THEN
                -- Subscription events that came before this checkout now have a user.
                UPDATE sw_subscriptions s SET username = out_username, updated_at = now()
                WHERE s.customer_id = p_customer AND s.username IS NULL;
                GET DIAGNOSTICS v_adopted = ROW_COUNT;
            END IF;

            IF p_status IS NOT NULL THEN
                -- Even the API's answer does not reopen a final state: it
                -- may have been read just before the event that ended it.
                v_changes := v_current.subscription_id IS NULL
                    OR (p_authoritative AND v_current.status NOT IN ('canceled', 'incomplete_expired'))
                    OR sw_supersedes(p_status, v_created, v_current.status, v_current.event_created);
            END IF;
            IF v_changes THEN
                INSERT INTO sw_subscriptions AS s (subscription_id, username, customer_id, status, subscribed,
                    current_period_end, event_created, event_id, from_checkout)
                VALUES (p_key, out_username, p_customer, p_status, p_status = ANY (p_subscribed_statuses),
                    to_timestamp(p_period_end), v_created, p_event_id, p_action = 'checkout')
                ON CONFLICT (subscription_id) DO UPDATE SET
                    username = COALESCE(EXCLUDED.username, s.username),
                    customer_id = COALESCE(EXCLUDED.customer_id, s.customer_id),
                    status = EXCLUDED.status,
                    subscribed = EXCLUDED.subscribed,
                    current_period_end = COALESCE(EXCLUDED.current_period_end, s.current_period_end),
                    event_created = GREATEST(EXCLUDED.event_created, s.event_created),
                    event_id = EXCLUDED.event_id,
                    from_checkout = EXCLUDED.from_checkout,
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
            ELSIF v_changes OR v_adopted > 0 THEN
                -- The user's summary: a subscribed subscription's status if
                -- there is one, else the latest.
                SELECT bool_or(s.subscribed),
                       (array_agg(s.status ORDER BY s.subscribed DESC, s.event_created DESC))[1]
                INTO v_subscribed, v_status
                FROM sw_subscriptions s WHERE s.username = out_username;

                -- user_sessions holds UTC in TIMESTAMP columns: "now" is
                -- taken in UTC whatever the connection's TimeZone is. Rows
                -- are locked in id order, like every other writer here.
                WITH active AS (
                    SELECT u.id, sw_session_object(u.session_data) AS data
                    FROM user_sessions u
                    WHERE u.username = out_username AND u.is_active
                      AND u.expires_at > (now() AT TIME ZONE 'UTC')
                    ORDER BY u.id
                    FOR UPDATE
                ), written AS (
                    UPDATE user_sessions u
                    SET session_data = (a.data || jsonb_build_object(
                            'subscribed', COALESCE(v_subscribed, FALSE),
                            'subscription_status', COALESCE(v_status, 'none')))::text,
                        updated_at = (now() AT TIME ZONE 'UTC')
                    FROM active a
                    WHERE u.id = a.id AND a.data IS NOT NULL
                    RETURNING u.id
                )
                SELECT (SELECT count(*) FROM written), (SELECT count(*) FROM active WHERE data IS NULL)
                INTO out_sessions_updated, out_sessions_skipped;
                out_outcome := 'applied';
            ELSIF p_status IS NULL THEN
                out_outcome := 'ignored';
            ELSE
                out_outcome := 'stale';
            END IF;
        END IF;
    END IF;

    UPDATE sw_events e SET outcome = out_outcome, username = out_username WHERE e.event_id = p_event_id;
END
$$;
