//! The web app's own writes beside the worker, straight to PostgreSQL as a
//! Python app does (not through the proxy): a session per user before the
//! run, then new sessions, logins that push `expires_at` out, logouts, and
//! short sessions for the purge to remove. It remembers what it wrote, so
//! the check can say whether every key is still there, as written.
//!
//! `session_data` is written as Python's `json.dumps` writes it: spaces
//! after `:` and `,`, keys in the app's order, floats such as `1e+16`,
//! `-0.0`, `1.10`, non-ASCII as `\u` escapes, and in a few sessions a lone
//! surrogate, which `json.dumps` writes and PostgreSQL's `json` accepts.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::rng::SplitMix;

/// The web app's pace: one write every this often.
const PACE: Duration = Duration::from_millis(50);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Active, expiring long after the run.
    Live,
    /// Logged out (the purge may have removed it).
    LoggedOut,
    /// Expires within seconds (the purge may have removed it).
    Short,
    /// A logout whose outcome is unknown (the database went away mid-call).
    Unknown,
}

pub struct AppSession {
    pub session_id: String,
    pub user: usize,
    pub data: String,
    pub state: State,
    /// Made before the run: must carry the user's end state.
    pub seeded: bool,
}

#[derive(Default)]
pub struct Writes {
    pub sessions: Vec<AppSession>,
    pub created: u64,
    pub extended: u64,
    pub logged_out: u64,
    pub failed: u64,
}

pub fn data(rng: &mut SplitMix, n: u64) -> String {
    let surrogate = if rng.chance(5) {
        r#", "raw": "\ud800""#
    } else {
        ""
    };
    format!(
        r#"{{"csrf": "{}", "total": 1e+16, "discount": -0.0, "price": 1.10, "name": "Zo\u00eb \u2603", "n": {n}, "cart": [{{"sku": "A-1", "qty": 2}}, {{"sku": "B-2", "qty": 1}}], "flags": {{"beta": true, "ref": null}}{surrogate}}}"#,
        &rng.token()[..16]
    )
}

/// One live session per user, written before the run.
pub async fn seed(pool: &PgPool, users: &[String], rng: &mut SplitMix) -> anyhow::Result<Writes> {
    let mut writes = Writes::default();
    for (user, name) in users.iter().enumerate() {
        let session = AppSession {
            session_id: rng.token(),
            user,
            data: data(rng, user as u64),
            state: State::Live,
            seeded: true,
        };
        insert(pool, &session, name, "2 days").await?;
        writes.sessions.push(session);
    }
    Ok(writes)
}

async fn insert(pool: &PgPool, session: &AppSession, name: &str, ttl: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO user_sessions (session_id, username, session_data, created_at, updated_at, expires_at, is_active)
         VALUES ($1, $2, $3, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC',
                 now() AT TIME ZONE 'UTC' + $4::interval, TRUE)",
    )
    .bind(&session.session_id)
    .bind(name)
    .bind(&session.data)
    .bind(ttl)
    .execute(pool)
    .await
    .map(drop)
}

/// Writes at a steady pace until `stop`.
pub async fn run(
    pool: PgPool,
    users: Vec<String>,
    mut writes: Writes,
    seed: u64,
    stop: CancellationToken,
) -> Writes {
    let mut rng = SplitMix(seed ^ 0xA9);
    let mut tick = tokio::time::interval(PACE);
    // After an outage, carry on at the pace; no burst to catch up.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 1_000_000;
    while !stop.is_cancelled() {
        tick.tick().await;
        n += 1;
        let roll = rng.below(100);
        let live: Vec<usize> = if roll < 45 {
            Vec::new()
        } else {
            // Only the app's own sessions are logged out: the seeded ones
            // must stay to carry each user's end state.
            writes
                .sessions
                .iter()
                .enumerate()
                .filter(|(_, s)| s.state == State::Live && (roll < 80 || !s.seeded))
                .map(|(i, _)| i)
                .collect()
        };
        if roll < 45 || live.is_empty() {
            let user = rng.below(users.len() as u64) as usize;
            let short = rng.chance(25);
            let session = AppSession {
                session_id: rng.token(),
                user,
                data: data(&mut rng, n),
                state: if short { State::Short } else { State::Live },
                seeded: false,
            };
            let ttl = if short { "3 seconds" } else { "2 days" };
            match insert(&pool, &session, &users[user], ttl).await {
                Ok(()) => {
                    writes.created += 1;
                    writes.sessions.push(session);
                }
                // Not committed, or committed unseen: either way not checked.
                Err(_) => writes.failed += 1,
            }
        } else if roll < 80 {
            let i = live[rng.below(live.len() as u64) as usize];
            let extended = sqlx::query(
                "UPDATE user_sessions SET expires_at = expires_at + interval '30 minutes',
                        updated_at = now() AT TIME ZONE 'UTC'
                 WHERE session_id = $1",
            )
            .bind(&writes.sessions[i].session_id)
            .execute(&pool)
            .await;
            match extended {
                Ok(_) => writes.extended += 1,
                Err(_) => writes.failed += 1,
            }
        } else {
            let i = live[rng.below(live.len() as u64) as usize];
            let ended = sqlx::query(
                "UPDATE user_sessions SET is_active = FALSE, updated_at = now() AT TIME ZONE 'UTC'
                 WHERE session_id = $1",
            )
            .bind(&writes.sessions[i].session_id)
            .execute(&pool)
            .await;
            writes.sessions[i].state = match ended {
                Ok(_) => {
                    writes.logged_out += 1;
                    State::LoggedOut
                }
                Err(_) => {
                    writes.failed += 1;
                    State::Unknown
                }
            };
        }
    }
    writes
}
