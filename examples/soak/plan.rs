//! The events of a soak and the ledger: what each user must end in, worked
//! out from the events alone (never read back from the database).
//!
//! Each user has one Stripe customer and a life of subscriptions, one after
//! the other: some start `incomplete` (and some of those expire), every other
//! one starts with a paid checkout, moves through the ordinary statuses and
//! may be canceled. So that the end state does not depend on the order of
//! delivery, the events are made unambiguous under the contract's rules:
//! - `created` seconds are distinct within a user, except two deliberate
//!   ties that the rules decide whatever the order: `incomplete` and the
//!   checkout in the same second (incomplete never overwrites a later stage)
//!   and the last update and the cancellation in the same second (terminal
//!   wins);
//! - `incomplete` only ever comes first, and nothing follows a terminal
//!   status (a canceled subscription never reopens, so a newer event after
//!   it would make the end state depend on arrival order).
//!
//! A few events of types the worker records but does not act on
//! (`invoice.paid` without an API key, `customer.updated`) ride along: they
//! must be recorded once like the others.

use serde_json::{Value, json};

use crate::rng::SplitMix;

/// The default `SUBSCRIBED_STATUSES`.
pub const SUBSCRIBED: &[&str] = &["active", "trialing"];

pub struct Event {
    pub id: String,
    pub user: usize,
    pub body: Vec<u8>,
}

/// A user's end state as the contract's rules decide it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub subscribed: bool,
    /// Status of the primary subscription: a subscribed one with the newest
    /// event if any, else the one with the newest event.
    pub status: String,
    pub primary: String,
}

pub struct Plan {
    /// In the order the user's life happened (newest last, per user).
    pub events: Vec<Event>,
    pub users: Vec<String>,
    /// `None` for a user without any event that sets a state.
    pub expected: Vec<Option<Expected>>,
    /// Same-second pairs of one subscription (decided by the tie rules).
    pub ties: usize,
    pub subscriptions: usize,
}

/// One step of a user's life.
struct Step {
    kind: &'static str,
    /// Generation of the subscription (the `g` in its id).
    sub: usize,
    /// `None` for events that set no state.
    status: Option<&'static str>,
    created: i64,
}

pub fn username(user: usize) -> String {
    format!("soak_{user:05}")
}

fn customer(user: usize) -> String {
    format!("cus_Soak{user:06}")
}

fn subscription(user: usize, generation: usize) -> String {
    format!("sub_Soak{user:06}g{generation}")
}

impl Plan {
    pub fn build(events: usize, users: usize, seed: u64) -> Self {
        let mut rng = SplitMix(seed);
        // Old enough to be in the past, far from EVENT_RETENTION.
        let base = chrono::Utc::now().timestamp() - 2 * 86_400;
        let mut plan = Plan {
            events: Vec::with_capacity(events),
            users: (0..users).map(username).collect(),
            expected: Vec::with_capacity(users),
            ties: 0,
            subscriptions: 0,
        };
        for user in 0..users {
            let count = events / users + usize::from(user < events % users);
            let steps = life(&mut rng, count, base);
            let expected = plan.ledger(user, &steps);
            plan.expected.push(expected);
            for step in &steps {
                let id = format!("evt_1Soak{seed:04}x{:09}", plan.events.len());
                let body = body(&id, user, step, &mut rng);
                plan.events.push(Event {
                    id,
                    user,
                    body: serde_json::to_vec(&body).expect("JSON serialises"),
                });
            }
        }
        plan
    }

