//! The web app's JSON is kept as written: sessions written by Python's
//! `json.dumps` (python3 runs in the test) get the worker's keys, and every
//! other member keeps its value's text and its place; only white space
//! between tokens may change. Text that is not JSON is left alone, and
//! logged with the row id, never the session id.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use sqlx::PgPool;

use crate::binary::{Server, database_url};
use crate::helpers::*;

/// What Python's json module writes, by session id.
const PYTHON: &str = r#"
import json
sessions = {
    "floats": json.dumps({"big": 1e16, "tiny": 1e-7, "neg_zero": -0.0, "third": 1 / 3,
                          "huge": 1.5e300, "int": 10**20, "two": 2.0}),
    "nested": json.dumps({"z": {"b": [1, {"y": 2.5, "x": None}], "a": True}, "a": "?", "m": []}),
    "ascii": json.dumps({"name": "Zo\u00eb \u2713 \U0001F600", "subscribed": False,
                         "quote": "say \"hi\"\\n"}),
    "unicode": json.dumps({"name": "Zo\u00eb \u2713 \U0001F600", "tab": "a\tb"}, ensure_ascii=False),
    "surrogate": json.dumps({"lone": "\ud800", "low": ["\udc00"], "pair": "\U0001F600", "n": 1}),
    "nul": json.dumps({"nul": "a\x00b", "n": 2.0}),
    "compact": json.dumps({"b": 1, "a": [1.0, 2]}, separators=(",", ":")),
    "indented": json.dumps({"b": 1, "subscription_status": "none", "a": {"c": [1e16]}}, indent=2),
    "nan": json.dumps({"ratio": float("nan")}),
    "infinity": json.dumps({"limit": float("inf")}),
}
print(json.dumps(sessions))
"#;

/// Written by hand: number forms json.dumps does not write.
const BY_HAND: &str = r#"{"price": 1.10, "qty": 1E+2, "slash": "\/\u00e9", "e": -1.5e-0}"#;

fn python_sessions() -> Vec<(String, String)> {
    let output = std::process::Command::new("python3")
        .args(["-c", PYTHON])
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "{output:?}");
    let sessions: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&output.stdout).unwrap();
    sessions
        .into_iter()
        .map(|(id, text)| (id, text.as_str().unwrap().to_owned()))
        .collect()
}

/// An object's members in order, each value's text as written but for
/// the white space between tokens.
#[derive(Debug, Clone, PartialEq)]
struct Members(Vec<(String, String)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InOrder;
        impl<'de> Visitor<'de> for InOrder {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push((key, without_white_space(value.get())));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(InOrder)
    }
}

fn without_white_space(json: &str) -> String {
    let (mut out, mut in_string, mut escaped) = (String::new(), false, false);
    for c in json.chars() {
        if in_string {
            in_string = escaped || c != '"';
            escaped = !escaped && c == '\\';
        } else if c.is_ascii_whitespace() {
            continue;
        } else {
            in_string = c == '"';
        }
        out.push(c);
    }
    out
}

fn members(text: &str) -> Members {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// `before` with the worker's keys set: in place when there, else appended.
fn with_keys(before: &Members, keys: &[(&str, &str)]) -> Members {
    let mut expected = before.clone();
    for (key, value) in keys {
        match expected.0.iter_mut().find(|(k, _)| k == key) {
            Some(member) => member.1 = (*value).to_owned(),
            None => expected.0.push(((*key).to_owned(), (*value).to_owned())),
        }
    }
    expected
}

#[sqlx::test]
async fn sessions_written_by_python_keep_every_value_as_written(pool: PgPool) {
    let app = app(pool.clone());
    let mut sessions = python_sessions();
    sessions.push(("by-hand".into(), BY_HAND.into()));
    for (id, text) in &sessions {
        add_session(&pool, id, "pia", Some(text), 60, true).await;
    }

    let paid = checkout("e1", now() - 10, "pia", "cus_p", Some("sub_p"));
    assert_eq!(outcome(&app, &paid).await, "applied");

    for (id, before) in &sessions {
        let after = raw_session(&pool, id).await.unwrap();
        if id == "nan" || id == "infinity" {
            // Python's NaN and Infinity are not JSON: left alone.
            assert_eq!(&after, before, "{id}");
            continue;
        }
        let after = members(&after);
        // The worker's own object, whatever its white space.
        let object = &after.0.iter().find(|(k, _)| k == "subscription").unwrap().1;
        assert!(
            object.starts_with(r#"{"id":"sub_p","status":"active","#),
            "{object}"
        );
        let keys = [
            ("subscribed", "true"),
            ("subscription_status", "\"active\""),
            ("subscription", object.as_str()),
        ];
        assert_eq!(
            after,
            with_keys(&members(before), &keys),
            "{id}: {before} -> {after:?}"
        );
    }
    // Spot checks of what the comparison above covers, in the words of the issue.
    let floats = raw_session(&pool, "floats").await.unwrap();
    for written in [
        "1e+16",
        "1e-07",
        "-0.0",
        "1.5e+300",
        "100000000000000000000",
        "2.0",
    ] {
        assert!(floats.contains(written), "{written} in {floats}");
    }
    assert!(
        raw_session(&pool, "by-hand")
            .await
            .unwrap()
            .contains("1.10")
    );
    let surrogate = raw_session(&pool, "surrogate").await.unwrap();
    assert!(surrogate.contains(r#""\ud800""#) && surrogate.contains(r#""\ud83d\ude00""#));
    assert!(
        raw_session(&pool, "nul")
            .await
            .unwrap()
            .contains(r#""a\u0000b""#)
    );
}

/// The real binary: a session that is not JSON is counted and logged with
/// its row id, never its session id, and the others are still updated.
#[sqlx::test]
async fn text_that_is_not_json_is_logged_by_row_id(pool: PgPool) {
    let python_nan = r#"{"ratio": NaN}"#;
    add_session(
        &pool,
        "sid-secret-nan-0123456789",
        "quin",
        Some(python_nan),
        60,
        true,
    )
    .await;
    add_session(
        &pool,
        "sid-secret-nul-0123456789",
        "quin",
        Some(r#"{"a": "\u0000"}"#),
        60,
        true,
    )
    .await;
    let row_id: i32 = sqlx::query_scalar(
        "SELECT id FROM user_sessions WHERE session_id = 'sid-secret-nan-0123456789'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();

    let mut server = Server::start(&database_url(&pool, None), &[]);
    server.wait_until("/readyz", 200).await;
    let (status, body) = server
        .deliver(&checkout("e1", now() - 10, "quin", "cus_q", None))
        .await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("applied")));
    server.terminate();
    assert_eq!(server.wait().await.code(), Some(0));

    assert_eq!(
        raw_session(&pool, "sid-secret-nan-0123456789")
            .await
            .as_deref(),
        Some(python_nan)
    );
    let nul = session_text(&pool, "sid-secret-nul-0123456789").await;
    assert!(
        nul.contains(r#""a": "\u0000""#) && nul.contains(r#""subscribed": true"#),
        "{nul}"
    );

    let logs = server.logs();
    assert!(
        logs.iter().all(|line| !line.contains("sid-secret")),
        "{logs:?}"
    );
    let skipped: Vec<&String> = logs
        .iter()
        .filter(|line| line.contains("sessions left untouched"))
        .collect();
    assert_eq!(skipped.len(), 1, "{logs:?}");
    assert!(
        skipped[0].contains(&format!("[{row_id}]")),
        "{}",
        skipped[0]
    );
}

async fn session_text(pool: &PgPool, session_id: &str) -> String {
    raw_session(pool, session_id).await.unwrap()
}
