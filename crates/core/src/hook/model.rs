//! The stored hook: its configuration (no secret values), its state, and its secrets
//! sealed by the backend's key.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{HookId, HookName, TenantId};
use crate::pattern::EventTypePattern;
use crate::secret::{Secret, SigningSecret};

use super::state::HookState;

/// Longest accepted URL.
pub const MAX_URL_LEN: usize = 2048;
/// Most patterns a hook may list: Keycloak's clients list its types one by one, and it
/// names 112 (56 of them its user events' `*_ERROR`s), which 50 refused.
pub const MAX_EVENT_TYPES: usize = 200;
/// Most extra headers a hook may send.
pub const MAX_HEADERS: usize = 20;

/// The HTTP method a hook's requests use; the envelope is the body for every method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// The default.
    #[default]
    Post,
    /// Replace semantics.
    Put,
    /// Patch semantics.
    Patch,
    /// Some receivers take events on GET (HYPR offers it); the body is still sent.
    Get,
    /// For receivers that treat events as removals.
    Delete,
}

impl HttpMethod {
    /// The method's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Get => "GET",
            Self::Delete => "DELETE",
        }
    }
}

/// The method used to fetch an OAuth token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum TokenMethod {
    /// Form-encoded body, as RFC 6749 says.
    #[default]
    Post,
    /// Parameters in the query string, for token endpoints that want it.
    Get,
}

/// Names of the auth types, as API.md spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthType {
    /// No credentials.
    None,
    /// `Authorization: Basic`.
    Basic,
    /// `Authorization: Bearer <key_value>`.
    ApiKey,
    /// A custom header name and secret value (UniFi's).
    Header,
    /// A token from an OAuth 2.0 token endpoint.
    OauthClientCredentials,
}

/// A parameter sent to an OAuth token endpoint. `value` is absent when `secret`: the
/// value then lives in the sealed secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamConfig {
    /// The parameter name.
    pub key: String,
    /// The value, when not secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Whether the value is write-only.
    pub secret: bool,
}

/// OAuth client-credentials settings, without the client secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthConfig {
    /// Where tokens come from.
    pub token_url: String,
    /// The client id.
    pub client_id: String,
    /// How the token request is made.
    pub http_method: TokenMethod,
    /// Extra headers on the token request.
    #[serde(default)]
    pub header_params: Vec<ParamConfig>,
    /// Extra query parameters on the token request.
    #[serde(default)]
    pub query_params: Vec<ParamConfig>,
    /// Extra form fields on the token request.
    #[serde(default)]
    pub body_params: Vec<ParamConfig>,
    /// Fields a newer release wrote, kept as they were (decision 0044).
    #[serde(flatten)]
    pub newer: crate::newer::NewerFields,
}

/// How the body of a `POST` token request is written: a form unless the hook's
/// `header_params` say otherwise. Some token endpoints take JSON, or a compressed body
/// (HYPR's own example sets `Content-Type: application/json` and `Content-Encoding: gzip`);
/// the platform writes the body as those headers say, so they take only values it can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenBody {
    /// A JSON object of the fields, not a form.
    pub json: bool,
    /// Compressed with gzip.
    pub gzip: bool,
}

