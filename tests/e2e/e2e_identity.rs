//! Tokens from a real OpenID Connect issuer on 127.0.0.1 (RS256, ES256 and EdDSA keys the
//! test generates): accepted when every claim is right, refused with `401` and a reason when
//! one is not, a rotated key picked up by its new `kid`, and made-up `kid`s unable to make
//! the API hammer the issuer.

use hookbridge_e2e::{ALL_SCOPES, OIDC_AUDIENCE, TestStack, on_both_backends};
use hookbridge_testkit::{IdentityProvider, KeyKind, Receiver};
use serde_json::{Value, json};

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims a correct token for `tenant` carries.
fn claims(tenant: &str) -> Value {
    json!({"sub": "alice", "tenant": tenant, "scope": ALL_SCOPES, "aud": OIDC_AUDIENCE, "exp": now() + 600})
}

fn with(mut c: Value, key: &str, value: Value) -> Value {
    c[key] = value;
    c
}

fn without(mut c: Value, key: &str) -> Value {
    c.as_object_mut().unwrap().remove(key);
    c
}

/// A key set that also lists a key of a kind the API cannot read (an Ed448 key, which
/// Keycloak's EdDSA provider can publish) still verifies tokens under its other keys: the
/// set was read whole, and one such key refused every token of the issuer's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_an_unreadable_kind_in_the_set_does_not_stop_the_others() {
    let stack = TestStack::start_oidc(hookbridge_e2e::Flavor::Embedded).await;
    let idp = stack.idp();
    idp.list_key(json!({"kty": "OKP", "crv": "Ed448", "kid": "ed448-1", "x": "AAAA"}));
    idp.list_key(json!({"kty": "XYZ", "kid": "unknown-kind"}));
    for kid in ["rsa-1", "ec-1"] {
        let listed = stack.get("/v1/hooks", &idp.sign(kid, &claims("acme"))).await;
        assert_eq!(listed.status, 200, "{kid}: {}", listed.body);
    }
    stack.shutdown().await;
}

/// A Keycloak client's own token works on Keycloak's webhooks API as it did with Phase Two,
/// which asks for the `view-events` and `manage-events` roles of the realm's
/// `realm-management` client: they stand for `hooks:read` and `hooks:write` there, and only
/// there. Such a token was `403`, and a client moving off Phase Two needed tokens of ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keycloaks_event_roles_stand_for_the_scopes_on_its_webhooks_api() {
    let stack = TestStack::start_oidc(hookbridge_e2e::Flavor::Embedded).await;
    let idp = stack.idp();
    let with_roles = |roles: &[&str]| {
        let mut c = without(claims("acme"), "scope");
        c["resource_access"] = json!({"realm-management": {"roles": roles}, "account": {"roles": ["manage-events"]}});
        idp.sign("rsa-1", &c)
    };
    let webhook = json!({"url": "https://receiver.example/kc", "eventTypes": ["*"], "enabled": true});
    let both = with_roles(&["view-events", "manage-events"]);
    let made = stack.post("/auth/realms/acme/webhooks", &both, &webhook).await;
    assert_eq!(made.status, 201, "{}", made.body);
    let listed = stack.get("/auth/realms/acme/webhooks", &both).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body.as_array().map(Vec::len), Some(1), "{}", listed.body);

    let viewer = with_roles(&["view-events"]);
    assert_eq!(stack.get("/auth/realms/acme/webhooks", &viewer).await.status, 200);
    assert_eq!(stack.post("/auth/realms/acme/webhooks", &viewer, &webhook).await.status, 403);
    // Another client's roles of the same name grant nothing.
    let other_client = with_roles(&["view-users"]);
    assert_eq!(stack.get("/auth/realms/acme/webhooks", &other_client).await.status, 403);
    // Phase Two's permissions, for its API: not `/v1`'s scopes.
    assert_eq!(stack.get("/v1/hooks", &both).await.status, 403);
    // Another realm's webhooks stay another tenant's.
    assert_eq!(stack.get("/auth/realms/other/webhooks", &both).await.status, 404);
    stack.shutdown().await;
}

