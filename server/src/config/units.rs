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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Doc {
        size: ByteSize,
        time: HumanDuration,
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
