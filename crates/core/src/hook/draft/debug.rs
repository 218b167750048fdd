//! `Debug` for drafts: a draft carries write-only values in clear (passwords, keys, the
//! signing secret), and a draft printed into a log line or a panic message must not show
//! them. They print as `[redacted]`, as [`Secret`](crate::secret::Secret) does.

use std::fmt;

use super::{AuthDraft, HeaderDraft, HookDraft, ParamDraft};

/// What a write-only value prints as, when one was written.
fn redacted<T>(value: &Option<T>) -> Option<&'static str> {
    value.as_ref().map(|_| "[redacted]")
}

/// A header's or parameter's value: shown unless it was marked secret.
fn value_of(value: &Option<Option<String>>, secret: Option<bool>) -> Option<Option<&str>> {
    match secret {
        Some(true) => redacted(value).map(Some),
        _ => value.as_ref().map(Option::as_deref),
    }
}

impl fmt::Debug for HookDraft {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookDraft")
            .field("name", &self.name)
            .field("description", &self.description)
            .field("url", &self.url)
            .field("method", &self.method)
            .field("event_types", &self.event_types)
            .field("sites", &self.sites)
            .field("enabled", &self.enabled)
            .field("auth", &self.auth)
            .field("headers", &self.headers)
            .field("secret", &redacted(&self.secret))
            .field("signature_formats", &self.signature_formats)
            .field("verification", &self.verification)
            .field("rate_limit", &self.rate_limit)
            .field("payload", &self.payload)
            .field("retry_non_2xx", &self.retry_non_2xx)
            .field("version", &self.version)
            // The read-only fields are ignored on input, so there is nothing to show.
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for AuthDraft {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthDraft")
            .field("type", &self.auth_type)
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("key_name", &self.key_name)
            .field("key_value", &redacted(&self.key_value))
            .field("name", &self.name)
            .field("value", &redacted(&self.value))
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &redacted(&self.client_secret))
            .field("http_method", &self.http_method)
            .field("header_params", &self.header_params)
            .field("query_params", &self.query_params)
            .field("body_params", &self.body_params)
            .finish()
    }
}

impl fmt::Debug for ParamDraft {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParamDraft")
            .field("key", &self.key)
            .field("value", &value_of(&self.value, self.secret))
            .field("secret", &self.secret)
            .finish()
    }
}

impl fmt::Debug for HeaderDraft {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeaderDraft")
            .field("name", &self.name)
            .field("value", &value_of(&self.value, self.secret))
            .field("secret", &self.secret)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drafts_write_only_values_print_redacted() {
        let draft: HookDraft = serde_json::from_value(serde_json::json!({
            "name": "h",
            "url": "https://example.com/in",
            "secret": "whsec_c2VjcmV0LXNpZ25pbmcta2V5LW9mLXRoZS1ob29r",
            "auth": {
                "type": "OAUTH_CLIENT_CREDENTIALS",
                "password": "pw-in-clear",
                "key_value": "key-in-clear",
                "value": "header-auth-in-clear",
                "client_secret": "client-secret-in-clear",
                "body_params": [{"key": "audience", "value": "aud-in-clear", "secret": true}]
            },
            "headers": [
                {"name": "x-secret", "value": "secret-header-in-clear", "secret": true},
                {"name": "x-plain", "value": "plain-header-shown"}
            ]
        }))
        .expect("a valid draft document");
        let printed = format!("{draft:?}");
        for clear in [
            "c2VjcmV0",
            "pw-in-clear",
            "key-in-clear",
            "header-auth-in-clear",
            "client-secret-in-clear",
            "aud-in-clear",
            "secret-header-in-clear",
        ] {
            assert!(!printed.contains(clear), "{clear} printed in {printed}");
        }
        assert!(printed.contains("[redacted]"), "{printed}");
        // What is not write-only still shows, or the output would be no help at all.
        assert!(printed.contains("plain-header-shown") && printed.contains("https://example.com/in"), "{printed}");
    }
}
