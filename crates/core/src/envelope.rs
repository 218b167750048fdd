//! The EventBridge-shaped envelope every receiver gets (HYPR's shape), and what a
//! producer puts on the bus.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::ids::{EventId, TenantId};

/// The most one event may weigh on the bus, as on EventBridge (256 KiB per entry).
/// The emulator does not enforce it, so our code does.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// An event as it sits on the bus and as the receiver gets it: all nine EventBridge fields.
///
/// `detail` is kept as raw JSON so the producer's fields reach the receiver in their
/// order and spelling; only `tenant` and `site` are read from it, for routing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// Envelope format version; EventBridge writes `"0"`.
    pub version: String,
    /// The event id, assigned by the bus.
    pub id: EventId,
    /// The event type hooks match against.
    #[serde(rename = "detail-type")]
    pub detail_type: String,
    /// Who produced it, e.g. `idp.login`.
    pub source: String,
    /// The AWS account of the bus. Filled from configuration when the bus left it out
    /// (the emulator does); never required when parsing.
    #[serde(default)]
    pub account: String,
    /// When it happened, second precision as EventBridge writes it.
    #[serde(with = "bus_time")]
    pub time: DateTime<Utc>,
    /// The region of the bus.
    #[serde(default)]
    pub region: String,
    /// ARNs or other resource names the event concerns.
    #[serde(default)]
    pub resources: Vec<String>,
    /// The producer's payload, with `tenant` and, optionally, `site`.
    pub detail: Box<RawValue>,
}

/// The routing fields read from `detail`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Routing {
    /// Whose event it is; only that tenant's hooks can match it.
    pub tenant: TenantId,
    /// The site it happened in, for hooks scoped to sites. Left out, it has none; `null`
    /// is not a site and cannot be routed, as the API refuses it (routed as none, it went
    /// to every unscoped hook and skipped the scoped ones).
    #[serde(default, deserialize_with = "a_string")]
    pub site: Option<String>,
}

/// A field that, when present, is a string.
fn a_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

impl Routing {
    /// The routing of an envelope's JSON, as a delivery keeps it (only `detail`'s `tenant`
    /// and `site` are read), and whether it is the platform's test event
    /// ([`Envelope::is_test`]): one read for both.
    pub fn of_body(envelope: &str) -> Result<(Self, bool), EnvelopeError> {
        read_head::<Routing>(envelope).map_err(EnvelopeError::Routing)
    }

    /// [`Routing::of_body`] of an event kept since it was routed, read as the release that
    /// routed it read it: before `"site": null` was refused (bda3838) it was read as no
    /// site, and an event kept from then is routed so again rather than not at all.
    pub fn of_kept_body(envelope: &str) -> Result<(Self, bool), EnvelopeError> {
        Self::of_body(envelope).or_else(|e| read_head::<AsRoutedBefore>(envelope).map_err(|_| e))
    }
}

/// What routing reads of an envelope: its source and type, and `detail` as `D`.
#[derive(Deserialize)]
struct Head<D> {
    #[serde(default)]
    source: String,
    #[serde(default, rename = "detail-type")]
    detail_type: String,
    detail: D,
}

/// The routing of an envelope's JSON, its `detail` read as `D`, and whether it is the
/// platform's test event.
fn read_head<D: serde::de::DeserializeOwned + Into<Routing>>(envelope: &str) -> serde_json::Result<(Routing, bool)> {
    serde_json::from_str::<Head<D>>(envelope).map(|h| (h.detail.into(), is_test(&h.source, &h.detail_type)))
}

/// The routing fields as releases before bda3838 read them: `"site": null` as no site.
#[derive(Deserialize)]
struct AsRoutedBefore {
    tenant: TenantId,
    #[serde(default)]
    site: Option<String>,
}

impl From<AsRoutedBefore> for Routing {
    fn from(r: AsRoutedBefore) -> Self {
        Self { tenant: r.tenant, site: r.site }
    }
}

