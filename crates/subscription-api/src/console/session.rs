//! Who is signed in to the console. The session is a cookie (`HttpOnly`, `SameSite=Strict`,
//! `Secure` and named `__Host-hb_session` except over plain http to a loopback address) holding either the caller's own
//! API token (pasted, or got from the issuer with the authorization-code flow and PKCE) or
//! the id of a portal session kept server-side. Every state-changing form carries a CSRF
//! token derived from a random value in a cookie of its own ([`FORMS_COOKIE`], which a page
//! on another site cannot read) and the caller, so that a session renewed in another tab
//! (the issuer's token lasts minutes) does not void the forms open here.

use axum::http::{HeaderMap, HeaderValue, header};
use chrono::Utc;
use hookbridge_core::portal::{PortalGrant, hashed};
use sha2::{Digest, Sha256};

use crate::Api;
use crate::auth::{Caller, Scope};
use crate::error::ApiError;

/// The session cookie.
pub const COOKIE: &str = "hb_session";
/// The longest a token session lasts, whatever the token's own expiry.
const TOKEN_SESSION_SECS: i64 = 12 * 3600;
/// The cookie the forms' CSRF tokens are made from: a random value set at sign-in and kept
/// by each sign-in after it in this browser until it signs out. Made from the session
/// cookie itself, they changed with each renewal, and a form open in another tab was
/// refused on submit, what was typed in it lost. `SameSite=Lax`, unlike the session's, so
/// that the issuer's redirect back (from another site) shows it and the renewal keeps it.
pub const FORMS_COOKIE: &str = "hb_forms";
/// How long the forms cookie is kept: as long as the longest session.
pub const FORMS_COOKIE_SECS: i64 = TOKEN_SESSION_SECS;

/// A signed-in console user.
#[derive(Clone)]
pub struct Session {
    /// Who the API sees.
    pub caller: Caller,
    /// The cookie's value.
    pub cookie: String,
    /// What its forms' CSRF tokens are made from: the forms cookie's value, or the session
    /// cookie's for a browser without one (signed in before it was set).
    pub forms: String,
}

impl Session {
    /// The session of a request, if it has a valid one.
    pub async fn of(api: &Api, headers: &HeaderMap) -> Option<Self> {
        Self::checked(api, headers).await.ok().flatten()
    }

    /// The session of a request: `None` when it has no valid one, an error when that
    /// cannot be told now (the token key or the session store unreachable). Taken for
    /// "signed out", such a moment sent the user to the sign-in page, a posted form lost.
    pub async fn checked(api: &Api, headers: &HeaderMap) -> Result<Option<Self>, ApiError> {
        let Some(cookie) = console_cookie(api.settings().public_url.as_deref(), headers, COOKIE) else {
            return Ok(None);
        };
        let caller = if let Some(token) = cookie.strip_prefix("t.") {
            match api.settings().tokens.check(token).await {
                Ok(caller) => caller,
                Err(ApiError::Unauthorized(_) | ApiError::Forbidden(_)) => return Ok(None),
                Err(e) => return Err(e),
            }
        } else if let Some(id) = cookie.strip_prefix("p.") {
            match api.ports().portal.session(&hashed(id), Utc::now()).await? {
                Some(grant) => portal_caller(&grant),
                None => return Ok(None),
            }
        } else {
            return Ok(None);
        };
        let forms = forms_value(api.settings().public_url.as_deref(), headers).unwrap_or_else(|| cookie.clone());
        Ok(Some(Self { caller, cookie, forms }))
    }

    /// The CSRF token its forms carry.
    pub fn csrf(&self) -> String {
        csrf_of(&self.forms, &self.caller)
    }

    /// Whether a submitted form's token is this session's.
    pub fn csrf_ok(&self, submitted: Option<&str>) -> bool {
        submitted.is_some_and(|s| constant_time_eq(s.as_bytes(), self.csrf().as_bytes()))
    }

    /// Whether it may change things (the API refuses otherwise anyway).
    pub fn can_write(&self) -> bool {
        self.caller.require(Scope::HooksWrite).is_ok()
    }
}

