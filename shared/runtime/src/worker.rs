//! The local command worker: drains the durable command queue (what the webhooks function published) through
//! the same handler that `/events` and `/pubsub/push` use, retrying what is not yet applicable with backoff,
//! parking what can never apply.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use stockroom_store::{COMMAND_ATTEMPTS_MAX, QueuedCommand, Settled};

use crate::http::ApiError;
use crate::services::Services;

/// Applies one queued command (stock-updates' `commands::apply`).
pub type Handler = Arc<dyn Fn(Services, QueuedCommand) -> BoxFuture<'static, Result<(), ApiError>> + Send + Sync>;

/// Commands taken from the queue per round at most.
pub const COMMANDS_BATCH_MAX: i64 = 100;
/// Backoff after a failed attempt: doubling from this, capped at [`RETRY_MS_MAX`].
pub const RETRY_MS_MIN: i64 = 200;
pub const RETRY_MS_MAX: i64 = 60_000;

fn backoff_ms(attempts: i64) -> i64 {
    let shift = attempts.clamp(0, 20) as u32;
    RETRY_MS_MIN.saturating_mul(1 << shift).min(RETRY_MS_MAX)
}

/// One round: every due command, in queue order; how many were taken.
pub async fn drain(services: &Services, handler: &Handler) -> Result<usize, stockroom_store::StoreError> {
    let due = services.inbox().due_commands(COMMANDS_BATCH_MAX).await?;
    for command in &due {
        let settled = match handler(services.clone(), command.clone()).await {
            Ok(()) => Settled::Done,
            // Ours, or not yet: try again later. A client fault would fail the same way every time.
            Err(e) if e.status().is_server_error() && command.attempts + 1 < COMMAND_ATTEMPTS_MAX => {
                Settled::RetryAfterMs(backoff_ms(command.attempts), format!("{e:?}"))
            }
            Err(e) => {
                tracing::error!(command = %command.id, ty = %command.ty, error = ?e, "command parked: it cannot be applied");
                Settled::Dead(format!("{e:?}"))
            }
        };
        services.inbox().settle(&command.id, settled).await?;
    }
    Ok(due.len())
}

pub fn spawn(services: Services, handler: Handler, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match drain(&services, &handler).await {
                Ok(n) if n as i64 == COMMANDS_BATCH_MAX => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = ?e, "command queue unavailable; retrying"),
            }
            tokio::time::sleep(interval).await;
        }
    })
}
