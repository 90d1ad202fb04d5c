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
mod report;
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
    Ok(report::print(&report::Run {
        plan: &plan,
        users,
        figures: &figures,
        played: &played,
        stop_lines: &stop_lines,
        stopped_clean,
        verdict: &verdict,
        writes: &writes,
        unplanned: &unplanned,
        panics,
        delivered_after,
        started,
    }))
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
