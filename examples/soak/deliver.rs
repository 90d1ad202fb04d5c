//! Delivery as Stripe does it: each delivery goes to one instance chosen at
//! random; a non-2xx answer, a timeout, a refused or broken connection is
//! tried again later with backoff (to either instance) until a deadline.
//! Some events are delivered twice on purpose, some late (after newer events
//! of their user), and a few twice at the same moment, once to each instance.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::plan::Plan;
use crate::rng::SplitMix;

/// Stripe waits about this long for an answer before it counts a failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const BACKOFF_FIRST: f64 = 0.5;
const BACKOFF_MAX: f64 = 10.0;

/// Who sends what, when: one chain of attempts per delivery.
pub struct Schedule {
    /// (seconds after the start, event index, instance for the first try)
    deliveries: Vec<(f64, usize, Option<usize>)>,
    pub late: usize,
    pub twice: usize,
    pub concurrent: usize,
}

impl Schedule {
    /// Spreads the events evenly over `window` seconds, user by user in the
    /// order of their lives, then disturbs that order.
    pub fn build(plan: &Plan, window: f64, seed: u64) -> Self {
        let mut rng = SplitMix(seed ^ 0x5EED);
        // Round-robin over users: a user's k-th event goes out in round k.
        let mut per_user: Vec<Vec<usize>> = vec![Vec::new(); plan.users.len()];
        for (i, event) in plan.events.iter().enumerate() {
            per_user[event.user].push(i);
        }
        let rounds = per_user.iter().map(Vec::len).max().unwrap_or(0);
        let mut order = Vec::with_capacity(plan.events.len());
        for round in 0..rounds {
            order.extend(
                per_user
                    .iter()
                    .filter_map(|events| events.get(round).copied()),
            );
        }
        let step = window / order.len().max(1) as f64;
        let mut schedule = Schedule {
            deliveries: Vec::with_capacity(order.len() * 11 / 10),
            late: 0,
            twice: 0,
            concurrent: 0,
        };
        for (slot, &event) in order.iter().enumerate() {
            let mut at = slot as f64 * step;
            // Late: after one to three newer events of the same user.
            if rng.chance(8) {
                let user_gap = plan.users.len() as f64 * step;
                at += user_gap * (1.0 + rng.below(3) as f64) + rng.below(1000) as f64 / 1000.0;
                schedule.late += 1;
            }
            schedule.deliveries.push((at, event, None));
            if rng.chance(3) {
                schedule.twice += 1;
                let again = at + 1.0 + rng.below(20) as f64;
                schedule.deliveries.push((again, event, None));
            } else if rng.chance(1) {
                schedule.concurrent += 1;
                schedule.deliveries.last_mut().expect("just pushed").2 = Some(0);
                schedule.deliveries.push((at, event, Some(1)));
            }
        }
        schedule.deliveries.sort_by(|a, b| a.0.total_cmp(&b.0));
        schedule
    }

    pub fn len(&self) -> usize {
        self.deliveries.len()
    }
}

/// What the client saw.
#[derive(Default)]
pub struct Figures {
    pub attempts: u64,
    pub retries: u64,
    /// "200", "503", "timeout", "refused", "closed" ...
    pub answers: BTreeMap<String, u64>,
    /// The worker's `outcome` in 200 answers.
    pub outcomes: BTreeMap<String, u64>,
    /// Deliveries given up at the deadline without a 2xx.
    pub given_up: u64,
    first_try: Vec<Option<Instant>>,
    first_ok: Vec<Option<Instant>>,
    /// When each instance answered 2xx, in order.
    ok_at: Vec<Vec<Instant>>,
}

impl Figures {
    /// The longest wait between an event's first delivery and its first 2xx,
    /// and the event that waited (`None` when no event got a 2xx).
    pub fn worst_wait(&self, plan: &Plan) -> Option<(Duration, String)> {
        self.first_try
            .iter()
            .zip(&self.first_ok)
            .enumerate()
            .filter_map(|(i, (tried, ok))| Some((ok.as_ref()?.duration_since(*tried.as_ref()?), i)))
            .max()
            .map(|(wait, i)| (wait, plan.events[i].id.clone()))
    }

