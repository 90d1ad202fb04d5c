//! The two `serve` instances: started, killed, stopped and restarted on the
//! fault schedule, and watched for exits nobody planned (each is restarted,
//! as Render would, and counted).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use crate::deliver::get_status;

/// Render's grace period between SIGTERM and SIGKILL.
pub const RENDER_GRACE: Duration = Duration::from_secs(30);
const HEALTHY_WITHIN: Duration = Duration::from_secs(90);

pub struct Instance {
    pub name: &'static str,
    pub addr: String,
    log: PathBuf,
    child: Option<Child>,
}

pub struct Fleet {
    bin: PathBuf,
    env: Vec<(String, String)>,
    instances: Mutex<Vec<Instance>>,
    /// Exits nobody planned: "B exited with 1 at +12.3 s" ...
    pub unplanned: StdMutex<Vec<String>>,
    started: Instant,
}

impl Fleet {
    pub fn new(
        bin: &Path,
        env: Vec<(String, String)>,
        names: &[(&'static str, u16)],
        work: &Path,
        started: Instant,
    ) -> Self {
        let instances = names
            .iter()
            .map(|&(name, port)| Instance {
                name,
                addr: format!("127.0.0.1:{port}"),
                log: work.join(format!("serve-{name}.log")),
                child: None,
            })
            .collect();
        Self {
            bin: bin.to_owned(),
            env,
            instances: Mutex::new(instances),
            unplanned: StdMutex::new(Vec::new()),
            started,
        }
    }

    pub async fn addrs(&self) -> Vec<String> {
        self.instances
            .lock()
            .await
            .iter()
            .map(|i| i.addr.clone())
            .collect()
    }

    pub async fn logs(&self) -> Vec<PathBuf> {
        self.instances
            .lock()
            .await
            .iter()
            .map(|i| i.log.clone())
            .collect()
    }

    /// Starts instance `n` and waits for its /healthz: the time it took.
    pub async fn start(&self, n: usize) -> anyhow::Result<Duration> {
        let mut instances = self.instances.lock().await;
        self.start_locked(&mut instances[n]).await
    }

    async fn start_locked(&self, instance: &mut Instance) -> anyhow::Result<Duration> {
        let began = Instant::now();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&instance.log)
            .with_context(|| format!("opening {}", instance.log.display()))?;
        let port = instance.addr.rsplit(':').next().expect("host:port");
        let mut child = Command::new(&self.bin)
            .arg("serve")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("PORT", port)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "instance {} exited with {status} while starting",
                    instance.name
                );
            }
            if get_status(&instance.addr, "/healthz").await == Some(200) {
                break;
            }
            if began.elapsed() > HEALTHY_WITHIN {
                bail!(
                    "instance {} not healthy within {HEALTHY_WITHIN:?}",
                    instance.name
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        instance.child = Some(child);
        Ok(began.elapsed())
    }

    /// `kill -9`, then a restart after `down`: a line for the fault log.
    pub async fn kill9_and_restart(&self, n: usize, down: Duration) -> String {
        let mut instances = self.instances.lock().await;
        let instance = &mut instances[n];
        if let Some(mut child) = instance.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        tokio::time::sleep(down).await;
        let restart = self.restart_until_up(instance).await;
        format!("kill -9 {}; {restart}", instance.name)
    }

    /// SIGTERM (Render's deploy), wait for the exit, restart: a line for the
    /// fault log, and whether the exit was clean and within Render's grace.
    pub async fn sigterm_and_restart(&self, n: usize) -> (String, bool) {
        let mut instances = self.instances.lock().await;
        let instance = &mut instances[n];
        let (exit, clean) = match instance.child.take() {
            Some(child) => terminate(child).await,
            None => ("was not running".to_string(), true),
        };
        let restart = self.restart_until_up(instance).await;
        (
            format!("SIGTERM {}: {exit}; {restart}", instance.name),
            clean,
        )
    }

    /// SIGTERM to every instance at the end: one line each, and whether all
    /// exited cleanly within the grace.
    pub async fn stop_all(&self) -> (Vec<String>, bool) {
        let mut instances = self.instances.lock().await;
        let mut lines = Vec::new();
        let mut all_clean = true;
        for instance in instances.iter_mut() {
            if let Some(child) = instance.child.take() {
                let (exit, clean) = terminate(child).await;
                all_clean &= clean;
                lines.push(format!("SIGTERM {} at the end: {exit}", instance.name));
            }
        }
        (lines, all_clean)
    }

    async fn restart_until_up(&self, instance: &mut Instance) -> String {
        let mut failures = Vec::new();
        for _ in 0..5 {
            match self.start_locked(instance).await {
                Ok(took) => {
                    let mut line = format!("restarted, healthy after {:.1} s", took.as_secs_f64());
                    if !failures.is_empty() {
                        line.push_str(&format!(" (failed starts before: {})", failures.join("; ")));
                    }
                    return line;
                }
                Err(error) => failures.push(error.to_string()),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        format!("RESTART FAILED: {}", failures.join("; "))
    }

    /// Restarts any instance that exited without a planned fault, and counts
    /// it. Runs until aborted.
    pub async fn supervise(&self) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut instances = self.instances.lock().await;
            for instance in instances.iter_mut() {
                let Some(child) = instance.child.as_mut() else {
                    continue;
                };
                let Ok(Some(status)) = child.try_wait() else {
                    continue;
                };
                instance.child = None;
                let at = self.started.elapsed().as_secs_f64();
                let restart = self.restart_until_up(instance).await;
                let line = format!(
                    "{} exited unplanned ({status}) at +{at:.1} s; {restart}",
                    instance.name
                );
                println!("soak: {line}");
                self.unplanned.lock().expect("not poisoned").push(line);
            }
        }
    }
}

/// SIGTERM and wait up to Render's grace (then SIGKILL, as Render does).
async fn terminate(mut child: Child) -> (String, bool) {
    let began = Instant::now();
    let Some(pid) = child.id() else {
        return ("had already exited".to_string(), false);
    };
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    match tokio::time::timeout(RENDER_GRACE, child.wait()).await {
        Ok(Ok(status)) => {
            let took = began.elapsed().as_secs_f64();
            (
                format!("exited ({status}) after {took:.1} s"),
                status.success(),
            )
        }
        _ => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            (format!("NOT EXITED within {RENDER_GRACE:?}, killed"), false)
        }
    }
}
