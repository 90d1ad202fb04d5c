//! Load generator of the webhook benchmark (`scripts/bench-webhook.sh`, see
//! BENCHMARKS.md).
//!
//! Builds `--events` realistic Stripe events (80 % `customer.subscription.updated`,
//! 20 % `checkout.session.completed`, 3-4 KB each, pretty-printed as Stripe
//! sends them) for the paying users that `bench/seed.sql` creates, signs them
//! all just before the run, and sends each once over `--concurrency` HTTP/1.1
//! keep-alive connections (exactly one connection per simulated client). It
//! prints one JSON line: throughput, latency percentiles, non-200 answers.
//! Its HTTP/1.1 client is a few lines over a TCP stream, each request written
//! whole in one call: it shares the 2 cores with the server under test and
//! PostgreSQL, and should cost about what pgbench's own client costs.
//!
//! Events go round-robin over the users, and each round is one second newer
//! than the last, so every event is newer than its user's state and must be
//! `applied`; two events of one user are never in flight together. With
//! `--expected FILE` it writes what each user's active sessions must say
//! afterwards, worked out here from the events alone, never read back from
//! the database: the benchmark checks the database against it.

// serde_json::json! recurses once per field: Stripe objects have many.
#![recursion_limit = "256"]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};

#[path = "common/http1.rs"]
mod http1;
use http1::{Connection, find};