impl TokenBody {
    /// The header parameters that describe the body, with the values each may take.
    const HEADERS: [(&'static str, &'static [&'static str]); 2] = [
        ("content-type", &["application/x-www-form-urlencoded", "application/json"]),
        ("content-encoding", &["identity", "gzip"]),
    ];

    /// The values `header` may take, if it describes the body.
    pub fn values_of(header: &str) -> Option<&'static [&'static str]> {
        Self::HEADERS.iter().find(|(name, _)| header.eq_ignore_ascii_case(name)).map(|(_, values)| *values)
    }

    /// Whether `value` is one `header` may take, in any case; a media type may carry
    /// parameters (`; charset=utf-8`).
    pub fn takes(header: &str, value: &str) -> bool {
        Self::values_of(header).is_some_and(|values| values.iter().any(|v| v.eq_ignore_ascii_case(named(value))))
    }

    /// The body `oauth`'s header parameters ask for (they are never secret).
    pub fn of(oauth: &OAuthConfig) -> Self {
        let value = |name: &str| {
            oauth
                .header_params
                .iter()
                .find(|p| p.key.eq_ignore_ascii_case(name))
                .and_then(|p| p.value.as_deref())
                .map(named)
        };
        Self {
            json: value("content-type").is_some_and(|v| v.eq_ignore_ascii_case("application/json")),
            gzip: value("content-encoding").is_some_and(|v| v.eq_ignore_ascii_case("gzip")),
        }
    }
}

/// A media type or coding without its parameters.
fn named(value: &str) -> &str {
    value.split(';').next().unwrap_or_default().trim()
}

/// How requests authenticate, without secret values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthConfig {
    /// No credentials.
    #[default]
    None,
    /// Basic auth; the password is sealed.
    Basic {
        /// The user name.
        username: String,
    },
    /// A bearer key; the value is sealed.
    ApiKey {
        /// A label for the key, never sent.
        key_name: String,
    },
    /// A custom header; the value is sealed.
    Header {
        /// The header name.
        name: String,
    },
    /// OAuth client credentials; the client secret is sealed.
    OauthClientCredentials(OAuthConfig),
}

impl AuthConfig {
    /// The type name.
    pub fn auth_type(&self) -> AuthType {
        match self {
            Self::None => AuthType::None,
            Self::Basic { .. } => AuthType::Basic,
            Self::ApiKey { .. } => AuthType::ApiKey,
            Self::Header { .. } => AuthType::Header,
            Self::OauthClientCredentials(_) => AuthType::OauthClientCredentials,
        }
    }
}

/// An extra request header; `value` is absent when `secret`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderConfig {
    /// The header name as given.
    pub name: String,
    /// The value, when not secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Whether the value is write-only.
    pub secret: bool,
}

