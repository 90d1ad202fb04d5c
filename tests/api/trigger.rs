//! `session-worker trigger` against the real server: a realistic event,
//! signed, applied; a wrong secret refused with exit 1.

use sqlx::PgPool;

use crate::binary::{Server, database_url};
use crate::helpers::{SECRET, add_session, session};
use crate::operator::run;

#[sqlx::test]
async fn triggered_events_are_applied_by_the_real_server(pool: PgPool) {
    add_session(&pool, "s_dee", "dee", Some(r#"{"theme":"dark"}"#), 60, true).await;
    let server = Server::start(&database_url(&pool, None), &[]);
    server.wait_until("/readyz", 200).await;
    let url = format!("{}/webhooks/stripe", server.base);

    let trigger = |kind: &'static str, secret: &'static str| {
        let url = url.clone();
        async move {
            run(
                &[
                    "trigger", kind, "--url", &url, "--secret", secret, "--user", "dee",
                ],
                &[],
            )
            .await
        }
    };

    let run = trigger("checkout.session.completed", SECRET).await;
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("200 OK"), "{run}");
    assert!(run.stdout.contains(r#""outcome":"applied""#), "{run}");
    let data = session(&pool, "s_dee").await;
    assert_eq!(data["subscribed"], true, "{data}");
    assert_eq!(data["theme"], "dark");

    // The same user's subscription: the ids derived from --user line up
    // with the checkout's.
    let run = trigger("customer.subscription.deleted", SECRET).await;
    assert_eq!(run.code, 0, "{run}");
    let data = session(&pool, "s_dee").await;
    assert_eq!(data["subscribed"], false, "{data}");
    assert_eq!(data["subscription_status"], "canceled", "{data}");

    let run = trigger("customer.subscription.updated", "whsec_not_the_servers").await;
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stdout.contains("400 Bad Request"), "{run}");
    assert_eq!(
        session(&pool, "s_dee").await["subscription_status"],
        "canceled"
    );
}

/// A deployment with STRIPE_MODE=live records trigger's default test-mode
/// event as `wrong_mode`; `--livemode` checks it for real.
#[sqlx::test]
async fn livemode_checks_a_live_deployment(pool: PgPool) {
    add_session(&pool, "s_liv", "liv", Some("{}"), 60, true).await;
    let server = Server::start(&database_url(&pool, None), &[("STRIPE_MODE", "live")]);
    server.wait_until("/readyz", 200).await;
    let url = format!("{}/webhooks/stripe", server.base);
    let args = [
        "trigger",
        "checkout.session.completed",
        "--url",
        &url,
        "--secret",
        SECRET,
        "--user",
        "liv",
    ];

    let test_mode = run(&args, &[]).await;
    assert_eq!(test_mode.code, 0, "{test_mode}");
    assert!(
        test_mode.stdout.contains(r#""outcome":"wrong_mode""#),
        "{test_mode}"
    );
    assert_eq!(session(&pool, "s_liv").await.get("subscribed"), None);

    let live = run(&[&args[..], &["--livemode"]].concat(), &[]).await;
    assert_eq!(live.code, 0, "{live}");
    assert!(live.stdout.contains(r#""outcome":"applied""#), "{live}");
    assert_eq!(session(&pool, "s_liv").await["subscribed"], true);
}

#[tokio::test]
async fn a_connection_closed_without_an_answer_exits_1() {
    // A listener of our own that hangs up on every connection: no port is
    // freed for another test's server to take meanwhile.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks/stripe", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((connection, _)) = listener.accept().await {
            drop(connection);
        }
    });
    let run = run(
        &["trigger", "invoice.paid", "--url", &url, "--secret", SECRET],
        &[],
    )
    .await;
    assert_eq!(run.code, 1, "{run}");
    assert!(!run.stderr.is_empty(), "{run}");
}
