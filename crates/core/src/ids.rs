//! Typed identifiers. A function never takes a bare `String` id.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::Ulid;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} must be {rule}")]
pub struct InvalidId {
    kind: &'static str,
    rule: &'static str,
}

/// ULIDs that increase within a process even inside one millisecond, so "newest first"
/// and "creation order" hold for everything made here.
pub fn monotonic_ulid() -> Ulid {
    static GENERATOR: std::sync::Mutex<Option<ulid::Generator>> = std::sync::Mutex::new(None);
    let mut g = GENERATOR.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // The generator only fails when 2^80 ids were made in one millisecond.
    g.get_or_insert_with(ulid::Generator::new).generate().unwrap_or_else(|_| Ulid::new())
}

macro_rules! ulid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Ulid);

        impl $name {
            /// A new id, time-ordered: ids made later in this process sort later, even
            /// within one millisecond.
            pub fn generate() -> Self {
                Self(monotonic_ulid())
            }

            /// The id for a given instant and entropy; used to build key ranges for time windows.
            pub fn from_parts(timestamp_ms: u64, random: u128) -> Self {
                Self(Ulid::from_parts(timestamp_ms, random))
            }

            /// Milliseconds since the Unix epoch encoded in the id.
            pub fn timestamp_ms(&self) -> u64 {
                self.0.timestamp_ms()
            }

            /// The smallest id of the given millisecond.
            pub fn min_at(timestamp_ms: u64) -> Self {
                Self(Ulid::from_parts(timestamp_ms, 0))
            }

            /// The id's low 53 bits as a positive integer, for APIs whose ids are integers
            /// (ExtremeCloud IQ's): a JSON reader that holds numbers as doubles
            /// (JavaScript, jq) keeps it exact. They are random bits, or a count within one
            /// millisecond, so two of a tenant's ids share them only by a 2^-53 chance.
            pub fn integer(&self) -> i64 {
                (self.0.0 & ((1u128 << 53) - 1)) as i64
            }

            /// The id's low 63 bits as a positive integer: the integer ids were before
            /// [`Self::integer`], still accepted from clients that kept one.
            pub fn low_bits(&self) -> i64 {
                (self.0.0 & u128::from(i64::MAX as u64)) as i64
            }

            /// The id's 80 random bits (for a ULID made from a hash, that hash's bits).
            pub fn random_bits(&self) -> u128 {
                self.0.random()
            }

            /// The smallest id above this one.
            pub fn successor(&self) -> Self {
                Self(Ulid(self.0.0.saturating_add(1)))
            }

            /// The largest id of the given millisecond.
            pub fn max_at(timestamp_ms: u64) -> Self {
                Self(Ulid::from_parts(timestamp_ms, u128::MAX))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                // A first character above 7 is past the largest ULID: the decoder drops its
                // high bits, so `81ARZ…` read as `01ARZ…`, one id answering to several
                // paths and cursors.
                let in_range = s.as_bytes().first().is_some_and(|b| (b'0'..=b'7').contains(b));
                Ulid::from_string(s)
                    .ok()
                    .filter(|_| in_range)
                    .map(Self)
                    .ok_or(InvalidId { kind: $kind, rule: "a 26-character ULID" })
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

ulid_id!(
    /// A hook's id: a ULID, assigned at creation.
    HookId,
    "hook id"
);
ulid_id!(
    /// A delivery's id: a ULID, so a time window of deliveries is a key range. It is also
    /// the `webhook-id` the receiver sees, stable across retries.
    DeliveryId,
    "delivery id"
);

ulid_id!(
    /// A replay job's id: a ULID, assigned when the replay is asked for.
    ReplayId,
    "replay id"
);

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $rule:literal, $valid:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let valid: fn(&str) -> bool = $valid;
                if valid(s) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(InvalidId { kind: $kind, rule: $rule })
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

string_id!(
    /// A tenant: the customer workspace a token acts for. Every read and write is scoped to one.
    TenantId,
    "tenant",
    "1-64 characters of [A-Za-z0-9._-]",
    |s| (1..=64).contains(&s.len()) && s.chars().all(is_name_char)
);
string_id!(
    /// A hook's name: unique in its tenant and immutable after creation (HYPR's rule).
    HookName,
    "name",
    "1-64 characters of [A-Za-z0-9._-]",
    |s| (1..=64).contains(&s.len()) && s.chars().all(is_name_char)
);
string_id!(
    /// An event's id as it sat on the bus (EventBridge assigns UUIDs; producers putting events
    /// directly may bring their own).
    EventId,
    "event id",
    "1-128 printable ASCII characters without '#'",
    |s| (1..=128).contains(&s.len()) && s.chars().all(|c| c.is_ascii_graphic() && c != '#')
);

impl EventId {
    /// A new id in the form EventBridge uses (a UUID), of version 7 (RFC 9562): its first 48
    /// bits are the milliseconds since the Unix epoch when it was made, the rest random. So
    /// the deliveries of events published in the same second can be dated to the
    /// millisecond ([`EventId::made_at_ms`]); with version 4 ids they sorted at random
    /// within their second, and each new delivery record went into an index page of its own
    /// (BENCHMARKS.md).
    pub fn generate() -> Self {
        Self::generate_at(chrono::Utc::now())
    }

    /// A new id as [`EventId::generate`] makes them, saying it was made `at`: the publish
    /// request's time, which is also the event's `time` when the producer gives none, so
    /// the id's millisecond always falls in the second that `time` names.
    pub fn generate_at(at: chrono::DateTime<chrono::Utc>) -> Self {
        let ms = u64::try_from(at.timestamp_millis()).unwrap_or(0);
        let mut b: [u8; 16] = rand::random();
        b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        // Version 7 and the RFC 9562 variant bits.
        b[6] = (b[6] & 0x0f) | 0x70;
        b[8] = (b[8] & 0x3f) | 0x80;
        // Hex-encoded at once: formatting it byte by byte was 3 % of the CPU of publishing
        // (an allocation per byte).
        let hex = hex::encode(b);
        let mut s = String::with_capacity(36);
        for (i, part) in [0..8, 8..12, 12..16, 16..20, 20..32].into_iter().enumerate() {
            if i > 0 {
                s.push('-');
            }
            s.push_str(&hex[part]);
        }
        Self(s)
    }

    /// When the id says it was made, in milliseconds since the Unix epoch: for a UUID of
    /// version 7 written as [`EventId::generate`] writes them (lower-case, hyphenated);
    /// `None` for any other id, which says nothing of its time.
    pub fn made_at_ms(&self) -> Option<u64> {
        let s = self.0.as_bytes();
        let hyphens = [8, 13, 18, 23];
        let well_formed = s.len() == 36
            && s.iter().enumerate().all(|(i, c)| {
                if hyphens.contains(&i) { *c == b'-' } else { c.is_ascii_digit() || (b'a'..=b'f').contains(c) }
            })
            && s[14] == b'7'
            && matches!(s[19], b'8' | b'9' | b'a' | b'b');
        if !well_formed {
            return None;
        }
        // The 48 bits are the first 8 and the next 4 hex digits, either side of a hyphen;
        // read in place, as ingest reads them for every event.
        let high = u64::from_str_radix(&self.0[..8], 16).ok()?;
        let low = u64::from_str_radix(&self.0[9..13], 16).ok()?;
        Some((high << 16) | low)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_rejects_key_separator_and_empty() {
        assert!("acme".parse::<TenantId>().is_ok());
        assert!("ac#me".parse::<TenantId>().is_err());
        assert!("".parse::<TenantId>().is_err());
        assert!("a".repeat(65).parse::<TenantId>().is_err());
    }

    #[test]
    fn delivery_ids_sort_by_time() {
        let early = DeliveryId::from_parts(1_000, 5);
        let late = DeliveryId::from_parts(2_000, 1);
        assert!(early < late);
        assert!(DeliveryId::min_at(2_000) <= late && late <= DeliveryId::max_at(2_000));
        assert_eq!(early.to_string().parse::<DeliveryId>().unwrap(), early);
    }

    #[test]
    fn an_id_is_read_only_in_its_own_spelling() {
        let id = HookId::generate();
        let text = id.to_string();
        assert_eq!(text.to_lowercase().parse::<HookId>().unwrap(), id, "either case");
        for first in ['8', 'G', 'R', 'Z'] {
            let alias = format!("{first}{}", &text[1..]);
            assert!(alias.parse::<HookId>().is_err(), "{alias} read as {text}");
        }
        assert!("7ZZZZZZZZZZZZZZZZZZZZZZZZZ".parse::<DeliveryId>().is_ok(), "the largest ULID");
    }

    #[test]
    fn generated_event_ids_are_uuid_v7_made_now() {
        let before = chrono::Utc::now().timestamp_millis() as u64;
        let id = EventId::generate();
        let after = chrono::Utc::now().timestamp_millis() as u64;
        let s = id.as_str();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "7");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"));
        assert!(s.parse::<EventId>().is_ok());
        for (i, c) in s.char_indices() {
            if matches!(i, 8 | 13 | 18 | 23) {
                assert_eq!(c, '-', "{s}");
            } else {
                assert!(c.is_ascii_hexdigit() && !c.is_ascii_uppercase(), "{s}");
            }
        }
        let made = id.made_at_ms().unwrap();
        assert!((before..=after).contains(&made), "{made} not within {before}..={after}");
        let at = chrono::DateTime::from_timestamp_millis(1_764_930_007_417).unwrap();
        assert_eq!(EventId::generate_at(at).made_at_ms(), Some(1_764_930_007_417));
        assert_ne!(EventId::generate(), id, "random");
    }

    #[test]
    fn only_a_version_7_uuid_says_when_it_was_made() {
        let v7 = |s: &str| s.parse::<EventId>().unwrap().made_at_ms();
        // 0x0193_6f3b_1d40 ms = 2024-11-27T20:06:05.376Z.
        assert_eq!(v7("01936f3b-1d40-7abc-9def-0123456789ab"), Some(0x0193_6f3b_1d40));
        for other in [
            "01936f3b-1d40-4abc-9def-0123456789ab",  // version 4
            "01936f3b-1d40-7abc-cdef-0123456789ab",  // another variant
            "01936F3B-1D40-7ABC-9DEF-0123456789AB",  // not as generated
            "01936f3b1d407abc9def0123456789ab",      // no hyphens
            "01936f3b-1d40-7abc-9def-0123456789ab-", // too long
            "order-7-paid",
            "01936f3b-1d40-7abc-9def-0123456789ag",
        ] {
            assert_eq!(v7(other), None, "{other}");
        }
    }
}