/// Signature headers a hook's requests carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SignatureFormat {
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature`: always sent.
    #[serde(rename = "standard-webhooks")]
    StandardWebhooks,
    /// `X-Keycloak-Signature`, for receivers written for Keycloak webhooks.
    #[serde(rename = "keycloak")]
    Keycloak,
}

/// What a delivery's body is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// The whole envelope, EventBridge's shape (HYPR's).
    #[default]
    Envelope,
    /// The event's `detail` alone, as its producer published it (Keycloak's, UniFi's).
    Detail,
    /// The `detail` in a one-element array (ExtremeCloud IQ's log records).
    DetailArray,
}

impl PayloadFormat {
    /// Whether it is the default.
    pub fn is_envelope(&self) -> bool {
        *self == Self::Envelope
    }

    /// Its name in the API.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Envelope => "envelope",
            Self::Detail => "detail",
            Self::DetailArray => "detail_array",
        }
    }
}

/// The ownership challenge settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationConfig {
    /// Whether deliveries wait for a passed challenge.
    pub required: bool,
    /// The header carrying the challenge value.
    pub header: String,
    /// Fields a newer release wrote, kept as they were (decision 0044).
    #[serde(flatten)]
    pub newer: crate::newer::NewerFields,
}

/// The default challenge header (UniFi's).
pub const DEFAULT_CHALLENGE_HEADER: &str = "x-uid-challenge";

impl Default for VerificationConfig {
    fn default() -> Self {
        Self { newer: Default::default(), required: false, header: DEFAULT_CHALLENGE_HEADER.to_owned() }
    }
}

/// What a tenant configured, without any secret value. Stored in clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookConfig {
    /// Unique in the tenant, immutable.
    pub name: HookName,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where requests go.
    pub url: String,
    /// The request method.
    pub method: HttpMethod,
    /// Which event types it receives.
    pub event_types: Vec<EventTypePattern>,
    /// Which sites' events it receives; empty is the whole workspace.
    pub sites: Vec<String>,
    /// Whether the tenant wants deliveries.
    pub enabled: bool,
    /// Request authentication.
    pub auth: AuthConfig,
    /// Extra request headers.
    pub headers: Vec<HeaderConfig>,
    /// Signature headers in addition to Standard Webhooks.
    pub signature_formats: Vec<SignatureFormat>,
    /// The ownership challenge.
    pub verification: VerificationConfig,
    /// The most deliveries a second this hook's receiver gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// What the body of its deliveries is.
    #[serde(default, skip_serializing_if = "PayloadFormat::is_envelope")]
    pub payload: PayloadFormat,
    /// Every answer that is not 2xx is tried again, as Keycloak does, where by default a
    /// 3xx or 4xx (but 408 and 429) fails at once and a 410 disables the hook.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry_non_2xx: bool,
    /// Fields a newer release wrote, kept as they were (decision 0044).
    #[serde(flatten)]
    pub newer: crate::newer::NewerFields,
}

impl HookConfig {
    /// This configuration, replacing `existing`, with the fields a newer release kept in
    /// `existing` (decision 0044): a replacement asked of this release could not have said
    /// anything of them. Those of the OAuth settings are kept while the hook stays OAuth.
    pub fn keeping_newer_of(mut self, existing: &HookConfig) -> Self {
        self.newer = existing.newer.clone();
        self.verification.newer = existing.verification.newer.clone();
        if let (AuthConfig::OauthClientCredentials(new), AuthConfig::OauthClientCredentials(old)) =
            (&mut self.auth, &existing.auth)
        {
            new.newer = old.newer.clone();
        }
        self
    }
}

/// A per-hook delivery rate limit: the receiver never gets more than `per_second`
/// deliveries a second; the rest wait their turn, none is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Deliveries a second.
    pub per_second: u32,
}

impl HookConfig {
    /// Whether this hook wants an event of this type from this site.
    pub fn wants(&self, event_type: &str, site: Option<&str>) -> bool {
        let site_ok = self.sites.is_empty() || site.is_some_and(|s| self.sites.iter().any(|x| x == s));
        site_ok && crate::pattern::any_matches(&self.event_types, event_type)
    }
}

/// The most a hook may take stored (its document, secrets sealed): DynamoDB's item limit
/// is 400 KB, and the item has a few attributes beside the document. Both backends hold
/// hooks to it, so a hook one accepts the other does too.
pub const MAX_STORED_HOOK_BYTES: usize = 350 * 1024;

/// The most rotated-out secrets that keep signing at once: a rotation beyond them drops
/// the oldest, so neither the stored item nor the signature header grows with rotations.
pub const MAX_RETIRING_SECRETS: usize = 4;

/// The bytes of a hook's sealed secrets that hold its signing secrets: the current one's
/// JSON and the rotated-out ones'. Rotations change them under the client (a rotated-out
/// secret is kept sealed for a day, and a rotation may choose a longer secret), so a hook's
/// size is counted as if they took nothing ([`Hook::counted_size`]). At their most, the
/// longest secrets a client may choose, they keep the item within DynamoDB's.
pub fn signing_share(secrets: &HookSecrets) -> usize {
    let len = |v: serde_json::Result<Vec<u8>>| v.map_or(0, |v| v.len());
    len(serde_json::to_vec(&secrets.signing)) + len(serde_json::to_vec(&secrets.retiring))
}

/// A previous signing secret that still signs until `until` (24 h after a rotation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiringSecret {
    /// The old secret.
    pub secret: SigningSecret,
    /// When it stops signing.
    pub until: DateTime<Utc>,
}

/// Every secret value of a hook. Only ever stored sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookSecrets {
    /// The signing secret.
    pub signing: SigningSecret,
    /// Secrets replaced by rotation that still sign for a while.
    #[serde(default)]
    pub retiring: Vec<RetiringSecret>,
    /// The auth secret: BASIC password, API_KEY key value, HEADER value or OAuth client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Secret>,
    /// Secret OAuth parameters, by `"{header|query|body}_params.{key}"`.
    #[serde(default)]
    pub params: BTreeMap<String, Secret>,
    /// Secret header values, by lowercased header name.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
}

impl HookSecrets {
    /// The secrets a sealer opened, from their JSON. What the parser said is left out of
    /// the error but for where it stopped: it quotes the text it could not take (`invalid
    /// type: string "…"`), which may be a secret, and the error is logged.
    pub fn from_opened(plain: &[u8]) -> crate::Result<Self> {
        serde_json::from_slice(plain).map_err(|e| {
            let why = format!("not the secrets' JSON ({:?} at line {}, column {})", e.classify(), e.line(), e.column());
            crate::Error::corrupt("sealed secrets", why)
        })
    }

    /// Makes `new` the signing secret; the one it replaces keeps signing until `until`.
    /// Expired retiring secrets are dropped, and the oldest beyond [`MAX_RETIRING_SECRETS`].
    /// Returns until when the secret signing before it still signs.
    ///
    /// A rotation to the current secret changes nothing (a client repeating a rotation
    /// whose answer it lost gets the first one's time): it signed every request twice and
    /// pushed a genuine previous secret out before its time. One back to a retiring secret
    /// makes it current, and no longer retiring.
    pub fn rotate(&mut self, new: SigningSecret, until: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
        self.retiring.retain(|r| r.until > now);
        if new == self.signing {
            return self.retiring.iter().map(|r| r.until).max().unwrap_or(now);
        }
        self.retiring.retain(|r| r.secret != new);
        let old = std::mem::replace(&mut self.signing, new);
        self.retiring.push(RetiringSecret { secret: old, until });
        let over = self.retiring.len().saturating_sub(MAX_RETIRING_SECRETS);
        self.retiring.drain(..over);
        until
    }

    /// Secrets that sign at `now`: the current one first, then retiring ones still valid.
    pub fn signing_at(&self, now: DateTime<Utc>) -> impl Iterator<Item = &SigningSecret> {
        std::iter::once(&self.signing).chain(self.retiring.iter().filter(move |r| r.until > now).map(|r| &r.secret))
    }

    /// Every secret value, for tests and scanners that prove none leaks.
    pub fn all_values(&self) -> Vec<&str> {
        let mut v = vec![self.signing.expose()];
        v.extend(self.retiring.iter().map(|r| r.secret.expose()));
        v.extend(self.auth.iter().map(Secret::expose));
        v.extend(self.params.values().map(Secret::expose));
        v.extend(self.headers.values().map(Secret::expose));
        v
    }
}

