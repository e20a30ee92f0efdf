//! The REST client: headers, verification-token cache, retries, streamed upload, polling.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::client_id::{is_valid_client_id, load_client_id, random_client_id};
use super::error::{Error, ErrorKind, sanitize};
use super::token::{Cached, Need, TOKEN_DEFAULT_VALIDITY, Tokens};
use super::transport::*;
use super::types::*;
use crate::config::CryptshareConfig;
use crate::ops::Metrics;

const H_MAJOR: &str = "x-cs-majorapiversion";
const H_MINOR: &str = "x-cs-minimumminorapiversion";
const H_CLIENT_ID: &str = "x-cs-clientid";
const H_PRODUCT_KEY: &str = "x-cs-productkey";
const H_TOKEN: &str = "x-cs-verificationtoken";

pub(super) const UPLOAD_CHUNK: usize = 256 * 1024;

/// Tuning of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `X-CS-MinimumMinorApiVersion` (default 8, the OpenAPI file's version).
    pub minimum_minor_api_version: u32,
    /// Per call; for uploads the longest time without progress.
    pub timeout: Duration,
    /// Extra PEM CA certificates, trusted in addition to the system roots.
    pub ca_file: Option<PathBuf>,
    /// Extra attempts for idempotent calls (GET, PUT, DELETE, token) on temporary failures.
    pub retries: u32,
    /// First retry delay; doubled per attempt.
    pub retry_backoff: Duration,
    /// Longest delay between two status polls in [`Client::wait_active`].
    pub max_poll_interval: Duration,
    /// Where every API call is counted (`cryptshare_calls`); the gateway passes its own.
    pub metrics: Arc<Metrics>,
    /// How long [`Client::wait_processed`] polls a transfer that stays `PROCESSING` (default
    /// 5 minutes: the whole conversion runs inside the SMTP DATA phase, whose reply an SMTP
    /// client awaits for 10 minutes, RFC 5321 4.5.3.2.6).
    pub processing_limit: Duration,
    /// How long a token must still be valid to start a new transfer session with it (capped
    /// at half the token's validity); otherwise a new one is fetched first. A session then
    /// keeps its token to the end, so this is the time a workflow may take.
    pub token_reserve: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            minimum_minor_api_version: 8,
            timeout: Duration::from_secs(60),
            ca_file: None,
            retries: 2,
            retry_backoff: Duration::from_millis(200),
            max_poll_interval: Duration::from_secs(5),
            // Counted but not exported unless the caller passes the gateway's handle.
            metrics: Arc::new(Metrics::new()),
            processing_limit: Duration::from_secs(300),
            token_reserve: Duration::from_secs(900),
        }
    }
}

impl ClientOptions {
    /// From `[cryptshare]`, counting calls in `metrics`.
    pub fn from_config(cfg: &CryptshareConfig, metrics: Arc<Metrics>) -> Self {
        ClientOptions {
            minimum_minor_api_version: cfg.minimum_minor_api_version,
            timeout: cfg.timeout,
            ca_file: cfg.ca_file.clone(),
            metrics,
            processing_limit: cfg.processing_limit,
            token_reserve: cfg.token_reserve,
            ..ClientOptions::default()
        }
    }
}

