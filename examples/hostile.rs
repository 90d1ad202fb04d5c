//! Client of the hostile-traffic benchmark (`scripts/bench-hostile.sh`).
//!
//! Runs, one after the other, against `session-worker serve` on loopback:
//!
//! - `stalled`: N connections that each send a plausible webhook head
//!   (well-formed `Stripe-Signature`, `Content-Length: 1048576`) and
//!   1 MiB - 1 byte of body, then stall; held for `--hold` seconds, then
//!   closed;
//! - `idle`: N keep-alive connections that each make one request and then
//!   stay idle;
//! - `burst`: N badly signed webhook calls over 64 keep-alive connections.
//!
//! During each, a genuine signed webhook is sent every 250 ms and `/healthz`
//! asked every 250 ms (each on a new connection); afterwards, genuine
//! webhooks until one is answered 200 (the recovery). The server's resident
//! memory is read from `/proc/<pid>/status` every 50 ms. One JSON line per
//! scenario on stdout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every request of the client gives up after this: the run stays bounded.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const PROBE_EVERY: Duration = Duration::from_millis(250);
const ONE_MIB: usize = 1024 * 1024;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    secret: String,
    /// The server's pid, for its resident memory.
    #[arg(long)]
    pid: u32,
    #[arg(long, default_value_t = 400)]
    stalled: usize,
    /// Seconds the stalled uploads are held.
    #[arg(long, default_value_t = 12)]
    hold: u64,
    #[arg(long, default_value_t = 2000)]
    idle: usize,
    #[arg(long, default_value_t = 10_000)]
    burst: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let baseline = resident_kib(args.pid)?;
    println!(
        "{}",
        json!({ "scenario": "baseline", "rss_mib": mib(baseline) })
    );

    let stalled = run(&args, "stalled", stalled(args.clone())).await?;
    println!("{stalled}");
    let idle = run(&args, "idle", idle(args.clone())).await?;
    println!("{idle}");
    let burst = run(&args, "burst", burst(args.clone())).await?;
    println!("{burst}");
    Ok(())
}