/// The highest format byte a sealer of this release writes (the backends number theirs
/// apart: the local key's 1 and 3, KMS's 2 and 4). A blob whose first byte is higher was
/// sealed by a newer release ([`crate::Error::NewerFormat`]).
pub const NEWEST_SEALED_FORMAT: u8 = 4;

/// [`HookSecrets`] encrypted by the backend's key (KMS on AWS, a local key file on the
/// embedded backend). Opaque to everything but the sealer that made it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecrets(#[serde(with = "b64")] pub Vec<u8>);

impl std::fmt::Debug for SealedSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedSecrets({} bytes)", self.0.len())
    }
}

/// The hook whose secrets a sealed blob holds. Sealers bind it into the blob (AEAD
/// associated data), so a blob copied into another hook's item does not open there.
#[derive(Debug, Clone, Copy)]
pub struct SecretsOwner<'a> {
    /// The hook's tenant.
    pub tenant: &'a TenantId,
    /// The hook.
    pub hook: HookId,
}

impl<'a> SecretsOwner<'a> {
    /// The owner of `hook`'s secrets.
    pub fn of(hook: &'a Hook) -> Self {
        Self { tenant: &hook.tenant, hook: hook.id }
    }

    /// The associated data bound into the blob: purpose, format, tenant and hook, each
    /// length-prefixed so no two owners share one.
    pub fn associated_data(&self) -> Vec<u8> {
        let mut out = b"hookbridge hook secrets v2".to_vec();
        for part in [self.tenant.as_str().as_bytes(), self.hook.to_string().as_bytes()] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }
}

mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

/// A hook as stored: configuration, state and sealed secrets, with its optimistic-locking
/// `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    /// The hook's id: a ULID made at create.
    pub id: HookId,
    /// The owning tenant.
    pub tenant: TenantId,
    /// What the tenant configured.
    pub config: HookConfig,
    /// What the platform knows about it.
    pub state: HookState,
    /// The secrets, sealed.
    pub sealed: SealedSecrets,
    /// The token subject that created it.
    pub created_by: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// The configuration's version, for clients' optimistic locking (`If-Match`, `version`):
    /// incremented when the tenant changes the hook, not when the platform records state.
    pub version: u64,
    /// The stored item's revision, incremented on every write (by the tenant or by the
    /// platform); every store write is conditional on it.
    #[serde(default)]
    pub revision: u64,
    /// Fields a newer release wrote, kept as they were (decision 0044).
    #[serde(flatten)]
    pub newer: crate::newer::NewerFields,
}

