//! A real OpenID Connect issuer on 127.0.0.1 for tests: a discovery document, a JWKS, and
//! RS256, ES256 and EdDSA keys generated when it starts, which it signs tokens with. Keys can be
//! added (a rotation, under a new `kid`) and withdrawn while it runs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::KeyPair as _;
use axum::Json;
use axum::extract::State;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// The algorithms the issuer can sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA 2048, RS256.
    Rs256,
    /// P-256, ES256.
    Es256,
    /// Ed25519, EdDSA.
    EdDsa,
}

struct Key {
    kid: String,
    alg: Algorithm,
    signing: EncodingKey,
    jwk: Value,
    /// Whether the JWKS lists it.
    published: bool,
}

struct Shared {
    issuer: String,
    keys: Mutex<Vec<Key>>,
    jwks_fetches: AtomicUsize,
    discovery_fetches: AtomicUsize,
    /// How the key set is answered: after this long, and with a 500 when failing.
    jwks_answer: Mutex<(Duration, bool)>,
    /// Who "signs in" at the authorization endpoint: the claims of the tokens it issues.
    user: Mutex<Value>,
    /// Codes given out, with the PKCE challenge and redirect each must be redeemed with.
    codes: Mutex<Vec<(String, String, String)>>,
    /// The query of each request to the authorization endpoint.
    authorized: Mutex<Vec<std::collections::HashMap<String, String>>>,
    /// Keys listed as they are, which it never signs with (of kinds a verifier may not read).
    listed_only: Mutex<Vec<Value>>,
    /// The same, listed after the keys it signs with.
    listed_last: Mutex<Vec<Value>>,
}

/// A running issuer. Stops when dropped.
pub struct IdentityProvider {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for IdentityProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityProvider").field("addr", &self.addr).finish()
    }
}

impl Drop for IdentityProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The contents of a DER TLV and what follows it.
fn der(b: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = b[0];
    let (len, head) = match b[1] {
        l if l < 0x80 => (usize::from(l), 2),
        l => {
            let n = usize::from(l & 0x7f);
            (b[2..2 + n].iter().fold(0usize, |acc, x| (acc << 8) | usize::from(*x)), 2 + n)
        }
    };
    (tag, &b[head..head + len], &b[head + len..])
}

/// The RSAPrivateKey (PKCS #1) inside a PrivateKeyInfo (PKCS #8), which is what
/// `jsonwebtoken` signs with.
fn pkcs1_of(pkcs8: &[u8]) -> Vec<u8> {
    let (_, info, _) = der(pkcs8);
    let (_, _version, rest) = der(info);
    let (_, _algorithm, rest) = der(rest);
    let (tag, key, _) = der(rest);
    assert_eq!(tag, 0x04, "PKCS #8 holds the key in an OCTET STRING");
    key.to_vec()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn generate(kind: KeyKind, kid: &str) -> Key {
    match kind {
        KeyKind::Rs256 => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("an RSA key");
            let pkcs8 = pair.as_der().expect("PKCS #8");
            let public = pair.public_key();
            Key {
                kid: kid.to_owned(),
                alg: Algorithm::RS256,
                signing: EncodingKey::from_rsa_der(&pkcs1_of(pkcs8.as_ref())),
                jwk: json!({
                    "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                    "n": b64(public.modulus().big_endian_without_leading_zero()),
                    "e": b64(public.exponent().big_endian_without_leading_zero()),
                }),
                published: true,
            }
        }
        KeyKind::Es256 => {
            let pair =
                aws_lc_rs::signature::EcdsaKeyPair::generate(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING)
                    .expect("a P-256 key");
            let pkcs8 = pair.to_pkcs8v1().expect("PKCS #8");
            // Uncompressed point: 0x04, then x and y, 32 bytes each.
            let point = pair.public_key().as_ref();
            Key {
                kid: kid.to_owned(),
                alg: Algorithm::ES256,
                signing: EncodingKey::from_ec_der(pkcs8.as_ref()),
                jwk: json!({
                    "kty": "EC", "use": "sig", "alg": "ES256", "crv": "P-256", "kid": kid,
                    "x": b64(&point[1..33]), "y": b64(&point[33..65]),
                }),
                published: true,
            }
        }
        KeyKind::EdDsa => {
            let pair = aws_lc_rs::signature::Ed25519KeyPair::generate().expect("an Ed25519 key");
            let pkcs8 = pair.to_pkcs8().expect("PKCS #8");
            Key {
                kid: kid.to_owned(),
                alg: Algorithm::EdDSA,
                signing: EncodingKey::from_ed_der(pkcs8.as_ref()),
                jwk: json!({
                    "kty": "OKP", "use": "sig", "alg": "EdDSA", "crv": "Ed25519", "kid": kid,
                    "x": b64(pair.public_key().as_ref()),
                }),
                published: true,
            }
        }
    }
}

