//! The URLs among the settings: what makes one usable.

use std::net::IpAddr;

use sqlx::postgres::PgConnectOptions;

use super::ConfigError;

/// `DATABASE_URL` parsed whole (host, port, database, `sslmode`...), as
/// every connection will parse it, so that one no connection could use
/// stops the program at start. The error never holds the value (it may hold
/// a password).
pub(super) fn database_options(url: &str) -> Result<PgConnectOptions, ConfigError> {
    url.parse::<PgConnectOptions>().map_err(|error| {
        let why = match error {
            sqlx::Error::Configuration(why) => why.to_string(),
            other => other.to_string(),
        };
        // sqlx's reasons name the part at fault ("invalid port number"),
        // not its value; checked all the same.
        let user_info = url
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .map(|(info, _)| info);
        let leaks = user_info.is_some_and(|info| {
            info.split(':')
                .any(|part| !part.is_empty() && why.contains(part))
        });
        let why = if leaks { "unreadable".to_owned() } else { why };
        ConfigError::new(
            "DATABASE_URL",
            format!("is not a usable PostgreSQL URL ({why})"),
        )
    })
}

/// Whether `host` (with any port) is this machine: `localhost`, 127.0.0.0/8
/// or `[::1]`.
pub(super) fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