impl Hook {
    /// Its stored size in bytes: the document a store writes.
    pub fn stored_size(&self) -> usize {
        serde_json::to_vec(self).map_or(usize::MAX, |v| v.len())
    }

    /// Its stored size as held to [`MAX_STORED_HOOK_BYTES`]: with `secrets` (its sealed
    /// secrets, open) stored without their [`signing_share`]. It depends on nothing a
    /// rotation changes: the sealed bytes less the share are the same whatever the secrets.
    pub fn counted_size(&self, secrets: &HookSecrets) -> usize {
        let base64 = |n: usize| n.div_ceil(3) * 4;
        let sealed = self.sealed.0.len();
        self.stored_size()
            .saturating_sub(base64(sealed))
            .saturating_add(base64(sealed.saturating_sub(signing_share(secrets))))
    }

    /// Whether it fits [`MAX_STORED_HOOK_BYTES`], counted as [`Hook::counted_size`] does; the
    /// error says by how much it does not.
    pub fn check_stored_size(&self, secrets: &HookSecrets) -> Result<(), crate::validation::FieldError> {
        let counted = self.counted_size(secrets);
        if counted <= MAX_STORED_HOOK_BYTES {
            return Ok(());
        }
        Err(crate::validation::FieldError::new(
            "body",
            format!(
                "the hook takes {} KiB stored, secrets sealed; at most {} KiB: use fewer or shorter headers, parameters and event types",
                counted.div_ceil(1024),
                MAX_STORED_HOOK_BYTES / 1024
            ),
        ))
    }
}

