//! The outbox relay: events written with their movements are published, in order, and then marked. A crash
//! before the mark publishes them again with the same ids (consumers dedupe on id); a crash before the publish
//! loses nothing, since the events wait in the outbox.

use std::time::Duration;

use crate::services::Services;

/// Events one relay round takes from the outbox at most.
pub const RELAY_BATCH_MAX: i64 = 500;

/// Publishes what waits in the outbox, up to `rounds_max` batches; how many events went out.
pub async fn relay(services: &Services, rounds_max: usize) -> Result<usize, stockroom_store::StoreError> {
    let _one_at_a_time = services.relay_lock.lock().await;
    let mut total = 0;
    for _ in 0..rounds_max {
        let events = services.outbox().unpublished(RELAY_BATCH_MAX).await?;
        if events.is_empty() {
            break;
        }
        let (published, failed) = match services.events.publish(&events).await {
            Ok(()) => (events.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), None),
            Err(e) => (e.published, Some(e.reason)),
        };
        services.outbox().mark_published(&published).await?;
        total += published.len();
        if let Some(reason) = failed {
            tracing::warn!(reason, published = published.len(), "publishing stopped part way; the rest waits");
            break;
        }
        if (events.len() as i64) < RELAY_BATCH_MAX {
            break;
        }
    }
    Ok(total)
}

/// Relays in the background every `interval` until the process stops.
pub fn spawn(services: Services, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match relay(&services, 20).await {
                Ok(n) if n > 0 => tracing::debug!(events = n, "relayed"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = ?e, "relay failed; retrying"),
            }
            tokio::time::sleep(interval).await;
        }
    })
}

/// Lapsed holds booked per background round at most.
pub const EXPIRE_ROUND_MAX: i64 = 500;

/// Books lapsed holds as expired every `interval` until the process stops (the local stand-in for the Cloud
/// Scheduler job on `/jobs/expire-reservations`).
pub fn spawn_expiry(services: Services, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            if let Err(e) = services.ledger().expire_due(EXPIRE_ROUND_MAX, None).await {
                tracing::warn!(error = ?e, "booking lapsed holds failed; retrying");
            }
        }
    })
}
