//! `reconcile`: missed events read back from the Events API of a local fake
//! of Stripe, and applied through the webhook's path.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use session_worker::reconcile::{self, Report, RunOutcome};
use session_worker::settle::Settler;
use session_worker::store::{RECONCILE_LOCK_KEY, ReconcileLock, Store};
use session_worker::stripe_api::Retry;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::binary::{BIN, database_url};
use crate::fake_stripe::*;
use crate::helpers::*;

const THREE_DAYS: Duration = reconcile::DEFAULT_SINCE;

/// Retries as `reconcile` makes them, with short pauses.
const QUICK: Retry = Retry {
    attempts: 4,
    attempt_timeout: Duration::from_secs(5),
    first_backoff: Duration::from_millis(10),
    max_backoff: Duration::from_millis(50),
    budget: Duration::from_secs(20),
};

fn settler(pool: &PgPool, stripe: &FakeStripe) -> Settler {
    Settler::new(
        Store::new(pool.clone(), vec!["active".into(), "trialing".into()]),
        Some(stripe.client()),
        "username".into(),
    )
}

async fn run(settler: &Settler) -> Report {
    match reconcile::run_once(settler, THREE_DAYS, &QUICK, &CancellationToken::new()).await {
        Ok(RunOutcome::Completed(report)) => report,
        other => panic!("{other:?}"),
    }
}

/// A checkout that names no user.
fn anonymous_checkout(id: &str, created: i64) -> Value {
    let mut event = checkout(id, created, "x", "cus_anon", None);
    event["data"]["object"]["client_reference_id"] = json!(null);
    event
}

#[sqlx::test]
async fn missed_events_are_applied_once_and_a_second_run_finds_them_seen(pool: PgPool) {
    let stripe = FakeStripe::start().await;
    let app = app(pool.clone());
    add_session(&pool, "ann", "ann", Some("{}"), 60, true).await;
    add_session(&pool, "bob", "bob", Some("{}"), 60, true).await;
    let t = now() - 3600;
    let sub = |id: &str, created: i64, subscription: &str, user: &str, status: &str| {
        crate::helpers::subscription(
            id,
            "updated",
            created,
            subscription,
            &format!("cus_{user}"),
            status,
            Some(user),
        )
    };
    stripe.set_subscription(subscription_object(
        "sub_ann",
        "cus_ann",
        "active",
        Some("ann"),
        t + 2_592_000,
    ));

    // Delivered by webhook, and listed too.
    let delivered = [
        checkout("bob_checkout", t, "bob", "cus_bob", Some("sub_bob")),
        sub("bob_canceled", t + 20, "sub_bob", "bob", "canceled"),
    ];
    for event in &delivered {
        assert_eq!(outcome(&app, event).await, "applied");
        stripe.add_event(event.clone());
    }
    // Missed.
    for event in [
        checkout("ann_checkout", t, "ann", "cus_ann", Some("sub_ann")),
        sub("ann_active", t + 5, "sub_ann", "ann", "active"),
        sub("ann_past_due", t + 10, "sub_ann", "ann", "past_due"),
        invoice_event("ann_paid", "paid", t + 12, "sub_ann", "cus_ann"),
        sub("bob_older", t + 15, "sub_bob", "bob", "active"),
        anonymous_checkout("nobody_checkout", t + 30),
        // Not listed: another type, and older than --since.
        event_of_type(
            "customer_created",
            "customer.created",
            json!({ "id": "cus_x" }),
        ),
        checkout("too_old", now() - 4 * 86_400, "ann", "cus_ann", None),
    ] {
        stripe.add_event(event);
    }

    let first = run(&settler(&pool, &stripe)).await;
    assert_eq!(
        first.to_string(),
        "reconcile: found 8, applied 4, already seen 2, ignored 2 (stale 1, unknown user 1)"
    );
    // Oldest first: the checkout, active, past_due, then the invoice whose
    // subscription the API says is active again.
    assert_eq!(
        user_status(&pool, "ann").await,
        Some((true, Some("active".into())))
    );
    assert_eq!(session(&pool, "ann").await["subscription_status"], "active");
    // The older event of bob's canceled subscription changed nothing.
    assert_eq!(
        session(&pool, "bob").await["subscription_status"],
        "canceled"
    );
    assert_eq!(stripe.count("/v1/events"), 1);
    assert_eq!(
        stripe.count("/v1/subscriptions/sub_ann"),
        1,
        "the invoice only"
    );
    let query = &stripe.requests()[0].query;
    for part in ["limit=100", "created", "types", "invoice.paid"] {
        assert!(query.contains(part), "{query}");
    }

    let second = run(&settler(&pool, &stripe)).await;
    assert_eq!(
        second.to_string(),
        "reconcile: found 8, applied 0, already seen 8, ignored 0 (stale 0, unknown user 0)"
    );
    assert_eq!(
        stripe.count("/v1/subscriptions/"),
        1,
        "seen events make no call"
    );
}

