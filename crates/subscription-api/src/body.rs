//! JSON bodies: the content type checked (415), the size capped (413), and parse errors
//! named by the field at fault (400).

use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The largest body accepted: ten events of 256 KiB each, with room for the framing.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The bytes a JSON response body of this text takes in the function's answer to API
/// Gateway, whose 6 MB limit counts it as a JSON string: each `"` and `\` in it (every
/// key's quotes, every escape) written twice. A listing held to a size measured as sent
/// could still be refused by Lambda, as a 500.
pub fn as_answered(json: &str) -> usize {
    json.len() + json.bytes().filter(|b| matches!(b, b'"' | b'\\')).count()
}

/// The raw JSON body of a request.
#[derive(Debug)]
pub struct JsonBody(pub axum::body::Bytes);

/// Whether the body is JSON as the API reads it: `application/json` (or `…+json`), in
/// UTF-8 (RFC 8259), not compressed. A `charset` of another encoding, or a body sent with a
/// `Content-Encoding` (gzip), was read as it came and answered as malformed JSON at line 1,
/// which misleads; both are `415` (RFC 9110, 15.5.16).
fn is_json(req: &Request) -> bool {
    let Some(content_type) = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut parts = content_type.split(';');
    let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let json = media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"));
    let utf8 = parts.filter_map(|p| p.split_once('=')).all(|(name, value)| {
        let charset = value.trim().trim_matches('"');
        !name.trim().eq_ignore_ascii_case("charset")
            || charset.eq_ignore_ascii_case("utf-8")
            || charset.eq_ignore_ascii_case("utf8")
    });
    let coded = req.headers().get_all(header::CONTENT_ENCODING).iter().any(|v| {
        v.to_str().map_or(true, |codings| {
            codings.split(',').map(str::trim).any(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
        })
    });
    json && utf8 && !coded
}

/// How much of an oversized body is read (and dropped) before answering 413, so a client
/// still sending gets the answer instead of a connection reset mid-upload. Beyond this the
/// connection is cut.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

async fn read(req: Request) -> Result<axum::body::Bytes, ApiError> {
    read_body(req.into_body()).await
}

/// A body read whole, up to [`MAX_BODY_BYTES`] (413 past it). For handlers that take the
/// body unread, so the caller is checked before anything is read from it.
pub async fn read_body(mut body: axum::body::Body) -> Result<axum::body::Bytes, ApiError> {
    use http_body_util::BodyExt;
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            if seen > MAX_BODY_BYTES {
                break;
            }
            // Cut off mid-upload (the client went away): what arrived is not what was sent,
            // and none of it would read as no body at all, which some requests take as
            // "the defaults" (a rotation without a body makes a new secret).
            return Err(ApiError::field("body", "was cut off before its end"));
        };
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= MAX_BODY_BYTES {
                buf.extend_from_slice(&data);
            } else if seen > DRAIN_LIMIT {
                break;
            }
        }
    }
    if seen > MAX_BODY_BYTES {
        return Err(ApiError::TooLarge(format!("the body is larger than {MAX_BODY_BYTES} bytes")));
    }
    Ok(buf.into())
}

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(&req) {
            return Err(ApiError::UnsupportedMediaType);
        }
        Ok(Self(read(req).await?))
    }
}

/// A JSON body that may be left out entirely (an empty body is `None`).
#[derive(Debug)]
pub struct OptionalJsonBody(pub Option<axum::body::Bytes>);

impl<S: Send + Sync> FromRequest<S> for OptionalJsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(&req);
        let bytes = match read(req).await {
            // Not empty, so not left out: its type is checked before its size, as for
            // every body.
            Err(ApiError::TooLarge(_)) if !json => return Err(ApiError::UnsupportedMediaType),
            read => read?,
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        if !json {
            return Err(ApiError::UnsupportedMediaType);
        }
        Ok(Self(Some(bytes)))
    }
}

/// Query parameters, with a problem document (not plain text) when they do not parse.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Self(q.0))
            .map_err(|e| ApiError::field("query", e.body_text()))
    }
}

