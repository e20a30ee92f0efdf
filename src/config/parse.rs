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

/// `#[serde(with = "parse::span")]`: a duration as SPEC §3 writes them, `"5d"`, `"4h"`,
/// `"30m"`, `"90s"` (a bare number is seconds), `"0"` for none.
pub(super) mod span {
    use super::*;

    pub fn parse(s: &str) -> Result<Duration, String> {
        let t = s.trim();
        let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
            Some(i) => t.split_at(i),
            None => (t, "s"),
        };
        let factor = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            "w" => 7 * 86400,
            _ => 0,
        };
        match num.parse::<u64>() {
            Ok(n) if factor > 0 => n
                .checked_mul(factor)
                .map(Duration::from_secs)
                .ok_or_else(|| format!("{s:?} is too long")),
            _ => Err(format!(
                "{s:?} is not a duration: a whole number with s, m, h, d or w (e.g. \"4h\", \"5d\"), or \"0\""
            )),
        }
    }

    pub fn format(d: &Duration) -> String {
        let s = d.as_secs();
        for (unit, f) in [("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)] {
            if s >= f && s.is_multiple_of(f) {
                return format!("{}{unit}", s / f);
            }
        }
        format!("{s}s")
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(D::Error::custom)
    }

    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        format(v).serialize(s)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn spans() {
            assert_eq!(parse("5d"), Ok(Duration::from_secs(432_000)));
            assert_eq!(parse("4h"), Ok(Duration::from_secs(14_400)));
            assert_eq!(parse("0"), Ok(Duration::ZERO));
            assert_eq!(parse("90"), Ok(Duration::from_secs(90)));
            assert!(parse("5x").is_err());
            assert!(parse("-1h").is_err());
            assert!(parse("").is_err());
            assert_eq!(format(&Duration::from_secs(432_000)), "5d");
            assert_eq!(format(&Duration::from_secs(4000)), "4000s");
        }
    }
}