    /// The first 2xx from `instance` at or after `after`.
    pub fn first_ok_after(&self, instance: usize, after: Instant) -> Option<Instant> {
        let times = self.ok_at.get(instance)?;
        times.get(times.partition_point(|at| *at < after)).copied()
    }

    pub fn never_ok(&self) -> usize {
        self.first_ok.iter().filter(|ok| ok.is_none()).count()
    }
}

struct Job {
    event: usize,
    attempt: u32,
    instance: Option<usize>,
}

struct Shared {
    plan: Arc<Plan>,
    addrs: Vec<String>,
    secret: String,
    figures: Mutex<Figures>,
    outstanding: AtomicUsize,
    give_up_at: Instant,
    jobs: mpsc::UnboundedSender<Job>,
}

/// Sends every delivery of `schedule`, and retries, until each chain got a
/// 2xx or `give_up_at` passed. `concurrency` deliveries at most are in
/// flight at once, as Stripe limits its own.
pub async fn run(
    plan: Arc<Plan>,
    schedule: Schedule,
    addrs: Vec<String>,
    secret: String,
    concurrency: usize,
    give_up_at: Instant,
) -> Figures {
    let (jobs, queue) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        figures: Mutex::new(Figures {
            first_try: vec![None; plan.events.len()],
            first_ok: vec![None; plan.events.len()],
            ok_at: vec![Vec::new(); addrs.len()],
            ..Figures::default()
        }),
        plan,
        addrs,
        secret,
        outstanding: AtomicUsize::new(schedule.len()),
        give_up_at,
        jobs,
    });
    let queue = Arc::new(tokio::sync::Mutex::new(queue));
    let workers: Vec<_> = (0..concurrency)
        .map(|n| {
            let (shared, queue) = (shared.clone(), queue.clone());
            tokio::spawn(async move { worker(shared, queue, n as u64).await })
        })
        .collect();

    let started = tokio::time::Instant::now();
    for (at, event, instance) in schedule.deliveries {
        tokio::time::sleep_until(started + Duration::from_secs_f64(at)).await;
        let job = Job {
            event,
            attempt: 0,
            instance,
        };
        let _ = shared.jobs.send(job);
    }
    while shared.outstanding.load(Ordering::Acquire) > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for worker in workers {
        worker.abort();
    }
    let mut figures = shared.figures.lock().expect("not poisoned");
    std::mem::take(&mut *figures)
}

async fn worker(
    shared: Arc<Shared>,
    queue: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>>,
    seed: u64,
) {
    let mut rng = SplitMix(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xD311);
    let mut connections: Vec<Option<Connection>> = shared.addrs.iter().map(|_| None).collect();
    loop {
        let Some(job) = queue.lock().await.recv().await else {
            return;
        };
        let instance = job
            .instance
            .unwrap_or_else(|| rng.below(shared.addrs.len() as u64) as usize);
        let now = Instant::now();
        {
            let mut figures = shared.figures.lock().expect("not poisoned");
            figures.attempts += 1;
            if job.attempt > 0 {
                figures.retries += 1;
            }
            if figures.first_try[job.event].is_none() {
                figures.first_try[job.event] = Some(now);
            }
        }
        let request = request(&shared, job.event, &shared.addrs[instance]);
        let answer = send(
            &mut connections[instance],
            &shared.addrs[instance],
            &request,
        )
        .await;
        let (label, ok, outcome) = match &answer {
            Ok((status, body)) => (
                status.to_string(),
                (200..300).contains(status),
                outcome_of(body),
            ),
            Err(failure) => {
                connections[instance] = None;
                (failure.to_string(), false, None)
            }
        };
        let mut figures = shared.figures.lock().expect("not poisoned");
        *figures.answers.entry(label).or_default() += 1;
        if let Some(outcome) = outcome {
            *figures.outcomes.entry(outcome).or_default() += 1;
        }
        if ok {
            let now = Instant::now();
            figures.ok_at[instance].push(now);
            if figures.first_ok[job.event].is_none() {
                figures.first_ok[job.event] = Some(now);
            }
            shared.outstanding.fetch_sub(1, Ordering::AcqRel);
        } else if Instant::now() >= shared.give_up_at {
            figures.given_up += 1;
            shared.outstanding.fetch_sub(1, Ordering::AcqRel);
        } else {
            drop(figures);
            let backoff = (BACKOFF_FIRST * 2f64.powi(job.attempt as i32)).min(BACKOFF_MAX);
            let jitter = 0.5 + rng.below(1000) as f64 / 1000.0;
            let jobs = shared.jobs.clone();
            let retry = Job {
                event: job.event,
                attempt: job.attempt + 1,
                instance: None,
            };
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs_f64(backoff * jitter)).await;
                let _ = jobs.send(retry);
            });
        }
    }
}