/// A key verifies only what its issuer published it for (RFC 7517): not a token when it is
/// for encryption (`use`) or not for verifying (`key_ops`), nor one under an algorithm
/// other than its `alg`. Each of these tokens was accepted: an RSA key's signature checks
/// out whatever its set says, and under PS256 as well as RS256.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_verifies_only_what_its_issuer_published_it_for() {
    let stack = TestStack::start_oidc(hookbridge_e2e::Flavor::Embedded).await;
    let idp = stack.idp();
    idp.add_key(KeyKind::Rs256, "rsa-enc");
    idp.describe_key("rsa-enc", "use", json!("enc"));
    idp.add_key(KeyKind::Rs256, "rsa-wrap");
    idp.describe_key("rsa-wrap", "key_ops", json!(["wrapKey"]));
    idp.add_key(KeyKind::Rs256, "rsa-ops");
    idp.describe_key("rsa-ops", "key_ops", json!(["verify"]));
    idp.add_key(KeyKind::Rs256, "rsa-any");
    idp.describe_key("rsa-any", "alg", Value::Null);
    // An encryption key under a signing key's kid, listed after it (RFC 7517 allows a kid
    // for two keys): it took the kid's place, and the signing key's tokens were refused.
    idp.add_key(KeyKind::Es256, "ec-shared");
    idp.list_key_last(
        json!({"kty": "RSA", "use": "enc", "alg": "RSA-OAEP", "kid": "ec-shared", "n": "AQAB", "e": "AQAB"}),
    );
    // Two signing keys of different kinds under one kid, neither naming its alg: the EC
    // one's tokens are checked with it, not only with the RSA key listed first.
    idp.add_key(KeyKind::Rs256, "mixed");
    idp.add_key(KeyKind::Es256, "mixed");
    idp.describe_key("mixed", "alg", Value::Null);
    let refused = [
        ("for encryption", idp.sign("rsa-enc", &claims("acme"))),
        ("for encryption, named by no kid", idp.sign_unnamed("rsa-enc", &claims("acme"))),
        ("not for verifying", idp.sign("rsa-wrap", &claims("acme"))),
        (
            "under PS256, its alg RS256",
            idp.sign_with_algorithm("rsa-1", jsonwebtoken::Algorithm::PS256, &claims("acme")),
        ),
    ];
    for (why, token) in refused {
        let a = stack.get("/v1/hooks", &token).await;
        assert_eq!(a.status, 401, "a key {why}: {}", a.body);
    }
    for kid in ["rsa-1", "rsa-ops", "ec-shared", "mixed"] {
        let a = stack.get("/v1/hooks", &idp.sign(kid, &claims("acme"))).await;
        assert_eq!(a.status, 200, "{kid}: {}", a.body);
    }
    // A key whose set names no alg takes any its kind allows.
    let a = stack
        .get("/v1/hooks", &idp.sign_with_algorithm("rsa-any", jsonwebtoken::Algorithm::PS256, &claims("acme")))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    stack.shutdown().await;
}

on_both_backends! {
async fn rs256_es256_and_eddsa_tokens_work_and_a_rotated_key_is_fetched_by_its_new_kid(flavor: Flavor) {
    let stack = TestStack::start_oidc(flavor).await;
    let idp = stack.idp();
    let r = Receiver::start().await;
    for kid in ["rsa-1", "ec-1", "ed-1"] {
        let t = idp.sign(kid, &claims("acme"));
        let created = stack.post("/v1/hooks", &t, &json!({"name": kid, "url": r.url("/")})).await;
        assert_eq!(created.status, 201, "{kid}: {}", created.body);
    }
    let listed = stack.get("/v1/hooks", &idp.sign("ec-1", &claims("acme"))).await;
    assert_eq!(listed.body["hooks"].as_array().unwrap().len(), 3);
    let fetched = idp.jwks_fetches();
    assert_eq!(fetched, 1, "the keys were fetched once and cached");

    // The issuer rotates: a new key under a new kid, the old one withdrawn.
    tokio::time::sleep(subscription_api::REFRESH_AT_MOST_EVERY).await;
    idp.add_key(KeyKind::Es256, "ec-2");
    idp.withdraw_key("ec-1");
    let rotated = stack.get("/v1/hooks", &idp.sign("ec-2", &claims("acme"))).await;
    assert_eq!(rotated.status, 200, "a token under the new kid: {}", rotated.body);
    assert_eq!(idp.jwks_fetches(), fetched + 1, "one fetch for the unknown kid");
    let old = stack.get("/v1/hooks", &idp.sign("ec-1", &claims("acme"))).await;
    assert_eq!(old.status, 401, "a withdrawn key no longer signs: {}", old.body);
    stack.shutdown().await;
}
}

