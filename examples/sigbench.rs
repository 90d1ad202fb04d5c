//! Micro-benchmark of the webhook's signature check (`scripts/bench-webhook.sh`,
//! see BENCHMARKS.md): `Verifier::verify` on a 4 KB body, against raw
//! HMAC-SHA256 over the same signed bytes with the same crates (hmac, sha2).
//! The script sets these beside `openssl speed -hmac sha256 -bytes 4096`.
//!
//! Prints one JSON line of microseconds per operation, each the median of
//! several timed batches.

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

    let verify = median_us(|| {
        black_box(verifier.verify(black_box(Some(&header)), black_box(&body), timestamp)).ok();
    });
    let hmac = median_us(|| {
        let mut mac = Hmac::<Sha256>::new_from_slice(black_box(SECRET.as_bytes())).unwrap();
        mac.update(black_box(&signed));
        black_box(mac.finalize().into_bytes());
    });
    let hmac_prekeyed = median_us(|| {
        let mut mac = black_box(&keyed).clone();
        mac.update(black_box(&signed));
        black_box(mac.finalize().into_bytes());
    });
    let sha256 = median_us(|| {
        black_box(Sha256::digest(black_box(&signed)));
    });
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

/// Median over `SAMPLES` batches of the mean time of one call, in µs.
fn median_us(mut operation: impl FnMut()) -> f64 {
    // Calibrate a batch to last about SAMPLE_TIME (and warm the caches).
    let mut batch = 1u32;
    loop {
        let started = Instant::now();
        for _ in 0..batch {
            operation();
        }
        if started.elapsed() >= SAMPLE_TIME / 4 {
            break;
        }
        batch *= 2;
    }
    batch *= 4;
    let mut samples: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..batch {
                operation();
            }
            started.elapsed().as_secs_f64() * 1e6 / f64::from(batch)
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    (samples[SAMPLES / 2] * 1000.0).round() / 1000.0
}
