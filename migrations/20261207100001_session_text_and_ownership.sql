-- Three changes to the webhook's effect (issue 9, items 4-6):
--
-- 1. session_data is rewritten through the `json` type, which keeps its
--    input text, instead of `jsonb`, which normalises numbers and reorders
--    keys: every other member keeps its value's text and its place.
-- 2. A subscription that changes hands leaves its previous user: both users
--    are locked (in one fixed order) and both brought up to date. The
--    customer -> username mapping follows the newest checkout by `created`.
-- 3. A status read from Stripe's API is applied only if the subscription's
--    recorded state is still the one read before the call (compare and set);
--    otherwise the event's payload is applied under the ordering rules.

-- `created` of the checkout that set the mapping; NULL when it was learnt
-- from subscription metadata (or before this column existed): any checkout
-- replaces it.
ALTER TABLE sw_customers ADD COLUMN checkout_created TIMESTAMPTZ;

-- The username came from the subscription's own metadata, so it does not
-- follow its customer's mapping when a newer checkout changes it.
ALTER TABLE sw_subscriptions ADD COLUMN named_by_metadata BOOLEAN NOT NULL DEFAULT FALSE;

-- The members of a JSON object's text, each key and value as written (only
-- the white space between tokens is dropped), in order. For text that
-- json_each cannot read: it de-escapes every string, so it refuses "\u0000"
-- and lone surrogates ("\ud800"), which RFC 8259 and the json type accept.
-- `data` must be json with an object at the top (the caller checked): then
-- every '"' outside a string opens one, so the tokens below are exact.
CREATE FUNCTION sw_json_members(data TEXT)
RETURNS TABLE (key_text TEXT, value_text TEXT, ord INTEGER)
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    v_token TEXT;
    v_depth INTEGER := 0;
    -- 0: a key (or the closing brace) comes next; 1: the colon; 2: a value.
    v_phase INTEGER := 0;
BEGIN
    ord := 0;
    FOR v_token IN
        SELECT m[1]
        FROM regexp_matches(data, '("(?:[^"\\]|\\.)*"|[][{}:,]|[-+.0-9A-Za-z]+)', 'g') AS m
    LOOP
        IF v_depth = 0 THEN
            v_depth := 1;
        ELSIF v_depth = 1 AND v_phase = 0 THEN
            IF v_token = '}' THEN
                v_depth := 0;
            ELSE
                key_text := v_token;
                v_phase := 1;
            END IF;
        ELSIF v_depth = 1 AND v_phase = 1 THEN
            value_text := '';
            v_phase := 2;
        ELSIF v_depth = 1 AND v_token IN (',', '}') THEN
            ord := ord + 1;
            RETURN NEXT;
            v_phase := 0;
            IF v_token = '}' THEN
                v_depth := 0;
            END IF;
        ELSE
            IF v_token IN ('{', '[') THEN
                v_depth := v_depth + 1;
            ELSIF v_token IN ('}', ']') THEN
                v_depth := v_depth - 1;
            END IF;
            value_text := value_text || v_token;
        END IF;
    END LOOP;
END
$$;

