//! The real `session-worker serve`, started as a process on a port of its
//! own choosing (`PORT=0`), which it reports in its "listening" log line.

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use session_worker::signature::sign;
use sqlx::PgPool;

use crate::helpers::{SECRET, now};

pub const BIN: &str = env!("CARGO_BIN_EXE_session-worker");

pub struct Server {
    child: tokio::process::Child,
    /// Where it listens, as its "listening" line said.
    pub address: SocketAddr,
    pub base: String,
    logs: Arc<Mutex<Vec<String>>>,
    /// Says when every line of stdout is in `logs` (the process closed it).
    reader: Option<tokio::sync::oneshot::Receiver<()>>,
    http: reqwest::Client,
}

/// A URL for `pool`'s database on another port (a [`crate::cable::Cable`]'s).
pub fn database_url(pool: &PgPool, port: Option<u16>) -> String {
    let options = pool.connect_options();
    format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        port.unwrap_or(options.get_port()),
        options.get_database().unwrap()
    )
}

/// The binary with an empty environment but for PATH.
pub fn bare_command() -> std::process::Command {
    let mut command = std::process::Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

impl Server {
    /// Starts `serve` with JSON logs and the test secret; `extra` adds or
    /// overrides settings. Returns once it listens.
    ///
    /// It binds port 0 and says which port it got: a port found free here and
    /// bound later by the process could be taken meanwhile by a parallel test.
    pub fn start(database_url: &str, extra: &[(&str, &str)]) -> Self {
        // Read by a thread, not by a task: this waits for the address
        // without yielding to the runtime, which could not run a task meanwhile.
        let (stdout, stdout_writer) = std::io::pipe().unwrap();
        let child = tokio::process::Command::new(BIN)
            .arg("serve")
            .env_clear()
            .env("DATABASE_URL", database_url)
            .env("STRIPE_WEBHOOK_SECRET", SECRET)
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("LOG_FORMAT", "json")
            .env("PURGE_SCHEDULE", "off")
            .envs(extra.iter().copied())
            .stdout(stdout_writer)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (listening, address) = std::sync::mpsc::channel();
        let (closed, reader) = tokio::sync::oneshot::channel();
        std::thread::spawn({
            let logs = logs.clone();
            move || {
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let address = listening_address(&line);
                    logs.lock().unwrap().push(line);
                    if let Some(address) = address {
                        let _ = listening.send(address);
                    }
                }
                let _ = closed.send(());
            }
        });
        let address = address
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|error| {
                panic!(
                    "serve never said where it listens ({error}); logs:\n{}",
                    logs.lock().unwrap().join("\n")
                )
            });
        Self {
            child,
            address,
            base: format!("http://{address}"),
            logs,
            reader: Some(reader),
            // The server closes a connection idle for 10 s (a request head
            // must come within 10 s): never reuse one that may be closing.
            http: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        }
    }

    pub async fn wait_until(&self, path: &str, status: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(response) = self.http.get(format!("{}{path}", self.base)).send().await
                && response.status() == status
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{path} never answered {status}; logs:\n{}",
            self.logs().join("\n")
        );
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    pub fn webhook(&self, event: &Value) -> reqwest::RequestBuilder {
        let body = serde_json::to_vec(event).unwrap();
        self.http
            .post(format!("{}/webhooks/stripe", self.base))
            .header("stripe-signature", sign(SECRET, now(), &body))
            .body(body)
    }

    /// Delivers `event` signed and returns (status, JSON body).
    pub async fn deliver(&self, event: &Value) -> (u16, Value) {
        let response = self.webhook(event).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    pub fn terminate(&self) {
        let pid = self.child.id().unwrap().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// Waits for the exit, and for every line it wrote to be in `logs`.
    pub async fn wait(&mut self) -> ExitStatus {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits within 30 s")
            .unwrap();
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), reader).await;
        }
        status
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }
}

/// The address in serve's "listening" line, JSON (`LOG_FORMAT=json`) or text.
fn listening_address(line: &str) -> Option<SocketAddr> {
    if let Ok(json) = serde_json::from_str::<Value>(line) {
        return (json["message"] == "listening")
            .then(|| json["address"].as_str()?.parse().ok())
            .flatten();
    }
    // Text: `... listening address=127.0.0.1:8080`, perhaps with colours.
    let plain: String = {
        let mut plain = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                chars.by_ref().find(|c| c.is_ascii_alphabetic());
            } else {
                plain.push(c);
            }
        }
        plain
    };
    if !plain.contains("listening") {
        return None;
    }
    plain
        .split_whitespace()
        .find_map(|word| word.strip_prefix("address=")?.parse().ok())
}