/// Why an envelope could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Not an EventBridge envelope.
    #[error("not an event envelope: {0}")]
    Shape(#[source] serde_json::Error),
    /// `detail.tenant` missing or invalid.
    #[error("detail has no valid tenant: {0}")]
    Routing(#[source] serde_json::Error),
}

fn is_test(source: &str, detail_type: &str) -> bool {
    source == crate::message::PLATFORM_SOURCE && detail_type == crate::message::event_type::HOOK_TEST
}

/// The largest event (as the bus measures it, [`BusEntry::size`]) the API puts straight on
/// the ingest queue; larger ones go through the bus, which takes up to 256 KiB, so a batch
/// of them never exceeds what one SQS request carries.
pub const DIRECT_MAX_BYTES: usize = 64 * 1024;

impl Envelope {
    /// Parses an envelope as the bus delivered it, filling a missing `account` and `region`.
    pub fn from_bus_json(bytes: &str, default_account: &str, default_region: &str) -> Result<Self, EnvelopeError> {
        let mut env: Envelope = serde_json::from_str(bytes).map_err(EnvelopeError::Shape)?;
        // Buses differ in how they space the JSON they hand on (the emulator's EventBridge
        // writes `", "` and `": "`); receivers get one canonical, compact form whichever
        // bus carried the event, and the producer's key order is kept.
        let compact = compact_json(env.detail.get());
        if compact.len() != env.detail.get().len() {
            env.detail = RawValue::from_string(compact).map_err(EnvelopeError::Shape)?;
        }
        if env.account.is_empty() {
            default_account.clone_into(&mut env.account);
        }
        if env.region.is_empty() {
            default_region.clone_into(&mut env.region);
        }
        Ok(env)
    }

    /// Whether this is the platform's test event (`POST /v1/hooks/{id}/test`), which goes to
    /// its one hook whatever the hook subscribes to. Producers cannot publish its source.
    pub fn is_test(&self) -> bool {
        is_test(&self.source, &self.detail_type)
    }

    /// `tenant` and `site` from `detail`.
    pub fn routing(&self) -> Result<Routing, EnvelopeError> {
        serde_json::from_str(self.detail.get()).map_err(EnvelopeError::Routing)
    }

    /// [`Envelope::routing`] of an event kept since it was routed, as
    /// [`Routing::of_kept_body`] reads it.
    pub fn kept_routing(&self) -> Result<Routing, EnvelopeError> {
        self.routing()
            .or_else(|e| serde_json::from_str::<AsRoutedBefore>(self.detail.get()).map(Routing::from).map_err(|_| e))
    }

    /// The exact bytes a receiver gets and the signature covers.
    pub fn to_body(&self) -> String {
        // Serialising plain strings, a timestamp and raw JSON cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What a producer publishes; the bus turns it into an [`Envelope`].
#[derive(Debug, Clone)]
pub struct BusEntry {
    /// The event type.
    pub detail_type: String,
    /// The producer.
    pub source: String,
    /// When it happened; the bus uses its own clock when absent.
    pub time: Option<DateTime<Utc>>,
    /// Resources the event concerns.
    pub resources: Vec<String>,
    /// The payload, a JSON object including `tenant`.
    pub detail: Box<RawValue>,
}

impl BusEntry {
    /// The envelope the bus would deliver for this entry.
    pub fn into_envelope(self, id: EventId, account: &str, region: &str, now: DateTime<Utc>) -> Envelope {
        Envelope {
            version: "0".to_owned(),
            id,
            detail_type: self.detail_type,
            source: self.source,
            account: account.to_owned(),
            time: self.time.unwrap_or(now),
            region: region.to_owned(),
            resources: self.resources,
            detail: self.detail,
        }
    }

    /// `Err(TooLarge)`, saying how large it is, when it weighs more than the bus takes
    /// ([`MAX_EVENT_BYTES`]); both buses and the API check with this one rule.
    pub fn fits(&self) -> crate::Result<()> {
        let size = self.size();
        if size > MAX_EVENT_BYTES {
            return Err(crate::Error::TooLarge(format!(
                "{size} bytes; the bus takes at most {MAX_EVENT_BYTES} per event"
            )));
        }
        Ok(())
    }

    /// The size EventBridge charges against its 256 KiB limit: detail-type, source,
    /// detail, resources and time, as UTF-8.
    pub fn size(&self) -> usize {
        self.detail_type.len()
            + self.source.len()
            + self.detail.get().len()
            + self.resources.iter().map(String::len).sum::<usize>()
            + if self.time.is_some() { 14 } else { 0 }
    }
}

/// Removes insignificant whitespace from valid JSON text, keeping every key in its place
/// and every string byte for byte (re-encoding through a map would sort the keys).
pub fn compact_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_ascii_whitespace() {
            out.push(c);
        }
    }
    out
}

/// Serde for EventBridge's time format: RFC 3339, UTC, whole seconds.
pub mod bus_time {
    use super::*;
    use serde::{Deserializer, Serializer};

    /// Writes `2026-11-22T10:00:00Z`.
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true))
    }

    /// Reads any RFC 3339 time.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s).map(|t| t.with_timezone(&Utc)).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYPR: &str = r#"{"version":"0","id":"e0932981-65a5-1344-f27e-bcc395837a59","detail-type":"log","source":"hypr_event_hooks","account":"527127228484","time":"2024-07-23T16:01:04Z","region":"us-east-1","resources":[],"detail":{"tenant":"mytenant","data":{"z":1,"a":2}}}"#;

    #[test]
    fn only_the_platforms_test_event_is_the_test_event() {
        let body = |source: &str| {
            format!(
                r#"{{"version":"0","id":"e","detail-type":"hook.test","source":"{source}","account":"1","time":"2026-01-01T00:00:00Z","region":"r","resources":[],"detail":{{"tenant":"t"}}}}"#
            )
        };
        assert!(Routing::of_body(&body("hookbridge")).unwrap().1);
        assert!(!Routing::of_body(&body("crm")).unwrap().1, "a producer's event of that type");
        let parsed = Envelope::from_bus_json(&body("hookbridge"), "1", "r").unwrap();
        assert!(parsed.is_test());
    }

    #[test]
    fn an_envelopes_routing_reads_from_its_json_alone() {
        let sited = HYPR.replace(r#""tenant":"mytenant","#, r#""tenant":"mytenant","site":"hq","#);
        let (r, _) = Routing::of_body(&sited).unwrap();
        assert_eq!((r.tenant.as_str(), r.site.as_deref()), ("mytenant", Some("hq")));
        assert_eq!(Routing::of_body(HYPR).unwrap().0.site, None);
        assert!(Routing::of_body(r#"{"detail":{"site":"hq"}}"#).is_err(), "no tenant");
    }

    #[test]
    fn hypr_envelope_round_trips_byte_for_byte() {
        let env = Envelope::from_bus_json(HYPR, "x", "y").unwrap();
        assert_eq!(env.to_body(), HYPR);
        assert_eq!(env.routing().unwrap().tenant.as_str(), "mytenant");
    }

    #[test]
    fn missing_account_and_region_are_filled() {
        let no_account = HYPR.replace(r#""account":"527127228484","#, "").replace(r#""region":"us-east-1","#, "");
        let env = Envelope::from_bus_json(&no_account, "123456789012", "eu-west-1").unwrap();
        assert_eq!(env.account, "123456789012");
        assert_eq!(env.region, "eu-west-1");
        assert!(env.to_body().contains(r#""account":"123456789012""#));
    }

    #[test]
    fn detail_without_tenant_is_a_routing_error() {
        let env = Envelope::from_bus_json(&HYPR.replace(r#""tenant":"mytenant","#, ""), "a", "r").unwrap();
        assert!(matches!(env.routing(), Err(EnvelopeError::Routing(_))));
    }

    /// As docs/api.md says of events put on the bus by a producer: a tenant or a site that
    /// is not a string cannot be routed (ingest dead-letters it).
    #[test]
    fn a_tenant_or_site_that_is_not_a_string_is_a_routing_error() {
        for routing in [
            r#""tenant":7,"#,
            r#""tenant":"mytenant","site":{"id":"hq"},"#,
            r#""tenant":"mytenant","site":42,"#,
            r#""tenant":"mytenant","site":null,"#,
        ] {
            let env = Envelope::from_bus_json(&HYPR.replace(r#""tenant":"mytenant","#, routing), "a", "r").unwrap();
            assert!(matches!(env.routing(), Err(EnvelopeError::Routing(_))), "{routing}");
        }
        let sited = HYPR.replace(r#""tenant":"mytenant","#, r#""tenant":"mytenant","site":"hq","#);
        assert_eq!(Envelope::from_bus_json(&sited, "a", "r").unwrap().routing().unwrap().site.as_deref(), Some("hq"));
    }

    #[test]
    fn detail_spacing_from_the_bus_is_canonicalised() {
        let spaced = HYPR.replace(
            r#"{"tenant":"mytenant","data":{"z":1,"a":2}}"#,
            r#"{"tenant": "mytenant", "data": {"z": 1, "a": 2}}"#,
        );
        assert_ne!(spaced, HYPR);
        assert_eq!(Envelope::from_bus_json(&spaced, "x", "y").unwrap().to_body(), HYPR);
    }

    #[test]
    fn compact_json_keeps_order_and_strings() {
        assert_eq!(
            compact_json("{ \"z\" : 1,\n \"a\": [1, 2], \"s\": \"a b \\\" c\" }"),
            "{\"z\":1,\"a\":[1,2],\"s\":\"a b \\\" c\"}"
        );
    }

    #[test]
    fn not_an_envelope_is_a_shape_error() {
        assert!(matches!(Envelope::from_bus_json("{\"hello\":1}", "a", "r"), Err(EnvelopeError::Shape(_))));
    }
}