/// A hook made from `draft` (a hook as a client writes it) as the API makes one, its
/// secrets sealed into `sealed`: for tests of what a hook decides from its own fields.
#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly on purpose.
pub(crate) fn test_hook(draft: &str, sealed: SealedSecrets) -> Hook {
    let draft: super::HookDraft = serde_json::from_str(draft).unwrap();
    let policy = super::NetworkPolicy::default();
    let (config, _) = draft.validate(super::ValidationContext { network: &policy }, None).unwrap();
    let now = Utc::now();
    Hook {
        newer: Default::default(),
        id: HookId::generate(),
        tenant: "t".parse().unwrap(),
        state: HookState::new_for(&config),
        config,
        sealed,
        created_by: "x".into(),
        created_at: now,
        updated_at: now,
        version: 1,
        revision: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Secrets of a hook that has only its signing secret, `signing`.
    fn signing_only(signing: SigningSecret) -> HookSecrets {
        HookSecrets { signing, retiring: Vec::new(), auth: None, params: BTreeMap::new(), headers: BTreeMap::new() }
    }

    /// Secrets that open but do not read as this release's are corrupt, and the error says
    /// nothing of what they held: it is logged, and the parser's own quoted the value.
    #[test]
    fn secrets_that_do_not_read_are_corrupt_without_their_values() {
        let whole = |e: &crate::Error| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        };
        for plain in [
            r#"{"signing": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "headers": "hunter2-sesame"}"#,
            r#"{"signing": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "auth": ["hunter2-sesame"]}"#,
            r#"{"signing": "hunter2-sesame"#,
        ] {
            let e = HookSecrets::from_opened(plain.as_bytes()).unwrap_err();
            let text = whole(&e);
            assert!(matches!(e, crate::Error::Corrupt { .. }), "{text}");
            assert!(!text.contains("hunter2") && !text.contains("MfKQ9r8"), "{text}");
            assert!(text.contains("line 1, column"), "{text}");
        }
        let fine = r#"{"signing": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}"#;
        assert!(HookSecrets::from_opened(fine.as_bytes()).is_ok());
    }

    /// `hook` as a store would hold it with `secrets` sealed into as many bytes as a sealer
    /// would make of them (a fixed overhead beside their JSON). The same hook each time: a
    /// new one's timestamps may be a few digits shorter (whole microseconds).
    fn sealed_hook(hook: &Hook, secrets: &HookSecrets) -> Hook {
        let sealed = SealedSecrets(vec![7; 61 + serde_json::to_vec(secrets).unwrap().len()]);
        Hook { sealed, ..hook.clone() }
    }

    #[test]
    fn rotations_never_change_a_hooks_counted_size() {
        use base64::Engine as _;
        use base64::engine::general_purpose::STANDARD;
        let now = Utc::now();
        let mut s = signing_only(SigningSecret::generate());
        let hook = test_hook(r#"{"name":"h","url":"https://r.example/"}"#, SealedSecrets(Vec::new()));
        let counted = sealed_hook(&hook, &s).counted_size(&s);
        // Rotated to generated secrets, to the longest a client may choose, past the most
        // kept: the size counted stays as it was.
        let longest = SigningSecret::parse(&format!("whsec_{}", STANDARD.encode([1u8; 64]))).unwrap();
        let chosen = SigningSecret::client_chosen(&"\"".repeat(crate::secret::CLIENT_SECRET_MAX_LEN)).unwrap();
        for next in [SigningSecret::generate(), longest, chosen.clone(), SigningSecret::generate(), chosen] {
            s.rotate(next, now + chrono::Duration::hours(24), now);
            assert_eq!(sealed_hook(&hook, &s).counted_size(&s), counted, "{} retiring", s.retiring.len());
        }
        // What they take at their most keeps the item within DynamoDB's 400 KB (less the
        // item's other attributes, a few hundred bytes).
        let share = signing_share(&s).div_ceil(3) * 4;
        assert!(MAX_STORED_HOOK_BYTES + share < 399_000, "{share}");
        // Anything else sealed counts.
        s.headers.insert("x-key".into(), Secret::new("v".repeat(100)));
        assert!(sealed_hook(&hook, &s).counted_size(&s) > counted + 100);
    }

    #[test]
    fn rotations_keep_at_most_four_retiring_secrets_and_drop_expired_ones() {
        let now = Utc::now();
        let first = SigningSecret::generate();
        let mut s = signing_only(first.clone());
        let mut all = vec![first];
        for _ in 0..10 {
            let next = SigningSecret::generate();
            all.push(next.clone());
            s.rotate(next, now + chrono::Duration::hours(24), now);
        }
        assert_eq!(s.retiring.len(), MAX_RETIRING_SECRETS);
        let signing: Vec<&SigningSecret> = s.signing_at(now).collect();
        assert_eq!(signing.len(), 1 + MAX_RETIRING_SECRETS);
        assert_eq!(signing[0], &all[10]);
        assert!(s.retiring.iter().all(|r| all[6..10].contains(&r.secret)), "the newest rotated-out ones are kept");

        let later = now + chrono::Duration::hours(25);
        s.rotate(SigningSecret::generate(), later + chrono::Duration::hours(24), later);
        assert_eq!(s.retiring.len(), 1, "the expired ones were dropped");
    }

    /// A rotation to the secret already signing changes nothing, and answers the time the
    /// rotation that made it gave; one back to a retiring secret does not sign twice.
    #[test]
    fn a_rotation_to_the_current_or_a_retiring_secret_signs_each_once() {
        let now = Utc::now();
        let (first, second) = (SigningSecret::generate(), SigningSecret::generate());
        let mut s = signing_only(first.clone());
        let until = now + chrono::Duration::hours(24);
        assert_eq!(s.rotate(second.clone(), until, now), until);
        let repeated = s.rotate(second.clone(), now + chrono::Duration::hours(25), now + chrono::Duration::hours(1));
        assert_eq!(repeated, until, "the repeat answers the first rotation's time");
        assert_eq!(s.signing_at(now).collect::<Vec<_>>(), [&second, &first], "each secret signs once");

        s.rotate(first.clone(), until, now);
        assert_eq!(s.signing_at(now).collect::<Vec<_>>(), [&first, &second], "back to the first: each once");
    }
}
