//! A job on a cron schedule inside `serve`: the purge, the reconcile.
//!
//! tokio-cron-scheduler neither waits for a job on shutdown nor stops a job
//! from overlapping its next round, so each round takes `running` first (a
//! round that finds it taken is skipped), and [`Schedule::stop`] waits for
//! the round in progress. Errors are the job's own to log; the schedule goes
//! on.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use tokio_util::sync::CancellationToken;

use crate::config::CronSchedule;

pub struct Schedule {
    name: &'static str,
    scheduler: JobScheduler,
    running: Arc<Mutex<()>>,
    stop: CancellationToken,
}

impl Schedule {
    /// Runs `round` at every tick of `cron` until `shutdown`; `round` gets a
    /// token that is cancelled when it should stop early.
    pub async fn start<F, Fut>(
        name: &'static str,
        cron: &CronSchedule,
        shutdown: &CancellationToken,
        round: F,
    ) -> Result<Self, JobSchedulerError>
    where
        F: Fn(CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let running = Arc::new(Mutex::new(()));
        let stop = shutdown.child_token();
        let round = Arc::new(round);
        let job = {
            let (running, stop) = (running.clone(), stop.clone());
            Job::new_async(cron.as_str(), move |_, _| {
                let (running, stop, round) = (running.clone(), stop.clone(), round.clone());
                Box::pin(async move {
                    let Ok(_running) = running.try_lock() else {
                        tracing::info!(
                            job = name,
                            "round skipped: the previous round is still running"
                        );
                        return;
                    };
                    if !stop.is_cancelled() {
                        round(stop).await;
                    }
                })
            })?
        };
        let scheduler = JobScheduler::new().await?;
        scheduler.add(job).await?;
        scheduler.start().await?;
        tracing::info!(job = name, schedule = cron.as_str(), "schedule started");
        Ok(Self {
            name,
            scheduler,
            running,
            stop,
        })
    }

    /// No new round starts; a round in progress is told to stop and awaited.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Err(error) = self.scheduler.shutdown().await {
            tracing::warn!(job = self.name, %error, "scheduler did not shut down cleanly");
        }
        // A round that takes `running` after this sees `stop` and does nothing.
        drop(self.running.lock().await);
        tracing::info!(job = self.name, "schedule stopped");
    }
}