on_both_backends! {
/// The tokens API Gateway's JWT check lets through, the function takes too: an issuer whose
/// identifier ends in `/` (Auth0's `https://<tenant>.auth0.com/`) configured as it is, and
/// a Cognito access token, which names its audience in `client_id` and has no `aud`.
async fn tokens_api_gateway_accepts_are_accepted_auth0_issuers_and_cognito_access_tokens(flavor: Flavor) {
    let idp = IdentityProvider::start().await;
    let issuer = format!("{}/", idp.issuer());
    let stack = hookbridge_e2e::TestStack::start_with(
        flavor,
        &[("HOOKBRIDGE_JWT_ISSUER", issuer.as_str()), ("HOOKBRIDGE_JWT_AUDIENCE", OIDC_AUDIENCE)],
    )
    .await;
    let auth0 = with(claims("acme"), "iss", json!(issuer));
    let a = stack.get("/v1/hooks", &idp.sign("rsa-1", &auth0)).await;
    assert_eq!(a.status, 200, "iss with its trailing slash: {}", a.body);
    let a = stack.get("/v1/hooks", &idp.sign("rsa-1", &claims("acme"))).await;
    assert_eq!(a.status, 200, "iss without it: {}", a.body);

    let cognito = with(without(claims("acme"), "aud"), "client_id", json!(OIDC_AUDIENCE));
    let a = stack.get("/v1/hooks", &idp.sign("rsa-1", &cognito)).await;
    assert_eq!(a.status, 200, "client_id as the audience: {}", a.body);
    for (what, token) in [
        ("another client", with(without(claims("acme"), "aud"), "client_id", json!("someone-else"))),
        ("client_id beside another aud", with(with(claims("acme"), "aud", json!("other")), "client_id", json!(OIDC_AUDIENCE))),
        ("neither", without(claims("acme"), "aud")),
    ] {
        let a = stack.get("/v1/hooks", &idp.sign("rsa-1", &token)).await;
        assert_eq!(a.status, 401, "{what}: {}", a.body);
        assert!(a.body["detail"].as_str().unwrap_or_default().contains("audience"), "{what}: {}", a.body);
    }
    stack.shutdown().await;
}
}

on_both_backends! {
async fn a_token_naming_no_key_is_tried_against_each_of_the_issuers_keys(flavor: Flavor) {
    let stack = TestStack::start_oidc(flavor).await;
    let idp = stack.idp();
    // The issuer publishes RSA, EC and Ed25519 keys; whichever is tried first, a key of
    // another kind must not end the search.
    for kid in ["rsa-1", "ec-1", "ed-1"] {
        let listed = stack.get("/v1/hooks", &idp.sign_unnamed(kid, &claims("acme"))).await;
        assert_eq!(listed.status, 200, "{kid}: {}", listed.body);
    }
    let forged = with(claims("acme"), "tenant", json!("other"));
    let mut token = idp.sign_unnamed("ec-1", &forged);
    token.replace_range(token.len() - 4.., "AAAA");
    assert_eq!(stack.get("/v1/hooks", &token).await.status, 401, "signed by none of them");
    stack.shutdown().await;
}
}

on_both_backends! {
async fn an_issuer_token_with_any_claim_wrong_is_401_with_the_reason(flavor: Flavor) {
    let stack = TestStack::start_oidc(flavor).await;
    let idp = stack.idp();
    let good = claims("acme");
    assert_eq!(stack.get("/v1/hooks", &idp.sign("rsa-1", &good)).await.status, 200);
    // Access tokens that say so, as Keycloak's and Cognito's do.
    for (claim, kind) in [("typ", "Bearer"), ("token_use", "access"), ("typ", "at+jwt")] {
        let a = stack.get("/v1/hooks", &idp.sign("rsa-1", &with(good.clone(), claim, json!(kind)))).await;
        assert_eq!(a.status, 200, "{claim} {kind}: {}", a.body);
    }

    let other = IdentityProvider::start().await;
    let local_key = hookbridge_core::settings::LOCAL_DEV_SECRET;
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &with(good.clone(), "iss", json!(idp.issuer())),
        &jsonwebtoken::EncodingKey::from_secret(local_key.as_bytes()),
    )
    .unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        ("another audience", idp.sign("rsa-1", &with(good.clone(), "aud", json!("someone-else"))), "audience"),
        ("no audience", idp.sign("rsa-1", &without(good.clone(), "aud")), "audience"),
        ("another issuer's iss", idp.sign("rsa-1", &with(good.clone(), "iss", json!("https://elsewhere.example"))), "issuer"),
        ("signed by another issuer", other.sign("rsa-1", &with(good.clone(), "iss", json!(idp.issuer()))), "key"),
        ("no exp", idp.sign("ec-1", &without(good.clone(), "exp")), "expiry"),
        ("expired", idp.sign("ec-1", &with(good.clone(), "exp", json!(now() - 3600))), "expired"),
        ("not yet valid", idp.sign("ed-1", &with(good.clone(), "nbf", json!(now() + 600))), "nbf"),
        ("no tenant", idp.sign("rsa-1", &without(good.clone(), "tenant")), "tenant"),
        ("a Cognito ID token", idp.sign("rsa-1", &with(good.clone(), "token_use", json!("id"))), "access token"),
        ("a Keycloak ID token", idp.sign("rsa-1", &with(good.clone(), "typ", json!("ID"))), "access token"),
        ("a Keycloak logout token", idp.sign("ec-1", &with(good.clone(), "typ", json!("Logout"))), "access token"),
        ("HS256 with the development key", hs256, "HS256"),
    ];
    for (what, token, reason) in &cases {
        let a = stack.get("/v1/hooks", token).await;
        assert_eq!(a.status, 401, "{what}: {}", a.body);
        assert_eq!(a.headers["content-type"], "application/problem+json", "{what}");
        let detail = a.body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(reason), "{what}: the reason {detail:?} does not say {reason:?}");
    }
    stack.shutdown().await;
}
}

