//! docs/alerts.yml: well-formed Prometheus rules whose every metric and
//! label is one the worker exports (src/stats.rs names them all).

use std::collections::BTreeSet;

use serde_yaml_ng::Value;

fn read(file: &str) -> String {
    std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Every `session_worker_...` name in `text`, without a histogram's
/// `_bucket`/`_sum`/`_count` suffix.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("session_worker_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The label names of `{...}` matchers in `expr`.
fn label_names(expr: &str) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    for matcher in expr.split('{').skip(1) {
        let inside = matcher.split('}').next().unwrap();
        for pair in inside.split(',').filter(|p| !p.trim().is_empty()) {
            let name = pair
                .split(['=', '!', '~'])
                .next()
                .unwrap()
                .trim()
                .to_owned();
            labels.insert(name);
        }
    }
    labels
}

#[test]
fn alert_rules_are_well_formed_and_name_only_exported_metrics() {
    let rules: Value = serde_yaml_ng::from_str(&read("docs/alerts.yml")).unwrap();
    let stats = read("src/stats.rs");
    let exported = metric_names(&stats);
    assert!(exported.len() >= 10, "{exported:?}");

    let mut alerts = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        assert!(group["name"].as_str().is_some());
        for rule in group["rules"].as_sequence().expect("rules") {
            let alert = rule["alert"].as_str().expect("every rule is an alert");
            let expr = rule["expr"].as_str().expect("an expr");
            assert!(
                rule["labels"]["severity"].as_str().is_some(),
                "{alert}: severity"
            );
            assert!(
                rule["annotations"]["summary"].as_str().is_some(),
                "{alert}: summary"
            );
            assert!(
                rule["annotations"]["description"].as_str().is_some(),
                "{alert}: description"
            );
            if let Some(duration) = rule.get("for") {
                let duration = duration.as_str().expect("for: a duration");
                assert!(
                    duration.ends_with('m') || duration.ends_with('h'),
                    "{alert}: for {duration}"
                );
            }

            let mut depth = 0i32;
            for c in expr.chars() {
                depth += match c {
                    '(' | '[' | '{' => 1,
                    ')' | ']' | '}' => -1,
                    _ => 0,
                };
                assert!(depth >= 0, "{alert}: unbalanced {expr}");
            }
            assert_eq!(depth, 0, "{alert}: unbalanced {expr}");

            let named = metric_names(expr);
            assert!(!named.is_empty(), "{alert} names no metric");
            for metric in &named {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| metric.strip_suffix(suffix))
                    .filter(|base| exported.contains(*base))
                    .unwrap_or(metric);
                assert!(
                    exported.contains(base),
                    "{alert}: {metric} is not a metric of src/stats.rs"
                );
            }
            for label in label_names(expr) {
                assert!(
                    stats.contains(&format!("\"{label}\"")),
                    "{alert}: label {label} is recorded nowhere in src/stats.rs"
                );
            }
            alerts.push(alert.to_owned());
        }
    }
    // The ones the issue asks for.
    for wanted in [
        "SessionWorkerNoWebhookApplied",
        "SessionWorkerWebhookFailures",
        "SessionWorkerSignatureFailures",
        "SessionWorkerPurgeFailing",
        "SessionWorkerReconcileFailing",
    ] {
        assert!(alerts.iter().any(|a| a == wanted), "no {wanted}");
    }
}

#[test]
fn the_checks_own_helpers_read_names_and_labels() {
    assert_eq!(
        metric_names("rate(session_worker_a_total{x=\"1\"}[5m]) / session_worker_b"),
        BTreeSet::from([
            "session_worker_a_total".to_owned(),
            "session_worker_b".to_owned()
        ])
    );
    assert_eq!(
        label_names("sum(x{outcome!=\"rejected\", reason=~\"a|b\"})"),
        BTreeSet::from(["outcome".to_owned(), "reason".to_owned()])
    );
}