-- A key's text -> the key; NULL when no text can hold it (a "\u0000").
CREATE FUNCTION sw_json_key(key_text TEXT) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    IF strpos(key_text, '\') = 0 THEN
        RETURN substr(key_text, 2, length(key_text) - 2);
    END IF;
    RETURN key_text::json #>> '{}';
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END
$$;

-- Whether two JSON texts hold the same value; FALSE when jsonb cannot hold
-- one of them.
CREATE FUNCTION sw_json_same(a TEXT, b TEXT) RETURNS BOOLEAN
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    RETURN a::jsonb = b::jsonb;
EXCEPTION WHEN OTHERS THEN
    RETURN FALSE;
END
$$;

-- The slow path of sw_session_with, for the rare text json_each refuses.
CREATE FUNCTION sw_session_with_members(data TEXT, names TEXT[], vals TEXT[]) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    v_text TEXT;
    v_same BOOLEAN;
BEGIN
    BEGIN
        PERFORM data::json;
    EXCEPTION WHEN OTHERS THEN
        -- Not RFC 8259 JSON (Python's NaN and Infinity among it).
        RETURN NULL;
    END;
    WITH theirs AS (
        SELECT t.key_text, sw_json_key(t.key_text) AS key, t.value_text AS value, t.ord
        FROM sw_json_members(data) AS t
    ), mine AS (
        SELECT k.key, k.value, k.ord
        FROM unnest(names, vals) WITH ORDINALITY AS k(key, value, ord)
    )
    SELECT string_agg(COALESCE(t.key_text, to_json(m.key)::text) || ': ' || COALESCE(m.value, t.value),
                      ', ' ORDER BY t.ord NULLS LAST, m.ord),
           bool_and(t.key_text IS NOT NULL AND (m.key IS NULL OR sw_json_same(t.value, m.value)))
    INTO v_text, v_same
    FROM theirs t FULL JOIN mine m ON m.key = t.key;
    RETURN CASE WHEN v_same THEN data ELSE '{' || v_text || '}' END;
END
$$;

-- session_data with the members `names` set to the JSON texts `vals`: a
-- key already there keeps its place, a new one goes at the end, and every
-- other member keeps its value's text as written (only white space may
-- change). Returns `data` itself when every key already holds its value
-- (the caller then writes nothing), and NULL when the text is not a JSON
-- object (left alone). NULL data counts as an empty object.
CREATE FUNCTION sw_session_with(data TEXT, names TEXT[], vals TEXT[]) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_doc JSON;
    v_text TEXT;
    v_mine TEXT[];
    v_same BOOLEAN := TRUE;
BEGIN
    IF data IS NULL THEN
        data := '{}';
    END IF;
    -- Text that cannot be an object skips the exception block below (each
    -- entry into one is a subtransaction).
    IF ltrim(data, E' \t\n\r') NOT LIKE '{%' THEN
        RETURN NULL;
    END IF;
    BEGIN
        v_doc := data::json;
        -- The common case, a session already right (as the worker wrote
        -- it): settled by json's C operators alone. A value equal but
        -- written otherwise is written once, the worker's way.
        FOR i IN 1 .. cardinality(names) LOOP
            IF (v_doc -> names[i])::text IS DISTINCT FROM vals[i] THEN
                v_same := FALSE;
                EXIT;
            END IF;
        END LOOP;
        IF v_same THEN
            RETURN data;
        END IF;
        -- json_each gives each value's text as written and the order; only
        -- the keys are re-escaped (the same strings).
        SELECT string_agg(to_json(d.key)::text || ': '
                   || COALESCE(vals[array_position(names, d.key)], d.value::text), ', ' ORDER BY d.ord),
               array_agg(d.key) FILTER (WHERE array_position(names, d.key) IS NOT NULL)
        INTO v_text, v_mine
        FROM json_each(v_doc) WITH ORDINALITY AS d(key, value, ord);
    EXCEPTION WHEN OTHERS THEN
        -- Not JSON, or JSON holding "\u0000" or a lone surrogate.
        RETURN sw_session_with_members(data, names, vals);
    END;
    FOR i IN 1 .. cardinality(names) LOOP
        IF v_mine IS NULL OR names[i] <> ALL (v_mine) THEN
            v_text := concat_ws(', ', v_text, to_json(names[i])::text || ': ' || vals[i]);
        END IF;
    END LOOP;
    RETURN '{' || v_text || '}';
END
$$;

-- The same, with the keys as a JSON object.
CREATE FUNCTION sw_session_with(data TEXT, keys JSON) RETURNS TEXT
LANGUAGE sql IMMUTABLE AS $$
    SELECT sw_session_with(data, array_agg(k.key ORDER BY k.ord), array_agg(k.value::text ORDER BY k.ord))
    FROM json_each(keys) WITH ORDINALITY AS k(key, value, ord)
$$;

-- The keys the worker keeps in every active session of `p_username`, from
-- the durable record: a subscribed subscription's status if there is one,
-- else the latest; "none" when no subscription is known. The session API
-- reuses it when it creates a session.
CREATE FUNCTION sw_session_keys(p_username TEXT) RETURNS JSON
LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'subscribed', COALESCE(bool_or(s.subscribed), FALSE),
        'subscription_status',
            COALESCE((array_agg(s.status ORDER BY s.subscribed DESC, s.event_created DESC))[1], 'none'))
    FROM sw_subscriptions s
    WHERE s.username = p_username
$$;

-- Brings the active sessions of `p_username` in step with the durable
-- record. The caller holds the user's lock. A session whose keys already
-- hold the values is not written; one whose data is not a JSON object is
-- left alone, and its row id reported.
CREATE FUNCTION sw_refresh_user(
    p_username TEXT,
    OUT out_updated INTEGER,
    OUT out_skipped_ids INTEGER[]
) LANGUAGE plpgsql AS $$
DECLARE
    v_names TEXT[];
    v_vals TEXT[];
BEGIN
    SELECT array_agg(k.key ORDER BY k.ord), array_agg(k.value::text ORDER BY k.ord)
    INTO v_names, v_vals
    FROM json_each(sw_session_keys(p_username)) WITH ORDINALITY AS k(key, value, ord);
    -- user_sessions holds UTC in TIMESTAMP columns: "now" is taken in UTC
    -- whatever the connection's TimeZone is. Rows are locked in id order,
    -- like every other writer here.
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

DROP FUNCTION sw_apply_event(TEXT, TEXT, BIGINT, TEXT, TEXT, TEXT, TEXT, TEXT, BIGINT, BOOLEAN, TEXT[]);
DROP FUNCTION sw_session_object(TEXT);

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
            IF v_changes AND out_username IS NOT NULL THEN
                v_users := v_users || v_current.username;
            END IF;
            IF v_remap THEN
                v_users := v_users || ARRAY(
                    SELECT s.username FROM sw_subscriptions s
                    WHERE s.customer_id = p_customer AND NOT s.named_by_metadata AND s.username IS NOT NULL);
            END IF;
            v_users := ARRAY(SELECT DISTINCT u FROM unnest(v_users) AS u WHERE u IS NOT NULL);
            FOR v_user IN SELECT u FROM unnest(v_users) AS u ORDER BY hashtext(u), u LOOP
                PERFORM pg_advisory_xact_lock(1398210562, hashtext(v_user));
            END LOOP;

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
                    current_period_end, event_created, event_id, from_checkout, named_by_metadata)
                VALUES (p_key, out_username, p_customer, v_status, v_status = ANY (p_subscribed_statuses),
                    to_timestamp(v_period_end), v_created, p_event_id, p_action = 'checkout',
                    p_action <> 'checkout' AND p_username IS NOT NULL)
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