/// bench/seed.sql: user `u` pays when `u % 100 == 0` (2,000 of 200,000).
const PAYING_STRIDE: u64 = 100;
const MAX_USERS: usize = 2_000;
/// The statuses of `SUBSCRIBED_STATUSES` in the benchmark (the default).
const SUBSCRIBED: &[&str] = &["active", "trialing"];
/// No request of a healthy run comes near this; it only bounds a broken one.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser)]
#[command(about = "Sends signed Stripe events to session-worker and measures it")]
struct Args {
    /// Where `session-worker serve` listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// The endpoint secret the server was started with.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    secret: String,
    /// Events to send (each once).
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Simultaneous keep-alive connections.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Paying users the events are spread over (at most 2,000, as seeded).
    #[arg(long, default_value_t = MAX_USERS)]
    users: usize,
    /// Events of an ignored type sent first to open the connections (not measured).
    #[arg(long, default_value_t = 32)]
    warmup: usize,
    /// Seed of the event mix.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write `username,subscribed,status` as expected after the run.
    #[arg(long)]
    expected: Option<PathBuf>,
    /// Seconds to wait for /readyz to answer 200.
    #[arg(long, default_value_t = 120)]
    ready_timeout: u64,
    /// Print the first event of each type and the body sizes, send nothing.
    #[arg(long)]
    dry_run: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.users == 0 || args.users > MAX_USERS || args.concurrency == 0 {
        bail!("--users must be 1..={MAX_USERS} and --concurrency at least 1");
    }
    let plan = Plan::build(&args);
    if let Some(path) = &args.expected {
        std::fs::write(path, plan.expected_csv())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.dry_run {
        for kind in [
            "checkout.session.completed",
            "customer.subscription.updated",
        ] {
            let marker = format!("\"type\": \"{kind}\"");
            if let Some(body) = plan
                .bodies
                .iter()
                .find(|body| contains(body, marker.as_bytes()))
            {
                println!("{}", String::from_utf8_lossy(body));
            }
        }
        println!(
            "{}",
            json!({ "body_bytes": plan.sizes, "checkouts": plan.checkouts })
        );
        return Ok(());
    }
    wait_ready(&args.addr, Duration::from_secs(args.ready_timeout)).await?;

    let warmup: Vec<Vec<u8>> = (0..args.warmup).map(warmup_event).collect();
    run(&args, requests(&args, warmup), "\"ignored\"").await?;

    let events = requests(&args, plan.bodies);
    let (cpu_before, machine_before) = (cpu_seconds(), machine_busy_seconds());
    let started = Instant::now();
    let mut results = run(&args, events, "\"applied\"").await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    let machine = machine_busy_seconds() - machine_before;

    results.latencies_us.sort_unstable();
    let n = results.latencies_us.len();
    let ms = |q: f64| percentile(&results.latencies_us, q) as f64 / 1000.0;
    let sizes = plan.sizes;
    println!(
        "{}",
        json!({
            "events": n,
            "concurrency": args.concurrency,
            "seconds": round3(seconds),
            "events_per_s": round3(n as f64 / seconds),
            "p50_ms": ms(0.50),
            "p99_ms": ms(0.99),
            "max_ms": ms(1.0),
            "non_200": results.non_200,
            "not_applied": results.not_applied,
            "checkouts": plan.checkouts,
            "body_bytes": { "min": sizes.0, "mean": sizes.1, "max": sizes.2 },
            "loadgen_cpu_us_per_event": round3(cpu * 1e6 / n as f64),
            "machine_cpu_us_per_event": round3(machine * 1e6 / n as f64),
        })
    );
    Ok(())
}

/// The events in sending order, with what they must leave behind.
struct Plan {
    bodies: Vec<Vec<u8>>,
    users: Vec<UserState>,
    checkouts: usize,
    /// Body sizes: min, mean, max.
    sizes: (usize, usize, usize),
}

struct UserState {
    number: u64,
    /// (subscription id, status, created of the event that set it)
    subscriptions: Vec<(String, &'static str, i64)>,
    current: usize,
}

impl Plan {
    fn build(args: &Args) -> Self {
        let mut rng = SplitMix(args.seed);
        let mut users: Vec<UserState> = (1..=args.users as u64)
            .map(|j| {
                let number = j * PAYING_STRIDE;
                UserState {
                    number,
                    // bench/seed.sql: g0, active, set 20 days ago.
                    subscriptions: vec![(subscription_id(number, 0), "active", i64::MIN)],
                    current: 0,
                }
            })
            .collect();
        // Newer than the seeded state, older than now.
        let base = chrono::Utc::now().timestamp() - 3_600;
        let mut checkouts = 0;
        let bodies: Vec<Vec<u8>> = (0..args.events)
            .map(|i| {
                let user = &mut users[i % args.users];
                let created = base + (i / args.users) as i64;
                let id = format!("evt_1Bench{i:018}");
                let body = if rng.below(100) < 20 {
                    checkouts += 1;
                    let generation = user.subscriptions.len();
                    user.subscriptions.push((
                        subscription_id(user.number, generation),
                        "active",
                        created,
                    ));
                    user.current = generation;
                    checkout_completed(&id, created, user, &mut rng)
                } else {
                    let status = match rng.below(10) {
                        0..=5 => "active",
                        6 | 7 => "past_due",
                        8 => "trialing",
                        _ => "unpaid",
                    };
                    let current = user.current;
                    let previous = user.subscriptions[current].1;
                    user.subscriptions[current].1 = status;
                    user.subscriptions[current].2 = created;
                    subscription_updated(&id, created, user, previous, &mut rng)
                };
                serde_json::to_vec_pretty(&body).expect("JSON serialises")
            })
            .collect();
        let lengths = bodies.iter().map(Vec::len);
        let sizes = (
            lengths.clone().min().unwrap_or(0),
            lengths.clone().sum::<usize>() / bodies.len().max(1),
            lengths.max().unwrap_or(0),
        );
        Self {
            bodies,
            users,
            checkouts,
            sizes,
        }
    }

