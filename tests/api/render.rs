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
    assert_eq!(service["healthCheckPath"], "/healthz");
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
    var("PURGE_SCHEDULE");
    var("PURGE_BATCH_SIZE");

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
