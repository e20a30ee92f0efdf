//! A strict serde `Deserializer` over the raw [`tree`](super::tree): no coercion between types
//! (`"5"` is not a number, `1` is not a boolean, `10485760.5` is not a whole number), messages an
//! operator can act on (enum errors list the valid values), and environment values typed by what
//! the key expects: `true`/`false` for a boolean, digits for a number, a comma-separated list
//! (items trimmed) for a list.

use std::fmt;

use serde::de::value::StrDeserializer;
use serde::de::{
    self, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};

use super::tree::{Kind, Node};

#[derive(Debug)]
pub(super) struct DeError {
    pub msg: String,
    /// A required key that is missing (the path points at its section).
    pub missing: Option<&'static str>,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            msg: msg.to_string(),
            missing: None,
        }
    }
    fn missing_field(field: &'static str) -> Self {
        DeError {
            msg: "missing (required)".into(),
            missing: Some(field),
        }
    }
    fn unknown_field(_field: &str, expected: &'static [&'static str]) -> Self {
        Self::custom(format!("unknown key (valid: {})", expected.join(", ")))
    }
    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Self::custom(not_one_of(variant, expected))
    }
}

fn not_one_of(value: &str, expected: &[&str]) -> String {
    format!("{value:?} is not one of {}", expected.join(", "))
}

fn err<T>(msg: impl Into<String>) -> Result<T, DeError> {
    Err(DeError {
        msg: msg.into(),
        missing: None,
    })
}

/// What was found, for "expected X, found Y".
fn found(kind: &Kind) -> String {
    match kind {
        Kind::Table(_) => "a section".into(),
        Kind::Array(_) => "a list".into(),
        Kind::Str(s) => format!("string {s:?}"),
        Kind::Int(i) => format!("integer {i}"),
        Kind::Float(f) => format!("float {f}"),
        Kind::Bool(b) => format!("boolean {b}"),
        Kind::Datetime(d) => format!("date-time {d}"),
        Kind::Env(s) => format!("{s:?}"),
    }
}

/// A value of the tree.
pub(super) struct NodeDe<'a>(pub &'a Node);

/// A piece of text (an environment value or one item of its list), typed on demand.
struct TextDe<'a>(&'a str);

