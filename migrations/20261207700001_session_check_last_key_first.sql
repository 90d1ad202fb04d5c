-- The general path of the session write (20261207150001's
-- sw_session_with_general), checking the worker's keys from the last to the
-- first. The answer is the same (it stops at the first key whose value
-- differs, whichever the order); each check (`json ->`) parses the whole
-- session again, and the last key, "subscription", is the one that differs
-- most often: it holds the status and the period end too, so an event that
-- changes anything changes it. A session to rewrite now costs one check
-- instead of up to three (issue 11's budget; BENCHMARKS.md).
CREATE OR REPLACE FUNCTION sw_session_with_general(data TEXT, names TEXT[], vals TEXT[]) RETURNS TEXT
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
        FOR i IN REVERSE cardinality(names) .. 1 LOOP
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
