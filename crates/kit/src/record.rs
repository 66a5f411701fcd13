//! Decoding the versioned JSON records the services read from Kafka (trades, klines, heads,
//! back-fill requests, heartbeats, restart events), once for all of them, so that a
//! message that cannot be read is refused with the same reason wherever it arrives; the
//! reason goes to the dead-letter topic's `x-error` header.
//!
//! It checks only that the payload is there, is JSON of the record's shape, and carries
//! the schema version the reader expects; what a record's fields may hold is for its reader
//! to check.

use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Why a payload is not a readable record of the expected schema.
#[derive(Debug, thiserror::Error)]
pub enum Undecodable {
    /// No payload (a tombstone), or zero bytes.
    #[error("empty payload")]
    Empty,
    /// Not JSON, or JSON of another shape.
    #[error("not a {what} record: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
    /// A record of a schema version this reader does not know.
    #[error("{what} schema v{got} is not supported (expected v{expected})")]
    Schema {
        what: &'static str,
        got: u32,
        expected: u32,
    },
}

/// Just the version of a record, read when the whole record cannot be.
#[derive(Deserialize)]
struct Version {
    v: u32,
}

/// Reads `payload` as a `what` record (named in the errors, e.g. "heartbeat") of schema
/// version `expected`; `version` gives a decoded record's `v`.
///
/// A record of another version is refused as such even when it no longer fits `T` (a
/// later schema may have renamed or added fields): its `v` is read on its own before the
/// payload is called malformed.
pub fn decode<T: DeserializeOwned>(
    payload: Option<&[u8]>,
    what: &'static str,
    expected: u32,
    version: impl Fn(&T) -> u32,
) -> Result<T, Undecodable> {
    let payload = payload
        .filter(|p| !p.is_empty())
        .ok_or(Undecodable::Empty)?;
    let schema = |got| Undecodable::Schema {
        what,
        got,
        expected,
    };
    match serde_json::from_slice::<T>(payload) {
        Ok(record) if version(&record) == expected => Ok(record),
        Ok(record) => Err(schema(version(&record))),
        Err(source) => match serde_json::from_slice::<Version>(payload) {
            Ok(Version { v }) if v != expected => Err(schema(v)),
            _ => Err(Undecodable::Json { what, source }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Ping {
        v: u32,
        name: String,
    }

    fn ping(payload: Option<&[u8]>) -> Result<Ping, Undecodable> {
        decode(payload, "ping", 1, |p: &Ping| p.v)
    }

    #[test]
    fn a_record_of_the_expected_version_is_read() {
        let p = ping(Some(br#"{"v":1,"name":"a","extra":true}"#)).expect("v1");
        assert_eq!((p.v, p.name.as_str()), (1, "a"));
    }

    #[test]
    fn no_payload_or_zero_bytes_is_empty() {
        for payload in [None, Some(&b""[..])] {
            let err = ping(payload).expect_err("empty");
            assert!(matches!(err, Undecodable::Empty), "{err:?}");
            assert_eq!(err.to_string(), "empty payload");
        }
    }

    #[test]
    fn garbage_and_other_shapes_are_not_records_and_say_why() {
        for payload in [
            &b"{oops"[..],
            br#"{"v":1}"#,
            br#"[1,2]"#,
            br#"{"name":"a"}"#,
        ] {
            let err = ping(Some(payload)).expect_err("malformed");
            assert!(
                matches!(err, Undecodable::Json { what: "ping", .. }),
                "{err:?}"
            );
            assert!(err.to_string().starts_with("not a ping record: "), "{err}");
        }
        let err = ping(Some(br#"{"v":1}"#)).expect_err("no name");
        assert!(err.to_string().contains("missing field `name`"), "{err}");
    }

    #[test]
    fn another_version_is_refused_as_such_even_when_its_shape_changed() {
        for payload in [&br#"{"v":2,"name":"a"}"#[..], br#"{"v":2,"renamed":"a"}"#] {
            let err = ping(Some(payload)).expect_err("v2");
            assert!(
                matches!(
                    err,
                    Undecodable::Schema {
                        what: "ping",
                        got: 2,
                        expected: 1
                    }
                ),
                "{err:?}"
            );
            assert_eq!(
                err.to_string(),
                "ping schema v2 is not supported (expected v1)"
            );
        }
        let err = ping(Some(br#"{"v":0,"name":"a"}"#)).expect_err("v0");
        assert!(err.to_string().contains("v0 is not supported"), "{err}");
    }
}
