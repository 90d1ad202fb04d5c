//! session-worker: Stripe webhooks -> subscription state -> the web app's
//! sessions, and the purge of expired sessions.
//!
//! The request path reads top to bottom: `http` -> `signature` -> `event` ->
//! `store` -> answer.

pub mod config;
pub mod event;
pub mod http;
pub mod ordering;
pub mod purge;
pub mod serve;
pub mod session_data;
pub mod signature;
pub mod store;
pub mod telemetry;
