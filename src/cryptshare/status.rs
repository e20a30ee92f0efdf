//! After finalize: the transfer status, and polling it until the transfer is processed.

use std::time::Duration;

use reqwest::Method;

use super::client::Client;
use super::error::{Error, ErrorKind};
use super::token::Need;
use super::types::{Envelope, TransferState, TransferStatus};

impl Client {
    /// `GET /users/{sender}/transfers/{tracking_id}`.
    pub async fn transfer_status(
        &self,
        sender: &str,
        tracking_id: &str,
    ) -> Result<TransferStatus, Error> {
        let env: Envelope<TransferStatus> = self
            .json_verified(
                "transfer-status",
                sender,
                Need::Session(tracking_id),
                true,
                Method::GET,
                self.user_url(sender, &["transfers", tracking_id]),
                None::<&()>,
            )
            .await?;
        Ok(env.data)
    }

    /// Poll the status until `ACTIVE` (returned, with the recipients' download URLs) or a final
    /// state (`FAILED`, `DELETED_*`: [`Error::Refused`]); `Temporary` after `timeout`.
    pub async fn wait_active(
        &self,
        sender: &str,
        tracking_id: &str,
        timeout: Duration,
    ) -> Result<TransferStatus, Error> {
        const OP: &str = "wait-active";
        let deadline = tokio::time::Instant::now() + timeout;
        let mut interval = Duration::from_millis(50);
        loop {
            let st = self.transfer_status(sender, tracking_id).await?;
            match st.status.state {
                TransferState::Active => {
                    self.tokens.unpin(sender, tracking_id);
                    return Ok(st);
                }
                TransferState::Processing | TransferState::Pending | TransferState::Unknown => {}
                other => {
                    self.tokens.unpin(sender, tracking_id);
                    return Err(Error::local(
                        ErrorKind::Refused,
                        OP,
                        format!("transfer ended in state {other:?}"),
                    ));
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::local(
                    ErrorKind::Temporary,
                    OP,
                    format!("transfer still processing after {timeout:?}"),
                ));
            }
            tokio::time::sleep(interval.min(deadline - now)).await;
            interval = (interval * 2).min(self.opts.max_poll_interval);
        }
    }

    /// [`Client::wait_active`] for up to [`ClientOptions::processing_limit`]: a server may
    /// keep a large transfer `PROCESSING` for minutes (virus scan).
    pub async fn wait_processed(
        &self,
        sender: &str,
        tracking_id: &str,
    ) -> Result<TransferStatus, Error> {
        self.wait_active(sender, tracking_id, self.opts.processing_limit)
            .await
    }
}