on_both_backends! {
async fn tokens_under_made_up_kids_cannot_make_the_api_hammer_the_issuer(flavor: Flavor) {
    let stack = TestStack::start_oidc(flavor).await;
    let idp = stack.idp();
    assert_eq!(stack.get("/v1/hooks", &idp.sign("rsa-1", &claims("acme"))).await.status, 200);
    // A key the issuer never published (an attacker's), under kids it never used.
    for n in 0..20 {
        idp.add_key(KeyKind::Rs256, &format!("rogue-{n}"));
        idp.withdraw_key(&format!("rogue-{n}"));
    }
    let before = idp.jwks_fetches();
    let calls = (0..20).map(|n| {
        let t = idp.sign(&format!("rogue-{n}"), &claims("acme"));
        let stack = &stack;
        async move { stack.get("/v1/hooks", &t).await.status }
    });
    for status in futures::future::join_all(calls).await {
        assert_eq!(status, 401);
    }
    assert!(
        idp.jwks_fetches() - before <= 1,
        "{} fetches for 20 unknown kids within the refresh interval",
        idp.jwks_fetches() - before
    );
    stack.shutdown().await;
}
}

on_both_backends! {
async fn the_tenant_claim_is_configurable_and_scopes_may_come_as_scp(flavor: Flavor) {
    let idp = IdentityProvider::start().await;
    let stack = TestStack::start_with(
        flavor,
        &[
            ("HOOKBRIDGE_JWT_ISSUER", idp.issuer()),
            ("HOOKBRIDGE_JWT_AUDIENCE", OIDC_AUDIENCE),
            ("HOOKBRIDGE_TENANT_CLAIM", "org_id"),
            ("HOOKBRIDGE_JWT_SECRET", "an operator key of at least 32 bytes, for hookbridge token"),
        ],
    )
    .await;
    let r = Receiver::start().await;
    let base = json!({"sub": "svc", "exp": now() + 600, "org_id": "acme", "aud": OIDC_AUDIENCE});
    let writer = idp.sign("rsa-1", &with(base.clone(), "scp", json!(["hooks:read", "hooks:write"])));
    let created = stack.post("/v1/hooks", &writer, &json!({"name": "h", "url": r.url("/")})).await;
    assert_eq!(created.status, 201, "{}", created.body);

    let reader = idp.sign("rsa-1", &with(base.clone(), "scp", json!(["hooks:read"])));
    assert_eq!(stack.get("/v1/hooks", &reader).await.body["hooks"].as_array().unwrap().len(), 1);
    let elsewhere = with(with(base.clone(), "org_id", json!("globex")), "scp", json!(["hooks:read"]));
    let theirs = stack.get("/v1/hooks", &idp.sign("rsa-1", &elsewhere)).await;
    assert_eq!(theirs.body["hooks"].as_array().unwrap().len(), 0, "the hook is acme's, by org_id");
    let denied = stack.post("/v1/hooks", &reader, &json!({"name": "h2", "url": r.url("/")})).await;
    assert_eq!(denied.status, 403, "{}", denied.body);
    let tenant_claim =
        idp.sign("rsa-1", &json!({"tenant": "acme", "exp": now() + 600, "scope": ALL_SCOPES, "aud": OIDC_AUDIENCE}));
    assert_eq!(stack.get("/v1/hooks", &tenant_claim).await.status, 401, "the tenant is read from org_id only");
    // The deployment's own tokens (`hookbridge token`, HS256) name it `tenant`, and still work.
    let own = stack.get("/v1/hooks", &stack.token("acme", ALL_SCOPES)).await;
    assert_eq!((own.status.as_u16(), own.body["hooks"].as_array().map(Vec::len)), (200, Some(1)), "{}", own.body);
    stack.shutdown().await;
}
}

