//! How much of the callers' bodies the process holds at once.
//!
//! The webhook route is public: anyone can open hundreds of connections, send
//! a plausible head and most of a 1 MiB body, and stall. A body waiting for
//! its turn here is not read at all (its bytes wait in the kernel's socket
//! buffer, not in this process), so what the process holds is bounded by the
//! budgets below, whatever the number of callers.
//!
//! Two budgets, so that the near-1 MiB bodies of an attack never queue ahead
//! of Stripe's events (a few KB): bodies that declare at most
//! [`SMALL_BODY`] bytes share one budget counted in KiB, every other body
//! (larger, or of unknown length) takes one of [`LARGE_SLOTS`].

use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use bytes::BytesMut;
use http_body_util::BodyExt;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Stripe's events are a few KB; anything near this is not one of them.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A body declared this small or smaller counts against the small budget.
pub const SMALL_BODY: u64 = 64 * 1024;
/// Connections the contract's hostile-traffic figure names: so many stalled
/// small uploads must not leave genuine events waiting for room.
const STALLED_CALLERS: usize = 400;
/// KiB of small bodies held at once: a full [`SMALL_BODY`] for each of
/// [`STALLED_CALLERS`] (25 MiB) plus 8 MiB for the genuine events beside
/// them. With the large slots' 16 MiB that is 49 MiB of bodies at most,
/// well under the contract's 128 MiB resident.
const SMALL_BUDGET_KIB: usize = STALLED_CALLERS * (SMALL_BODY as usize / 1024) + 8 * 1024;
/// Large bodies read at once (each up to [`MAX_BODY_BYTES`]).
const LARGE_SLOTS: usize = 16;

/// How long a request waits for room before it is answered 503 (Stripe
/// delivers again): well inside the 6 s within which a webhook is answered.
pub const ROOM_WAIT: Duration = Duration::from_secs(4);

/// Why a body could not be had.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Over [`MAX_BODY_BYTES`], declared or sent.
    TooLarge,
    /// Not whole within the body deadline of the router.
    TimedOut,
    /// The caller hung up or sent a broken encoding.
    Unreadable,
    /// No room within [`ROOM_WAIT`].
    Busy,
}

#[derive(Debug)]
pub struct BodyBudget {
    small_kib: Semaphore,
    large: Semaphore,
}

impl Default for BodyBudget {
    fn default() -> Self {
        Self {
            small_kib: Semaphore::new(SMALL_BUDGET_KIB),
            large: Semaphore::new(LARGE_SLOTS),
        }
    }
}

impl BodyBudget {
    /// Reads `body` whole once there is room for it; the room is given back
    /// when the returned [`Held`] is dropped.
    pub async fn read(&self, body: Body) -> Result<Held<'_>, BodyError> {
        let declared = body.size_hint();
        if declared.lower() > MAX_BODY_BYTES as u64 {
            return Err(BodyError::TooLarge);
        }
        let permit = tokio::time::timeout(ROOM_WAIT, self.room_for(declared.exact()))
            .await
            .map_err(|_| BodyError::Busy)?;
        let bytes = collect(body, declared.exact()).await?;
        Ok(Held {
            bytes,
            _permit: permit,
        })
    }

    async fn room_for(&self, declared: Option<u64>) -> SemaphorePermit<'_> {
        let acquired = match declared {
            Some(length) if length <= SMALL_BODY => {
                self.small_kib
                    .acquire_many(length.div_ceil(1024).max(1) as u32)
                    .await
            }
            _ => self.large.acquire().await,
        };
        acquired.expect("the budget's semaphores are never closed")
    }
}

/// A body read whole, holding its room in the budget.
pub struct Held<'a> {
    pub bytes: Bytes,
    _permit: SemaphorePermit<'a>,
}

/// Into one buffer of the declared size (no second copy at the end).
async fn collect(mut body: Body, declared: Option<u64>) -> Result<Bytes, BodyError> {
    let capacity = declared.map_or(8 * 1024, |length| length as usize);
    let mut bytes = BytesMut::with_capacity(capacity.min(MAX_BODY_BYTES));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| classify(&error))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > MAX_BODY_BYTES {
                return Err(BodyError::TooLarge);
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes.freeze())
}

fn classify(error: &axum::Error) -> BodyError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return BodyError::TimedOut;
        }
        cause = error.source();
    }
    BodyError::Unreadable
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn small_bodies_pass_while_large_ones_fill_their_slots() {
        let budget = Arc::new(BodyBudget::default());
        // Large bodies that never end hold every large slot.
        let mut stalled = Vec::new();
        for _ in 0..LARGE_SLOTS {
            let budget = budget.clone();
            stalled.push(tokio::spawn(async move {
                budget
                    .read(Body::new(Stalled))
                    .await
                    .map(|held| held.bytes.len())
            }));
        }
        while budget.large.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let event = budget.read(Body::from(vec![b'x'; 4000])).await.unwrap();
        assert_eq!(event.bytes.len(), 4000);
        assert!(budget.small_kib.available_permits() < SMALL_BUDGET_KIB);
        drop(event);
        assert_eq!(budget.small_kib.available_permits(), SMALL_BUDGET_KIB);
        for task in stalled {
            task.abort();
        }
    }

    #[tokio::test]
    async fn a_declared_or_sent_size_over_the_limit_is_too_large() {
        let budget = BodyBudget::default();
        let over = Body::from(vec![0u8; MAX_BODY_BYTES + 1]);
        assert_eq!(budget.read(over).await.err(), Some(BodyError::TooLarge));
        let exact = Body::from(vec![0u8; MAX_BODY_BYTES]);
        assert_eq!(
            budget.read(exact).await.unwrap().bytes.len(),
            MAX_BODY_BYTES
        );
    }

    #[tokio::test]
    async fn no_room_within_the_wait_is_busy() {
        let budget = BodyBudget::default();
        let _all = budget.large.acquire_many(LARGE_SLOTS as u32).await.unwrap();
        let read = budget.read(Body::new(Stalled)).await;
        assert_eq!(read.err(), Some(BodyError::Busy));
    }

    /// A body of unknown length that never ends.
    struct Stalled;

    impl HttpBody for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Pending
        }
    }
}
