-- Cheaper session writes (issue 11's budget): the same effect as
-- 20261207100001/20261207100002, with a fast path in front of the general
-- one for a session already right, the text it looks for built once per
-- user instead of once per session, and a user's sessions walked in a loop
-- (sw_refresh_user, at the end).
--
-- Why the fast path is exact. Let `tail` be the worker's keys as it
-- writes them at the end of a session: ', "k1": v1, "k2": v2, "k3": v3}',
-- each v a whole JSON value's text and k1 starting with a letter. If a text
-- that is valid JSON (the json cast accepts it) ends with `tail`, then at
-- the start of `tail` the text is outside any string: inside one, the '"'
-- after ", " (not escaped: a space precedes it) would close it and the
-- letter after it could not follow. So `tail` reads as the tokens it is
-- made of, its values are balanced, and its last '}' closes the top object:
-- its ',' separates top-level members, and k1..k3 are the object's last
-- members. `->` on json answers a key's last occurrence, so the general
-- path would find each key holding its value: the text is already right.

-- The general path, unchanged: 20261207100001's sw_session_with, renamed.
CREATE FUNCTION sw_session_with_general(data TEXT, names TEXT[], vals TEXT[]) RETURNS TEXT
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
    IF ltrim(data, E' \t\n\r') NOT LIKE '{%' THEN
        RETURN NULL;
    END IF;
    BEGIN
        v_doc := data::json;
        FOR i IN 1 .. cardinality(names) LOOP
            IF (v_doc -> names[i])::text IS DISTINCT FROM vals[i] THEN
                v_same := FALSE;
                EXIT;
            END IF;
        END LOOP;
        IF v_same THEN
            RETURN data;
        END IF;
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

-- The worker's keys as it writes them last in a session (see above); NULL
-- when the fast path's reasoning does not hold for these names.
CREATE FUNCTION sw_session_tail(names TEXT[], vals TEXT[]) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    v_tail TEXT := '';
BEGIN
    IF cardinality(names) = 0 OR names[1] !~ '^[A-Za-z]' THEN
        RETURN NULL;
    END IF;
    FOR i IN 1 .. cardinality(names) LOOP
        v_tail := v_tail || ', ' || to_json(names[i])::text || ': ' || vals[i];
    END LOOP;
    RETURN v_tail || '}';
END
$$;

-- sw_session_with, given also sw_session_tail(names, vals) (built once for
-- all of a user's sessions). A session already right costs one json parse
-- (to tell JSON from text that only ends like it); the rest take the
-- general path. (Replacing only the tail of a session whose keys the worker
-- wrote last was tried: finding the old values takes three `->`, each a
-- parse of the whole text, and cost as much as the general path.)
CREATE FUNCTION sw_session_with(data TEXT, names TEXT[], vals TEXT[], tail TEXT) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_doc JSON;
BEGIN
    IF right(data, length(tail)) = tail OR data = '{' || substr(tail, 3) THEN
        BEGIN
            -- Valid JSON whose last token is '}' has an object at the top.
            v_doc := data::json;
            RETURN data;
        EXCEPTION WHEN OTHERS THEN
            NULL;
        END;
    END IF;
    RETURN sw_session_with_general(data, names, vals);
END
$$;

-- The three-argument form keeps its meaning (tests and the session API's
-- helpers call it).
CREATE OR REPLACE FUNCTION sw_session_with(data TEXT, names TEXT[], vals TEXT[]) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN sw_session_with(data, names, vals, sw_session_tail(names, vals));
END
$$;

-- As in 20261207100002, with the tail built once per user, and the
-- sessions walked in a loop (locked in id order, as before): one that is
-- already right costs no plan for an UPDATE joined to a CTE, which measured
-- as much as the session checks themselves; one to write is updated by id.
CREATE OR REPLACE FUNCTION sw_refresh_user(
    p_username TEXT,
    OUT out_updated INTEGER,
    OUT out_skipped_ids INTEGER[]
) LANGUAGE plpgsql AS $$
DECLARE
    v_names TEXT[];
    v_vals TEXT[];
    v_tail TEXT;
    v_row RECORD;
    v_data TEXT;
BEGIN
    out_updated := 0;
    out_skipped_ids := '{}';
    SELECT v.names, v.vals INTO v_names, v_vals FROM sw_session_values(p_username) AS v;
    v_tail := sw_session_tail(v_names, v_vals);
    -- user_sessions holds UTC in TIMESTAMP columns: "now" is taken in UTC
    -- whatever the connection's TimeZone is.
    FOR v_row IN
        SELECT u.id, u.session_data AS data
        FROM user_sessions u
        WHERE u.username = p_username AND u.is_active
          AND u.expires_at > (now() AT TIME ZONE 'UTC')
        ORDER BY u.id
        FOR UPDATE
    LOOP
        v_data := sw_session_with(v_row.data, v_names, v_vals, v_tail);
        IF v_data IS NULL THEN
            out_skipped_ids := out_skipped_ids || v_row.id;
        ELSIF v_data IS DISTINCT FROM v_row.data THEN
            UPDATE user_sessions u SET session_data = v_data, updated_at = (now() AT TIME ZONE 'UTC')
            WHERE u.id = v_row.id;
            out_updated := out_updated + 1;
        END IF;
    END LOOP;
END
$$;
