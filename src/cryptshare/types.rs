//! Serde models of the Cryptshare REST API 1.8 schemas the sender workflow touches
//! (`openapi-1.8.json`, `components.schemas`). Shared by the client and the emulator.
//!
//! Every optional property is `Option` and omitted when absent: the OpenAPI file declares no
//! property as `nullable`, so a faithful server never sends `null`. Reading, the client is
//! lenient all the same (a real server, or a newer minor version, may do both): an explicit
//! `null` counts as absent (its default), unknown properties are ignored (no
//! `deny_unknown_fields` on any type here), unknown transfer states are `Unknown`.

use std::cell::Cell;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// `null` or absent → the default.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

thread_local! {
    static EXPLICIT_NULLS: Cell<bool> = const { Cell::new(false) };
}

/// Absent optional properties are omitted, except inside [`with_explicit_nulls`].
fn skip_none<T>(v: &Option<T>) -> bool {
    v.is_none() && !EXPLICIT_NULLS.with(Cell::get)
}

/// Run `f` (a serialization) with absent optional properties written as explicit `null`: the
/// emulator's `nulls_and_extra_fields` switch. Synchronous, so the flag cannot leak to
/// another task.
pub(crate) fn with_explicit_nulls<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            EXPLICIT_NULLS.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(EXPLICIT_NULLS.with(|c| c.replace(true)));
    f()
}

/// `{"data": …, "meta": {}}`, the wrapper of every successful JSON response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub data: T,
    #[serde(default, deserialize_with = "nullable")]
    pub meta: serde_json::Map<String, serde_json::Value>,
}

impl<T> Envelope<T> {
    pub fn new(data: T) -> Self {
        Envelope {
            data,
            meta: serde_json::Map::new(),
        }
    }
}

/// Schema `Error`: errors are not wrapped in an envelope.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ApiError {
    #[serde(default)]
    pub error_code: Option<i32>,
    #[serde(default)]
    pub error_message: Option<String>,
}

/// Schema `VerificationStatus`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationStatus {
    #[serde(default, skip_serializing_if = "skip_none")]
    pub valid_until: Option<String>,
    /// `CLIENT_ID` / `EMAIL` (the prose docs spell them `clientId` / `email`).
    #[serde(default, deserialize_with = "nullable")]
    pub verification_methods: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub verified: bool,
}

/// Schema `VerificationToken`. The token is a credential: `Debug` does not print it.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationToken {
    pub token: String,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub valid_until: Option<String>,
}

impl fmt::Debug for VerificationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerificationToken")
            .field("token", &"<redacted>")
            .field("valid_until", &self.valid_until)
            .finish()
    }
}

/// Schema `RequestVerificationBody`; `{}` for client-id verification.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestVerificationBody {
    #[serde(default, skip_serializing_if = "skip_none")]
    pub verification_code: Option<String>,
}

/// Schema `TransferPolicyRequest`: a flat list of addresses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferPolicyRequest {
    pub recipients: Vec<String>,
}

/// Schema `TransferPolicyResult`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferPolicyResult {
    #[serde(default, deserialize_with = "nullable")]
    pub allowed: bool,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub failed_recipients: Option<Vec<FailedRecipient>>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub settings: Option<TransferPolicySettings>,
}

/// Schema `FailedRecipient`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FailedRecipient {
    pub email_address: String,
    /// Currently only `POLICY_MISMATCH`.
    pub reason: String,
}

/// Schema `TransferPolicySettings`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferPolicySettings {
    #[serde(default, deserialize_with = "nullable")]
    pub confidential_message_allowed: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub confidential_message_required: bool,
    /// Days.
    #[serde(default, deserialize_with = "nullable")]
    pub max_retention_period: i64,
    /// Bytes.
    #[serde(default, deserialize_with = "nullable")]
    pub max_total_size: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub recipient_notification_editable: bool,
    /// Ordered by priority; the first one is the default.
    #[serde(default, deserialize_with = "nullable")]
    pub security_modes: Vec<PolicySecurityMode>,
    #[serde(default, deserialize_with = "nullable")]
    pub send_download_notifications_changeable: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub send_download_notifications_default: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub show_file_names_changeable: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub show_file_names_default: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub show_zip_file_content_default: bool,
}

impl TransferPolicySettings {
    /// Password modes allowed by the `ONE_TIME_PASSWORD` security mode (empty when absent).
    pub fn allowed_password_modes(&self) -> Vec<PasswordMode> {
        self.security_modes
            .iter()
            .filter(|m| m.name == "ONE_TIME_PASSWORD")
            .flat_map(|m| m.config.allowed_password_modes.iter().copied())
            .collect()
    }
}

