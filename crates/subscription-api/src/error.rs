//! Every error the API answers with, turned into `application/problem+json` (RFC 9457)
//! in one place. A 500 logs its cause and echoes nothing of it.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hookbridge_core::validation::FieldError;
use serde::Serialize;

/// An API error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Invalid input, with the fields at fault.
    #[error("{detail}")]
    Invalid {
        /// A sentence about the whole request.
        detail: String,
        /// Each bad field.
        errors: Vec<FieldError>,
    },
    /// No or bad token.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A valid token without the scope.
    #[error("this call needs the {0} scope")]
    Forbidden(&'static str),
    /// Absent, or another tenant's.
    #[error("{0}")]
    NotFound(&'static str),
    /// The route exists for other methods.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Name taken, name changed, version conflict, key reuse.
    #[error("{0}")]
    Conflict(String),
    /// Body too large.
    #[error("{0}")]
    TooLarge(String),
    /// A tenant quota is reached (hooks per tenant).
    #[error("{detail}")]
    QuotaReached {
        /// What the limit is and how to raise it.
        detail: String,
        /// The limit.
        limit: u32,
    },
    /// The tenant publishes faster than it may; retry after the wait.
    #[error("the tenant publishes more than {rate} events a second (burst {burst}); retry after {retry_after_secs} s")]
    Throttled {
        /// The rate.
        rate: u32,
        /// The burst.
        burst: u32,
        /// Seconds to wait.
        retry_after_secs: u64,
    },
    /// Not JSON.
    #[error("the body must be JSON in UTF-8, not compressed (Content-Type: application/json, no Content-Encoding)")]
    UnsupportedMediaType,
    /// Nothing can be done now, for this reason (the store is full, the token key cannot be
    /// read); retry later. Nothing was changed, but a publish may have put some of its
    /// events out before the failure (docs/api.md, "What neither covers").
    #[error("{0}")]
    Unavailable(&'static str),
    /// A hook whose stored document this version cannot read: written by a newer release
    /// (seen after a rollback), or damaged. Only its owner's tenant-wide callers hear so;
    /// it can still be deleted.
    #[error(
        "this hook was stored by a newer version of Hookbridge, or is damaged, and this version cannot read it; \
         it can still be deleted"
    )]
    UnreadableHook,
    /// A backend failure: logged, never echoed.
    #[error("internal error")]
    Internal(#[source] hookbridge_core::Error),
}

impl ApiError {
    /// A 400 about one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { detail: "the request is invalid".to_owned(), errors: vec![FieldError::new(field, message)] }
    }

    /// A 400 about several fields: the first [`MAX_REPORTED`](hookbridge_core::validation::MAX_REPORTED).
    pub fn fields(mut errors: Vec<FieldError>) -> Self {
        errors.truncate(hookbridge_core::validation::MAX_REPORTED);
        Self::Invalid { detail: "the request is invalid".to_owned(), errors }
    }

    /// Its HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::QuotaReached { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::UnreadableHook | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "invalid-request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::Conflict(_) => "conflict",
            Self::TooLarge(_) => "too-large",
            Self::QuotaReached { .. } => "quota-reached",
            Self::Throttled { .. } => "throttled",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::Unavailable(_) => "unavailable",
            Self::UnreadableHook => "unreadable-hook",
            Self::Internal(_) => "internal",
        }
    }

    /// The problem document.
    pub fn problem(&self) -> Problem {
        let status = self.status();
        Problem {
            kind: format!("https://hookbridge.dev/problems/{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: self.to_string(),
            errors: match self {
                Self::Invalid { errors, .. } => errors.clone(),
                _ => Vec::new(),
            },
            limit: match self {
                Self::QuotaReached { limit, .. } => Some(*limit),
                Self::Throttled { rate, .. } => Some(*rate),
                _ => None,
            },
        }
    }
}

impl From<hookbridge_core::Error> for ApiError {
    fn from(e: hookbridge_core::Error) -> Self {
        use hookbridge_core::Error as E;
        match e {
            E::NameTaken => Self::Conflict("a hook with this name already exists in the tenant".to_owned()),
            E::VersionConflict => {
                Self::Conflict("the hook was changed since it was read; read it again and retry".to_owned())
            }
            E::InvalidCursor => Self::field("cursor", "is not a cursor this API issued"),
            E::TooLarge(what) => Self::TooLarge(what),
            E::StorageFull => Self::Unavailable("storage is full; retry later"),
            E::QuotaReached { limit } => Self::QuotaReached {
                detail: format!(
                    "the tenant has {limit} hooks, the most it may have; delete one, or raise \
                     HOOKBRIDGE_MAX_HOOKS_PER_TENANT"
                ),
                limit,
            },
            other => Self::Internal(other),
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// The status's reason phrase.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong, for a human.
    pub detail: String,
    /// The fields at fault, for validation errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The limit reached, for `quota-reached` (hooks) and `throttled` (events a second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(e) = &self {
            tracing::error!(error = %e, cause = ?std::error::Error::source(e), "request failed");
        }
        let status = self.status();
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(detail = %self, "request refused: unavailable");
        }
        self.set_headers(resp.headers_mut());
        resp
    }
}

impl ApiError {
    /// The headers the error's status calls for, whatever shape its body takes (the other
    /// products' APIs answer in their own): when to retry, and how to authenticate.
    pub(crate) fn set_headers(&self, headers: &mut axum::http::HeaderMap) {
        let status = self.status();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
        }
        if let Self::Throttled { retry_after_secs, .. } = self
            && let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string())
        {
            headers.insert(header::RETRY_AFTER, v);
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every problem type the API answers is one the OpenAPI document names, so a client
    /// built from it can tell them apart: `unreadable-hook` (a hook it may still delete)
    /// was left out, and read as an internal error.
    #[test]
    fn every_problem_type_is_named_in_the_openapi_document() {
        let doc: serde_json::Value = serde_json::from_str(include_str!("../openapi.json")).expect("the document");
        let named = doc["components"]["schemas"]["Problem"]["properties"]["type"]["description"]
            .as_str()
            .expect("the problem type's description");
        let every = [
            ApiError::field("f", "m"),
            ApiError::Unauthorized("u"),
            ApiError::Forbidden("f"),
            ApiError::NotFound("n"),
            ApiError::MethodNotAllowed,
            ApiError::Conflict(String::new()),
            ApiError::TooLarge(String::new()),
            ApiError::QuotaReached { detail: String::new(), limit: 1 },
            ApiError::Throttled { rate: 1, burst: 1, retry_after_secs: 1 },
            ApiError::UnsupportedMediaType,
            ApiError::Unavailable("u"),
            ApiError::UnreadableHook,
            ApiError::Internal(hookbridge_core::Error::corrupt_as("x")),
        ];
        for e in every {
            // Written out in full, so a new kind is added here (and to the document).
            match e {
                ApiError::Invalid { .. }
                | ApiError::Unauthorized(_)
                | ApiError::Forbidden(_)
                | ApiError::NotFound(_)
                | ApiError::MethodNotAllowed
                | ApiError::Conflict(_)
                | ApiError::TooLarge(_)
                | ApiError::QuotaReached { .. }
                | ApiError::Throttled { .. }
                | ApiError::UnsupportedMediaType
                | ApiError::Unavailable(_)
                | ApiError::UnreadableHook
                | ApiError::Internal(_) => {}
            }
            assert!(named.contains(&format!("`{}`", e.slug())), "{} is not named: {named}", e.slug());
        }
    }
}
