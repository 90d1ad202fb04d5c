//! The figures of a soak, printed, and the verdict: whether it passed.

use std::time::{Duration, Instant};

use crate::check::Verdict;
use crate::deliver::Figures;
use crate::faults::Played;
use crate::plan::Plan;
use crate::webapp::Writes;

/// Everything a soak measured.
pub struct Run<'a> {
    pub plan: &'a Plan,
    pub users: usize,
    pub figures: &'a Figures,
    pub played: &'a Played,
    pub stop_lines: &'a [String],
    pub stopped_clean: bool,
    pub verdict: &'a Verdict,
    pub writes: &'a Writes,
    pub unplanned: &'a [String],
    pub panics: usize,
    pub delivered_after: Duration,
    pub started: Instant,
}

/// Prints the figures and the first offenders of each failed check; true
/// when every check passed.
pub fn print(run: &Run) -> bool {
    let Run {
        plan,
        users,
        figures,
        played,
        stop_lines,
        stopped_clean,
        verdict,
        writes,
        unplanned,
        panics,
        delivered_after,
        started,
    } = *run;
    println!("soak: faults played:");
    for line in &played.lines {
        println!("soak:   {line}");
    }
    for line in stop_lines {
        println!("soak:   {line}");
    }
    let worst = figures.worst_wait(plan);
    let all_ok = figures.never_ok() == 0;
    let recoveries = recoveries(figures, played, started);
    let slowest = recoveries
        .iter()
        .filter_map(|(_, secs)| *secs)
        .fold(0.0, f64::max);
    println!("soak: recoveries:");
    for (line, _) in &recoveries {
        println!("soak:   {line}");
    }
    let stuck: Vec<String> = recoveries
        .iter()
        .filter(|(_, secs)| secs.is_some_and(|secs| secs > RECOVERY_LIMIT.as_secs_f64()))
        .map(|(line, _)| line.clone())
        .collect();
    let rows = [
        ("events generated", plan.events.len().to_string()),
        ("users", users.to_string()),
        (
            "faults injected",
            format!("{} {:?}", played.lines.len(), played.count),
        ),
        ("deliveries attempted", figures.attempts.to_string()),
        ("answers by status", format!("{:?}", figures.answers)),
        ("outcomes in 200 answers", format!("{:?}", figures.outcomes)),
        ("retries", figures.retries.to_string()),
        (
            "deliveries given up at the deadline",
            figures.given_up.to_string(),
        ),
        ("events never answered 2xx", figures.never_ok().to_string()),
        ("events recorded (sw_events)", verdict.recorded.to_string()),
        ("recorded outcomes", format!("{:?}", verdict.outcomes)),
        (
            "LOST (generated, never recorded)",
            verdict.lost.len().to_string(),
        ),
        (
            "APPLIED TWICE (writes in 2+ transactions)",
            verdict.doubled.len().to_string(),
        ),
        (
            "WRONG USERS (view or sessions vs ledger)",
            verdict.wrong_users.len().to_string(),
        ),
        (
            "  of them, sessions holding a lone surrogate",
            verdict.surrogate_sessions_wrong.to_string(),
        ),
        (
            "web-app writes",
            format!(
                "{} sessions made, {} logins extended, {} logouts, {} failed (database away)",
                writes.created, writes.extended, writes.logged_out, writes.failed
            ),
        ),
        (
            "WEB-APP SESSIONS LOST",
            verdict.sessions_lost.len().to_string(),
        ),
        (
            "WEB-APP SESSIONS DAMAGED (a key missing or its value changed)",
            verdict.sessions_damaged.len().to_string(),
        ),
        (
            "WEB-APP SESSIONS REFORMATTED (same values, not as written)",
            verdict.sessions_reformatted.len().to_string(),
        ),
        ("LOGOUTS UNDONE", verdict.logouts_undone.to_string()),
        (
            "purged by the purge (short or logged out)",
            format!("{} of {}", verdict.purged, verdict.purgeable),
        ),
        (
            "worst wait, first delivery to 2xx",
            match &worst {
                Some((wait, id)) => format!("{:.1} s ({id})", wait.as_secs_f64()),
                None => "-".to_string(),
            },
        ),
        (
            "LONGEST RECOVERY, fault over to the instance's next 2xx",
            format!("{slowest:.1} s (limit {RECOVERY_LIMIT:?})"),
        ),
        ("instance exits nobody planned", unplanned.len().to_string()),
        (
            "SIGTERM exits not clean within 30 s",
            (played.unclean_exits + usize::from(!stopped_clean)).to_string(),
        ),
        ("panics in the instances' logs", panics.to_string()),
        (
            "wall time, all delivered",
            format!("{:.0} s", delivered_after.as_secs_f64()),
        ),
    ];
    println!("soak: figures:");
    for (name, value) in rows {
        println!("soak:   {name:<64} {value}");
    }
    show("lost", &verdict.lost);
    show(
        "applied twice",
        &verdict
            .doubled
            .iter()
            .map(|(id, n)| format!("{id} in {n} transactions"))
            .collect::<Vec<_>>(),
    );
    show(
        "wrong users",
        &verdict
            .wrong_users
            .iter()
            .map(|(user, why)| format!("{}: {why}", plan.users[*user]))
            .collect::<Vec<_>>(),
    );
    show("web-app sessions lost", &verdict.sessions_lost);
    show("web-app sessions damaged", &verdict.sessions_damaged);
    show(
        "web-app sessions reformatted",
        &verdict.sessions_reformatted,
    );
    show("unplanned exits", unplanned);
    show(
        "recoveries over the limit (an instance that does not apply again)",
        &stuck,
    );

    let passed = verdict.passed() && all_ok && stuck.is_empty();
    println!(
        "soak: {}",
        if passed {
            "PASSED: nothing lost, nothing applied twice, every user right, every web-app session as written"
        } else {
            "checks failed"
        }
    );
    passed
}

/// Once a fault is over (PostgreSQL started, the hole healed, the instance
/// restarted), each instance must apply webhooks again without a restart:
/// on these loaded machines that takes seconds; a minute means it is stuck.
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);

/// For each fault and instance: "<fault> over at +T s: A" and the seconds
/// to that instance's next 2xx (`None` when no delivery came its way).
fn recoveries(figures: &Figures, played: &Played, started: Instant) -> Vec<(String, Option<f64>)> {
    let mut all = Vec::new();
    for (fault, ended) in &played.ended {
        for (n, name) in ["A", "B"].iter().enumerate() {
            let secs = figures
                .first_ok_after(n, *ended)
                .map(|ok| ok.duration_since(*ended).as_secs_f64());
            let line = format!(
                "{} over at +{:.1} s: instance {name} answered 2xx again after {}",
                fault.name(),
                ended.duration_since(started).as_secs_f64(),
                secs.map_or("-".to_string(), |s| format!("{s:.1} s"))
            );
            all.push((line, secs));
        }
    }
    all
}

/// The first few of a list, when there is any.
fn show(what: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    println!("soak: {what} ({}), the first ones:", items.len());
    for item in items.iter().take(5) {
        println!("soak:   {item}");
    }
}