/// Signed now, as Stripe signs each attempt when it sends it.
fn request(shared: &Shared, event: usize, addr: &str) -> Vec<u8> {
    let body = &shared.plan.events[event].body;
    let now = chrono::Utc::now().timestamp();
    let signature = session_worker::signature::sign(&shared.secret, now, body);
    let mut request = format!(
        "POST /webhooks/stripe HTTP/1.1\r\nhost: {addr}\r\nuser-agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)\r\n\
         content-type: application/json; charset=utf-8\r\nstripe-signature: {signature}\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

fn outcome_of(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let rest = &text[text.find("\"outcome\":\"")? + 11..];
    Some(rest[..rest.find('"')?].to_string())
}

/// Why an attempt got no HTTP answer.
#[derive(Debug)]
enum Failure {
    Refused,
    Timeout,
    Closed,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Failure::Refused => "refused",
            Failure::Timeout => "timeout",
            Failure::Closed => "closed",
        })
    }
}

async fn send(
    slot: &mut Option<Connection>,
    addr: &str,
    request: &[u8],
) -> Result<(u16, Vec<u8>), Failure> {
    if slot.is_none() {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| Failure::Timeout)?
            .map_err(|_| Failure::Refused)?;
        let _ = stream.set_nodelay(true);
        *slot = Some(Connection {
            stream,
            received: Vec::with_capacity(4096),
        });
    }
    let connection = slot.as_mut().expect("just opened");
    match tokio::time::timeout(REQUEST_TIMEOUT, connection.exchange(request)).await {
        Err(_) => Err(Failure::Timeout),
        Ok(Err(_)) => Err(Failure::Closed),
        Ok(Ok(answer)) => {
            if answer.2 {
                *slot = None;
            }
            Ok((answer.0, answer.1))
        }
    }
}

/// One HTTP/1.1 keep-alive connection (the loadgen's, plus `connection: close`).
struct Connection {
    stream: TcpStream,
    received: Vec<u8>,
}

impl Connection {
    /// Status, body, and whether the server will close the connection.
    async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<(u16, Vec<u8>, bool)> {
        self.stream.write_all(request).await?;
        loop {
            if let Some(end) = find(&self.received, b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.received[..end])?.to_ascii_lowercase();
                let status: u16 = head
                    .split(' ')
                    .nth(1)
                    .and_then(|code| code.parse().ok())
                    .with_context(|| format!("not an HTTP answer: {head:?}"))?;
                let header = |name: &str| {
                    head.lines().find_map(|line| {
                        let (key, value) = line.split_once(':')?;
                        (key.trim() == name).then(|| value.trim().to_string())
                    })
                };
                let length: usize = header("content-length")
                    .and_then(|v| v.parse().ok())
                    .with_context(|| format!("answer without content-length: {head:?}"))?;
                let close = header("connection").is_some_and(|v| v == "close");
                let whole = end + 4 + length;
                while self.received.len() < whole {
                    self.read_more().await?;
                }
                let body = self.received[end + 4..whole].to_vec();
                self.received.drain(..whole);
                return Ok((status, body, close));
            }
            self.read_more().await?;
        }
    }

    async fn read_more(&mut self) -> anyhow::Result<()> {
        self.received.reserve(4096);
        if self.stream.read_buf(&mut self.received).await? == 0 {
            bail!("the server closed the connection");
        }
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// `GET path` on a fresh connection: the status, or `None` without an answer.
pub async fn get_status(addr: &str, path: &str) -> Option<u16> {
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    let mut slot = None;
    send(&mut slot, addr, request.as_bytes())
        .await
        .ok()
        .map(|(status, _)| status)
}