on_both_backends! {
async fn an_issuer_on_a_network_hooks_may_not_reach_is_not_fetched(flavor: Flavor) {
    let idp = IdentityProvider::start().await;
    let stack = TestStack::start_with(
        flavor,
        &[
            ("HOOKBRIDGE_JWT_ISSUER", idp.issuer()),
            ("HOOKBRIDGE_JWT_AUDIENCE", OIDC_AUDIENCE),
            ("HOOKBRIDGE_ALLOWED_NETWORKS", ""),
        ],
    )
    .await;
    let claims = json!({"tenant": "acme", "exp": now() + 600, "aud": OIDC_AUDIENCE});
    let a = stack.get("/v1/hooks", &idp.sign("rsa-1", &claims)).await;
    // The keys cannot be read (the deployment's mistake, which its log names): not the
    // token's fault.
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(idp.jwks_fetches(), 0, "the guarded client refused the loopback issuer");
    stack.shutdown().await;
}
}

/// Fetching the issuer's keys (a token under a kid not seen yet) does not hold up tokens
/// under keys already known, however slow the issuer; and an issuer that fails is asked
/// no more often than one that answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_or_failing_issuer_holds_up_only_tokens_under_new_keys() {
    let stack = TestStack::start_oidc(hookbridge_e2e::Flavor::Embedded).await;
    let idp = stack.idp();
    let known = idp.sign("rsa-1", &claims("acme"));
    assert_eq!(stack.get("/v1/hooks", &known).await.status, 200);
    idp.add_key(KeyKind::Rs256, "rogue");
    idp.withdraw_key("rogue");
    let rogue = idp.sign("rogue", &claims("acme"));

    tokio::time::sleep(subscription_api::REFRESH_AT_MOST_EVERY).await;
    idp.answer_keys_after(std::time::Duration::from_secs(5));
    let fetches = idp.jwks_fetches();
    let slow = {
        let (base, rogue) = (stack.base_url().to_owned(), rogue.clone());
        tokio::spawn(async move {
            reqwest::Client::new().get(format!("{base}/v1/hooks")).bearer_auth(rogue).send().await.unwrap().status()
        })
    };
    while idp.jwks_fetches() == fetches {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The fetch is under way: a token under a known key is answered meanwhile.
    assert_eq!(stack.get("/v1/hooks", &known).await.status, 200);
    assert!(!slow.is_finished(), "answered only after the issuer's keys came");
    // Too slow (past the fetch's 2 s): whether the issuer has that key was not learnt.
    assert_eq!(slow.await.unwrap(), 503);

    tokio::time::sleep(subscription_api::REFRESH_AT_MOST_EVERY).await;
    idp.answer_keys_after(std::time::Duration::ZERO);
    idp.fail_keys(true);
    let before = idp.jwks_fetches();
    for _ in 0..5 {
        // Whether the issuer has that key cannot be told while its keys cannot be read:
        // not the token's fault, so not a 401 (which tells a client to get another).
        let answer = stack.get("/v1/hooks", &rogue).await;
        assert_eq!(answer.status, 503, "{}", answer.body);
        assert!(answer.headers.contains_key("retry-after"));
    }
    assert_eq!(idp.jwks_fetches() - before, 1, "a failed fetch is not tried again at once");
    assert_eq!(stack.get("/v1/hooks", &known).await.status, 200, "known keys still work");
    stack.shutdown().await;
}

/// An instance that starts while the issuer's keys cannot be read (an outage, a DNS blip)
/// answers its tokens `503`, and takes them once the keys can be read: it answered `401`,
/// "not signed by a key of the issuer", for every valid token until then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_while_the_issuers_keys_cannot_be_read_is_503_not_401() {
    let stack = TestStack::start_oidc(hookbridge_e2e::Flavor::Embedded).await;
    let idp = stack.idp();
    idp.fail_keys(true);
    let token = idp.sign("rsa-1", &claims("acme"));
    for _ in 0..2 {
        let answer = stack.get("/v1/hooks", &token).await;
        assert_eq!(answer.status, 503, "now and a moment later: {}", answer.body);
    }
    idp.fail_keys(false);
    tokio::time::sleep(subscription_api::REFRESH_AT_MOST_EVERY).await;
    assert_eq!(stack.get("/v1/hooks", &token).await.status, 200);
    stack.shutdown().await;
}