/// Schemas `OneTimePasswordSecurityMode` / `QuickSecurityMode` / `EidSecurityMode`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicySecurityMode {
    /// `ONE_TIME_PASSWORD`, `QUICK` or `EID`.
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub config: PolicySecurityModeConfig,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicySecurityModeConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_password_modes: Vec<PasswordMode>,
}

/// `passwordMode` of the one-time-password security mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PasswordMode {
    Generated,
    Manual,
    None,
}

impl PasswordMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PasswordMode::Generated => "GENERATED",
            PasswordMode::Manual => "MANUAL",
            PasswordMode::None => "NONE",
        }
    }
}

/// Schema `Sender`: contact details; the address itself is the path segment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    #[serde(default, skip_serializing_if = "skip_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub phone: Option<String>,
}

/// Schema `Recipient`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Recipient {
    pub mail: String,
}

impl Recipient {
    pub fn new(mail: impl Into<String>) -> Self {
        Recipient { mail: mail.into() }
    }
}

/// Schema `Recipients`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipients {
    #[serde(default, deserialize_with = "nullable")]
    pub to: Vec<Recipient>,
    #[serde(default, deserialize_with = "nullable")]
    pub cc: Vec<Recipient>,
    #[serde(default, deserialize_with = "nullable")]
    pub bcc: Vec<Recipient>,
}

impl Recipients {
    /// All addresses, `to` then `cc` then `bcc`.
    pub fn all(&self) -> impl Iterator<Item = &str> {
        self.to
            .iter()
            .chain(&self.cc)
            .chain(&self.bcc)
            .map(|r| r.mail.as_str())
    }
}

/// Schema `TransferSessionCreationOptions`: the body of "create transfer session".
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewTransferSession {
    #[serde(default, deserialize_with = "nullable")]
    pub sender: Sender,
    #[serde(default, deserialize_with = "nullable")]
    pub recipients: Recipients,
}

/// Schema `TransferNotificationMessage`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationMessage {
    #[serde(default, skip_serializing_if = "skip_none")]
    pub subject: Option<String>,
    /// May contain HTML.
    #[serde(default, skip_serializing_if = "skip_none")]
    pub body: Option<String>,
}

/// Schemas `TransferOneTimePasswordSecurityModeReq/Res`: `{"name":"ONE_TIME_PASSWORD","config":{…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityMode {
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub config: SecurityModeConfig,
}

impl SecurityMode {
    /// The only security mode the REST API supports.
    pub fn one_time_password(mode: PasswordMode, password: Option<String>) -> Self {
        SecurityMode {
            name: "ONE_TIME_PASSWORD".into(),
            config: SecurityModeConfig {
                password_mode: Some(mode),
                password,
            },
        }
    }
}

/// The password is a secret: `Debug` does not print it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityModeConfig {
    #[serde(default, skip_serializing_if = "skip_none")]
    pub password_mode: Option<PasswordMode>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub password: Option<String>,
}

impl fmt::Debug for SecurityModeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecurityModeConfig")
            .field("password_mode", &self.password_mode)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Schema `TransferSessionPatchable`: the PATCH body. Absent properties stay unchanged.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferSessionPatch {
    #[serde(default, skip_serializing_if = "skip_none")]
    pub sender: Option<Sender>,
    /// ISO 8601 with `T` and numeric offset, see [`format_date_time`].
    #[serde(default, skip_serializing_if = "skip_none")]
    pub expiration_date: Option<String>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub security_mode: Option<SecurityMode>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub notification_message: Option<NotificationMessage>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub sender_language: Option<String>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub recipient_language: Option<String>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub show_file_names: Option<bool>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub show_zip_file_content: Option<bool>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub send_recipient_notification: Option<bool>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub send_upload_summary: Option<bool>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub send_download_notifications: Option<bool>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub send_download_summary: Option<bool>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub classification_id: Option<String>,
    /// `SHA256` for the checksums this client sends.
    #[serde(default, skip_serializing_if = "skip_none")]
    pub file_checksum_algorithm: Option<String>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub confidential_message_file_id: Option<String>,
}

/// Schema `TransferSession` (and `TransferSessionOfobject` inside a transfer status).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferSession {
    #[serde(default, skip_serializing_if = "skip_none")]
    pub sender: Option<Sender>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub recipients: Option<Recipients>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub expiration_date: Option<String>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub security_mode: Option<SecurityMode>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub notification_message: Option<NotificationMessage>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub sender_language: Option<String>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub recipient_language: Option<String>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub show_file_names: Option<bool>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub show_zip_file_content: Option<bool>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub send_recipient_notification: Option<bool>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub send_upload_summary: Option<bool>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub send_download_notifications: Option<bool>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub send_download_summary: Option<bool>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub classification_id: Option<String>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub file_checksum_algorithm: Option<String>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub confidential_message_file_id: Option<String>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub files: Option<Vec<TransferSessionFile>>,
}