    /// The contract's rule: subscribed iff any subscription's status counts;
    /// the status shown is a subscribed one's, else the latest.
    fn expected_csv(&self) -> String {
        let mut csv = String::new();
        for user in &self.users {
            let counts = |status: &str| SUBSCRIBED.contains(&status);
            let shown = user
                .subscriptions
                .iter()
                .max_by_key(|(_, status, created)| (counts(status), *created))
                .expect("every user has a subscription");
            let _ = writeln!(
                csv,
                "{},{},{}",
                username(user.number),
                counts(shown.1),
                shown.1
            );
        }
        csv
    }
}

fn username(number: u64) -> String {
    format!("user_{number:06}")
}

fn customer_id(number: u64) -> String {
    format!("cus_SW{number:08}")
}

fn subscription_id(number: u64, generation: usize) -> String {
    format!("sub_SW{number:08}g{generation}")
}

/// The price of the subscription item, as the API renders it.
fn price() -> Value {
    json!({
        "id": "price_1PbHqJSWbench0000001", "object": "price", "active": true,
        "billing_scheme": "per_unit", "created": 1_719_000_000, "currency": "usd",
        "custom_unit_amount": null, "livemode": false, "lookup_key": "pro_monthly",
        "metadata": {}, "nickname": "Pro (monthly)", "product": "prod_QSbenchPro00001",
        "recurring": { "aggregate_usage": null, "interval": "month", "interval_count": 1,
                       "meter": null, "trial_period_days": null, "usage_type": "licensed" },
        "tax_behavior": "exclusive", "tiers_mode": null, "transform_quantity": null,
        "type": "recurring", "unit_amount": 1500, "unit_amount_decimal": "1500"
    })
}

fn envelope(id: &str, kind: &str, created: i64, object: Value, previous: Option<Value>) -> Value {
    let mut data = json!({ "object": object });
    if let Some(previous) = previous {
        data["previous_attributes"] = previous;
    }
    json!({
        "id": id, "object": "event", "api_version": "2024-06-20", "created": created,
        "data": data, "livemode": false, "pending_webhooks": 1,
        "request": { "id": format!("req_{}", &id[4..18]), "idempotency_key": null },
        "type": kind
    })
}

fn subscription_updated(
    id: &str,
    created: i64,
    user: &UserState,
    previous: &str,
    rng: &mut SplitMix,
) -> Value {
    let (subscription, status, _) = &user.subscriptions[user.current];
    let start = created - 86_400 * (1 + rng.below(300) as i64);
    let period_start = created - 86_400 * rng.below(28) as i64;
    let period_end = period_start + 2_592_000;
    let object = json!({
        "id": subscription, "object": "subscription", "application": null,
        "application_fee_percent": null,
        "automatic_tax": { "disabled_reason": null, "enabled": false, "liability": null },
        "billing_cycle_anchor": start, "billing_cycle_anchor_config": null,
        "billing_thresholds": null, "cancel_at": null, "cancel_at_period_end": false,
        "canceled_at": null,
        "cancellation_details": { "comment": null, "feedback": null, "reason": null },
        "collection_method": "charge_automatically", "created": start, "currency": "usd",
        "current_period_end": period_end, "current_period_start": period_start,
        "customer": customer_id(user.number), "days_until_due": null,
        "default_payment_method": format!("pm_1Q{:022}", rng.below(u64::MAX >> 1)),
        "default_source": null, "default_tax_rates": [], "description": null,
        "discount": null, "discounts": [], "ended_at": null,
        "invoice_settings": { "account_tax_ids": null, "issuer": { "type": "self" } },
        "items": {
            "object": "list",
            "data": [{
                "id": format!("si_R{:012}", user.number), "object": "subscription_item",
                "billing_thresholds": null, "created": start, "discounts": [],
                "metadata": {}, "price": price(), "quantity": 1,
                "subscription": subscription, "tax_rates": []
            }],
            "has_more": false, "total_count": 1,
            "url": format!("/v1/subscription_items?subscription={subscription}")
        },
        "latest_invoice": format!("in_1Q{:022}", rng.below(u64::MAX >> 1)),
        "livemode": false,
        "metadata": { "username": username(user.number), "plan": "pro" },
        "next_pending_invoice_item_invoice": null, "on_behalf_of": null,
        "pause_collection": null,
        "payment_settings": { "payment_method_options": null, "payment_method_types": null,
                              "save_default_payment_method": "off" },
        "pending_invoice_item_interval": null, "pending_setup_intent": null,
        "pending_update": null, "quantity": 1, "schedule": null,
        "start_date": start, "status": status, "test_clock": null, "transfer_data": null,
        "trial_end": null,
        "trial_settings": { "end_behavior": { "missing_payment_method": "create_invoice" } },
        "trial_start": null
    });
    let previous = json!({ "status": previous, "latest_invoice": format!("in_1P{:022}", rng.below(u64::MAX >> 1)) });
    envelope(
        id,
        "customer.subscription.updated",
        created,
        object,
        Some(previous),
    )
}

fn checkout_completed(id: &str, created: i64, user: &UserState, rng: &mut SplitMix) -> Value {
    let (subscription, _, _) = &user.subscriptions[user.current];
    let name = username(user.number);
    let object = json!({
        "id": format!("cs_live_a1{:050}", rng.below(u64::MAX >> 1)),
        "object": "checkout.session", "adaptive_pricing": { "enabled": false },
        "after_expiration": null, "allow_promotion_codes": true,
        "amount_subtotal": 1500, "amount_total": 1500,
        "automatic_tax": { "enabled": false, "liability": null, "status": null },
        "billing_address_collection": "auto",
        "cancel_url": "https://app.example.com/billing?canceled=1",
        "client_reference_id": name, "client_secret": null, "consent": null,
        "consent_collection": null, "created": created - 95, "currency": "usd",
        "currency_conversion": null, "custom_fields": [],
        "custom_text": { "after_submit": null, "shipping_address": null, "submit": null,
                         "terms_of_service_acceptance": null },
        "customer": customer_id(user.number), "customer_creation": "if_required",
        "customer_details": {
            "address": { "city": "Lyon", "country": "FR", "line1": "12 rue de la République",
                         "line2": null, "postal_code": "69002", "state": null },
            "email": format!("{name}@example.com"), "name": "Camille Martin", "phone": null,
            "tax_exempt": "none", "tax_ids": []
        },
        "customer_email": null, "discounts": [], "expires_at": created + 86_305,
        "invoice": format!("in_1Q{:022}", rng.below(u64::MAX >> 1)), "invoice_creation": null,
        "livemode": false, "locale": null, "metadata": { "plan": "pro" },
        "mode": "subscription", "payment_intent": null, "payment_link": null,
        "payment_method_collection": "always",
        "payment_method_configuration_details": { "id": "pmc_1PbHqJSWbench00000001", "parent": null },
        "payment_method_options": { "card": { "request_three_d_secure": "automatic" } },
        "payment_method_types": ["card", "link"], "payment_status": "paid",
        "phone_number_collection": { "enabled": false }, "recovered_from": null,
        "saved_payment_method_options": { "allow_redisplay_filters": ["always"],
                                          "payment_method_remove": null, "payment_method_save": null },
        "setup_intent": null, "shipping_address_collection": null, "shipping_cost": null,
        "shipping_details": null, "shipping_options": [], "status": "complete",
        "submit_type": null, "subscription": subscription,
        "success_url": "https://app.example.com/billing/done?session_id={CHECKOUT_SESSION_ID}",
        "total_details": { "amount_discount": 0, "amount_shipping": 0, "amount_tax": 0 },
        "ui_mode": "hosted", "url": null
    });
    envelope(id, "checkout.session.completed", created, object, None)
}

/// A type the worker records and ignores: opens the connections (HTTP and
/// the worker's database pool) before the measured run.
fn warmup_event(i: usize) -> Vec<u8> {
    let body = envelope(
        &format!("evt_1Warm{i:019}"),
        "customer.created",
        chrono::Utc::now().timestamp(),
        json!({ "id": format!("cus_Warm{i:08}"), "object": "customer" }),
        None,
    );
    serde_json::to_vec(&body).expect("JSON serialises")
}

/// Signs every body now, as Stripe signs each delivery when it sends it, and
/// makes each a whole HTTP request.
fn requests(args: &Args, bodies: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let now = chrono::Utc::now().timestamp();
    bodies
        .into_iter()
        .map(|body| {
            let signature = session_worker::signature::sign(&args.secret, now, &body);
            let mut request = format!(
                "POST /webhooks/stripe HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
                 stripe-signature: {signature}\r\ncontent-length: {}\r\n\r\n",
                args.addr,
                body.len()
            )
            .into_bytes();
            request.extend_from_slice(&body);
            request
        })
        .collect()
}

#[derive(Default)]
struct Results {
    latencies_us: Vec<u64>,
    non_200: usize,
    /// 200 answers whose outcome is not the one expected.
    not_applied: usize,
}

/// Sends every request once, `concurrency` at a time, one connection each.
async fn run(
    args: &Args,
    requests: Vec<Vec<u8>>,
    expected_outcome: &'static str,
) -> anyhow::Result<Results> {
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (requests, next, addr) = (requests.clone(), next.clone(), args.addr.clone());
            tokio::spawn(async move { client(&addr, &requests, &next, expected_outcome).await })
        })
        .collect();
    let mut all = Results::default();
    for client in clients {
        let results = client.await??;
        all.latencies_us.extend(results.latencies_us);
        all.non_200 += results.non_200;
        all.not_applied += results.not_applied;
    }
    Ok(all)
}

