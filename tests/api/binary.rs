//! The real `session-worker serve`, started as a process on a free port.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use session_worker::signature::sign;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{SECRET, now};

pub const BIN: &str = env!("CARGO_BIN_EXE_session-worker");

pub struct Server {
    child: tokio::process::Child,
    pub base: String,
    logs: Arc<Mutex<Vec<String>>>,
    /// Reads stdout into `logs` until the process closes it.
    reader: Option<tokio::task::JoinHandle<()>>,
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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// Starts `serve` with JSON logs and the test secret; `extra` adds or
    /// overrides settings.
    pub fn start(database_url: &str, extra: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut child = tokio::process::Command::new(BIN)
            .arg("serve")
            .env_clear()
            .env("DATABASE_URL", database_url)
            .env("STRIPE_WEBHOOK_SECRET", SECRET)
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("LOG_FORMAT", "json")
            .env("PURGE_SCHEDULE", "off")
            .envs(extra.iter().copied())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let reader = tokio::spawn({
            let logs = logs.clone();
            async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    logs.lock().unwrap().push(line);
                }
            }
        });
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
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
            let _ = reader.await;
        }
        status
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }
}
