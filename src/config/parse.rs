//! Typed values read from strings (`SocketAddr`, `IpNet`, [`NextHop`]) and durations in seconds:
//! the `#[serde(with = …)]` helpers of the config structs. A value is parsed once, here; the
//! error says what the string should have looked like, and the loader adds key and location.

use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::{DeserializeSeed, Deserializer, Error as _, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// Where relayed mail goes (`relay.next_hop`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextHop {
    Smtp { host: String, port: u16 },
    Maildir(PathBuf),
}

impl NextHop {
    /// `host:port`, `[v6]:port` or `maildir:DIR`; the error is the reason only (no key).
    pub fn parse(s: &str) -> Result<NextHop, String> {
        if let Some(dir) = s.strip_prefix("maildir:") {
            if dir.is_empty() {
                return Err("maildir: needs a directory".into());
            }
            return Ok(NextHop::Maildir(PathBuf::from(dir)));
        }
        let bad = || format!("{s:?} is not host:port or maildir:DIR");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad());
        }
        let port: u16 = port.parse().map_err(|_| bad())?;
        Ok(NextHop::Smtp {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NextHop::Smtp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            NextHop::Smtp { host, port } => write!(f, "{host}:{port}"),
            NextHop::Maildir(dir) => write!(f, "maildir:{}", dir.display()),
        }
    }
}

/// A configuration value written as a string.
pub(super) trait FromConfigStr: Sized {
    /// The whole reason on failure, quoting the input (`"x" is not an IP:port (…)`).
    fn from_config_str(s: &str) -> Result<Self, String>;
    fn to_config_string(&self) -> String;
}

impl FromConfigStr for SocketAddr {
    fn from_config_str(s: &str) -> Result<Self, String> {
        s.parse()
            .map_err(|e| format!("{s:?} is not an IP:port ({e})"))
    }
    fn to_config_string(&self) -> String {
        self.to_string()
    }
}

/// A network in CIDR notation; a bare address is a one-address network.
impl FromConfigStr for IpNet {
    fn from_config_str(s: &str) -> Result<Self, String> {
        s.parse::<IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| format!("{s:?} is not a network (CIDR)"))
    }
    fn to_config_string(&self) -> String {
        self.to_string()
    }
}

impl FromConfigStr for NextHop {
    fn from_config_str(s: &str) -> Result<Self, String> {
        NextHop::parse(s)
    }
    fn to_config_string(&self) -> String {
        self.to_string()
    }
}

struct One<T>(PhantomData<T>);

impl<'de, T: FromConfigStr> DeserializeSeed<'de> for One<T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        let s = String::deserialize(d)?;
        T::from_config_str(&s).map_err(D::Error::custom)
    }
}

/// `#[serde(with = "parse::one")]`: a single typed value.
pub(super) mod one {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>, T: FromConfigStr>(d: D) -> Result<T, D::Error> {
        One(PhantomData).deserialize(d)
    }

    pub fn serialize<S: Serializer, T: FromConfigStr>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_config_string())
    }
}

/// `#[serde(with = "parse::list")]`: a list of typed values (the index of a bad one is kept in
/// the key path, `server.listen[1]`).
pub(super) mod list {
    use super::*;

    struct List<T>(PhantomData<T>);

    impl<'de, T: FromConfigStr> Visitor<'de> for List<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(v) = seq.next_element_seed(One(PhantomData))? {
                out.push(v);
            }
            Ok(out)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: FromConfigStr>(
        d: D,
    ) -> Result<Vec<T>, D::Error> {
        d.deserialize_seq(List(PhantomData))
    }

    pub fn serialize<S: Serializer, T: FromConfigStr>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for item in v {
            seq.serialize_element(&item.to_config_string())?;
        }
        seq.end()
    }
}

/// `#[serde(with = "parse::seconds")]`: a whole number of seconds.
pub(super) mod seconds {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }

    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        v.as_secs().serialize(s)
    }
}