/// The query of a route that takes none: any parameter is `400` naming `query`. Behind
/// API Gateway, which decodes the path it hands on, a name with `%3F` in it arrives as a
/// shorter name and a query: `DELETE /v1/event-types/a%3Fb` would have forgotten `a`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

/// [`parse`] for a body that is one object: serde reads a struct from an array too, by
/// position, so `[true, "https://…"]` was taken as a webhook's fields in order.
pub fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::field("body", "must be a JSON object"));
    }
    parse(bytes)
}

/// Bodies larger than this are counted before their items are read ([`more_items_than`]).
const COUNTED_PAST: usize = 64 * 1024;

/// Whether `bytes`, a JSON array, holds more than `most` items, counted without keeping
/// any: 3 MiB of `{},` is a million and a half items, and kept before their number was
/// checked (as values, or as their raw text), tens of MB for one request,
/// against the API function's 256 MB. Only a body past [`COUNTED_PAST`] is counted (a
/// smaller one cannot hold enough to matter, and publishing, the hot path, is spared the
/// second reading); one that does not parse is left to the parse that names its fault.
pub fn more_items_than(bytes: &[u8], most: usize) -> bool {
    bytes.len() > COUNTED_PAST
        && bytes.trim_ascii_start().first() == Some(&b'[')
        && serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(bytes).is_ok_and(|items| items.len() > most)
}

/// [`parse`] for a body that is an array of objects (see [`parse_object`]), each item's
/// fields named from its place (`[1].url`).
pub fn parse_objects<T: DeserializeOwned>(bytes: &[u8]) -> Result<Vec<T>, ApiError> {
    let items: Vec<serde_json::Value> = parse(bytes)?;
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            if !item.is_object() {
                return Err(ApiError::field(format!("[{i}]"), "must be a JSON object"));
            }
            from_value(item, &format!("[{i}]"))
        })
        .collect()
}

/// Parses `T`, naming the path of the first field that does not fit.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        ApiError::field(field, e.inner().to_string())
    })?;
    de.end().map_err(|e| ApiError::field("body", e.to_string()))?;
    Ok(value)
}

/// Parses a JSON value already read.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value, at: &str) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = match (at.is_empty(), path == ".") {
            (true, true) => "body".to_owned(),
            (true, false) => path,
            (false, true) => at.to_owned(),
            (false, false) => format!("{at}.{path}"),
        };
        ApiError::field(field, e.inner().to_string())
    })
}

/// A JSON value read so that an object naming a key twice is refused: one reader of it (a
/// schema, a proxy in front) would take one of the two, and another the other (RFC 8259
/// leaves it open). Read with [`parse`], the error names where (`auth`, or `body`).
pub(crate) struct Unique(pub(crate) serde_json::Value);