/// A Cryptshare REST API client for client-id verified senders. Cheap to share (`Arc`).
pub struct Client {
    pub(super) http: reqwest::Client,
    api: Url,
    pub(super) opts: ClientOptions,
    pub(super) tokens: Tokens,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The client id lives only inside the reqwest default headers (marked sensitive).
        f.debug_struct("Client")
            .field("api", &self.api.as_str())
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

fn config_err(message: impl Into<String>) -> Error {
    Error::local(ErrorKind::Invalid, "configure", message)
}

impl Client {
    /// `base_url` is the server root (the API is under `/api`), `client_id` the registered id.
    pub fn new(base_url: &str, client_id: String, opts: ClientOptions) -> Result<Client, Error> {
        let api = Url::parse(&format!("{}/api", base_url.trim_end_matches('/')))
            .map_err(|e| config_err(format!("cryptshare.url {base_url:?}: {e}")))?;
        if !matches!(api.scheme(), "http" | "https") || api.cannot_be_a_base() {
            return Err(config_err(format!(
                "cryptshare.url {base_url:?}: must be an http(s) URL"
            )));
        }
        if !is_valid_client_id(&client_id) {
            return Err(config_err(
                "cryptshare client id: must be 50 to 4000 letters and digits",
            ));
        }
        let mut headers = HeaderMap::new();
        headers.insert(H_MAJOR, HeaderValue::from_static("1"));
        headers.insert(H_MINOR, HeaderValue::from(opts.minimum_minor_api_version));
        headers.insert(H_PRODUCT_KEY, HeaderValue::from_static("api.rest"));
        let mut id = HeaderValue::from_str(&client_id)
            .map_err(|_| config_err("cryptshare client id: not a valid header value"))?;
        id.set_sensitive(true);
        headers.insert(H_CLIENT_ID, id);

        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(opts.timeout)
            .user_agent(concat!("cryptshare-gateway/", env!("CARGO_PKG_VERSION")))
            // A 3xx would replay a request whose body we cannot replay; the API never redirects.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &opts.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| config_err(format!("cryptshare.ca_file {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| config_err(format!("cryptshare.ca_file {}: {e}", ca.display())))?;
            if certs.is_empty() {
                return Err(config_err(format!(
                    "cryptshare.ca_file {}: no certificate found",
                    ca.display()
                )));
            }
            builder = builder.tls_certs_merge(certs);
        }
        // HTTPS_PROXY/HTTP_PROXY/NO_PROXY are honoured by default, except for a loopback server
        // (the embedded emulator): a proxy cannot reach our own loopback.
        if api
            .host_str()
            .is_some_and(|h| h == "localhost" || is_loopback_literal(h))
        {
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| config_err(format!("HTTP client: {e}")))?;
        Ok(Client {
            http,
            api,
            opts,
            tokens: Tokens::default(),
        })
    }

    /// The client for `[cryptshare]`: at `cfg.url`, or at `embedded_url` (the URL of the
    /// embedded emulator, see `sim::Emulator::embedded`) when `cfg.url = "embedded"`; the
    /// client id from [`load_client_id`] (with the embedded emulator, which trusts every
    /// well-formed id, a random one when none is configured or the configured one is unusable);
    /// options from [`ClientOptions::from_config`].
    pub fn from_config(
        cfg: &CryptshareConfig,
        embedded_url: Option<&str>,
        metrics: Arc<Metrics>,
    ) -> Result<Client, Error> {
        let opts = ClientOptions::from_config(cfg, metrics);
        if cfg.url != "embedded" {
            let id = load_client_id(cfg).map_err(|e| config_err(e.to_string()))?;
            return Client::new(&cfg.url, id, opts);
        }
        let url = embedded_url.ok_or_else(|| {
            config_err("cryptshare.url = \"embedded\": start the emulator and pass its URL")
        })?;
        let id = load_client_id(cfg).unwrap_or_else(|_| random_client_id());
        Client::new(url, id, opts)
    }

    /// The API root, e.g. `https://host/api`.
    pub fn api_url(&self) -> &str {
        self.api.as_str()
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut u = self.api.clone();
        if let Ok(mut p) = u.path_segments_mut() {
            // `push` percent-encodes `/`, `?`, `#` in untrusted values (addresses, ids).
            p.pop_if_empty().extend(segments);
        }
        u
    }

    pub(super) fn user_url(&self, sender: &str, rest: &[&str]) -> Url {
        let mut segs = vec!["users", sender];
        segs.extend_from_slice(rest);
        self.url(&segs)
    }

    // ---------------------------------------------------------------- verification

    /// Forget the senders' cached tokens (e.g. after a configuration reload). Sessions in
    /// progress keep the token they were created with.
    pub fn clear_tokens(&self) {
        self.tokens.clear_senders();
    }

    /// The token the session `tracking_id` was created with and its `validUntil`, to persist
    /// with a pending record (it is a credential: store it like one) so that a later run can
    /// still continue, delete or adopt the session; see [`Client::restore_session_token`].
    pub fn session_token(&self, sender: &str, tracking_id: &str) -> Option<(String, SystemTime)> {
        let t = self.tokens.pinned(sender, tracking_id)?;
        Some((t.value.to_str().ok()?.to_owned(), t.until))
    }

