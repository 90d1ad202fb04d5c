//! The session API (docs/session-api.md): the web app's sessions, created,
//! loaded, updated and ended over HTTP (`http::sessions`), stored by
//! `store::SessionStore`. This module holds what neither of those knows:
//! ids, the JSON text of `data`, the bearer tokens, metrics, the CLI.

pub mod cli;
pub mod data;
pub mod id;
pub mod metrics;

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use crate::config::sessions::SessionApiConfig;
use crate::store::SessionStore;

pub use id::{mask_path, new_session_id};

/// What the session API's handlers share; `None` in `AppState` when
/// SESSION_API_TOKEN is unset.
#[derive(Clone, Debug)]
pub struct SessionApi {
    pub store: SessionStore,
    tokens: Arc<Tokens>,
    /// SESSION_TTL: the lifetime of a session created without `ttl_secs`.
    pub ttl: Duration,
    /// SESSION_TOUCH_INTERVAL; `None`: a GET never writes.
    pub touch_interval: Option<Duration>,
    pub cookie_name: Arc<str>,
}

impl SessionApi {
    /// `None` when the API is off (no token).
    pub fn new(config: &SessionApiConfig, pool: PgPool) -> Option<Self> {
        if !config.enabled() {
            return None;
        }
        Some(Self {
            store: SessionStore::new(pool),
            tokens: Arc::new(Tokens(
                config
                    .tokens
                    .iter()
                    .map(|t| digest(t.expose_secret().as_bytes()))
                    .collect(),
            )),
            ttl: config.ttl,
            touch_interval: config.touch_interval,
            cookie_name: config.cookie_name.as_str().into(),
        })
    }

    /// Whether an `Authorization` header value carries one of the tokens.
    pub fn authorized(&self, authorization: Option<&[u8]>) -> bool {
        let Some(token) = authorization.and_then(|value| value.strip_prefix(b"Bearer ")) else {
            return false;
        };
        self.tokens.contains(token)
    }

    /// A ready `Set-Cookie` value for a new session.
    pub fn set_cookie(&self, session_id: &str, lifetime: Duration) -> String {
        format!(
            "{}={session_id}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Lax",
            self.cookie_name,
            lifetime.as_secs()
        )
    }
}

/// SHA-256 digests of the tokens: comparing digests takes the same time
/// whatever the length or content of what was sent.
struct Tokens(Vec<[u8; 32]>);

impl Tokens {
    fn contains(&self, presented: &[u8]) -> bool {
        let presented = digest(presented);
        // Every token is compared, the first match does not end the loop.
        self.0
            .iter()
            .fold(subtle::Choice::from(0), |found, token| {
                found | token.ct_eq(&presented)
            })
            .into()
    }
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} redacted)", self.0.len())
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use crate::config::Env;

    use super::*;

    fn api() -> SessionApi {
        let config = SessionApiConfig::from_env(&Env::from_pairs([(
            "SESSION_API_TOKEN",
            "old-token-0123456789,new-token-0123456789",
        )]))
        .unwrap();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://localhost/none")
            .unwrap();
        SessionApi::new(&config, pool).unwrap()
    }

    #[tokio::test]
    async fn any_token_of_the_rotation_is_accepted_and_nothing_else() {
        let api = api();
        assert!(api.authorized(Some(b"Bearer old-token-0123456789")));
        assert!(api.authorized(Some(b"Bearer new-token-0123456789")));
        for refused in [
            &b"Bearer old-token-012345678"[..],
            b"Bearer old-token-0123456789,new-token-0123456789",
            b"bearer old-token-0123456789",
            b"old-token-0123456789",
            b"Bearer ",
        ] {
            assert!(!api.authorized(Some(refused)), "{refused:?}");
        }
        assert!(!api.authorized(None));
        assert!(!format!("{api:?}").contains("0123456789"));
    }

    #[tokio::test]
    async fn the_cookie_is_http_only_secure_and_lax() {
        assert_eq!(
            api().set_cookie("abc", Duration::from_secs(86_400)),
            "session_id=abc; Path=/; Max-Age=86400; HttpOnly; Secure; SameSite=Lax"
        );
    }
}
