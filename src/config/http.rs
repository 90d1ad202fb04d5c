//! `HOST` and `PORT`: where the HTTP server listens.

use std::net::IpAddr;

use super::{ConfigError, Env};

/// Where the HTTP server listens.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub host: IpAddr,
    pub port: u16,
}

impl HttpConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            host: env.parsed("HOST", IpAddr::from([0, 0, 0, 0]), "an IP address")?,
            port: env.parsed("PORT", 8080, "a port number (0-65535)")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_out_of_range_is_refused() {
        let port = HttpConfig::from_env(&Env::from_pairs([("PORT", "80800")])).unwrap_err();
        assert_eq!(port.variable, "PORT");
    }
}
