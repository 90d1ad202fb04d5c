//! Settings that no run could use stop the program at start: one line
//! naming the variable, exit 2, no secret.

use crate::binary::bare_command;

fn refused(command: &[&str], vars: &[(&str, &str)], variable: &str) {
    let output = bare_command()
        .args(command)
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(2), "{command:?} {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(variable), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn a_database_url_no_connection_could_use_is_refused_by_every_command() {
    let secret = ("STRIPE_WEBHOOK_SECRET", "whsec_a");
    let key = ("STRIPE_SECRET_KEY", "rk_test_abc");
    for url in [
        "postgres://app:hunter2@db.internal:80800/app",
        "postgres://app:hunter2@db.internal:port/app",
        "postgres://app:hunter2@db.internal/app?sslmode=sometimes",
    ] {
        let url = ("DATABASE_URL", url);
        refused(&["serve"], &[url, secret], "DATABASE_URL");
        refused(&["migrate"], &[url], "DATABASE_URL");
        refused(&["purge"], &[url], "DATABASE_URL");
        refused(&["reconcile"], &[url, key], "DATABASE_URL");
    }
}

#[test]
fn the_api_key_never_goes_out_in_clear_text() {
    let url = ("DATABASE_URL", "postgres://app:hunter2@127.0.0.1:1/app");
    let key = ("STRIPE_SECRET_KEY", "rk_test_abc");
    for base in ["http://api.stripe.com", "http://10.1.2.3:8080/stripe"] {
        let base = ("STRIPE_API_BASE", base);
        refused(&["reconcile"], &[url, key, base], "STRIPE_API_BASE");
        refused(
            &["serve"],
            &[url, key, base, ("STRIPE_WEBHOOK_SECRET", "whsec_a")],
            "STRIPE_API_BASE",
        );
    }
}
