//! The fault schedule: printed before the run, played during it, one fault
//! at a time (a fault whose time came while the previous one still ran
//! starts right after it).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::fleet::Fleet;
use crate::proxy::Proxy;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// `kill -9` of instance A, restart after a second.
    Kill9,
    /// PostgreSQL `pg_ctl stop -m fast`, down a few seconds, started again.
    PgStopFast,
    /// SIGTERM of instance B (Render's deploy), restart.
    Sigterm,
    /// The proxy silences every established connection to PostgreSQL for
    /// good, and holds new ones for a while.
    BlackHole,
    /// PostgreSQL `pg_ctl stop -m immediate` (a crash), down, started again.
    PgStopImmediate,
}

pub const KINDS: [Fault; 5] = [
    Fault::Kill9,
    Fault::PgStopFast,
    Fault::Sigterm,
    Fault::BlackHole,
    Fault::PgStopImmediate,
];

const PG_DOWN: Duration = Duration::from_secs(4);
const HOLE_OPEN: Duration = Duration::from_secs(12);
const KILLED_DOWN: Duration = Duration::from_secs(1);

impl Fault {
    pub fn describe(self) -> String {
        match self {
            Fault::Kill9 => format!("kill -9 instance A, restart after {KILLED_DOWN:?}"),
            Fault::PgStopFast => format!("pg_ctl stop -m fast, start after {PG_DOWN:?}"),
            Fault::Sigterm => "SIGTERM instance B (a deploy), restart".to_string(),
            Fault::BlackHole => format!(
                "black hole: every connection to PostgreSQL goes silent for good, new ones hang {HOLE_OPEN:?}"
            ),
            Fault::PgStopImmediate => format!("pg_ctl stop -m immediate, start after {PG_DOWN:?}"),
        }
    }
}

impl std::str::FromStr for Fault {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        KINDS
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| format!("unknown fault {name:?}: one of kill9, pg-fast, sigterm, blackhole, pg-immediate"))
    }
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill9 => "kill9",
            Fault::PgStopFast => "pg-fast",
            Fault::Sigterm => "sigterm",
            Fault::BlackHole => "blackhole",
            Fault::PgStopImmediate => "pg-immediate",
        }
    }
}

/// `count` faults, `kinds` in turn, spread evenly over `window`.
pub fn schedule(count: usize, kinds: &[Fault], window: Duration) -> Vec<(Duration, Fault)> {
    if kinds.is_empty() {
        return Vec::new();
    }
    (0..count)
        .map(|i| {
            let at = window.mul_f64((i + 1) as f64 / (count + 1) as f64);
            (at, kinds[i % kinds.len()])
        })
        .collect()
}

/// How to stop and start the throwaway PostgreSQL.
pub struct Postgres {
    /// The `pg_ctl -D DATA` command line (with `runuser` when run as root).
    pub pg_ctl: Vec<String>,
    pub log: PathBuf,
}

impl Postgres {
    async fn pg_ctl(&self, args: &[&str]) -> String {
        let output = tokio::process::Command::new(&self.pg_ctl[0])
            .args(&self.pg_ctl[1..])
            .args(args)
            .output()
            .await;
        match output {
            Ok(out) if out.status.success() => "ok".to_string(),
            Ok(out) => format!(
                "FAILED ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(error) => format!("FAILED: {error}"),
        }
    }

    async fn stop_and_start(&self, mode: &str) -> String {
        let stop = self.pg_ctl(&["stop", "-m", mode, "-w", "-t", "60"]).await;
        tokio::time::sleep(PG_DOWN).await;
        let log = self.log.display().to_string();
        let start = self.pg_ctl(&["start", "-w", "-t", "120", "-l", &log]).await;
        format!("pg_ctl stop -m {mode}: {stop}; start: {start}")
    }
}

/// What the faults did.
#[derive(Default)]
pub struct Played {
    pub lines: Vec<String>,
    /// Faults injected, by kind.
    pub count: std::collections::BTreeMap<&'static str, usize>,
    /// SIGTERMs that did not end in exit 0 within Render's grace.
    pub unclean_exits: usize,
    /// Each fault and when it ended (the instance restarted, PostgreSQL
    /// started, the hole healed).
    pub ended: Vec<(Fault, Instant)>,
}

pub async fn play(
    schedule: Vec<(Duration, Fault)>,
    fleet: &Fleet,
    postgres: &Postgres,
    proxy: &Proxy,
    started: Instant,
) -> Played {
    let mut played = Played::default();
    for (at, fault) in schedule {
        tokio::time::sleep_until((started + at).into()).await;
        let began = started.elapsed().as_secs_f64();
        let line = match fault {
            Fault::Kill9 => fleet.kill9_and_restart(0, KILLED_DOWN).await,
            Fault::Sigterm => {
                let (line, clean) = fleet.sigterm_and_restart(1).await;
                played.unclean_exits += usize::from(!clean);
                line
            }
            Fault::PgStopFast => postgres.stop_and_start("fast").await,
            Fault::PgStopImmediate => postgres.stop_and_start("immediate").await,
            Fault::BlackHole => {
                proxy.black_hole(true);
                tokio::time::sleep(HOLE_OPEN).await;
                proxy.black_hole(false);
                format!("black hole open for {HOLE_OPEN:?}, healed")
            }
        };
        let line = format!(
            "+{began:6.1} s .. +{:6.1} s  {line}",
            started.elapsed().as_secs_f64()
        );
        println!("soak: fault {line}");
        played.lines.push(line);
        played.ended.push((fault, Instant::now()));
        *played.count.entry(fault.name()).or_default() += 1;
    }
    played
}
