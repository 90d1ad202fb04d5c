//! The fast path of the session write (migration 20261207150001): a session
//! that already ends with the worker's keys, as the worker writes them, is
//! settled without the general path. Texts built to fool it must get the
//! general path's answer.

use sqlx::PgPool;

const NAMES: [&str; 3] = ["subscribed", "subscription_status", "subscription"];
const VALS: [&str; 3] = ["true", r#""active""#, r#"{"id": "sub_1", "items": []}"#];
const TAIL: &str = r#", "subscribed": true, "subscription_status": "active", "subscription": {"id": "sub_1", "items": []}}"#;

/// The worker's keys set in `data`, by the fast path or by the general one.
async fn with_keys(pool: &PgPool, general: bool, data: &str) -> Option<String> {
    let sql = if general {
        "SELECT sw_session_with_general($1, $2, $3)"
    } else {
        "SELECT sw_session_with($1, $2, $3)"
    };
    sqlx::query_scalar(sql)
        .bind(data)
        .bind(&NAMES[..])
        .bind(&VALS[..])
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn the_fast_path_answers_as_the_general_path(pool: PgPool) {
    let whole = format!("{{{}", &TAIL[2..]);
    // (text, Some(what it must give) or None: whatever the general path gives)
    let cases: Vec<(String, Option<Option<String>>)> = vec![
        // Already right: the text itself.
        (format!(r#"{{"a": 1e+16{TAIL}"#), Some(Some(format!(r#"{{"a": 1e+16{TAIL}"#)))),
        (whole.clone(), Some(Some(whole.clone()))),
        (
            format!(r#"{{"z": "\u0000", "\ud800": 1.10{TAIL}"#),
            Some(Some(format!(r#"{{"z": "\u0000", "\ud800": 1.10{TAIL}"#))),
        ),
        // An earlier duplicate: `->` (and jsonb, and Python) read the last one.
        (
            format!(r#"{{"subscribed": false{TAIL}"#),
            Some(Some(format!(r#"{{"subscribed": false{TAIL}"#))),
        ),
        // Ends like the keys but is not JSON: left alone (NULL), counted.
        (format!("{{broken{TAIL}"), Some(None)),
        (format!(r#"{{"a": NaN{TAIL}"#), Some(None)),
        (format!("x{whole}"), Some(None)),
        (format!(r#"{{"a": "{TAIL}"#), Some(None)),
        // The keys inside a string, escaped: not the session's keys.
        (
            format!(r#"{{"a": "{}"}}"#, TAIL.replace('"', "\\\"")),
            None,
        ),
        // The keys one level down: not the session's keys.
        (
            format!(r#"{{"a": {{"b": 1{TAIL}}}"#),
            None,
        ),
        // Same values, other spacing: the general path settles it.
        (
            r#"{"subscribed":true,"subscription_status":"active","subscription":{"id": "sub_1", "items": []}}"#
                .to_string(),
            None,
        ),
    ];
    for (data, expected) in cases {
        let general = with_keys(&pool, true, &data).await;
        let fast = with_keys(&pool, false, &data).await;
        assert_eq!(fast, general, "{data}");
        if let Some(expected) = expected {
            assert_eq!(fast, expected, "{data}");
        }
    }
    // The nested and escaped ones are rewritten, not taken as right.
    let nested = format!(r#"{{"a": {{"b": 1{TAIL}}}"#);
    let written = with_keys(&pool, false, &nested).await.unwrap();
    assert!(written.ends_with(TAIL), "{written}");
    assert_ne!(written, nested);
}