async fn client(
    addr: &str,
    requests: &[Vec<u8>],
    next: &AtomicUsize,
    expected_outcome: &str,
) -> anyhow::Result<Results> {
    let mut connection = Connection::open(addr).await?;
    let mut results = Results::default();
    while let Some(request) = requests.get(next.fetch_add(1, Ordering::Relaxed)) {
        let started = Instant::now();
        let (status, answer) = tokio::time::timeout(REQUEST_TIMEOUT, connection.exchange(request))
            .await
            .context("request timed out")??;
        results
            .latencies_us
            .push(started.elapsed().as_micros() as u64);
        if status != 200 {
            results.non_200 += 1;
            if results.non_200 <= 3 {
                eprintln!("loadgen: {status}: {}", String::from_utf8_lossy(&answer));
            }
        } else if !contains(&answer, expected_outcome.as_bytes()) {
            results.not_applied += 1;
            if results.not_applied <= 3 {
                eprintln!(
                    "loadgen: expected {expected_outcome}: {}",
                    String::from_utf8_lossy(&answer)
                );
            }
        }
    }
    Ok(results)
}

async fn wait_ready(addr: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    let request = format!("GET /readyz HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    loop {
        if let Ok(mut connection) = Connection::open(addr).await
            && let Ok((200, _)) = connection.exchange(request.as_bytes()).await
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{addr}/readyz did not answer 200 within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

/// Nearest-rank percentile of sorted values (`q` = 1.0 is the maximum), the
/// same rule the script applies to pgbench's per-transaction log.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// CPU time of this process so far (user + system), from /proc/self/stat in
/// clock ticks of 1/100 s (Linux's USER_HZ).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name, which ends with the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    // utime and stime: fields 14 and 15 of the line, 11 and 12 (from 0) here.
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => 0.0,
    }
}

/// CPU time the whole machine spent busy so far (all but idle and iowait),
/// from /proc/stat, in seconds: shows how much else ran during the run.
fn machine_busy_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let Some(line) = stat.lines().find(|line| line.starts_with("cpu ")) else {
        return 0.0;
    };
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum::<f64>()
        / 100.0
}

/// A small deterministic generator: the same seed gives the same event mix.
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
