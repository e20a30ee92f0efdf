//! Cryptshare REST API client (API 1.8, `openapi-1.8.json`), client-id verification only.
//!
//! # API for the pipeline
//!
//! ```text
//! load_client_id(&CryptshareConfig) -> Result<String, config::ConfigError>
//! resolve_client_id(&CryptshareConfig)   // as load_client_id; random id for "embedded" w/o id
//! ClientOptions { minimum_minor_api_version, timeout, ca_file, retries, retry_backoff,
//!                 max_poll_interval, metrics: Arc<ops::Metrics>, processing_limit,
//!                 token_reserve }
//! ClientOptions::from_config(&CryptshareConfig, Arc<Metrics>)
//! Client::new(base_url: &str, client_id: String, ClientOptions) -> Result<Client, Error>
//! Client::from_config(&CryptshareConfig, embedded_url: Option<&str>, Arc<Metrics>)
//!     // cfg.url, or the emulator's URL for "embedded"; client id loaded (random for embedded)
//!
//! // every call takes the envelope sender; tokens are fetched and cached per sender, and a
//! // transfer session keeps the token it was created with to its end (module `token`);
//! // a refusal with 401/403 errorCode 3002 re-verifies once internally
//! client.session_token(sender, tracking_id) -> Option<(token, valid_until)>   // to persist
//! client.restore_session_token(sender, tracking_id, token, valid_until)     // after a restart
//! client.transfer_policy(sender, &[String]) -> TransferPolicyResult
//! client.create_session(sender, language: Option<&str>, &NewTransferSession) -> tracking_id
//! client.patch_settings(sender, tracking_id, &TransferSessionPatch) -> TransferSession
//! client.get_session(sender, tracking_id) -> TransferSession
//! client.register_file(sender, tracking_id, name, size: u64, sha256_hex) -> file_id
//! client.upload_file(sender, tracking_id, file_id, size: u64,
//!                    make_stream: Fn() -> Future<io::Result<impl Stream<io::Result<Bytes>>>>)
//! client.upload_path(sender, tracking_id, file_id, &Path, offset: u64, len: u64)
//! client.delete_file(sender, tracking_id, file_id)
//! client.finalize(sender, tracking_id)
//! client.transfer_status(sender, tracking_id) -> TransferStatus
//! client.wait_active(sender, tracking_id, timeout) -> TransferStatus   // .download_urls()
//! client.wait_processed(sender, tracking_id)     // wait_active up to opts.processing_limit
//! client.delete_session(sender, tracking_id)                          // 404 counts as done
//! ```
//!
//! Embedded mode: `let sim = sim::Emulator::embedded(&config).await?;` then
//! `Client::from_config(&config.cryptshare, Some(&sim.url()), metrics)`; keep `sim` (the
//! handle) alive.
//!
//! Errors: [`Error`] = `Temporary | Refused | Auth | Invalid`, each with a [`Detail`]
//! (operation, HTTP status, errorCode, message without secrets); `is_temporary()` etc. Only
//! an answer with a Cryptshare `errorCode` can be permanent; one without (a proxy's page) is
//! `Temporary`. Responses are read leniently: explicit `null` = absent, unknown fields ignored.
//!
//! Retries (with doubling backoff) only for idempotent calls: GET, PUT (upload), DELETE, the
//! token request and the side-effect-free transfer-policy check. Uploads always carry an
//! explicit `Content-Length`, are streamed, and time out only when no progress is made.

mod client;
mod client_id;
pub mod error;
mod status;
mod token;
mod transport;
pub mod types;
mod upload;

pub use client::{Client, ClientOptions};
pub use client_id::{is_valid_client_id, load_client_id, resolve_client_id};
pub use error::{Detail, Error, ErrorKind};
pub use types::*;