async fn discovery(State(s): State<Arc<Shared>>) -> Json<Value> {
    s.discovery_fetches.fetch_add(1, Ordering::Relaxed);
    Json(json!({
        "issuer": s.issuer,
        "jwks_uri": format!("{}/jwks", s.issuer),
        "authorization_endpoint": format!("{}/authorize", s.issuer),
        "token_endpoint": format!("{}/token", s.issuer),
    }))
}

/// The authorization endpoint: the user is taken to be signed in already, so it sends the
/// browser straight back with a code (bound to the PKCE challenge and the redirect).
async fn authorize(
    State(s): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    s.authorized.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(q.clone());
    let (Some(redirect), Some(state), Some(challenge)) =
        (q.get("redirect_uri"), q.get("state"), q.get("code_challenge"))
    else {
        return (axum::http::StatusCode::BAD_REQUEST, "redirect_uri, state and code_challenge are required")
            .into_response();
    };
    if q.get("code_challenge_method").map(String::as_str) != Some("S256")
        || q.get("response_type").map(String::as_str) != Some("code")
    {
        return (axum::http::StatusCode::BAD_REQUEST, "S256 and response_type=code only").into_response();
    }
    let code = format!("code-{}", s.codes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len());
    s.codes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((
        code.clone(),
        challenge.clone(),
        redirect.clone(),
    ));
    let sep = if redirect.contains('?') { '&' } else { '?' };
    axum::response::Redirect::to(&format!("{redirect}{sep}code={code}&state={state}")).into_response()
}

/// The token endpoint: a code, once, for an access token — if the verifier hashes to the
/// challenge and the redirect is the one the code was given for.
async fn token(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    use sha2::Digest as _;
    let form: std::collections::HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let taken = {
        let mut codes = s.codes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let found = codes.iter().position(|(c, _, _)| *c == field("code"));
        found.map(|i| codes.remove(i))
    };
    let Some((_, challenge, redirect)) = taken else {
        return (axum::http::StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_grant"}))).into_response();
    };
    let hashed = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(field("code_verifier").as_bytes()));
    if hashed != challenge || field("redirect_uri") != redirect || field("grant_type") != "authorization_code" {
        return (axum::http::StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_grant"}))).into_response();
    }
    let mut claims = s.user.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    claims["iss"] = json!(s.issuer);
    let keys = s.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(key) = keys.iter().find(|k| k.published) else {
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "no key").into_response();
    };
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    match jsonwebtoken::encode(&header, &claims, &key.signing) {
        Ok(t) => Json(json!({"access_token": t, "token_type": "Bearer", "expires_in": 3600})).into_response(),
        Err(_) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "cannot sign").into_response(),
    }
}

