//! `session-worker events`: the record of received events, filtered, newest
//! first.

use sqlx::PgPool;

use crate::helpers::{app, checkout, now, outcome, subscription};
use crate::operator::{db, run};

/// `events ARGS` against `pool`'s database: its lines.
async fn events(pool: &PgPool, args: &[&str]) -> Vec<String> {
    let url = db(pool);
    let mut all = vec!["events"];
    all.extend(args);
    let run = run(&all, &[("DATABASE_URL", url.as_str())]).await;
    assert_eq!(run.code, 0, "{run}");
    run.stdout.lines().map(str::to_owned).collect()
}

/// The event ids of `lines`, in order.
fn ids(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .map(|line| line.split(' ').nth(1).unwrap())
        .collect()
}

#[sqlx::test]
async fn events_are_listed_newest_first_and_filtered(pool: PgPool) {
    let app = app(pool.clone());
    let t = now();
    let delivered = [
        (
            checkout("evt_a1", t, "ann", "cus_a", Some("sub_a")),
            "applied",
        ),
        (
            subscription(
                "evt_a2",
                "updated",
                t + 1,
                "sub_a",
                "cus_a",
                "past_due",
                None,
            ),
            "applied",
        ),
        (
            subscription("evt_x1", "created", t + 2, "sub_x", "cus_x", "active", None),
            "unknown_user",
        ),
        (checkout("evt_b1", t + 3, "bob", "cus_b", None), "applied"),
    ];
    for (event, expected) in &delivered {
        assert_eq!(outcome(&app, event).await, *expected);
    }
    // Received in this order, one second apart, the first two days ago.
    sqlx::query(
        "UPDATE sw_events SET received_at = now() - make_interval(secs => \
         CASE event_id WHEN 'evt_a1' THEN 172800 WHEN 'evt_a2' THEN 3 WHEN 'evt_x1' THEN 2 ELSE 1 END)",
    )
    .execute(&pool)
    .await
    .unwrap();

    let all = events(&pool, &[]).await;
    assert_eq!(ids(&all), ["evt_b1", "evt_x1", "evt_a2", "evt_a1"]);
    let fields: Vec<&str> = all[1].split(' ').collect();
    assert_eq!(fields.len(), 5, "{all:?}");
    assert!(fields[0].ends_with('Z'), "{all:?}");
    assert_eq!(
        fields[1..],
        [
            "evt_x1",
            "customer.subscription.created",
            "unknown_user",
            "-"
        ]
    );

    assert_eq!(
        ids(&events(&pool, &["--user", "ann"]).await),
        ["evt_a2", "evt_a1"]
    );
    assert_eq!(
        ids(&events(&pool, &["--type", "checkout.session.completed"]).await),
        ["evt_b1", "evt_a1"]
    );
    assert_eq!(
        ids(&events(&pool, &["--type", "customer.subscription.*"]).await),
        ["evt_x1", "evt_a2"]
    );
    assert_eq!(
        ids(&events(&pool, &["--outcome", "unknown_user"]).await),
        ["evt_x1"]
    );
    assert_eq!(
        ids(&events(&pool, &["--since", "1d"]).await),
        ["evt_b1", "evt_x1", "evt_a2"]
    );
    assert_eq!(
        ids(&events(&pool, &["--limit", "2"]).await),
        ["evt_b1", "evt_x1"]
    );
    assert_eq!(
        ids(&events(
            &pool,
            &[
                "--user",
                "ann",
                "--since",
                "1d",
                "--type",
                "customer.subscription.updated"
            ]
        )
        .await),
        ["evt_a2"]
    );
    assert!(events(&pool, &["--user", "Ann"]).await.is_empty());
}
