//! The end check, straight on PostgreSQL: every event recorded once, none
//! applied twice (the write counter the soak installs), every user in the
//! state the ledger says, every web-app session as the app wrote it.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use sqlx::{PgPool, Row};

use crate::plan::{Expected, Plan};
use crate::webapp::{AppSession, State, Writes};

/// Counts the writes of `sw_subscriptions` per event and transaction: an
/// event applied twice writes its row in two transactions. Installed in the
/// throwaway database by the soak, never by a migration.
pub const WRITE_COUNTER: &str = r#"
CREATE TABLE soak_writes (
    event_id TEXT NOT NULL,
    status   TEXT,
    tx       BIGINT NOT NULL DEFAULT txid_current(),
    at       TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION soak_count_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO soak_writes (event_id, status) VALUES (NEW.event_id, NEW.status);
    RETURN NULL;
END $$;
CREATE TRIGGER soak_count_write AFTER INSERT OR UPDATE ON sw_subscriptions
    FOR EACH ROW EXECUTE FUNCTION soak_count_write();
"#;

/// What Python's `json.dumps` writes for a lone surrogate (webapp.rs).
const LONE_SURROGATE: &str = r"\ud800";

/// The worker's keys in `session_data`; every other key is the app's.
const WORKER_KEYS: [&str; 3] = ["subscribed", "subscription_status", "subscription"];

#[derive(Default)]
pub struct Verdict {
    pub recorded: usize,
    pub lost: Vec<String>,
    /// (event id, transactions that wrote its row)
    pub doubled: Vec<(String, i64)>,
    pub outcomes: BTreeMap<String, usize>,
    pub wrong_users: BTreeMap<usize, String>,
    pub sessions_lost: Vec<String>,
    pub sessions_damaged: Vec<String>,
    /// The same JSON values, not the same text (number forms, escapes, key order).
    pub sessions_reformatted: Vec<String>,
    pub logouts_undone: usize,
    /// Sessions with wrong worker keys whose data holds a lone surrogate
    /// (which `jsonb` refuses): tells that cause from the others.
    pub surrogate_sessions_wrong: usize,
    /// Short-lived and logged-out sessions the purge removed.
    pub purged: usize,
    pub purgeable: usize,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.lost.is_empty()
            && self.doubled.is_empty()
            && self.wrong_users.is_empty()
            && self.sessions_lost.is_empty()
            && self.sessions_damaged.is_empty()
            && self.sessions_reformatted.is_empty()
            && self.logouts_undone == 0
    }
}

