//! The soak (`scripts/soak.sh`; BENCHMARKS.md, "Reliability"): two `serve`
//! instances of one database, events delivered as Stripe delivers them
//! (retries, duplicates, late and concurrent deliveries), faults on a printed
//! schedule (kill -9, SIGTERM, PostgreSQL stopped, a black-holed network),
//! the purge on short rounds and the web app's own writes beside it. At the
//! end a ledger worked out from the events alone is checked against the
//! database: nothing lost, nothing applied twice, every user right, every
//! web-app session as written. Exit status 1 when any check fails.

// serde_json::json! recurses once per field.
#![recursion_limit = "256"]

mod check;
mod deliver;
mod faults;
mod fleet;
mod plan;
mod proxy;
mod rng;
mod webapp;

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio_util::sync::CancellationToken;

use crate::faults::Postgres;
use crate::fleet::Fleet;
use crate::plan::Plan;
use crate::proxy::Proxy;
use crate::rng::SplitMix;

#[derive(Parser)]
#[command(about = "A soak of session-worker with faults, checked against a ledger")]
struct Args {
    /// The session-worker binary to run (release build).
    #[arg(long)]
    bin: PathBuf,
    /// The throwaway database (reached directly; the instances go through the proxy).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// `pg_ctl -D DATA` of that server, as one command line (split on spaces).
    #[arg(long)]
    pg_ctl: String,
    /// The server's log file (for `pg_ctl start -l`).
    #[arg(long)]
    pg_log: PathBuf,
    /// Where the instances' logs go.
    #[arg(long)]
    work: PathBuf,
    #[arg(long, default_value_t = 50_000)]
    events: usize,
    #[arg(long, default_value_t = 2_000)]
    users: usize,
    /// Seconds over which the events are sent (the faults fall within).
    #[arg(long, default_value_t = 240)]
    seconds: u64,
    /// Faults injected, the kinds in turn.
    #[arg(long, default_value_t = 10)]
    faults: usize,
    /// Which kinds, comma-separated: kill9, pg-fast, sigterm, blackhole, pg-immediate.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill9,pg-fast,sigterm,blackhole,pg-immediate"
    )]
    kinds: Vec<faults::Fault>,
    /// Seconds after the sending window during which undelivered events are still retried.
    #[arg(long, default_value_t = 180)]
    grace: u64,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    match soak(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            println!("soak: FAILED (see the figures above)");
            ExitCode::FAILURE
        }
        Err(error) => {
            println!("soak: ERROR: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn soak(args: Args) -> anyhow::Result<bool> {
    anyhow::ensure!(
        args.users > 0 && args.events > 0,
        "--users and --events must be positive"
    );
    let users = args.users.min(args.events);
    let mut rng = SplitMix(args.seed ^ 0xC0FFEE);
    let secret = format!("whsec_soak{}", rng.token());
    let direct = PgConnectOptions::from_str(&args.database_url).context("DATABASE_URL")?;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(3))
        .connect_with(direct.clone())
        .await
        .context("connecting to the throwaway database")?;

    // --- the database: schema, the write counter, the app's sessions --------
    let migrate = tokio::process::Command::new(&args.bin)
        .arg("migrate")
        .env("DATABASE_URL", &args.database_url)
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .status()
        .await?;
    anyhow::ensure!(migrate.success(), "session-worker migrate: {migrate}");
    sqlx::raw_sql(check::WRITE_COUNTER).execute(&pool).await?;
    let plan = Arc::new(Plan::build(args.events, users, args.seed));
    let seeded = webapp::seed(&pool, &plan.users, &mut rng).await?;

    // --- the proxy and the instances -----------------------------------------
    let upstream = (direct.get_host(), direct.get_port())
        .to_socket_addrs()?
        .next()
        .context("resolving the database's address")?;
    let proxy = Proxy::start(upstream).await?;
    let through_proxy = format!(
        "postgres://{}@127.0.0.1:{}/{}",
        direct.get_username(),
        proxy.port,
        direct.get_database().unwrap_or("postgres")
    );
    let env = vec![
        ("DATABASE_URL".to_string(), through_proxy),
        ("STRIPE_WEBHOOK_SECRET".to_string(), secret.clone()),
        ("HOST".to_string(), "127.0.0.1".to_string()),
        // Short rounds, small batches: the purge runs all through the soak.
        ("PURGE_SCHEDULE".to_string(), "*/2 * * * * *".to_string()),
        ("PURGE_BATCH_SIZE".to_string(), "200".to_string()),
        ("LOG_FORMAT".to_string(), "json".to_string()),
    ];
    let started = Instant::now();
    let ports = [free_port()?, free_port()?];
    let fleet = Arc::new(Fleet::new(
        &args.bin,
        env,
        &[("A", ports[0]), ("B", ports[1])],
        &args.work,
        started,
    ));
    for n in 0..2 {
        let took = fleet.start(n).await?;
        println!(
            "soak: instance {} up on {} in {:.1} s",
            ["A", "B"][n],
            fleet.addrs().await[n],
            took.as_secs_f64()
        );
    }

    // --- the plan, printed -----------------------------------------------------
    let window = Duration::from_secs(args.seconds);
    let schedule = deliver::Schedule::build(&plan, window.as_secs_f64(), args.seed);
    let faults = faults::schedule(args.faults, &args.kinds, window);
    println!(
        "soak: {} events of {} users ({} subscriptions, {} same-second ties), {} deliveries over {} s \
         ({} late, {} twice, {} to both instances at once), {} in flight at most",
        plan.events.len(),
        users,
        plan.subscriptions,
        plan.ties,
        schedule.len(),
        args.seconds,
        schedule.late,
        schedule.twice,
        schedule.concurrent,
        args.concurrency
    );
    println!("soak: fault schedule ({} faults):", faults.len());
    for (at, fault) in &faults {
        println!("soak:   +{:6.1} s  {}", at.as_secs_f64(), fault.describe());
    }

    // --- the run ---------------------------------------------------------------
    let postgres = Postgres {
        pg_ctl: args.pg_ctl.split_whitespace().map(str::to_owned).collect(),
        log: args.pg_log.clone(),
    };
    let supervisor = tokio::spawn({
        let fleet = fleet.clone();
        async move { fleet.supervise().await }
    });
    let stop_app = CancellationToken::new();
    let app = tokio::spawn(webapp::run(
        pool.clone(),
        plan.users.clone(),
        seeded,
        args.seed,
        stop_app.clone(),
    ));
    let give_up_at = started + window + Duration::from_secs(args.grace);
    let delivery = deliver::run(
        plan.clone(),
        schedule,
        fleet.addrs().await,
        secret,
        args.concurrency,
        give_up_at,
    );
    let (figures, played) = tokio::join!(
        delivery,
        faults::play(faults, &fleet, &postgres, &proxy, started)
    );
    let delivered_after = started.elapsed();
    stop_app.cancel();
    let writes = app.await?;
    supervisor.abort();
    let (stop_lines, stopped_clean) = fleet.stop_all().await;
    let unplanned = fleet.unplanned.lock().expect("not poisoned").clone();

    // --- the check ---------------------------------------------------------------
    let verdict = check::run(&pool, &plan, &writes).await?;
    let panics = count_in_logs(&fleet.logs().await, "panicked");

    // --- the figures -------------------------------------------------------------
    println!("soak: faults played:");
    for line in &played.lines {
        println!("soak:   {line}");
    }
    for line in &stop_lines {
        println!("soak:   {line}");
    }
    let worst = figures.worst_wait(&plan);
    let all_ok = figures.never_ok() == 0;
    let recoveries = recoveries(&figures, &played, started);
    let slowest = recoveries
        .iter()
        .filter_map(|(_, secs)| *secs)
        .fold(0.0, f64::max);
    println!("soak: recoveries:");
    for (line, _) in &recoveries {
        println!("soak:   {line}");
    }
    let stuck: Vec<String> = recoveries
        .iter()
        .filter(|(_, secs)| secs.is_some_and(|secs| secs > RECOVERY_LIMIT.as_secs_f64()))
        .map(|(line, _)| line.clone())
        .collect();
    let rows = [
        ("events generated", plan.events.len().to_string()),
        ("users", users.to_string()),
        (
            "faults injected",
            format!("{} {:?}", played.lines.len(), played.count),
        ),
        ("deliveries attempted", figures.attempts.to_string()),
        ("answers by status", format!("{:?}", figures.answers)),
        ("outcomes in 200 answers", format!("{:?}", figures.outcomes)),
        ("retries", figures.retries.to_string()),
        (
            "deliveries given up at the deadline",
            figures.given_up.to_string(),
        ),
        ("events never answered 2xx", figures.never_ok().to_string()),
        ("events recorded (sw_events)", verdict.recorded.to_string()),
        ("recorded outcomes", format!("{:?}", verdict.outcomes)),
        (
            "LOST (generated, never recorded)",
            verdict.lost.len().to_string(),
        ),
        (
            "APPLIED TWICE (writes in 2+ transactions)",
            verdict.doubled.len().to_string(),
        ),
        (
            "WRONG USERS (view or sessions vs ledger)",
            verdict.wrong_users.len().to_string(),
        ),
        (
            "  of them, sessions holding a lone surrogate",
            verdict.surrogate_sessions_wrong.to_string(),
        ),
        (
            "web-app writes",
            format!(
                "{} sessions made, {} logins extended, {} logouts, {} failed (database away)",
                writes.created, writes.extended, writes.logged_out, writes.failed
            ),
        ),
        (
            "WEB-APP SESSIONS LOST",
            verdict.sessions_lost.len().to_string(),
        ),
        (
            "WEB-APP SESSIONS DAMAGED (a key missing or its value changed)",
            verdict.sessions_damaged.len().to_string(),
        ),
        (
            "WEB-APP SESSIONS REFORMATTED (same values, not as written)",
            verdict.sessions_reformatted.len().to_string(),
        ),
        ("LOGOUTS UNDONE", verdict.logouts_undone.to_string()),
        (
            "purged by the purge (short or logged out)",
            format!("{} of {}", verdict.purged, verdict.purgeable),
        ),
        (
            "worst wait, first delivery to 2xx",
            match &worst {
                Some((wait, id)) => format!("{:.1} s ({id})", wait.as_secs_f64()),
                None => "-".to_string(),
            },
        ),
        (
            "LONGEST RECOVERY, fault over to the instance's next 2xx",
            format!("{slowest:.1} s (limit {RECOVERY_LIMIT:?})"),
        ),
        ("instance exits nobody planned", unplanned.len().to_string()),
        (
            "SIGTERM exits not clean within 30 s",
            (played.unclean_exits + usize::from(!stopped_clean)).to_string(),
        ),
        ("panics in the instances' logs", panics.to_string()),
        (
            "wall time, all delivered",
            format!("{:.0} s", delivered_after.as_secs_f64()),
        ),
    ];
    println!("soak: figures:");
    for (name, value) in rows {
        println!("soak:   {name:<64} {value}");
    }
    show("lost", &verdict.lost);
    show(
        "applied twice",
        &verdict
            .doubled
            .iter()
            .map(|(id, n)| format!("{id} in {n} transactions"))
            .collect::<Vec<_>>(),
    );
    show(
        "wrong users",
        &verdict
            .wrong_users
            .iter()
            .map(|(user, why)| format!("{}: {why}", plan.users[*user]))
            .collect::<Vec<_>>(),
    );
    show("web-app sessions lost", &verdict.sessions_lost);
    show("web-app sessions damaged", &verdict.sessions_damaged);
    show(
        "web-app sessions reformatted",
        &verdict.sessions_reformatted,
    );
    show("unplanned exits", &unplanned);
    show(
        "recoveries over the limit (an instance that does not apply again)",
        &stuck,
    );

    let passed = verdict.passed() && all_ok && stuck.is_empty();
    println!(
        "soak: {}",
        if passed {
            "PASSED: nothing lost, nothing applied twice, every user right, every web-app session as written"
        } else {
            "checks failed"
        }
    );
    Ok(passed)
}

