//! [`Redacted`]: a value that must never reach a log, an error message or JSON output. It lives
//! with the configuration (which holds the client id) so that `config` needs nothing above it;
//! `ops` re-exports it for log and audit code.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `Debug`, `Display` and `Serialize` all print `[redacted]`. Use [`Redacted::expose`] at the one
/// place that needs the value (the HTTP header, the password check).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Redacted<T>(T);

/// The usual case: a password, token or client id.
pub type Secret = Redacted<String>;

/// What every redacted value prints as.
pub const REDACTED: &str = "[redacted]";

impl<T> Redacted<T> {
    pub fn new(value: T) -> Self {
        Redacted(value)
    }

    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Redacted<T> {
    fn from(value: T) -> Self {
        Redacted(value)
    }
}

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> Serialize for Redacted<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

/// Reading is transparent so that configuration structs can hold secrets directly.
impl<'de, T: Deserialize<'de>> Deserialize<'de> for Redacted<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Redacted)
    }
}
