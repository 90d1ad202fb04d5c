//! Micro-benchmark of the webhook's signature check (`scripts/bench-webhook.sh`,
//! see BENCHMARKS.md): `Verifier::verify` on a 4 KB body, against raw
//! HMAC-SHA256 over the same signed bytes with the same crates (hmac, sha2).
//! The script sets these beside `openssl speed -hmac sha256 -bytes 4096`.
//!
//! Prints one JSON line of microseconds per operation, each the median of
//! several timed batches, the operations' batches taken in turn. Time is the
//! thread's CPU time (from /proc/thread-self/schedstat), as `openssl speed`
//! counts user CPU time: on a shared machine, time spent waiting for the CPU
//! is not the operation's.

use std::hint::black_box;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use secrecy::SecretString;
use serde_json::json;
use session_worker::signature::{Verifier, sign};
use sha2::{Digest, Sha256};

const BODY_BYTES: usize = 4096;
const SAMPLES: usize = 7;
const SAMPLE_TIME: Duration = Duration::from_millis(100);
const SECRET: &str = "whsec_Kq3vB9mXe2LpR7tYw4NzH6cJ8aFdU1sG";

fn main() {
    let body = body();
    let timestamp = chrono::Utc::now().timestamp();
    let header = sign(SECRET, timestamp, &body);
    let verifier = Verifier::new(
        &[SecretString::from(SECRET)],
        std::time::Duration::from_secs(300),
    );
    assert_eq!(
        verifier.verify(Some(&header), &body, timestamp),
        Ok(timestamp)
    );
    // Exactly the bytes the verifier hashes: "<t>.<body>".
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(&body);
    let keyed = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");

    // The four are sampled in turn, so that load from elsewhere on the
    // machine falls on all of them alike.
    let [verify, hmac, hmac_prekeyed, sha256] = medians_us([
        &mut || {
            black_box(verifier.verify(black_box(Some(&header)), black_box(&body), timestamp)).ok();
        },
        &mut || {
            let mut mac = Hmac::<Sha256>::new_from_slice(black_box(SECRET.as_bytes())).unwrap();
            mac.update(black_box(&signed));
            black_box(mac.finalize().into_bytes());
        },
        &mut || {
            let mut mac = black_box(&keyed).clone();
            mac.update(black_box(&signed));
            black_box(mac.finalize().into_bytes());
        },
        &mut || {
            black_box(Sha256::digest(black_box(&signed)));
        },
    ]);
    println!(
        "{}",
        json!({
            "body_bytes": BODY_BYTES,
            "verify_us": verify,
            "hmac_sha256_us": hmac,
            "hmac_sha256_prekeyed_us": hmac_prekeyed,
            "sha256_us": sha256,
        })
    );
}

/// A 4 KB Stripe-like body (the bytes do not change the cost, their length does).
fn body() -> Vec<u8> {
    let mut body = Vec::with_capacity(BODY_BYTES);
    let mut n = 0u64;
    while body.len() < BODY_BYTES {
        let field = format!(
            "  \"field_{n}\": {{\"id\": \"si_R{n:012}\", \"object\": \"subscription_item\", \"quantity\": 1}},\n"
        );
        body.extend_from_slice(field.as_bytes());
        n += 1;
    }
    body.truncate(BODY_BYTES);
    body
}

/// For each operation, the median over `SAMPLES` batches of the mean time of
/// one call, in µs. Batches of the operations alternate.
fn medians_us<const N: usize>(mut operations: [&mut dyn FnMut(); N]) -> [f64; N] {
    // Calibrate each batch to last about SAMPLE_TIME (and warm the caches).
    let batches = operations.each_mut().map(|operation| {
        let mut batch = 1u32;
        loop {
            let started = Instant::now();
            for _ in 0..batch {
                operation();
            }
            if started.elapsed() >= SAMPLE_TIME / 4 {
                return batch * 4;
            }
            batch *= 2;
        }
    });
    let mut samples: [Vec<f64>; N] = std::array::from_fn(|_| Vec::with_capacity(SAMPLES));
    for _ in 0..SAMPLES {
        for (i, operation) in operations.iter_mut().enumerate() {
            let started = cpu_time();
            for _ in 0..batches[i] {
                operation();
            }
            let per_call = (cpu_time() - started).as_secs_f64() * 1e6 / f64::from(batches[i]);
            samples[i].push(per_call);
        }
    }
    samples.map(|mut times| {
        times.sort_by(f64::total_cmp);
        (times[SAMPLES / 2] * 1000.0).round() / 1000.0
    })
}

/// CPU time of this thread so far; wall time where Linux's schedstat is
/// missing.
fn cpu_time() -> Duration {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|stat| stat.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_else(|| START.get_or_init(Instant::now).elapsed())
}