/// The caller a portal grant stands for.
pub fn portal_caller(grant: &PortalGrant) -> Caller {
    let mut scopes = vec![Scope::HooksRead.as_str().to_owned()];
    if !grant.read_only {
        scopes.push(Scope::HooksWrite.as_str().to_owned());
    }
    Caller {
        tenant: grant.tenant.clone(),
        sub: "portal".to_owned(),
        scopes,
        realm_roles: Vec::new(),
        sites: grant.sites.clone(),
    }
}

/// The forms cookie's value for this request, if it holds one this console made.
pub fn forms_value(public_url: Option<&str>, headers: &HeaderMap) -> Option<String> {
    console_cookie(public_url, headers, FORMS_COOKIE).filter(|v| {
        (32..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// A form's CSRF token: of the browser's forms cookie, and of who is signed in with what
/// reach (a portal session's sites, read-only or not), so a form opened as one caller is
/// refused once another has signed in in this browser.
fn csrf_of(forms: &str, caller: &Caller) -> String {
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v.join("\u{1f}")
    };
    let text = format!(
        "hookbridge console csrf\0{forms}\0{}\0{}\0{}\0{}",
        caller.tenant,
        caller.sub,
        sorted(&caller.scopes),
        sorted(&caller.sites)
    );
    hex::encode(&Sha256::digest(text.as_bytes())[..16])
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A cookie's value.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        // Read as bytes: another cookie of the site may hold UTF-8, which browsers send
        // raw, and a line read as text would be dropped whole, ours with it, signing the
        // user out on every page.
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .filter_map(|c| {
            let c = c.trim_ascii();
            let at = c.iter().position(|&b| b == b'=')?;
            Some((&c[..at], &c[at + 1..]))
        })
        .find(|(k, _)| *k == name.as_bytes())
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .map(str::to_owned)
}

/// Whether the request came over plain http to a loopback address (the only place a
/// cookie may go without `Secure`).
fn loopback_http(headers: &HeaderMap) -> bool {
    let forwarded_https = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) == Some("https");
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let name =
        host.rsplit_once(':').map_or(host, |(h, p)| if p.bytes().all(|b| b.is_ascii_digit()) { h } else { host });
    !forwarded_https && matches!(name, "127.0.0.1" | "localhost" | "[::1]")
}

/// Whether the console's cookies are `Secure` for this request. The public URL
/// (`HOOKBRIDGE_PUBLIC_URL`) decides when set: always when it is https (a proxy that hides
/// the host may forward to the API on 127.0.0.1 without saying the browser's request was
/// https), never when it is plain http (the operator serves the console that way on
/// another address, and a browser drops a `Secure` cookie set over http, so no one could
/// sign in). Unset: unless over plain http to a loopback address.
fn secure_cookies(public_url: Option<&str>, headers: &HeaderMap) -> bool {
    match public_url {
        Some(u) => !u.starts_with("http://"),
        None => !loopback_http(headers),
    }
}

/// The name a console cookie goes by for this request. Where cookies are `Secure` it is
/// `__Host-{name}`: a browser takes such a cookie only from this very host, over https,
/// for the whole site, so a page on a sibling subdomain cannot plant one (a planted
/// session would sign the visitor in as someone else, and every form would work). Over
/// plain http (to a loopback address, or to a public URL that is plain http) it is `{name}`:
/// a page on another port of the same host can set such a cookie, since cookies do not
/// keep to ports, so forms are also refused when posted from another origin.
fn cookie_name(secure: bool, name: &str) -> String {
    if secure { format!("__Host-{name}") } else { name.to_owned() }
}

/// The `Set-Cookie` of a console cookie with this value, for `max_age` seconds (0 clears
/// it), named and `Secure` by the rules above.
pub fn set_cookie(
    public_url: Option<&str>,
    headers: &HeaderMap,
    name: &str,
    value: &str,
    max_age: i64,
    same_site: &str,
) -> HeaderValue {
    let secure = secure_cookies(public_url, headers);
    let attributes = if secure { "Path=/; Secure" } else { "Path=/console" };
    let name = cookie_name(secure, name);
    let text = format!("{name}={value}; {attributes}; HttpOnly; SameSite={same_site}; Max-Age={max_age}");
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("hb_session=; Path=/console; Max-Age=0"))
}

/// A console cookie's value, read by the name it goes by for this request: over https, a
/// cookie of the plain name (which a sibling subdomain could have set) is not read.
pub fn console_cookie(public_url: Option<&str>, headers: &HeaderMap, name: &str) -> Option<String> {
    cookie(headers, &cookie_name(secure_cookies(public_url, headers), name))
}

/// Whether a form was posted from a page of another origin. The browser says so itself in
/// `Sec-Fetch-Site` (every current browser sends it); an older one sends `Origin` on a
/// post, compared here with the host the request was made to. Neither sent (a script, not
/// a browser): not from a page at all.
pub fn from_another_origin(headers: &HeaderMap) -> bool {
    let text = |name: header::HeaderName| headers.get(name).map(|v| v.to_str().unwrap_or("?"));
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        // `none`: typed in or bookmarked, which no other page can cause.
        return !matches!(site, "same-origin" | "none");
    }
    match (text(header::ORIGIN), text(header::HOST)) {
        (Some(origin), Some(host)) => origin.split_once("://").map(|(_, h)| h) != Some(host),
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// How long a session on `caller`'s token may last: until the token expires, at most 12 h.
pub fn token_session_secs(exp: Option<i64>) -> i64 {
    exp.map_or(TOKEN_SESSION_SECS, |e| (e - Utc::now().timestamp()).clamp(0, TOKEN_SESSION_SECS))
}

/// The public base URL of the API, as the browser reaches it.
pub fn origin(api: &Api, headers: &HeaderMap) -> String {
    if let Some(u) = &api.settings().public_url {
        return u.clone();
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("127.0.0.1");
    let scheme = if loopback_http(headers) { "http" } else { "https" };
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(host: &str, proto: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap_or(HeaderValue::from_static("x")));
        if let Some(p) = proto {
            h.insert("x-forwarded-proto", HeaderValue::from_str(p).unwrap_or(HeaderValue::from_static("x")));
        }
        h
    }

    #[test]
    fn the_cookie_is_secure_except_over_loopback_http() {
        let c = |h: &HeaderMap| {
            set_cookie(None, h, COOKIE, "v", 60, "Strict").to_str().map(str::to_owned).unwrap_or_default()
        };
        let local = c(&headers("127.0.0.1:3000", None));
        assert!(local.starts_with("hb_session=v; Path=/console;") && !local.contains("Secure"), "{local}");
        assert!(!c(&headers("localhost:3000", None)).contains("Secure"));
        // Secure, and named so that only this host can set it, for the whole site.
        let text = c(&headers("api.example.com", None));
        assert!(text.starts_with("__Host-hb_session=v; Path=/; Secure;"), "{text}");
        assert!(text.contains("HttpOnly") && text.contains("SameSite=Strict") && !text.contains("Domain"));
        assert!(c(&headers("127.0.0.1:3000", Some("https"))).starts_with("__Host-hb_session=v; Path=/; Secure;"));
        // Behind a proxy that forwards to 127.0.0.1 and says nothing of https.
        let proxied =
            set_cookie(Some("https://hooks.example.com"), &headers("127.0.0.1:8080", None), COOKIE, "v", 60, "Strict");
        assert!(proxied.to_str().unwrap_or_default().starts_with("__Host-hb_session=v; Path=/; Secure;"));
        // Served plain http on another address, as the operator says: a browser would drop
        // a `Secure` (or `__Host-`) cookie set over http, and sign-in would loop.
        let lan = set_cookie(Some("http://10.0.0.5:3000"), &headers("10.0.0.5:3000", None), COOKIE, "v", 60, "Strict");
        let lan = lan.to_str().unwrap_or_default();
        assert!(lan.starts_with("hb_session=v; Path=/console;") && !lan.contains("Secure"), "{lan}");
        let mut h = headers("10.0.0.5:3000", None);
        h.insert(header::COOKIE, HeaderValue::from_static("hb_session=t.mine"));
        assert_eq!(console_cookie(Some("http://10.0.0.5:3000"), &h, COOKIE).as_deref(), Some("t.mine"));
    }

    /// Over https only the `__Host-` cookie is read: a page on a sibling subdomain can set
    /// `hb_session` for the whole domain (with a longer path, sent first) and so sign the
    /// visitor in as its own tenant, but cannot set a `__Host-` cookie for this host.
    #[test]
    fn over_https_a_cookie_a_sibling_could_plant_is_not_read() {
        let with = |host: &str, proto: Option<&str>, cookies: &'static str| {
            let mut h = headers(host, proto);
            h.insert(header::COOKIE, HeaderValue::from_static(cookies));
            console_cookie(None, &h, COOKIE)
        };
        let planted = "hb_session=t.planted; __Host-hb_session=t.mine";
        assert_eq!(with("hooks.example.com", None, planted).as_deref(), Some("t.mine"));
        assert_eq!(with("hooks.example.com", None, "hb_session=t.planted"), None);
        assert_eq!(with("127.0.0.1:3000", Some("https"), "hb_session=t.planted"), None);
        // Plain http to a loopback address: the plain name, as set there.
        assert_eq!(with("127.0.0.1:3000", None, "hb_session=t.mine").as_deref(), Some("t.mine"));
    }

    #[test]
    fn a_post_from_a_page_of_another_origin_is_known() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = headers("console.example.com", None);
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            from_another_origin(&h)
        };
        assert!(!with(&[]), "a script, not a page");
        assert!(!with(&[("sec-fetch-site", "same-origin")]));
        assert!(!with(&[("sec-fetch-site", "none")]));
        assert!(with(&[("sec-fetch-site", "cross-site")]));
        assert!(with(&[("sec-fetch-site", "same-site")]), "a sibling subdomain is another origin");
        assert!(!with(&[("origin", "https://console.example.com")]));
        assert!(with(&[("origin", "https://evil.example")]));
        assert!(with(&[("origin", "null")]));
    }

    #[test]
    fn csrf_tokens_belong_to_one_cookie_and_one_caller() {
        let caller = |tenant: &str, sub: &str| Caller {
            tenant: tenant.parse().unwrap(),
            sub: sub.into(),
            scopes: Vec::new(),
            realm_roles: Vec::new(),
            sites: Vec::new(),
        };
        assert_eq!(csrf_of("f.a", &caller("acme", "alice")), csrf_of("f.a", &caller("acme", "alice")));
        assert_ne!(csrf_of("f.a", &caller("acme", "alice")), csrf_of("f.b", &caller("acme", "alice")));
        assert_ne!(csrf_of("f.a", &caller("acme", "alice")), csrf_of("f.a", &caller("acme", "bob")));
        assert_ne!(csrf_of("f.a", &caller("acme", "alice")), csrf_of("f.a", &caller("globex", "alice")));
        // A portal session of other sites, or one that may write where the other read only.
        let portal = |sites: &[&str], scopes: &[&str]| Caller {
            sites: sites.iter().map(|s| (*s).to_owned()).collect(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            ..caller("acme", "portal")
        };
        let (one, same) = (portal(&["a", "b"], &["hooks:read"]), portal(&["b", "a"], &["hooks:read"]));
        assert_eq!(csrf_of("f.a", &one), csrf_of("f.a", &same), "in any order");
        assert_ne!(csrf_of("f.a", &one), csrf_of("f.a", &portal(&["a"], &["hooks:read"])));
        assert_ne!(csrf_of("f.a", &one), csrf_of("f.a", &portal(&["a", "b"], &["hooks:read", "hooks:write"])));
        assert!(constant_time_eq(b"ab", b"ab") && !constant_time_eq(b"ab", b"ac") && !constant_time_eq(b"a", b"ab"));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; hb_session=t.x.y.z; b=2"));
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("t.x.y.z"));
        assert_eq!(cookie(&h, "c"), None);
    }

    /// Another cookie holding UTF-8 (sent raw by browsers), on the same line as the
    /// session's, leaves the session's readable.
    #[test]
    fn a_cookie_beside_ours_holding_utf8_does_not_hide_ours() {
        let mut h = HeaderMap::new();
        let line = "city=Z\u{fc}rich; hb_session=t.x.y.z; b=2".as_bytes();
        h.insert(header::COOKIE, HeaderValue::from_bytes(line).unwrap());
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("t.x.y.z"));
        assert_eq!(cookie(&h, "city"), Some("Z\u{fc}rich".to_owned()));
    }
}