impl<'de> serde::Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<serde_json::Value, E> {
        Ok(serde_json::Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<serde_json::Value, E> {
        Ok(serde_json::Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<serde_json::Value, E> {
        Ok(serde_json::Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<serde_json::Value, E> {
        Ok(serde_json::Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<serde_json::Value, E> {
        Ok(serde_json::Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<serde_json::Value, E> {
        Ok(serde_json::Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<serde_json::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<serde_json::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Unique(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(serde_json::Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<serde_json::Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!("`{key}` is given twice")));
            }
            let Unique(v) = map.next_value()?;
            object.insert(key, v);
        }
        Ok(serde_json::Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

    use super::*;

    /// A large array is counted without its items kept; a small one, or one that does not
    /// parse, is left to the parse.
    #[test]
    fn a_large_arrays_items_are_counted_without_keeping_them() {
        let many = format!("[{}{{}}]", "{},".repeat(100_000));
        assert!(more_items_than(many.as_bytes(), 10));
        assert!(!more_items_than(many.as_bytes(), 100_001));
        assert!(!more_items_than(b"[{}, {}, {}]", 2), "small: left to the parse");
        let broken = format!("[{}", "{},".repeat(100_000));
        assert!(!more_items_than(broken.as_bytes(), 10), "left to the parse, which names its fault");
    }

    /// Measured as Lambda's answer carries it: the body as a JSON string.
    #[test]
    fn a_body_is_measured_as_lambdas_answer_carries_it() {
        for body in [r#"{"a":"\"\\x"}"#, "[]", r#"{"d":"\u0001"}"#, "{\"é\":1}"] {
            let carried = serde_json::to_string(body).unwrap().len() - 2;
            assert_eq!(as_answered(body), carried, "{body}");
        }
    }

    fn cut_off(sent: &'static [u8]) -> Request {
        let chunks: Vec<Result<&'static [u8], std::io::Error>> =
            vec![Ok(sent), Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "gone"))];
        let body = axum::body::Body::from_stream(futures::stream::iter(chunks));
        Request::builder().header(header::CONTENT_TYPE, "application/json").body(body).unwrap()
    }

    /// A body cut off before its end is an error, not the part that came: before, nothing
    /// at all read as no body, and `POST …/secret/rotate` made and installed a secret no
    /// one ever saw.
    #[tokio::test]
    async fn a_body_cut_off_mid_upload_is_an_error_not_an_empty_body() {
        for sent in [&b""[..], &b"{\"secret\": \"whsec_"[..]] {
            match OptionalJsonBody::from_request(cut_off(sent), &()).await {
                Err(ApiError::Invalid { errors, .. }) => assert_eq!(errors[0].field, "body"),
                other => panic!("{sent:?}: {other:?}"),
            }
            assert!(JsonBody::from_request(cut_off(sent), &()).await.is_err());
        }
    }

    async fn optional(content_type: &str, body: Vec<u8>) -> Result<Option<axum::body::Bytes>, ApiError> {
        let req =
            Request::post("/").header(header::CONTENT_TYPE, content_type).body(axum::body::Body::from(body)).unwrap();
        OptionalJsonBody::from_request(req, &()).await.map(|b| b.0)
    }

    /// A body that may be left out: empty is none whatever its type; otherwise its type is
    /// checked before its size, as the contract orders them (415, then 413).
    #[tokio::test]
    async fn an_optional_body_is_checked_for_its_type_before_its_size() {
        assert!(optional("text/plain", Vec::new()).await.unwrap().is_none());
        assert!(matches!(optional("text/plain", b"{}".to_vec()).await, Err(ApiError::UnsupportedMediaType)));
        let huge = vec![b' '; MAX_BODY_BYTES + 1];
        assert!(matches!(optional("text/plain", huge.clone()).await, Err(ApiError::UnsupportedMediaType)));
        assert!(matches!(optional("application/json", huge).await, Err(ApiError::TooLarge(_))));
        assert_eq!(optional("application/json", b"{}".to_vec()).await.unwrap().as_deref(), Some(&b"{}"[..]));
    }

    /// JSON as the API reads it: UTF-8, not compressed; another charset or a content coding
    /// is `415`, not a parse error at line 1.
    #[tokio::test]
    async fn json_in_another_encoding_or_compressed_is_an_unsupported_media_type() {
        let body = |content_type: &str, coding: Option<&str>| {
            let mut req = Request::post("/").header(header::CONTENT_TYPE, content_type);
            if let Some(c) = coding {
                req = req.header(header::CONTENT_ENCODING, c);
            }
            JsonBody::from_request(req.body(axum::body::Body::from("{}")).unwrap(), &())
        };
        for (content_type, coding) in [
            ("application/json; charset=utf-16", None),
            ("application/json;charset=\"ISO-8859-1\"", None),
            ("application/json", Some("gzip")),
            ("application/json", Some("identity, br")),
        ] {
            let read = body(content_type, coding).await;
            assert!(matches!(read, Err(ApiError::UnsupportedMediaType)), "{content_type} {coding:?}: {read:?}");
        }
        for (content_type, coding) in [
            ("application/json; charset=UTF-8", None),
            ("application/json; charset=\"utf-8\"", Some("identity")),
            ("application/cloudevents+json", None),
            ("application/json; charset=utf8", Some("")),
        ] {
            assert!(body(content_type, coding).await.is_ok(), "{content_type} {coding:?}");
        }
    }
}
