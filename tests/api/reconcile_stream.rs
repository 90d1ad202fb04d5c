//! `reconcile` applies each page as it lists it, and stops on shutdown
//! while it waits for one.

use std::time::{Duration, Instant};

use session_worker::reconcile::{self, RunOutcome};
use session_worker::settle::Settler;
use session_worker::store::Store;
use session_worker::stripe_api::Retry;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::fake_stripe::*;
use crate::helpers::*;

const QUICK: Retry = Retry {
    attempts: 3,
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

/// 150 missed checkouts, two pages; the second page never comes. The
/// first page's events are applied all the same.
#[sqlx::test]
async fn each_page_is_applied_before_the_next_is_listed(pool: PgPool) {
    let stripe = FakeStripe::start().await;
    let t = now() - 3600;
    for i in 0..150 {
        let user = format!("user{i:03}");
        stripe.add_event(checkout(
            &format!("evt_{i:03}"),
            t + i,
            &user,
            &format!("cus_{i}"),
            None,
        ));
    }
    // The first page normally, then 500s for good.
    stripe.trouble_next(&[Trouble::Slow(Duration::ZERO)]);
    stripe.trouble_always(Some(Trouble::ServerError));

    let error = reconcile::run_once(
        &settler(&pool, &stripe),
        reconcile::DEFAULT_SINCE,
        &QUICK,
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("listing events"), "{error}");
    assert_eq!(error.so_far.pages, 1);
    assert_eq!(error.so_far.applied, 100, "{error}");
    // The newest hundred, from the first page.
    assert_eq!(user_status(&pool, "user149").await.map(|s| s.0), Some(true));
    assert_eq!(user_status(&pool, "user050").await.map(|s| s.0), Some(true));
    assert_eq!(user_status(&pool, "user049").await, None);

    // The next run lists again and applies the rest.
    stripe.trouble_always(None);
    match reconcile::run_once(
        &settler(&pool, &stripe),
        reconcile::DEFAULT_SINCE,
        &QUICK,
        &CancellationToken::new(),
    )
    .await
    {
        Ok(RunOutcome::Completed(report)) => {
            assert_eq!((report.applied, report.already_seen), (50, 100))
        }
        other => panic!("{other:?}"),
    }
}

/// SIGTERM while Stripe is slow to list: the run stops at once, releases
/// its lock, and the next one runs.
#[sqlx::test]
async fn shutdown_stops_a_run_that_waits_for_a_page(pool: PgPool) {
    let stripe = FakeStripe::start().await;
    stripe.add_event(checkout("evt_1", now() - 60, "ann", "cus_a", None));
    stripe.trouble_next(&[Trouble::Slow(Duration::from_secs(30))]);
    let settler = settler(&pool, &stripe);
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (settler, shutdown) = (settler.clone(), shutdown.clone());
        async move { reconcile::run_once(&settler, reconcile::DEFAULT_SINCE, &QUICK, &shutdown).await }
    });
    while stripe.count("/v1/events") == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped = Instant::now();
    shutdown.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the run ends")
        .unwrap();
    assert!(
        stopped.elapsed() < Duration::from_secs(2),
        "stopped after {:?}",
        stopped.elapsed()
    );
    match outcome {
        Ok(RunOutcome::Completed(report)) => assert_eq!(report.applied, 0),
        other => panic!("{other:?}"),
    }
    match reconcile::run_once(
        &settler,
        reconcile::DEFAULT_SINCE,
        &QUICK,
        &CancellationToken::new(),
    )
    .await
    {
        Ok(RunOutcome::Completed(report)) => assert_eq!(report.applied, 1),
        other => panic!("{other:?}"),
    }
}