/// Once a fault is over (PostgreSQL started, the hole healed, the instance
/// restarted), each instance must apply webhooks again without a restart:
/// on these loaded machines that takes seconds; a minute means it is stuck.
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);

/// For each fault and instance: "<fault> over at +T s: A" and the seconds
/// to that instance's next 2xx (`None` when no delivery came its way).
fn recoveries(
    figures: &deliver::Figures,
    played: &faults::Played,
    started: Instant,
) -> Vec<(String, Option<f64>)> {
    let mut all = Vec::new();
    for (fault, ended) in &played.ended {
        for (n, name) in ["A", "B"].iter().enumerate() {
            let secs = figures
                .first_ok_after(n, *ended)
                .map(|ok| ok.duration_since(*ended).as_secs_f64());
            let line = format!(
                "{} over at +{:.1} s: instance {name} answered 2xx again after {}",
                fault.name(),
                ended.duration_since(started).as_secs_f64(),
                secs.map_or("-".to_string(), |s| format!("{s:.1} s"))
            );
            all.push((line, secs));
        }
    }
    all
}

/// The first few of a list, when there is any.
fn show(what: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    println!("soak: {what} ({}), the first ones:", items.len());
    for item in items.iter().take(5) {
        println!("soak:   {item}");
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn count_in_logs(logs: &[PathBuf], needle: &str) -> usize {
    logs.iter()
        .filter_map(|log| std::fs::read_to_string(log).ok())
        .map(|text| text.matches(needle).count())
        .sum()
}