#[sqlx::test]
async fn every_page_is_read(pool: PgPool) {
    let stripe = FakeStripe::start().await;
    let t = now() - 7200;
    for i in 0..250 {
        stripe.add_event(checkout(
            &format!("evt_{i:03}"),
            t + i / 3,
            &format!("user{i}"),
            &format!("cus_{i}"),
            None,
        ));
    }
    let report = run(&settler(&pool, &stripe)).await;
    assert_eq!((report.found, report.applied, report.pages), (250, 250, 3));
    let queries: Vec<String> = stripe
        .requests()
        .into_iter()
        .map(|seen| seen.query)
        .collect();
    assert!(!queries[0].contains("starting_after"), "{queries:?}");
    // Newest first: page 1 ends at the 150th newest, page 2 at the 50th.
    assert!(
        queries[1].ends_with("starting_after=evt_150"),
        "{queries:?}"
    );
    assert!(
        queries[2].ends_with("starting_after=evt_050"),
        "{queries:?}"
    );
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM sw_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(recorded, 250);
}

/// Webhooks delivering the very events a reconcile is applying: each takes
/// effect once, whoever gets there first.
#[sqlx::test]
async fn reconcile_and_webhooks_at_once_apply_each_event_once(pool: PgPool) {
    let stripe = FakeStripe::start().await;
    let app = app(pool.clone());
    let t = now() - 600;
    let events: Vec<Value> = (0..60)
        .map(|i| {
            let event = checkout(
                &format!("evt_{i}"),
                t + i,
                &format!("user{i}"),
                &format!("cus_{i}"),
                Some(&format!("sub_{i}")),
            );
            stripe.add_event(event.clone());
            event
        })
        .collect();

    let webhooks = tokio::spawn(async move {
        let mut applied = 0;
        for event in events.iter().rev() {
            match outcome(&app, event).await.as_str() {
                "applied" => applied += 1,
                "duplicate" => {}
                other => panic!("{other}"),
            }
        }
        applied
    });
    let report = run(&settler(&pool, &stripe)).await;
    let by_webhook = webhooks.await.unwrap();
    assert_eq!(report.found, 60);
    assert_eq!(report.applied + report.already_seen, 60, "{report:?}");
    assert_eq!(report.applied + by_webhook, 60, "{report:?}, {by_webhook}");
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM sw_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(recorded, 60);
}

#[sqlx::test]
async fn one_instance_reconciles_at_a_time(pool: PgPool) {
    let stripe = FakeStripe::start().await;
    stripe.add_event(checkout("evt_1", now() - 60, "una", "cus_u", None));
    let settler = settler(&pool, &stripe);

    let held = ReconcileLock::try_lock(settler.store())
        .await
        .unwrap()
        .unwrap();
    let skipped = reconcile::run_once(&settler, THREE_DAYS, &QUICK, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(skipped, RunOutcome::Skipped);
    assert!(stripe.requests().is_empty());
    held.unlock().await.unwrap();

    assert_eq!(run(&settler).await.applied, 1);
    // Released at the end of the run: nobody holds it now (in this test's
    // database: other tests' runs hold theirs meanwhile).
    assert_eq!(advisory_lock_holders(&pool, RECONCILE_LOCK_KEY).await, 0);
    // The purge's key (branch purge: "SWPURGE") is another lock.
    assert_ne!(RECONCILE_LOCK_KEY, 0x0053_5750_5552_4745);
}

#[sqlx::test]
async fn an_api_that_keeps_failing_fails_the_run_and_applies_nothing(pool: PgPool) {
    let stripe = FakeStripe::start().await;
    stripe.add_event(checkout("evt_1", now() - 60, "vic", "cus_v", None));
    stripe.trouble_next(&[Trouble::RateLimited, Trouble::ServerError]);
    // A rate limit and a 500 are ridden out.
    assert_eq!(run(&settler(&pool, &stripe)).await.applied, 1);
    assert_eq!(stripe.count("/v1/events"), 3);

    stripe.trouble_always(Some(Trouble::ServerError));
    stripe.add_event(checkout("evt_2", now() - 30, "wes", "cus_w", None));
    let error = reconcile::run_once(
        &settler(&pool, &stripe),
        THREE_DAYS,
        &QUICK,
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("listing events"), "{error}");
    assert_eq!(error.so_far.applied, 0);
    assert_eq!(stripe.count("/v1/events"), 3 + 4, "QUICK's attempts");
    assert_eq!(user_status(&pool, "wes").await, None);
}

fn reconcile_command(pool: &PgPool, stripe: &FakeStripe) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("reconcile")
        .env_clear()
        .env("DATABASE_URL", database_url(pool, None))
        .env("STRIPE_SECRET_KEY", API_KEY)
        .env("STRIPE_API_BASE", &stripe.base)
        .env("LOG_FORMAT", "json");
    command
}