/// Runs one attack with the probes and the memory sampler beside it, then
/// measures the recovery.
async fn run(
    args: &Arc<Args>,
    name: &str,
    attack: impl Future<Output = serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = tokio::spawn({
        let (stop, peak, pid) = (stop.clone(), peak.clone(), args.pid);
        async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(kib) = resident_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let webhooks = tokio::spawn(probe(stop.clone(), {
        let args = args.clone();
        move |n| {
            let args = args.clone();
            async move { genuine_webhook(&args, n).await }
        }
    }));
    let health = tokio::spawn(probe(stop.clone(), {
        let args = args.clone();
        move |_| {
            let args = args.clone();
            async move {
                request(
                    &args.addr,
                    b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".to_vec(),
                )
                .await
            }
        }
    }));

    let attack = attack.await;
    stop.store(true, Ordering::Relaxed);
    let webhooks = webhooks.await?;
    let health = health.await?;
    sampler.await?;

    // Recovery: from the attack's end until a genuine webhook is answered 200.
    let ended = Instant::now();
    let mut recovered = None;
    for n in 0..200 {
        if let (Some(200), _) = genuine_webhook(args, 1_000_000 + n).await {
            recovered = Some(ended.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(json!({
        "scenario": name,
        "attack": attack,
        "peak_rss_mib": mib(peak.load(Ordering::Relaxed)),
        "genuine_webhooks": summary(&webhooks),
        "healthz": summary(&health),
        "recovery_ms": recovered.map(|d| d.as_millis() as u64),
    }))
}

/// Calls `call` every [`PROBE_EVERY`] (each on its own task) until `stop`;
/// returns every (status, latency).
async fn probe<F, Fut>(stop: Arc<AtomicBool>, call: F) -> Vec<(Option<u16>, Duration)>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = (Option<u16>, Duration)> + Send + 'static,
{
    let mut calls = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        calls.push(tokio::spawn(call(n)));
        n += 1;
        tokio::time::sleep(PROBE_EVERY).await;
    }
    let mut results = Vec::new();
    for call in calls {
        if let Ok(result) = call.await {
            results.push(result);
        }
    }
    results
}

fn summary(results: &[(Option<u16>, Duration)]) -> serde_json::Value {
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    for (status, _) in results {
        let key = status.map_or("none".to_owned(), |s| s.to_string());
        *statuses.entry(key).or_default() += 1;
    }
    let mut latencies: Vec<f64> = results
        .iter()
        .map(|(_, d)| d.as_secs_f64() * 1000.0)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    json!({
        "count": results.len(),
        "statuses": statuses,
        "p50_ms": (at(0.5) * 10.0).round() / 10.0,
        "max_ms": (at(1.0) * 10.0).round() / 10.0,
    })
}

/// A signed checkout for a user of its own, as Stripe sends it.
async fn genuine_webhook(args: &Args, n: u64) -> (Option<u16>, Duration) {
    let now = chrono::Utc::now().timestamp();
    let id = format!("evt_bench_{}_{n}", std::process::id());
    let body = serde_json::to_vec_pretty(&json!({
        "id": id, "object": "event", "api_version": "2024-06-20", "created": now,
        "livemode": false, "pending_webhooks": 1, "type": "checkout.session.completed",
        "data": { "object": {
            "id": format!("cs_{id}"), "object": "checkout.session",
            "client_reference_id": format!("bench_user_{n}"), "customer": format!("cus_{n}"),
            "subscription": format!("sub_{n}"), "mode": "subscription",
            "payment_status": "paid", "status": "complete", "metadata": {}
        } }
    }))
    .unwrap();
    let signature = session_worker::signature::sign(&args.secret, now, &body);
    let mut message = format!(
        "POST /webhooks/stripe HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nContent-Type: application/json\r\nStripe-Signature: {signature}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    message.extend_from_slice(&body);
    request(&args.addr, message).await
}

/// One request on a new connection: (status, time to the answer's head).
async fn request(addr: &str, message: Vec<u8>) -> (Option<u16>, Duration) {
    let started = Instant::now();
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(&message).await.ok()?;
        read_status(&mut stream).await
    };
    let status = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .ok()
        .flatten();
    (status, started.elapsed())
}

/// Reads an answer's head and its body (by Content-Length); the status.
async fn read_status(stream: &mut TcpStream) -> Option<u16> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let n = stream.read(&mut buffer).await.ok()?;
        if n == 0 {
            return None;
        }
        received.extend_from_slice(&buffer[..n]);
        let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0);
        if received.len() >= end + 4 + length {
            return head.split(' ').nth(1)?.parse().ok();
        }
    }
}

fn plausible_head(length: usize) -> Vec<u8> {
    let now = chrono::Utc::now().timestamp();
    format!(
        "POST /webhooks/stripe HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nStripe-Signature: t={now},v1={}\r\nContent-Length: {length}\r\n\r\n",
        "0".repeat(64)
    )
    .into_bytes()
}

/// Stalled near-1 MiB uploads, held for `--hold` seconds.
async fn stalled(args: Arc<Args>) -> serde_json::Value {
    let body = Arc::new(vec![b' '; ONE_MIB - 1]);
    let mut uploads = Vec::new();
    let mut connected = 0;
    for _ in 0..args.stalled {
        let Ok(mut stream) = TcpStream::connect(&args.addr).await else {
            continue;
        };
        connected += 1;
        let body = body.clone();
        uploads.push(tokio::spawn(async move {
            let _ = stream.write_all(&plausible_head(ONE_MIB)).await;
            let _ = stream.write_all(&body).await;
            // Stalled: the last byte never comes. The answer, if any.
            read_status(&mut stream).await
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    let mut answered = std::collections::BTreeMap::<String, usize>::new();
    for upload in uploads {
        let key = if upload.is_finished() {
            match upload.await {
                Ok(Some(status)) => status.to_string(),
                _ => "closed".to_owned(),
            }
        } else {
            upload.abort();
            "still_open".to_owned()
        };
        *answered.entry(key).or_default() += 1;
    }
    json!({ "connections": connected, "answers": answered, "held_s": args.hold })
}

/// Keep-alive connections that each made one request and then sit idle,
/// for 8 s (inside the 10 s after which the server closes them).
async fn idle(args: Arc<Args>) -> serde_json::Value {
    let mut streams = Vec::new();
    let mut failed = 0;
    for _ in 0..args.idle {
        let opened = async {
            let mut stream = TcpStream::connect(&args.addr).await.ok()?;
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
                .await
                .ok()?;
            read_status(&mut stream).await?;
            Some(stream)
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, opened).await {
            Ok(Some(stream)) => streams.push(stream),
            _ => failed += 1,
        }
    }
    let open = streams.len();
    tokio::time::sleep(Duration::from_secs(8)).await;
    drop(streams);
    json!({ "connections": open, "failed": failed })
}

/// Badly signed webhook calls (a plausible header that matches nothing,
/// a realistic 3 KB body) over 64 keep-alive connections.
async fn burst(args: Arc<Args>) -> serde_json::Value {
    let workers = 64;
    let per_worker = args.burst.div_ceil(workers);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let addr = args.addr.clone();
        tasks.push(tokio::spawn(async move {
            let body = vec![b'x'; 3000];
            let mut statuses = std::collections::BTreeMap::<String, usize>::new();
            let mut stream: Option<TcpStream> = None;
            for _ in 0..per_worker {
                let mut message = plausible_head(body.len());
                message.extend_from_slice(&body);
                if stream.is_none() {
                    stream = TcpStream::connect(&addr).await.ok();
                }
                let status = match stream.as_mut() {
                    Some(s) => match tokio::time::timeout(REQUEST_TIMEOUT, async {
                        s.write_all(&message).await.ok()?;
                        read_status(s).await
                    })
                    .await
                    {
                        Ok(Some(status)) => Some(status),
                        _ => None,
                    },
                    None => None,
                };
                if status.is_none() {
                    stream = None;
                }
                let key = status.map_or("none".to_owned(), |s| s.to_string());
                *statuses.entry(key).or_default() += 1;
            }
            statuses
        }));
    }
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    for task in tasks {
        for (status, count) in task.await.unwrap_or_default() {
            *statuses.entry(status).or_default() += count;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    json!({
        "requests": per_worker * workers,
        "statuses": statuses,
        "seconds": (seconds * 100.0).round() / 100.0,
        "per_second": ((per_worker * workers) as f64 / seconds).round(),
    })
}

fn resident_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("no process {pid}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}