    /// Use `token` for the session `tracking_id` again (after a restart).
    pub fn restore_session_token(
        &self,
        sender: &str,
        tracking_id: &str,
        token: &str,
        valid_until: SystemTime,
    ) -> Result<(), Error> {
        let mut value = HeaderValue::from_str(token)
            .map_err(|_| Error::local(ErrorKind::Invalid, "restore-token", "unusable token"))?;
        value.set_sensitive(true);
        let now = SystemTime::now();
        self.tokens.pin(
            sender,
            tracking_id,
            Cached {
                value,
                issued: now.min(valid_until),
                until: valid_until,
            },
        );
        Ok(())
    }

    /// A token for `need`; `refused` is one the server just rejected, which must not be handed
    /// out again.
    async fn token(
        &self,
        sender: &str,
        need: Need<'_>,
        refused: Option<&HeaderValue>,
    ) -> Result<HeaderValue, Error> {
        let reserve = self.opts.token_reserve;
        if let Some(t) = self.tokens.lookup(sender, need, reserve, refused) {
            return Ok(t);
        }
        let gate = self.tokens.gate(sender);
        let _turn = gate.lock().await;
        // Another task may have verified while this one waited.
        if let Some(t) = self.tokens.lookup(sender, need, reserve, refused) {
            return Ok(t);
        }
        self.verify(sender).await
    }

    /// Client-id verification: check that the server offers it, then fetch a token.
    async fn verify(&self, sender: &str) -> Result<HeaderValue, Error> {
        const OP: &str = "verification";
        let url = self.user_url(sender, &["verification"]);
        let resp = self
            .send(OP, true, None, || async { Ok(self.http.get(url.clone())) })
            .await?;
        let status = read_json::<Envelope<VerificationStatus>>(OP, resp)
            .await?
            .data;
        let offered = status
            .verification_methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case("CLIENT_ID") || m.eq_ignore_ascii_case("clientId"));
        if !offered {
            return Err(Error::local(
                ErrorKind::Auth,
                OP,
                "the server does not offer client-id verification for this sender",
            ));
        }

