//! A failed request's error, in the core's error classes.

use std::error::Error as StdError;

use hookbridge_core::delivery::ErrorClass;

use crate::resolver::{Blocked, Unresolved};

/// The error class of a request that got no response.
pub(crate) fn error_class(e: &reqwest::Error) -> ErrorClass {
    if e.is_timeout() {
        return ErrorClass::Timeout;
    }
    let mut cause: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<Blocked>() {
            return ErrorClass::SsrfBlocked;
        }
        if c.is::<Unresolved>() {
            return ErrorClass::Dns;
        }
        if c.is::<rustls::Error>() {
            return ErrorClass::Tls;
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if io.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
                return ErrorClass::Tls;
            }
            if io.kind() == std::io::ErrorKind::TimedOut {
                return ErrorClass::Timeout;
            }
        }
        cause = c.source();
    }
    ErrorClass::Connect
}

/// A short description of the error for the attempt record: the innermost cause, which
/// names the problem ("connection refused") rather than the layers around it. Never
/// reqwest's own message, which names the URL: a hook's or a token endpoint's URL may
/// carry a secret in its query, and the record is shown to every reader of the hook.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let mut last: Option<&(dyn StdError + 'static)> = None;
    let mut next = e.source();
    while let Some(cause) = next {
        last = Some(cause);
        next = cause.source();
    }
    match last.map(ToString::to_string).filter(|t| !t.is_empty()) {
        Some(text) => text,
        None => kind(e).to_owned(),
    }
}

/// What kind of failure `e` is, in words, for one with no cause to name.
fn kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_redirect() {
        "redirect refused"
    } else if e.is_body() || e.is_decode() {
        "the body could not be read"
    } else if e.is_builder() {
        "the request could not be made"
    } else if e.is_status() {
        "refused by status"
    } else {
        "the request failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_with_no_cause_is_described_without_its_url() {
        let answer = reqwest::Response::from(http::Response::builder().status(404).body("").unwrap());
        let e = answer.error_for_status().unwrap_err();
        let e = e.with_url("https://hooks.example.com/in?token=s3cret-query-token".parse().unwrap());
        assert!(e.to_string().contains("s3cret-query-token"), "reqwest names the URL: {e}");
        assert_eq!(describe(&e), "refused by status");
    }
}