macro_rules! integers {
    ($($method:ident $visit:ident $t:ty),*) => {$(
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
            let n: i128 = match &self.0.kind {
                Kind::Int(i) => i128::from(*i),
                Kind::Env(s) => match s.parse() {
                    Ok(n) => n,
                    Err(_) => return err(format!("expected a whole number, found {s:?}")),
                },
                other => return err(format!("expected a whole number, found {}", found(other))),
            };
            match <$t>::try_from(n) {
                Ok(n) => v.$visit(n.into()),
                Err(_) => err(format!(
                    "{n} is out of range ({} to {})",
                    <$t>::MIN,
                    <$t>::MAX
                )),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for NodeDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match &self.0.kind {
            Kind::Table(entries) => v.visit_map(Entries {
                iter: entries.iter(),
                value: None,
            }),
            Kind::Array(items) => v.visit_seq(Items(items.iter())),
            Kind::Str(s) | Kind::Env(s) | Kind::Datetime(s) => v.visit_str(s),
            Kind::Int(i) => v.visit_i64(*i),
            Kind::Float(f) => v.visit_f64(*f),
            Kind::Bool(b) => v.visit_bool(*b),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match &self.0.kind {
            Kind::Bool(b) => v.visit_bool(*b),
            Kind::Env(s) => TextDe(s).deserialize_bool(v),
            other => err(format!("expected true or false, found {}", found(other))),
        }
    }

    integers!(
        deserialize_u8 visit_u64 u8, deserialize_u16 visit_u64 u16, deserialize_u32 visit_u64 u32,
        deserialize_u64 visit_u64 u64, deserialize_i8 visit_i64 i8, deserialize_i16 visit_i64 i16,
        deserialize_i32 visit_i64 i32, deserialize_i64 visit_i64 i64
    );

    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match &self.0.kind {
            Kind::Float(f) => v.visit_f64(*f),
            Kind::Int(i) => v.visit_f64(*i as f64),
            Kind::Env(s) => match s.parse() {
                Ok(f) => v.visit_f64(f),
                Err(_) => err(format!("expected a number, found {s:?}")),
            },
            other => err(format!("expected a number, found {}", found(other))),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(v)
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match &self.0.kind {
            Kind::Str(s) | Kind::Env(s) => v.visit_str(s),
            other => err(format!("expected a string, found {}", found(other))),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        // TOML has no null: a key that is present has a value.
        v.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match &self.0.kind {
            Kind::Array(items) => v.visit_seq(Items(items.iter())),
            Kind::Env(s) => TextDe(s).deserialize_seq(v),
            other => err(format!("expected a list, found {}", found(other))),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match &self.0.kind {
            Kind::Table(entries) => v.visit_map(Entries {
                iter: entries.iter(),
                value: None,
            }),
            Kind::Array(_) => {
                err("expected a section, found a list (write [section], not [[section]])")
            }
            other => err(format!("expected a section, found {}", found(other))),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        match &self.0.kind {
            Kind::Str(s) | Kind::Env(s) => TextDe(s).deserialize_enum(_name, variants, v),
            other => err(format!(
                "expected one of {}, found {}",
                variants.join(", "),
                found(other)
            )),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i128 u128 bytes byte_buf unit unit_struct tuple tuple_struct
    }
}

macro_rules! text_numbers {
    ($($method:ident),*) => {$(
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
            let node = Node {
                kind: Kind::Env(self.0.to_string()),
                // Not used: errors are located by their key path.
                origin: super::tree::Origin::Env(String::new()),
            };
            de::Deserializer::$method(NodeDe(&node), v)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for TextDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_str(self.0)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.0 {
            "true" => v.visit_bool(true),
            "false" => v.visit_bool(false),
            s => err(format!("expected true or false, found {s:?}")),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        v.visit_newtype_struct(self)
    }

    /// `a, b,c` is three items; an empty value an empty list.
    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let items: Vec<&str> = if self.0.trim().is_empty() {
            Vec::new()
        } else {
            self.0.split(',').map(str::trim).collect()
        };
        v.visit_seq(TextItems(items.into_iter()))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        if !variants.contains(&self.0) {
            return err(not_one_of(self.0, variants));
        }
        v.visit_enum(Variant(self.0))
    }

    fn deserialize_map<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, DeError> {
        err(format!(
            "expected a section, found {:?} (set its keys one by one)",
            self.0
        ))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(v)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_unit()
    }

    // Numbers: the same strict parsing as for environment text in the tree.
    text_numbers!(
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_f32,
        deserialize_f64
    );

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct tuple tuple_struct identifier
    }
}

struct Items<'a>(std::slice::Iter<'a, Node>);

impl<'de> SeqAccess<'de> for Items<'_> {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        self.0
            .next()
            .map(|n| seed.deserialize(NodeDe(n)))
            .transpose()
    }
}

struct TextItems<'a>(std::vec::IntoIter<&'a str>);

impl<'de> SeqAccess<'de> for TextItems<'_> {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        self.0
            .next()
            .map(|s| seed.deserialize(TextDe(s)))
            .transpose()
    }
}

struct Entries<'a> {
    iter: std::slice::Iter<'a, (String, Node)>,
    value: Option<&'a Node>,
}

impl<'de> MapAccess<'de> for Entries<'_> {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.iter.next() {
            Some((k, n)) => {
                self.value = Some(n);
                let key: StrDeserializer<'_, DeError> = k.as_str().into_deserializer();
                seed.deserialize(key).map(Some)
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let n = self.value.take().expect("value after key");
        seed.deserialize(NodeDe(n))
    }
}

/// A unit variant named by a string.
struct Variant<'a>(&'a str);

impl<'de> EnumAccess<'de> for Variant<'_> {
    type Error = DeError;
    type Variant = UnitOnly;
    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, UnitOnly), DeError> {
        let key: StrDeserializer<'_, DeError> = self.0.into_deserializer();
        Ok((seed.deserialize(key)?, UnitOnly))
    }
}

struct UnitOnly;

impl<'de> de::VariantAccess<'de> for UnitOnly {
    type Error = DeError;
    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _: T) -> Result<T::Value, DeError> {
        err("expected a plain value")
    }
    fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, DeError> {
        err("expected a plain value")
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, DeError> {
        err("expected a plain value")
    }
}
