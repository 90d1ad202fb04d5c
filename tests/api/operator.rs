//! Running the operator commands (`doctor`, `events`, `replay`, `trigger`)
//! as the real binary, as an operator would from a shell.

use sqlx::PgPool;

use crate::binary::{bare_command, database_url};

/// What a run of the binary printed, and how it ended.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The stdout lines that start with `prefix`.
    pub fn lines_starting(&self, prefix: &str) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|line| line.starts_with(prefix))
            .collect()
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `session-worker ARGS` with only `env` (and PATH) set. Async, so that
/// servers in this test process (the fake Stripe API) keep answering.
pub async fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = bare_command();
    command.args(args).envs(env.iter().copied());
    let output = tokio::process::Command::from(command)
        .output()
        .await
        .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `DATABASE_URL` for `pool`'s database.
pub fn db(pool: &PgPool) -> String {
    database_url(pool, None)
}