/// Schema `TransferSessionFile`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferSessionFile {
    pub id: String,
    pub file_name: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub checksum: Option<String>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub href: Option<String>,
    /// `INITIALIZED`, `UPLOADED`, `ACTIVE` or `REMOVED`.
    pub state: String,
}

/// Schema `TransferFileCreationOptionsReq`: register a file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewTransferFile {
    pub file_name: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub checksum: Option<String>,
}

/// Schema `TransferFileCreationOptionsRes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileId {
    pub file_id: String,
}

/// Schema `TransferStatus`: the answer to polling after finalize.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TransferStatus {
    #[serde(default, deserialize_with = "nullable")]
    pub transfer: TransferSession,
    #[serde(default, deserialize_with = "nullable")]
    pub status: StatusDto,
}

impl TransferStatus {
    /// `(recipient address, download URL)` for every recipient that has a URL.
    pub fn download_urls(&self) -> Vec<(String, String)> {
        self.status
            .recipients
            .iter()
            .filter_map(|r| Some((r.mail.clone()?, r.download_url.clone()?)))
            .collect()
    }
}

/// Transfer states (`StatusDto.state`, `TransferBasicInfoDto.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TransferState {
    Active,
    DeletedByAdmin,
    DeletedByExpiration,
    DeletedByRevocation,
    DeletedBySecurity,
    Failed,
    Pending,
    Processing,
    #[default]
    #[serde(other)]
    Unknown,
}

/// Schema `StatusDto`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDto {
    #[serde(default, deserialize_with = "nullable")]
    pub state: TransferState,
    #[serde(default, deserialize_with = "nullable")]
    pub warnings: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub eml_creation_failed: bool,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub sender: Option<SenderStatus>,
    #[serde(default, deserialize_with = "nullable")]
    pub recipients: Vec<RecipientStatus>,
    #[serde(default, deserialize_with = "nullable")]
    pub files: Vec<FileStatus>,
}

/// Schema `SenderStatusDto`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SenderStatus {
    #[serde(default, skip_serializing_if = "skip_none")]
    pub email: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub notification_failed: bool,
}

/// Schema `RecipientStatusDto`. `id` is the recipient's transfer id.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecipientStatus {
    #[serde(default, skip_serializing_if = "skip_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub mail: Option<String>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub download_url: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub notification_failed: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub file_downloads: Vec<FileDownloads>,
}

/// Schema `FileDownloadDto`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FileDownloads {
    pub id: String,
    #[serde(default, deserialize_with = "nullable")]
    pub downloads: Vec<Download>,
}

/// Schema `DownloadDto`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Download {
    pub download_date: String,
    /// `DOWNLOADED` or `VIEWED`.
    pub retrieval_method: String,
}

/// Schema `FileStatusDto`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileStatus {
    pub id: String,
    #[serde(default, deserialize_with = "nullable")]
    pub removed: bool,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub removal_cause: Option<String>,
}

/// Schema `TransferBasicInfoDto` (sender's transfer list).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferBasicInfo {
    pub tracking_id: String,
    #[serde(default, deserialize_with = "nullable")]
    pub state: TransferState,
    #[serde(default, deserialize_with = "nullable")]
    pub recipients: Vec<RecipientStatus>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub href: Option<String>,
}

/// Schema `TransferInfo` (recipient side).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferInfo {
    pub checksum_algorithm: String,
    pub total_size: i64,
}

/// Schema `TransferFile` (recipient side).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferFile {
    pub id: String,
    pub file_name: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub checksum: Option<String>,
    #[serde(default, skip_serializing_if = "skip_none")]
    pub href: Option<String>,
}

/// Schema `ClientId`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientIdBody {
    pub client_id: String,
}

impl fmt::Debug for ClientIdBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientIdBody(<redacted>)")
    }
}

/// The API's date-time format: ISO 8601, `T` separator, numeric offset (`2020-10-09T11:51:46+02:00`).
pub fn format_date_time<Tz: chrono::TimeZone>(t: &chrono::DateTime<Tz>) -> String
where
    Tz::Offset: fmt::Display,
{
    t.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

/// Parse the API's date-time format (RFC 3339, as produced by [`format_date_time`]).
pub fn parse_date_time(s: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(s).ok()
}

/// `YYYYMMDD-HHMMSS-XXXXXXXX` with a valid date and time prefix.
pub fn is_tracking_id(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 24 || b[8] != b'-' || b[15] != b'-' {
        return false;
    }
    if !b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
        || !b[16..].iter().all(u8::is_ascii_alphanumeric)
    {
        return false;
    }
    chrono::NaiveDateTime::parse_from_str(&s[..15], "%Y%m%d-%H%M%S").is_ok()
}
