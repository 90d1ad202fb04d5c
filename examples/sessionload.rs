//! Load generator of the session API benchmark (`scripts/bench-sessions.sh`,
//! BENCHMARKS.md): `GET /sessions/{id}` of live sessions picked at random,
//! or `POST /sessions` for random users, over `--concurrency` HTTP/1.1
//! keep-alive connections for `--seconds`. Prints one JSON line: requests,
//! throughput, latency percentiles, answers other than the expected status.
//!
//! Its HTTP/1.1 client is a few lines over a TCP stream (as in
//! examples/loadgen.rs): it shares the 2 cores with the server and
//! PostgreSQL, and should cost about what pgbench's own client costs.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};

#[path = "common/http1.rs"]
mod http1;
use http1::Connection;

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Get,
    Post,
}

#[derive(Parser)]
#[command(about = "Drives session-worker's session API and measures it")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    #[arg(long, env = "SESSION_API_TOKEN", hide_env_values = true)]
    token: String,
    #[arg(long, value_enum)]
    mode: Mode,
    /// GET: live sessions are named `live_` + the number, 38 digits, from 1
    /// to this (bench-sessions.sh renames them so).
    #[arg(long, default_value_t = 100_000)]
    live: u64,
    /// POST: users `user_000001` ... up to this.
    #[arg(long, default_value_t = 200_000)]
    users: u64,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Default)]
struct Results {
    latencies_us: Vec<u64>,
    unexpected: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let clients: Vec<_> = (0..args.concurrency)
        .map(|i| {
            let rng = SplitMix(args.seed.wrapping_mul(1_000_003).wrapping_add(i as u64));
            let (addr, token) = (args.addr.clone(), args.token.clone());
            let (mode, live, users) = (args.mode, args.live, args.users);
            tokio::spawn(
                async move { client(&addr, &token, mode, live, users, rng, deadline).await },
            )
        })
        .collect();
    let mut all = Results::default();
    for client in clients {
        let results = client.await??;
        all.latencies_us.extend(results.latencies_us);
        all.unexpected += results.unexpected;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.latencies_us.sort_unstable();
    let ms = |q| percentile(&all.latencies_us, q) as f64 / 1000.0;
    println!(
        "{{\"requests\":{},\"per_s\":{:.0},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},\"unexpected\":{}}}",
        all.latencies_us.len(),
        all.latencies_us.len() as f64 / elapsed,
        ms(0.5),
        ms(0.99),
        ms(1.0),
        all.unexpected
    );
    Ok(())
}

async fn client(
    addr: &str,
    token: &str,
    mode: Mode,
    live: u64,
    users: u64,
    mut rng: SplitMix,
    deadline: Instant,
) -> anyhow::Result<Results> {
    let mut connection = Connection::open(addr).await?;
    let mut results = Results::default();
    let expected = match mode {
        Mode::Get => 200,
        Mode::Post => 201,
    };
    while Instant::now() < deadline {
        let request = match mode {
            Mode::Get => format!(
                "GET /sessions/live_{:038} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\r\n",
                rng.below(live) + 1
            ),
            Mode::Post => {
                let body = format!(
                    r#"{{"username":"user_{:06}","data":{{"_fresh":true,"csrf_token":"{:016x}{:016x}","_flashes":[]}}}}"#,
                    rng.below(users) + 1,
                    rng.next(),
                    rng.next()
                );
                format!(
                    "POST /sessions HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\
                     content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
            }
        };
        let started = Instant::now();
        let (status, answer) = tokio::time::timeout(
            Duration::from_secs(30),
            connection.exchange(request.as_bytes()),
        )
        .await
        .context("request timed out")??;
        results
            .latencies_us
            .push(started.elapsed().as_micros() as u64);
        if status != expected {
            results.unexpected += 1;
            if results.unexpected <= 3 {
                eprintln!(
                    "sessionload: {status}: {}",
                    String::from_utf8_lossy(&answer)
                );
            }
        }
    }
    Ok(results)
}

/// Nearest rank, as the script applies to pgbench's per-transaction log.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
