//! What these tests share: the API over a backend, and a token for tenant `acme`.

use hookbridge_core::hook::NetworkPolicy;
use hookbridge_core::settings::LOCAL_DEV_SECRET;
use hookbridge_testkit::Harness;
use subscription_api::{Api, ApiPorts, ApiSettings, Claims, JwtKey, mint_token};

/// The API over `h`'s backend, and a token of tenant `acme` with `scope`.
pub fn api_and_token(h: &dyn Harness, scope: &str) -> (Api, String) {
    let api = Api::new(
        ApiPorts::of(h.backend()),
        ApiSettings::local(JwtKey::new(LOCAL_DEV_SECRET), NetworkPolicy::default()),
    );
    let exp = chrono::Utc::now().timestamp() as u64 + 600;
    let claims = Claims { sub: "s".into(), tenant: "acme".into(), scope: scope.into(), exp };
    (api, mint_token(&JwtKey::new(LOCAL_DEV_SECRET), &claims).expect("a token"))
}