        const OP_T: &str = "verification-token";
        let url = self.user_url(sender, &["verification", "token"]);
        let resp = self
            .send(OP_T, true, None, || async {
                Ok(self
                    .http
                    .post(url.clone())
                    .json(&RequestVerificationBody::default()))
            })
            .await?;
        let tok = read_json::<Envelope<VerificationToken>>(OP_T, resp)
            .await?
            .data;
        let mut value = HeaderValue::from_str(&tok.token).map_err(|_| {
            Error::local(ErrorKind::Auth, OP_T, "the server issued an unusable token")
        })?;
        value.set_sensitive(true);
        let now = SystemTime::now();
        let until = tok
            .valid_until
            .as_deref()
            .and_then(parse_date_time)
            .map(SystemTime::from)
            .unwrap_or(now + TOKEN_DEFAULT_VALIDITY);
        tracing::debug!(operation = OP_T, "new verification token");
        self.tokens.store_sender(
            sender,
            Cached {
                value: value.clone(),
                issued: now,
                until,
            },
        );
        Ok(value)
    }

    // ---------------------------------------------------------------- transport

    /// One API call with retries for idempotent calls. `progress` switches the timeout from
    /// "whole call" to "no progress for `timeout`" (uploads of any size).
    async fn send<F, Fut>(
        &self,
        op: &'static str,
        idempotent: bool,
        progress: Option<&Progress>,
        make: F,
    ) -> Result<Response, Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<RequestBuilder, Error>>,
    {
        let mut attempt = 0u32;
        loop {
            let rb = make().await?;
            let started = std::time::Instant::now();
            let result = match progress {
                None => rb
                    .timeout(self.opts.timeout)
                    .send()
                    .await
                    .map_err(|e| Error::transport(op, e)),
                Some(p) => self.send_watched(op, rb, p).await,
            };
            self.opts.metrics.cryptshare_call(
                op,
                result.as_ref().ok().map(|r| r.status().as_u16()),
                started.elapsed(),
            );
            let err = match result {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => error_from_response(op, resp).await,
                Err(e) => e,
            };
            if idempotent && err.is_temporary() && attempt < self.opts.retries {
                let delay = self.opts.retry_backoff * 2u32.saturating_pow(attempt);
                attempt += 1;
                tracing::debug!(operation = op, attempt, error = %err, "retrying");
                tokio::time::sleep(delay).await;
                continue;
            }
            return Err(err);
        }
    }

    async fn send_watched(
        &self,
        op: &'static str,
        rb: RequestBuilder,
        p: &Progress,
    ) -> Result<Response, Error> {
        p.touch();
        let fut = rb.send();
        tokio::pin!(fut);
        loop {
            let idle = p.idle();
            if idle >= self.opts.timeout {
                return Err(Error::local(
                    ErrorKind::Temporary,
                    op,
                    format!("no progress for {:?}", self.opts.timeout),
                ));
            }
            tokio::select! {
                r = &mut fut => return r.map_err(|e| Error::transport(op, e)),
                _ = tokio::time::sleep(self.opts.timeout - idle) => {}
            }
        }
    }

    /// A call on a sender endpoint with a token for `need` (the session's pinned one for
    /// session calls), re-verifying once when the server answers 401/403 with errorCode 3002
    /// (expired or foreign token). Returns the answer and the token it was given to.
    pub(super) async fn send_verified<F, Fut>(
        &self,
        op: &'static str,
        sender: &str,
        need: Need<'_>,
        idempotent: bool,
        progress: Option<&Progress>,
        make: F,
    ) -> Result<(Response, HeaderValue), Error>
    where
        F: Fn(HeaderValue) -> Fut,
        Fut: Future<Output = Result<RequestBuilder, Error>>,
    {
        let with = |token: HeaderValue| {
            let make = &make;
            async move {
                let r = self
                    .send(op, idempotent, progress, || {
                        let t = token.clone();
                        let fut = make(t.clone());
                        async move { Ok(fut.await?.header(HeaderName::from_static(H_TOKEN), t)) }
                    })
                    .await;
                r.map(|resp| (resp, token))
            }
        };
        let token = self.token(sender, need, None).await?;
        let started = SystemTime::now();
        match with(token.clone()).await {
            Err(e) if is_token_refusal(&e) => {
                tracing::info!(
                    operation = op,
                    "verification token refused; re-verifying once"
                );
                let fresh = self
                    .token(sender, Need::IssuedSince(started), Some(&token))
                    .await?;
                let r = with(fresh.clone()).await;
                if let (Ok(_), Need::Session(tid)) = (&r, need)
                    && let Some(t) = self.tokens.sender_token(sender, &fresh)
                {
                    // A server that does not bind sessions to tokens accepted the new one.
                    self.tokens.pin(sender, tid, t);
                }
                r
            }
            other => other,
        }
    }

    // The arguments are one request's parts (operation name, sender, verification need,
    // retry safety, method, URL, body); a struct for them would only be unpacked again here.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn json_verified<T: DeserializeOwned, B: Serialize + Sync>(
        &self,
        op: &'static str,
        sender: &str,
        need: Need<'_>,
        idempotent: bool,
        method: Method,
        url: Url,
        body: Option<&B>,
    ) -> Result<T, Error> {
        let (resp, _) = self
            .send_verified(op, sender, need, idempotent, None, |_| {
                let mut rb = self.http.request(method.clone(), url.clone());
                if let Some(b) = body {
                    rb = rb.json(b);
                }
                async move { Ok(rb) }
            })
            .await?;
        read_json(op, resp).await
    }

    // ---------------------------------------------------------------- the workflow

    /// `POST /users/{sender}/transfer-policy`: would this sender/recipient combination be
    /// allowed, and with which limits? Side-effect free, so retried like a GET.
    pub async fn transfer_policy(
        &self,
        sender: &str,
        recipients: &[String],
    ) -> Result<TransferPolicyResult, Error> {
        let body = TransferPolicyRequest {
            recipients: recipients.to_vec(),
        };
        let env: Envelope<TransferPolicyResult> = self
            .json_verified(
                "transfer-policy",
                sender,
                Need::Call,
                true,
                Method::POST,
                self.user_url(sender, &["transfer-policy"]),
                Some(&body),
            )
            .await?;
        Ok(env.data)
    }

    /// `POST /users/{sender}/transfer-sessions` → the tracking id (from `Location`).
    /// `language` becomes `Accept-Language` (initial sender and recipient language).
    pub async fn create_session(
        &self,
        sender: &str,
        language: Option<&str>,
        session: &NewTransferSession,
    ) -> Result<String, Error> {
        const OP: &str = "create-session";
        let url = self.user_url(sender, &["transfer-sessions"]);
        let lang = language.filter(|l| is_language_tag(l)).map(str::to_owned);
        let (resp, token) = self
            .send_verified(OP, sender, Need::NewSession, false, None, |_| {
                let mut rb = self.http.post(url.clone()).json(session);
                if let Some(l) = &lang {
                    rb = rb.header(reqwest::header::ACCEPT_LANGUAGE, l.as_str());
                }
                async move { Ok(rb) }
            })
            .await?;
        let id = location_last_segment(OP, &url, &resp)?;
        if !is_tracking_id(&id) {
            tracing::warn!(tracking_id = %sanitize(&id), "unexpected tracking id format");
        }
        // The session keeps this token for its whole life (see the `token` module).
        let pinned = self.tokens.sender_token(sender, &token).unwrap_or_else(|| {
            let now = SystemTime::now();
            Cached {
                value: token,
                issued: now,
                until: now + TOKEN_DEFAULT_VALIDITY,
            }
        });
        self.tokens.pin(sender, &id, pinned);
        Ok(id)
    }

    /// `GET /users/{sender}/transfer-sessions/{tracking_id}`.
    pub async fn get_session(
        &self,
        sender: &str,
        tracking_id: &str,
    ) -> Result<TransferSession, Error> {
        let env: Envelope<TransferSession> = self
            .json_verified(
                "get-session",
                sender,
                Need::Session(tracking_id),
                true,
                Method::GET,
                self.user_url(sender, &["transfer-sessions", tracking_id]),
                None::<&()>,
            )
            .await?;
        Ok(env.data)
    }

    /// `PATCH /users/{sender}/transfer-sessions/{tracking_id}` → the whole session.
    pub async fn patch_settings(
        &self,
        sender: &str,
        tracking_id: &str,
        patch: &TransferSessionPatch,
    ) -> Result<TransferSession, Error> {
        let env: Envelope<TransferSession> = self
            .json_verified(
                "patch-session",
                sender,
                Need::Session(tracking_id),
                false,
                Method::PATCH,
                self.user_url(sender, &["transfer-sessions", tracking_id]),
                Some(patch),
            )
            .await?;
        Ok(env.data)
    }

    /// `POST …/files`: register a file (`name` unique per transfer, `sha256_hex` lowercase).
    pub async fn register_file(
        &self,
        sender: &str,
        tracking_id: &str,
        name: &str,
        size: u64,
        sha256_hex: &str,
    ) -> Result<String, Error> {
        const OP: &str = "register-file";
        let url = self.user_url(sender, &["transfer-sessions", tracking_id, "files"]);
        let body = NewTransferFile {
            file_name: name.to_owned(),
            size: i64::try_from(size)
                .map_err(|_| Error::local(ErrorKind::Invalid, OP, "file too large"))?,
            checksum: Some(sha256_hex.to_ascii_lowercase()),
        };
        let (resp, _) = self
            .send_verified(OP, sender, Need::Session(tracking_id), false, None, |_| {
                let rb = self.http.post(url.clone()).json(&body);
                async move { Ok(rb) }
            })
            .await?;
        let from_location = location_last_segment(OP, &url, &resp).ok();
        match read_json::<Envelope<FileId>>(OP, resp).await {
            Ok(env) if !env.data.file_id.is_empty() => Ok(env.data.file_id),
            Ok(_) | Err(_) if from_location.is_some() => Ok(from_location.unwrap_or_default()),
            Ok(_) => Err(Error::local(
                ErrorKind::Temporary,
                OP,
                "no file id in the answer",
            )),
            Err(e) => Err(e),
        }
    }

    /// `DELETE …/files/{file_id}`.
    pub async fn delete_file(
        &self,
        sender: &str,
        tracking_id: &str,
        file_id: &str,
    ) -> Result<(), Error> {
        let url = self.user_url(
            sender,
            &["transfer-sessions", tracking_id, "files", file_id],
        );
        self.send_verified(
            "delete-file",
            sender,
            Need::Session(tracking_id),
            true,
            None,
            |_| {
                let rb = self.http.delete(url.clone());
                async move { Ok(rb) }
            },
        )
        .await?;
        Ok(())
    }

    /// `POST /users/{sender}/transfer-sessions/{tracking_id}`: send the transfer. Not retried:
    /// a lost answer must not finalize twice; poll [`Client::transfer_status`] instead.
    pub async fn finalize(&self, sender: &str, tracking_id: &str) -> Result<(), Error> {
        let url = self.user_url(sender, &["transfer-sessions", tracking_id]);
        self.send_verified(
            "finalize",
            sender,
            Need::Session(tracking_id),
            false,
            None,
            |_| {
                let rb = self.http.post(url.clone());
                async move { Ok(rb) }
            },
        )
        .await?;
        Ok(())
    }

    /// `DELETE /users/{sender}/transfer-sessions/{tracking_id}` (abort). A session that is
    /// already gone counts as deleted.
    pub async fn delete_session(&self, sender: &str, tracking_id: &str) -> Result<(), Error> {
        let url = self.user_url(sender, &["transfer-sessions", tracking_id]);
        match self
            .send_verified(
                "delete-session",
                sender,
                Need::Session(tracking_id),
                true,
                None,
                |_| {
                    let rb = self.http.delete(url.clone());
                    async move { Ok(rb) }
                },
            )
            .await
        {
            Ok(_) => {
                self.tokens.unpin(sender, tracking_id);
                Ok(())
            }
            Err(e) if e.status() == Some(404) && e.error_code() != Some(2004) => {
                self.tokens.unpin(sender, tracking_id);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

fn is_token_refusal(e: &Error) -> bool {
    matches!(e.status(), Some(401 | 403)) && e.error_code() == Some(3002)
}

fn is_language_tag(l: &str) -> bool {
    !l.is_empty() && l.len() <= 35 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

    fn cfg() -> CryptshareConfig {
        CryptshareConfig::default()
    }

    #[test]
    fn construction_validates_url_and_id() {
        assert!(Client::new("ftp://x", ID.into(), ClientOptions::default()).is_err());
        assert!(Client::new("not a url", ID.into(), ClientOptions::default()).is_err());
        assert!(
            Client::new(
                "https://cs.example",
                "short".into(),
                ClientOptions::default()
            )
            .is_err()
        );
        let c = Client::new(
            "https://cs.example/base/",
            ID.into(),
            ClientOptions::default(),
        )
        .unwrap();
        assert_eq!(c.api_url(), "https://cs.example/base/api");
        let m = || Arc::new(Metrics::new());
        let mut cfg = cfg();
        assert!(
            Client::from_config(&cfg, None, m()).is_err(),
            "embedded needs the emulator's URL"
        );
        let c = Client::from_config(&cfg, Some("http://127.0.0.1:1"), m()).unwrap();
        assert_eq!(c.api_url(), "http://127.0.0.1:1/api");
        cfg.url = "https://cs.example".into();
        assert!(
            Client::from_config(&cfg, None, m()).is_err(),
            "a remote server needs a client id"
        );
        cfg.client_id = Some(ID.to_string().into());
        assert!(Client::from_config(&cfg, None, m()).is_ok());
    }

    #[test]
    fn debug_never_shows_the_client_id_or_passwords() {
        let c = Client::new("https://cs.example", ID.into(), ClientOptions::default()).unwrap();
        assert!(!format!("{c:?}").contains(ID));
        let m = SecurityMode::one_time_password(PasswordMode::Manual, Some("hunter22!".into()));
        assert!(!format!("{m:?}").contains("hunter22"));
        let t = VerificationToken {
            token: "tok123secret".into(),
            valid_until: None,
        };
        assert!(!format!("{t:?}").contains("tok123secret"));
    }

    #[test]
    fn path_segments_are_encoded() {
        let c = Client::new("http://127.0.0.1:1", ID.into(), ClientOptions::default()).unwrap();
        let u = c.user_url("a/b?c#d@example.org", &["transfer-sessions", "x y"]);
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:1/api/users/a%2Fb%3Fc%23d@example.org/transfer-sessions/x%20y"
        );
    }

    #[test]
    fn tracking_ids() {
        assert!(is_tracking_id("20240522-065711-H8UoUSI6"));
        assert!(!is_tracking_id("20241322-065711-H8UoUSI6"));
        assert!(!is_tracking_id("20240522-065711-H8UoUSI"));
        assert!(!is_tracking_id("20240522_065711-H8UoUSI6"));
        assert!(!is_tracking_id("20240522-065711-H8UoUS/6"));
    }
}
