//! render.yaml says what the binary does.

use std::process::Command;

use serde_yaml_ng::Value;
use session_worker::config::Env;
use session_worker::serve::ServeConfig;

use crate::binary::BIN;

fn blueprint() -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/render.yaml")).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

fn sources() -> String {
    let mut text = String::new();
    let mut folders = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src"
    ))];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                text.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
    }
    text
}

#[test]
fn the_blueprint_runs_the_real_binary_with_settings_it_reads() {
    let blueprint = blueprint();
    let service = &blueprint["services"][0];
    assert_eq!(service["type"], "web");
    assert_eq!(service["runtime"], "rust");
    // Ready only once migrations are applied and the database answers.
    assert_eq!(service["healthCheckPath"], "/readyz");
    assert!(sources().contains("route(\"/readyz\""));
    assert!(
        service["buildCommand"]
            .as_str()
            .unwrap()
            .contains("cargo build --release")
    );

    // The start command names the release binary and a subcommand it has.
    let start: Vec<&str> = service["startCommand"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(start[0], "./target/release/session-worker");
    assert!(BIN.ends_with("/session-worker"));
    assert_eq!(start[1..], ["serve"]);
    let help = Command::new(BIN)
        .args(&start[1..])
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        help.status.success(),
        "{}",
        String::from_utf8_lossy(&help.stderr)
    );

    // DATABASE_URL comes from the database declared beside it.
    let vars = service["envVars"].as_sequence().unwrap();
    let var = |key: &str| {
        vars.iter()
            .find(|v| v["key"] == key)
            .unwrap_or_else(|| panic!("no {key}"))
    };
    let database = &var("DATABASE_URL")["fromDatabase"];
    assert_eq!(database["property"], "connectionString");
    let declared: Vec<&Value> = blueprint["databases"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|d| &d["name"])
        .collect();
    assert!(declared.contains(&&database["name"]), "{declared:?}");
    assert_eq!(var("STRIPE_WEBHOOK_SECRET")["sync"], false);
    assert!(
        var("STRIPE_WEBHOOK_SECRET").get("value").is_none(),
        "no secret in the repository"
    );
    // Asked for at the first sync, never written in the repository.
    assert_eq!(var("STRIPE_SECRET_KEY")["sync"], false);
    assert!(var("STRIPE_SECRET_KEY").get("value").is_none());
    var("PURGE_SCHEDULE");
    var("PURGE_BATCH_SIZE");
    // A test-mode event must not grant access in production.
    assert_eq!(var("STRIPE_MODE")["value"], "live");
    // /metrics is not open to the world: Render makes up the token.
    assert_eq!(var("METRICS_TOKEN")["generateValue"], true);
    assert!(var("METRICS_TOKEN").get("value").is_none());

    // Every variable set is one the code reads (RUST_LOG: by tracing's filter).
    let code = sources();
    for entry in vars {
        let key = entry["key"].as_str().unwrap();
        assert!(
            key == "RUST_LOG" || code.contains(&format!("\"{key}\"")),
            "{key} is read nowhere"
        );
    }

    // And every value given is one the binary accepts.
    let mut settings: Vec<(&str, &str)> = vars
        .iter()
        .filter_map(|v| Some((v["key"].as_str()?, v["value"].as_str()?)))
        .collect();
    settings.extend([
        ("DATABASE_URL", "postgres://app@db/app"),
        ("STRIPE_WEBHOOK_SECRET", "whsec_x"),
    ]);
    if let Err(error) = ServeConfig::from_env(&Env::from_pairs(settings)) {
        panic!("render.yaml sets an invalid value: {error}");
    }
}

/// `preDeployCommand` runs the release binary's `migrate`, so a failing
/// migration cancels the deploy.
#[test]
fn the_blueprint_migrates_before_each_deploy() {
    let blueprint = blueprint();
    let command: Vec<&str> = blueprint["services"][0]["preDeployCommand"]
        .as_str()
        .expect("a preDeployCommand")
        .split_whitespace()
        .collect();
    assert_eq!(command, ["./target/release/session-worker", "migrate"]);
    let help = Command::new(BIN)
        .args(&command[1..])
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
}

/// The service and its database in one named region, the database reachable
/// only from Render's private network, on a current major version.
#[test]
fn the_blueprint_pins_region_network_and_version() {
    let blueprint = blueprint();
    let service = &blueprint["services"][0];
    let database = &blueprint["databases"][0];
    let region = service["region"].as_str().expect("the service's region");
    assert!(!region.is_empty());
    assert_eq!(database["region"].as_str(), Some(region));
    let allowed = database["ipAllowList"]
        .as_sequence()
        .expect("ipAllowList on the database");
    assert!(allowed.is_empty(), "{allowed:?}");
    let major: u32 = database["postgresMajorVersion"]
        .as_str()
        .expect("postgresMajorVersion, quoted")
        .parse()
        .unwrap();
    assert!(major >= 17, "PostgreSQL {major} is not current");
}

/// The alternative to the in-process purge is written down where an operator
/// looks: a Cron Job running `purge`, with PURGE_SCHEDULE=off on the service.
#[test]
fn the_blueprint_documents_the_cron_job_alternative() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/render.yaml")).unwrap();
    for needle in [
        "type: cron",
        "./target/release/session-worker purge",
        "PURGE_SCHEDULE=off",
    ] {
        assert!(text.contains(needle), "render.yaml does not say {needle:?}");
    }
}

/// Render builds with the compiler rust-toolchain.toml pins, and that one
/// satisfies Cargo.toml's rust-version.
#[test]
fn the_toolchain_is_pinned_and_new_enough() {
    let read = |file: &str| {
        std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    };
    let value = |text: &str, key: &str| -> String {
        text.lines()
            .find_map(|line| {
                let (k, v) = line.split_once('=')?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
            })
            .unwrap_or_else(|| panic!("no {key}"))
    };
    let version = |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().unwrap()).collect() };
    let channel = value(&read("rust-toolchain.toml"), "channel");
    assert_eq!(channel.split('.').count(), 3, "a pinned release: {channel}");
    let required = value(&read("Cargo.toml"), "rust-version");
    assert!(
        version(&channel) >= version(&required),
        "{channel} < {required}"
    );
}