pub async fn run(pool: &PgPool, plan: &Plan, writes: &Writes) -> anyhow::Result<Verdict> {
    let mut verdict = Verdict::default();

    let recorded: HashMap<String, Option<String>> = sqlx::query_as(
        "SELECT event_id, outcome FROM sw_events WHERE event_id LIKE 'evt\\_1Soak%'",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    verdict.recorded = recorded.len();
    for event in &plan.events {
        match recorded.get(&event.id) {
            None => verdict.lost.push(event.id.clone()),
            Some(outcome) => {
                let outcome = outcome.clone().unwrap_or_else(|| "NULL".into());
                *verdict.outcomes.entry(outcome).or_default() += 1;
            }
        }
    }
    verdict.doubled = sqlx::query_as(
        "SELECT event_id, count(DISTINCT tx) FROM soak_writes
         GROUP BY event_id HAVING count(DISTINCT tx) > 1 ORDER BY event_id",
    )
    .fetch_all(pool)
    .await?;

    let view: HashMap<String, (bool, Option<String>)> =
        sqlx::query("SELECT username, subscribed, status FROM user_subscription_status")
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|row| (row.get(0), (row.get(1), row.get(2))))
            .collect();
    for (user, expected) in plan.expected.iter().enumerate() {
        let found = view.get(&plan.users[user]);
        let right = match (expected, found) {
            (None, None) => true,
            (Some(e), Some((subscribed, status))) => {
                *subscribed == e.subscribed && status.as_deref() == Some(e.status.as_str())
            }
            _ => false,
        };
        if !right {
            verdict
                .wrong_users
                .entry(user)
                .or_insert(format!("view says {found:?}, the ledger {expected:?}"));
        }
    }

    let rows: HashMap<String, (Option<String>, bool, bool)> = sqlx::query(
        "SELECT session_id, session_data, COALESCE(is_active, FALSE),
                expires_at > now() AT TIME ZONE 'UTC'
         FROM user_sessions",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|row| (row.get(0), (row.get(1), row.get(2), row.get(3))))
    .collect();
    for session in &writes.sessions {
        check_session(&mut verdict, plan, session, rows.get(&session.session_id));
    }
    Ok(verdict)
}

fn check_session(
    verdict: &mut Verdict,
    plan: &Plan,
    session: &AppSession,
    row: Option<&(Option<String>, bool, bool)>,
) {
    let label = format!(
        "{} (row of {})",
        &session.session_id[..8],
        plan.users[session.user]
    );
    match session.state {
        State::Unknown => return,
        State::Short | State::LoggedOut => {
            verdict.purgeable += 1;
            match row {
                None => verdict.purged += 1,
                Some((_, true, _)) if session.state == State::LoggedOut => {
                    verdict.logouts_undone += 1
                }
                Some(_) => {}
            }
            return;
        }
        State::Live => {}
    }
    let Some((data, active, unexpired)) = row else {
        verdict.sessions_lost.push(format!("{label}: gone"));
        return;
    };
    if !active || !unexpired {
        verdict
            .sessions_lost
            .push(format!("{label}: active {active}, unexpired {unexpired}"));
        return;
    }
    let data = data.as_deref().unwrap_or("");
    let (Some(written), Some(found)) = (ordered(&session.data), ordered(data)) else {
        verdict
            .sessions_damaged
            .push(format!("{label}: not a JSON object: {data}"));
        return;
    };
    let (worker, app): (Vec<_>, Vec<_>) = found
        .iter()
        .partition(|(key, _)| WORKER_KEYS.contains(&key.as_str()));
    let found_app: HashMap<&str, &str> = app.iter().map(|(k, v)| (k.as_str(), v.get())).collect();
    for (key, value) in &written {
        match found_app.get(key.as_str()) {
            None => verdict
                .sessions_damaged
                .push(format!("{label}: key {key} missing")),
            Some(now) if !same_value(value.get(), now) => verdict
                .sessions_damaged
                .push(format!("{label}: {key} was {} now {now}", value.get())),
            Some(_) => {}
        }
    }
    let as_written = |pairs: &[(&String, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), minify(v)))
            .collect()
    };
    let written_text = as_written(
        &written
            .iter()
            .map(|(k, v)| (k, v.get()))
            .collect::<Vec<_>>(),
    );
    let found_text = as_written(&app.iter().map(|(k, v)| (k, v.get())).collect::<Vec<_>>());
    if written_text != found_text {
        verdict
            .sessions_reformatted
            .push(format!("{label}: wrote {} found {data}", session.data));
    }

    let keys: HashMap<&str, &str> = worker.iter().map(|(k, v)| (k.as_str(), v.get())).collect();
    let expected = &plan.expected[session.user];
    // A session the app made after the user's last change carries no
    // worker keys yet (the app reads the view at login); one made before
    // the run must carry them.
    if keys.is_empty() && !(session.seeded && expected.is_some()) {
        return;
    }
    if let Some(mut why) = worker_keys_wrong(&keys, expected.as_ref()) {
        if session.data.contains(LONE_SURROGATE) {
            why.push_str(" (this session's data holds a lone surrogate)");
            verdict.surrogate_sessions_wrong += 1;
        }
        verdict
            .wrong_users
            .entry(session.user)
            .or_insert(format!("session {label}: {why}"));
    }
}

fn worker_keys_wrong(keys: &HashMap<&str, &str>, expected: Option<&Expected>) -> Option<String> {
    let Some(expected) = expected else {
        return Some(format!("worker keys {keys:?} for a user without events"));
    };
    let subscribed = keys.get("subscribed").copied();
    let status = keys.get("subscription_status").copied();
    let want_status = format!("\"{}\"", expected.status);
    if subscribed != Some(if expected.subscribed { "true" } else { "false" })
        || status != Some(want_status.as_str())
    {
        return Some(format!(
            "subscribed {subscribed:?} status {status:?}, the ledger {expected:?}"
        ));
    }
    // The richer key (the contract's `subscription` object), when present.
    if let Some(object) = keys.get("subscription")
        && let Ok(Value::Object(object)) = serde_json::from_str::<Value>(object)
        && (object.get("id").and_then(Value::as_str) != Some(expected.primary.as_str())
            || object.get("status").and_then(Value::as_str) != Some(expected.status.as_str()))
    {
        return Some(format!("subscription {object:?}, the ledger {expected:?}"));
    }
    None
}

/// The object's members in their written order, each value's text as is.
fn ordered(text: &str) -> Option<Vec<(String, Box<RawValue>)>> {
    struct Members;
    impl<'de> Visitor<'de> for Members {
        type Value = Vec<(String, Box<RawValue>)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut members = Vec::new();
            while let Some(member) = map.next_entry()? {
                members.push(member);
            }
            Ok(members)
        }
    }
    struct Object(Vec<(String, Box<RawValue>)>);
    impl<'de> Deserialize<'de> for Object {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_map(Members).map(Object)
        }
    }
    serde_json::from_str::<Object>(text).ok().map(|o| o.0)
}

/// The text without white space between tokens.
fn minify(text: &str) -> String {
    let (mut out, mut in_string, mut escaped) = (String::with_capacity(text.len()), false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !c.is_whitespace() {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

/// The same JSON value: numbers by their value, objects whatever their
/// order; text that serde_json cannot hold (a lone surrogate) by its text.
fn same_value(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<Value>(a),
        serde_json::from_str::<Value>(b),
    ) {
        (Ok(a), Ok(b)) => equal(&a, &b),
        _ => minify(a) == minify(b),
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.keys().collect::<HashSet<_>>() == y.keys().collect::<HashSet<_>>()
                && x.iter().all(|(k, v)| equal(v, &y[k]))
        }
        _ => a == b,
    }
}