    /// The contract's rules, applied to one user's steps.
    fn ledger(&mut self, user: usize, steps: &[Step]) -> Option<Expected> {
        // Per subscription: the winning (created, rank, status).
        let mut finals: Vec<Option<(i64, u8, &'static str)>> = Vec::new();
        for step in steps {
            let Some(status) = step.status else { continue };
            if finals.len() <= step.sub {
                finals.resize(step.sub + 1, None);
            }
            let candidate = (step.created, rank(status), status);
            match finals[step.sub] {
                None => finals[step.sub] = Some(candidate),
                Some(current) => {
                    assert!(current.1 < 2, "the plan never follows a terminal status");
                    if current.0 == candidate.0 {
                        assert_ne!(current.1, candidate.1, "a tie the rules do not decide");
                        self.ties += 1;
                    }
                    if (candidate.0, candidate.1) > (current.0, current.1) {
                        finals[step.sub] = Some(candidate);
                    }
                }
            }
        }
        self.subscriptions += finals.iter().flatten().count();
        let counts = |status: &str| SUBSCRIBED.contains(&status);
        let subscribed = finals.iter().flatten().any(|(_, _, s)| counts(s));
        let (generation, (_, _, status)) = finals
            .iter()
            .enumerate()
            .filter_map(|(g, f)| f.map(|f| (g, f)))
            .max_by_key(|(_, (created, _, status))| (counts(status), *created))?;
        Some(Expected {
            subscribed,
            status: status.to_string(),
            primary: subscription(user, generation),
        })
    }
}

/// incomplete < the ordinary stages < terminal, for same-second ties.
fn rank(status: &str) -> u8 {
    match status {
        "incomplete" => 0,
        "canceled" | "incomplete_expired" => 2,
        _ => 1,
    }
}

/// One user's `count` events: subscriptions one after the other.
fn life(rng: &mut SplitMix, count: usize, base: i64) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::with_capacity(count);
    let mut t = base + rng.below(3_600) as i64;
    let mut generation = 0;
    // The open subscription, and whether its last step is a state-setting
    // one at second `t` (a cancellation may then tie with it).
    let mut open: Option<bool> = None;
    let step = |steps: &mut Vec<Step>, kind, sub, status, created| {
        steps.push(Step {
            kind,
            sub,
            status,
            created,
        })
    };
    while steps.len() < count {
        let left = count - steps.len();
        let Some(last_sets_state) = open else {
            if left >= 2 && rng.chance(30) {
                step(
                    &mut steps,
                    "customer.subscription.created",
                    generation,
                    Some("incomplete"),
                    t,
                );
                if rng.chance(15) {
                    t += 1 + rng.below(3) as i64;
                    step(
                        &mut steps,
                        "customer.subscription.updated",
                        generation,
                        Some("incomplete_expired"),
                        t,
                    );
                    generation += 1;
                    t += 1 + rng.below(3) as i64;
                    continue;
                }
                // Else the checkout, half the time in the same second.
                if rng.chance(50) {
                    t += 1 + rng.below(3) as i64;
                }
            }
            step(
                &mut steps,
                "checkout.session.completed",
                generation,
                Some("active"),
                t,
            );
            open = Some(true);
            continue;
        };
        let roll = rng.below(100);
        if roll < 4 {
            t += 1;
            step(&mut steps, "invoice.paid", generation, None, t);
            open = Some(false);
        } else if roll < 7 {
            t += 1;
            step(&mut steps, "customer.updated", generation, None, t);
            open = Some(false);
        } else if roll < 17 {
            if !(last_sets_state && rng.chance(50)) {
                t += 1 + rng.below(3) as i64;
            }
            step(
                &mut steps,
                "customer.subscription.deleted",
                generation,
                Some("canceled"),
                t,
            );
            open = None;
            generation += 1;
            t += 1 + rng.below(3) as i64;
        } else {
            t += 1 + rng.below(3) as i64;
            let status = match rng.below(10) {
                0..=4 => "active",
                5 | 6 => "past_due",
                7 | 8 => "trialing",
                _ => "unpaid",
            };
            step(
                &mut steps,
                "customer.subscription.updated",
                generation,
                Some(status),
                t,
            );
            open = Some(true);
        }
    }
    steps
}

fn body(id: &str, user: usize, step: &Step, rng: &mut SplitMix) -> Value {
    let name = username(user);
    let sub = subscription(user, step.sub);
    let period_end = step.created + 2_592_000;
    let object = match step.kind {
        "checkout.session.completed" => json!({
            "id": format!("cs_test_Soak{:020}", rng.below(u64::MAX >> 1)),
            "object": "checkout.session", "client_reference_id": name,
            "customer": customer(user), "subscription": sub, "mode": "subscription",
            "payment_status": "paid", "status": "complete", "metadata": {},
            "amount_total": 1500, "currency": "usd"
        }),
        "invoice.paid" => json!({
            "id": format!("in_Soak{:020}", rng.below(u64::MAX >> 1)), "object": "invoice",
            "customer": customer(user), "subscription": sub, "status": "paid", "metadata": {},
            "amount_paid": 1500, "currency": "usd",
            "subscription_details": { "metadata": { "username": name } }
        }),
        "customer.updated" => json!({
            "id": customer(user), "object": "customer", "email": format!("{name}@example.com"),
            "metadata": {}
        }),
        _ => json!({
            "id": sub, "object": "subscription", "customer": customer(user),
            "status": step.status.expect("a subscription event has a status"),
            "current_period_end": period_end, "current_period_start": period_end - 2_592_000,
            "cancel_at_period_end": false, "cancel_at": null, "trial_end": null,
            "metadata": { "username": name },
            "items": { "object": "list", "has_more": false, "data": [{
                "id": format!("si_Soak{user:06}g{}", step.sub), "object": "subscription_item",
                "quantity": 1, "current_period_end": period_end,
                "price": { "id": "price_Soak0001", "object": "price", "product": "prod_Soak0001",
                           "lookup_key": "pro_monthly", "unit_amount": 1500 }
            }] }
        }),
    };
    json!({
        "id": id, "object": "event", "api_version": "2024-06-20", "created": step.created,
        "data": { "object": object }, "livemode": false, "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null }, "type": step.kind
    })
}
