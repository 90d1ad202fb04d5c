//! `DATABASE_URL`: how to reach the database.

use secrecy::SecretString;
use sqlx::postgres::PgConnectOptions;

use super::{ConfigError, Env, urls};

/// How to reach the database.
#[derive(Clone)]
pub struct DatabaseConfig {
    /// Holds a password: kept out of `Debug`.
    pub url: SecretString,
    /// `url` parsed whole at start (host, port, database, TLS mode...), so
    /// that a URL no connection could use stops the program there.
    pub options: PgConnectOptions,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &"[redacted]")
            .finish()
    }
}

impl DatabaseConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let url = env.required("DATABASE_URL")?;
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            // The value may hold a password: say what is wrong, not what it is.
            return Err(ConfigError::new(
                "DATABASE_URL",
                "must be a postgres:// or postgresql:// URL",
            ));
        }
        let options = urls::database_options(url)?;
        Ok(Self {
            url: SecretString::from(url.to_owned()),
            options,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_no_connection_could_use_is_refused() {
        let url = DatabaseConfig::from_env(&Env::from_pairs([(
            "DATABASE_URL",
            "mysql://root:hunter2@db",
        )]))
        .unwrap_err();
        assert_eq!(url.variable, "DATABASE_URL");
        assert!(!url.to_string().contains("hunter2"));

        // Parsed whole at start: a URL no connection could use stops there.
        for bad in [
            "postgres://root:hunter2@db:80800/app",
            "postgres://root:hunter2@db:5432/app?sslmode=sometimes",
        ] {
            let error =
                DatabaseConfig::from_env(&Env::from_pairs([("DATABASE_URL", bad)])).unwrap_err();
            assert_eq!(error.variable, "DATABASE_URL", "{bad}");
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
        let config = DatabaseConfig::from_env(&Env::from_pairs([(
            "DATABASE_URL",
            "postgresql://app:pw@dpg-abc-a:5433/app_db",
        )]))
        .unwrap();
        assert_eq!(config.options.get_port(), 5433);
        assert_eq!(config.options.get_database(), Some("app_db"));
    }
}
