-- The web app's table, exactly as it creates it; left alone when it exists.
CREATE TABLE IF NOT EXISTS user_sessions (
    id SERIAL PRIMARY KEY,
    session_id VARCHAR(64) UNIQUE NOT NULL,
    username VARCHAR(50) NOT NULL,
    session_data TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    expires_at TIMESTAMP NOT NULL,
    is_active BOOLEAN DEFAULT TRUE
);

-- Every event id ever accepted: the primary key is what makes an effect
-- happen once, across instances.
CREATE TABLE sw_events (
    event_id    TEXT PRIMARY KEY,
    event_type  TEXT NOT NULL,
    created     TIMESTAMPTZ NOT NULL,
    username    TEXT,
    -- applied | stale | ignored | unknown_user
    outcome     TEXT,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Stripe customer -> the web app's username, learnt from checkouts (and from
-- subscription metadata).
CREATE TABLE sw_customers (
    customer_id TEXT PRIMARY KEY,
    username    TEXT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The durable state of each subscription: the source of truth.
CREATE TABLE sw_subscriptions (
    -- 'checkout:<checkout session id>' for a paid checkout that names no subscription.
    subscription_id    TEXT PRIMARY KEY,
    -- NULL until the customer is tied to a user (a subscription event can
    -- arrive before its checkout).
    username           TEXT,
    customer_id        TEXT,
    status             TEXT NOT NULL,
    -- status was in SUBSCRIBED_STATUSES when it was written.
    subscribed         BOOLEAN NOT NULL,
    current_period_end TIMESTAMPTZ,
    -- `created` of the event that set this state, and that event.
    event_created      TIMESTAMPTZ NOT NULL,
    event_id           TEXT NOT NULL,
    from_checkout      BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX sw_subscriptions_username_idx ON sw_subscriptions (username);
CREATE INDEX sw_subscriptions_orphans_idx ON sw_subscriptions (customer_id) WHERE username IS NULL;

-- What the web app reads at login: one row per known user. With several
-- subscriptions, the status shown is that of a subscribed one if any, else
-- of the most recent.
CREATE VIEW user_subscription_status AS
SELECT username, any_subscribed AS subscribed, status, current_period_end
FROM (
    SELECT DISTINCT ON (username)
        username,
        bool_or(subscribed) OVER (PARTITION BY username) AS any_subscribed,
        status,
        (current_period_end AT TIME ZONE 'UTC') AS current_period_end
    FROM sw_subscriptions
    WHERE username IS NOT NULL
    ORDER BY username, subscribed DESC, event_created DESC, subscription_id
) AS known
UNION ALL
SELECT c.username, FALSE, NULL::TEXT, NULL::TIMESTAMP
FROM (SELECT DISTINCT username FROM sw_customers) AS c
WHERE NOT EXISTS (SELECT 1 FROM sw_subscriptions s WHERE s.username = c.username);
