//! The units a config file writes by hand: sizes (`"16 MiB"`, or a number of
//! bytes) and durations (`"30s"`, `"500ms"`), with errors that say what was
//! expected.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A number of bytes, written as an integer or a string such as `"16 MiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"16 MiB\", \"512 KiB\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse::<bytesize::ByteSize>().map(|s| ByteSize(s.as_u64())).map_err(|_| {
                    E::custom(format!(
                        "invalid size {v:?}: expected a size such as \"16 MiB\", \"512 KiB\" or a number of bytes"
                    ))
                })
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// A duration written as a string such as `"30s"`, `"500ms"` or `"2m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30s\", \"500ms\" or \"2m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                humantime::parse_duration(v).map(HumanDuration).map_err(|e| {
                    E::custom(format!(
                        "invalid duration {v:?} ({e}): expected a duration such as \"30s\", \"500ms\" or \"2m\""
                    ))
                })
            }
        }
        deserializer.deserialize_str(DurationVisitor)
    }
}

/// Which pages may open WebSockets (`allowed_origins`): a list of origins
/// (`[]` or absent: any), `"any"`, or `"same-origin"` (the `Origin` header's
/// host and port equal the `Host` header).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OriginPolicy {
    /// Every origin (and the server strips cookies from cross-origin
    /// handshakes, so cookie-based auth cannot be ridden by another site).
    #[default]
    Any,
    /// Pages of the server's own host only.
    SameOrigin,
    /// These origins (compared case-insensitively); `"*"` in the list: any.
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for OriginPolicy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PolicyVisitor;
        impl<'de> Visitor<'de> for PolicyVisitor {
            type Value = OriginPolicy;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"same-origin\", \"any\" or a list of origins such as [\"https://example.com\"]")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OriginPolicy, E> {
                match v {
                    "same-origin" => Ok(OriginPolicy::SameOrigin),
                    "any" => Ok(OriginPolicy::Any),
                    other => Err(E::custom(format!(
                        "allowed_origins = {other:?}: expected \"same-origin\", \"any\" or a list of origins"
                    ))),
                }
            }
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OriginPolicy, A::Error> {
                let mut origins = Vec::new();
                while let Some(origin) = seq.next_element::<String>()? {
                    origins.push(origin);
                }
                Ok(if origins.is_empty() {
                    OriginPolicy::Any
                } else {
                    OriginPolicy::List(origins)
                })
            }
        }
        deserializer.deserialize_any(PolicyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Doc {
        size: ByteSize,
        time: HumanDuration,
    }

    #[test]
    fn origin_policies_are_a_word_or_a_list() {
        #[derive(Deserialize)]
        struct Doc {
            o: OriginPolicy,
        }
        let parse = |text: &str| toml::from_str::<Doc>(text).map(|d| d.o);
        assert_eq!(
            parse("o = \"same-origin\"").unwrap(),
            OriginPolicy::SameOrigin
        );
        assert_eq!(parse("o = []").unwrap(), OriginPolicy::Any);
        assert_eq!(
            parse("o = [\"https://a.example\"]").unwrap(),
            OriginPolicy::List(vec!["https://a.example".into()])
        );
        assert!(parse("o = \"sometimes\"").is_err());
    }

    #[test]
    fn sizes_and_durations_read_human_units() {
        let doc: Doc = toml::from_str("size = \"1 MiB\"\ntime = \"1500ms\"\n").unwrap();
        assert_eq!(doc.size, ByteSize(1 << 20));
        assert_eq!(doc.time, HumanDuration(Duration::from_millis(1500)));
        let doc: Doc = toml::from_str("size = 8192\ntime = \"2m\"\n").unwrap();
        assert_eq!(doc.size, ByteSize(8192));
        assert!(toml::from_str::<Doc>("size = -1\ntime = \"1s\"\n").is_err());
    }
}
