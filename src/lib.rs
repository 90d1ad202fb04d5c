//! session-worker: Stripe webhooks -> subscription state -> the web app's
//! sessions, and the purge of expired sessions.
//!
//! The request path reads top to bottom: `http` -> `signature` -> `event` ->
//! `store` -> answer.

pub mod config;
pub mod event;
pub mod http;
pub mod serve;
pub mod settle;
pub mod signature;
pub mod stats;
pub mod store;
pub mod stripe_api;
pub mod telemetry;
