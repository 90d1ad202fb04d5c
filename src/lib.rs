//! session-worker: Stripe webhooks -> subscription state -> the web app's
//! sessions, and the purge of expired sessions.
//!
//! The request path reads top to bottom: `http` -> `signature` -> `event` ->
//! `settle` (Stripe's API through `stripe_api`, when needed) -> `store` ->
//! answer. `reconcile` feeds events listed from the API into `settle` too.

// serde_json's json! recurses once per key: sample_event's complete Stripe
// objects need more than the default 128.
#![recursion_limit = "256"]

pub mod cli;
pub mod config;
pub mod doctor;
pub mod event;
pub mod http;
pub mod purge;
pub mod reconcile;
pub mod sample_event;
pub mod schedule;
pub mod serve;
pub mod sessions;
pub mod settle;
pub mod signature;
pub mod stats;
pub mod store;
pub mod stripe_api;
pub mod telemetry;

#[cfg(test)]
mod test_alloc;
#[cfg(test)]
#[global_allocator]
static ALLOCATOR: test_alloc::Counting = test_alloc::Counting;