/// The line the command prints, among its JSON log lines.
fn summary(output: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!stdout.contains(API_KEY));
    stdout
        .lines()
        .filter(|line| line.starts_with("reconcile"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[sqlx::test]
async fn the_command_prints_one_line_and_exits_0(pool: PgPool) {
    let stripe = FakeStripe::start().await;
    stripe.add_event(checkout("evt_recent", now() - 3600, "xia", "cus_x", None));
    stripe.add_event(checkout(
        "evt_earlier",
        now() - 3 * 3600,
        "yul",
        "cus_y",
        None,
    ));

    let first = tokio::task::spawn_blocking({
        let mut command = reconcile_command(&pool, &stripe);
        move || command.args(["--since", "2h"]).output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        summary(&first),
        "reconcile: found 1, applied 1, already seen 0, ignored 0 (stale 0, unknown user 0)"
    );
    let query = stripe.requests()[0]
        .query
        .replace("%5B", "[")
        .replace("%5D", "]");
    let created_gte: i64 = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("created[gte]="))
        .unwrap_or_else(|| panic!("{query}"))
        .parse()
        .unwrap();
    assert!((created_gte - (now() - 7200)).abs() < 60, "{query}");

    let second = tokio::task::spawn_blocking({
        let mut command = reconcile_command(&pool, &stripe);
        move || command.output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        summary(&second),
        "reconcile: found 2, applied 1, already seen 1, ignored 0 (stale 0, unknown user 0)"
    );

    for (since, variable) in [("31d", "--since"), ("soon", "--since")] {
        let output = reconcile_command(&pool, &stripe)
            .args(["--since", since])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&output.stderr).contains(variable));
    }
    let output = reconcile_command(&pool, &stripe)
        .env_remove("STRIPE_SECRET_KEY")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("STRIPE_SECRET_KEY"));
}

/// What a reconcile of a few thousand missed events costs against the fake
/// (run by hand: `scripts/test.sh --test api reconcile_cost -- --ignored --nocapture`).
#[sqlx::test]
#[ignore = "a measurement, not a check: run by hand"]
async fn reconcile_cost_of_three_thousand_missed_events(pool: PgPool) {
    let stripe = FakeStripe::start().await;
    let t = now() - 2 * 86_400;
    for i in 0..1000 {
        let (user, customer, sub) = (format!("user{i}"), format!("cus_{i}"), format!("sub_{i}"));
        add_session(&pool, &format!("s{i}"), &user, Some("{}"), 60, true).await;
        stripe.set_subscription(subscription_object(
            &sub,
            &customer,
            "active",
            Some(&user),
            t + 2_592_000,
        ));
        stripe.add_event(checkout(
            &format!("evt_c{i}"),
            t + i,
            &user,
            &customer,
            Some(&sub),
        ));
        stripe.add_event(crate::helpers::subscription(
            &format!("evt_s{i}"),
            "updated",
            t + i + 60,
            &sub,
            &customer,
            "past_due",
            Some(&user),
        ));
        stripe.add_event(invoice_event(
            &format!("evt_i{i}"),
            "paid",
            t + i + 120,
            &sub,
            &customer,
        ));
    }
    let settler = settler(&pool, &stripe);
    let started = Instant::now();
    let report = run(&settler).await;
    let took = started.elapsed();
    println!(
        "{report}; {} pages, {} subscription reads, {} API calls in all, {:.1} s",
        report.pages,
        stripe.count("/v1/subscriptions/"),
        stripe.requests().len(),
        took.as_secs_f64()
    );
    assert_eq!(report.applied, 3000);
    let started = Instant::now();
    let again = run(&settler).await;
    println!("again: {again}; {:.1} s", started.elapsed().as_secs_f64());
}
