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
/// names the problem ("connection refused") rather than the layers around it.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let mut last: &(dyn StdError + 'static) = e;
    while let Some(next) = last.source() {
        last = next;
    }
    let text = last.to_string();
    if text.is_empty() { e.to_string() } else { text }
}