async fn jwks(State(s): State<Arc<Shared>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    s.jwks_fetches.fetch_add(1, Ordering::Relaxed);
    let (delay, failing) = *s.jwks_answer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    tokio::time::sleep(delay).await;
    if failing {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let keys = s.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let listed_only = s.listed_only.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let listed_last = s.listed_last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let keys: Vec<Value> = listed_only
        .iter()
        .cloned()
        .chain(keys.iter().filter(|k| k.published).map(|k| k.jwk.clone()))
        .chain(listed_last.iter().cloned())
        .collect();
    Json(json!({ "keys": keys })).into_response()
}

impl IdentityProvider {
    /// An issuer with one RS256 key (`rsa-1`), one ES256 key (`ec-1`) and one EdDSA key
    /// (`ed-1`).
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind issuer");
        let addr = listener.local_addr().expect("issuer address");
        let issuer = format!("http://{addr}");
        let keys =
            vec![generate(KeyKind::Rs256, "rsa-1"), generate(KeyKind::Es256, "ec-1"), generate(KeyKind::EdDsa, "ed-1")];
        let shared = Arc::new(Shared {
            issuer,
            keys: Mutex::new(keys),
            jwks_fetches: AtomicUsize::new(0),
            discovery_fetches: AtomicUsize::new(0),
            jwks_answer: Mutex::new((Duration::ZERO, false)),
            user: Mutex::new(json!({})),
            codes: Mutex::new(Vec::new()),
            authorized: Mutex::new(Vec::new()),
            listed_only: Mutex::new(Vec::new()),
            listed_last: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", axum::routing::post(token))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    /// Its issuer identifier (also its base URL).
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// Publishes a new key under `kid` (a rotation).
    pub fn add_key(&self, kind: KeyKind, kid: &str) {
        let key = generate(kind, kid);
        self.shared.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(key);
    }

    /// Lists `jwk` in its key set, first, as it is (a key of a kind a verifier may not
    /// read, such as Ed448); it never signs with it.
    pub fn list_key(&self, jwk: Value) {
        self.shared.listed_only.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(jwk);
    }

    /// The same, listed last, after the keys it signs with (an encryption key under one
    /// of their kids, say).
    pub fn list_key_last(&self, jwk: Value) {
        self.shared.listed_last.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(jwk);
    }

    /// Sets `field` of the key `kid` as its key set lists it (its `use`, `key_ops` or `alg`).
    pub fn describe_key(&self, kid: &str, field: &str, value: Value) {
        let mut keys = self.shared.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for k in keys.iter_mut().filter(|k| k.kid == kid) {
            k.jwk[field] = value.clone();
        }
    }

    /// Stops publishing the key `kid` (it keeps signing with it, as a stolen key would).
    pub fn withdraw_key(&self, kid: &str) {
        let mut keys = self.shared.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for k in keys.iter_mut().filter(|k| k.kid == kid) {
            k.published = false;
        }
    }

    /// The claims of the access tokens its authorization-code flow issues (who signs in).
    pub fn sign_in_as(&self, claims: Value) {
        *self.shared.user.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = claims;
    }

    /// Answers the key set after `delay` from now on (a slow issuer).
    pub fn answer_keys_after(&self, delay: Duration) {
        self.shared.jwks_answer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0 = delay;
    }

    /// Answers the key set with a 500 from now on, or again with the keys.
    pub fn fail_keys(&self, failing: bool) {
        self.shared.jwks_answer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).1 = failing;
    }

    /// The query of each request to the authorization endpoint, in order.
    pub fn authorize_requests(&self) -> Vec<std::collections::HashMap<String, String>> {
        self.shared.authorized.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// How many times the discovery document was asked for.
    pub fn discovery_fetches(&self) -> usize {
        self.shared.discovery_fetches.load(Ordering::Relaxed)
    }

    /// How many times the key set was asked for.
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::Relaxed)
    }

    /// A token signed with the key `kid`, carrying `claims` (and this issuer's `iss` unless
    /// the claims give one).
    pub fn sign(&self, kid: &str, claims: &Value) -> String {
        self.sign_as(kid, claims, true)
    }

    /// The same, its header naming no key (issuers with one key often leave `kid` out).
    pub fn sign_unnamed(&self, kid: &str, claims: &Value) -> String {
        self.sign_as(kid, claims, false)
    }

    /// A token signed with the key `kid` under another algorithm its kind allows (an RSA
    /// key's PS256 in place of its RS256).
    pub fn sign_with_algorithm(&self, kid: &str, alg: Algorithm, claims: &Value) -> String {
        self.sign_under(kid, Some(alg), claims, true)
    }

    fn sign_as(&self, kid: &str, claims: &Value, named: bool) -> String {
        self.sign_under(kid, None, claims, named)
    }

    fn sign_under(&self, kid: &str, alg: Option<Algorithm>, claims: &Value, named: bool) -> String {
        let keys = self.shared.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // The key added last under `kid`, when several share it.
        let key = keys.iter().rfind(|k| k.kid == kid).unwrap_or_else(|| panic!("no key {kid}"));
        let mut claims = claims.clone();
        if claims.get("iss").is_none() {
            claims["iss"] = json!(self.shared.issuer);
        }
        let mut header = Header::new(alg.unwrap_or(key.alg));
        header.kid = named.then(|| kid.to_owned());
        jsonwebtoken::encode(&header, &claims, &key.signing).expect("sign a token")
    }
}
