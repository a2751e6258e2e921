//! Waiting for a request to reach a state, without polling (the long poll
//! of `GET /api/v1/requests/{id}?wait=…&timeout=…`).

use std::time::Duration;

use jit_api::RequestState;
use tokio::time::Instant;
use uuid::Uuid;

use super::requests::RequestView;
use super::{App, ServiceError};
use crate::domain::User;

/// The longest one wait may last: below the HTTP layer's one-minute limit,
/// and below what proxies commonly allow an idle response.
pub const MAX_WAIT: Duration = Duration::from_secs(50);

impl App {
    /// The request `id` as soon as it is in one of `states` or has ended
    /// (an ended request changes no more), or as it stands after `timeout`
    /// (at most [`MAX_WAIT`]), or when the broker stops. The caller must be
    /// allowed to see it, as for [`App::get_visible`].
    ///
    /// It wakes on the commit of a change of the request, on this broker or
    /// another sharing the database (`store::changes`), and reads the request
    /// again at least every `server.long_poll_reread` (5 s) in case word of a
    /// change was lost.
    pub async fn wait_visible(
        &self,
        user: &User,
        id: Uuid,
        states: &[RequestState],
        timeout: Duration,
    ) -> Result<RequestView, ServiceError> {
        let deadline = Instant::now() + timeout.min(MAX_WAIT);
        let reread = Duration::from_secs(self.config.server.long_poll_reread.secs().max(1));
        let watch = self.store.changes().watch(id);
        loop {
            // Listening before reading: a change committed after the read wakes us.
            let mut changed = std::pin::pin!(watch.changed());
            changed.as_mut().enable();
            let view = self.get_visible(user, id).await?;
            let state = view.row.state;
            let now = Instant::now();
            if states.contains(&state) || state.is_terminal() || now >= deadline || watch.ending() {
                return Ok(view);
            }
            let _ = tokio::time::timeout((deadline - now).min(reread), changed).await;
        }
    }
}
