//! Property tests of event parsing, over arbitrary bytes, over byte-level
//! mutations of real event bodies, and over real bodies with a field set to
//! arbitrary JSON: no panic, and no allocation beyond the order of the body's
//! size. (`FUZZ_CASES`, as in `signature`'s.)

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::signature::fuzz::config;
use crate::test_alloc::peak_during;

/// Bodies as Stripe sends them, one per kind of handling.
fn seeds() -> Vec<Value> {
    let envelope = |kind: &str, object: Value| {
        json!({
            "id": "evt_1NG8Du2eZvKYlo2CUI79vXWy", "object": "event",
            "api_version": "2024-06-20", "created": 1_700_000_000, "livemode": true,
            "pending_webhooks": 1, "request": { "id": "req_1", "idempotency_key": null },
            "type": kind, "data": { "object": object, "previous_attributes": { "status": "trialing" } }
        })
    };
    vec![
        envelope(
            "checkout.session.completed",
            json!({ "id": "cs_1", "object": "checkout.session", "client_reference_id": "alice",
                    "customer": "cus_1", "subscription": "sub_1", "mode": "subscription",
                    "payment_status": "paid", "metadata": { "username": "alice", "plan": "pro" } }),
        ),
        envelope(
            "customer.subscription.updated",
            json!({ "id": "sub_1", "object": "subscription", "status": "active",
                    "customer": { "id": "cus_1", "object": "customer" },
                    "metadata": { "username": "bob" }, "cancel_at_period_end": false,
                    "items": { "object": "list", "data": [
                        { "id": "si_1", "current_period_end": 1_700_100_000,
                          "price": { "id": "price_1", "lookup_key": "pro" } } ] } }),
        ),
        envelope(
            "invoice.payment_failed",
            json!({ "id": "in_1", "customer": "cus_1",
                    "parent": { "type": "subscription_details", "subscription_details": {
                        "subscription": "sub_1", "metadata": { "username": "dan" } } } }),
        ),
        envelope(
            "customer.created",
            json!({ "id": "cus_1", "email": "e@example.com" }),
        ),
    ]
}

/// [`seeds`] as Stripe writes them (pretty-printed), made once.
fn seed_bytes() -> &'static [Vec<u8>] {
    static BYTES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        seeds()
            .iter()
            .map(|seed| serde_json::to_vec_pretty(seed).unwrap())
            .collect()
    })
}

/// Parses `body` and checks what it held: serde's own structures are a few
/// times the text they come from (a metadata map of one-letter pairs is the
/// worst case), plus a fixed part for error messages.
fn parses_within_bounds(body: &[u8]) -> Result<(), TestCaseError> {
    let (_, held) = peak_during(|| parse(body, "username"));
    let bound = 16 * body.len() + 16 * 1024;
    prop_assert!(
        held <= bound,
        "{held} bytes held for a {}-byte body",
        body.len()
    );
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
    Repeat(usize, usize),
}

fn apply(body: &mut Vec<u8>, mutation: &Mutation) {
    let at = |position: usize, body: &Vec<u8>| position % (body.len() + 1);
    match mutation {
        Mutation::Flip(position, bits) => {
            if !body.is_empty() {
                let i = position % body.len();
                body[i] ^= bits;
            }
        }
        Mutation::Insert(position, bytes) => {
            let i = at(*position, body);
            body.splice(i..i, bytes.iter().copied());
        }
        Mutation::Remove(position, length) => {
            let i = at(*position, body);
            let end = (i + length % 64).min(body.len());
            body.drain(i..end);
        }
        Mutation::Truncate(position) => {
            let i = at(*position, body);
            body.truncate(i);
        }
        Mutation::Repeat(position, length) => {
            let i = at(*position, body);
            let end = (i + length % 256).min(body.len());
            let copy = body[i..end].to_vec();
            body.splice(i..i, copy);
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // JSON's own punctuation makes the interesting insertions.
    let token = prop_oneof![
        proptest::collection::vec(any::<u8>(), 1..8),
        proptest::sample::select(vec![
            b"{".to_vec(),
            b"}".to_vec(),
            b"[".to_vec(),
            b"]".to_vec(),
            b"\"".to_vec(),
            b",".to_vec(),
            b":".to_vec(),
            b"null".to_vec(),
            b"\\u0000".to_vec(),
            b"\\ud800".to_vec(),
            b"1e999".to_vec(),
            b"-0".to_vec(),
            b"\"type\":\"customer.subscription.deleted\"".to_vec(),
            b"\"livemode\":\"yes\"".to_vec(),
            vec![b'['; 200],
        ]),
    ];
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(p, b)| Mutation::Flip(p, b)),
        (any::<usize>(), token).prop_map(|(p, t)| Mutation::Insert(p, t)),
        (any::<usize>(), any::<usize>()).prop_map(|(p, l)| Mutation::Remove(p, l)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<usize>()).prop_map(|(p, l)| Mutation::Repeat(p, l)),
    ]
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Fields a parser reads, as JSON pointers into a seed.
const FIELDS: &[&str] = &[
    "/id",
    "/type",
    "/created",
    "/livemode",
    "/data",
    "/data/object",
    "/data/object/id",
    "/data/object/status",
    "/data/object/customer",
    "/data/object/metadata",
    "/data/object/metadata/username",
    "/data/object/client_reference_id",
    "/data/object/subscription",
    "/data/object/payment_status",
    "/data/object/items",
    "/data/object/items/data",
    "/data/object/items/data/0/current_period_end",
    "/data/object/parent",
    "/data/object/parent/subscription_details",
];

#[test]
fn the_seeds_are_events() {
    for seed in seed_bytes() {
        parse(seed, "username").unwrap();
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        parses_within_bounds(&body)?;
    }

    #[test]
    fn mutated_events_never_panic(
        seed in 0..4usize,
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let mut body = seed_bytes()[seed].clone();
        for mutation in &mutations {
            apply(&mut body, mutation);
        }
        parses_within_bounds(&body)?;
    }

    #[test]
    fn events_with_a_field_of_any_json_never_panic(
        seed in 0..4usize,
        field in proptest::sample::select(FIELDS),
        value in json_value(),
    ) {
        let mut event = seeds().swap_remove(seed);
        if let Some(slot) = event.pointer_mut(field) {
            *slot = value;
        }
        parses_within_bounds(&serde_json::to_vec(&event).unwrap())?;
    }
}
