//! The token check's property, for the `jwt` fuzz target and its regression test: no token
//! panics the check, and only a token signed with the key passes it.

use crate::auth::{Claims, JwtKey, mint_token, verify_token};

/// The key the fuzz target's valid tokens are signed with.
const KEY: &str = "fuzz-key";

/// Checks `token`; it must be refused unless it verifies under the key, and a token minted
/// with another key must never pass.
pub fn token(token: &str) {
    let key = JwtKey::new(KEY);
    if let Ok(claims) = verify_token(&key, token) {
        // Only reachable with a correctly signed token, which a fuzzer cannot forge.
        panic!("an arbitrary token passed the check: {claims:?}");
    }
    let claims = Claims {
        sub: token.chars().take(64).collect(),
        tenant: "t".into(),
        scope: token.chars().take(64).collect(),
        exp: None,
    };
    if let Ok(other) = mint_token(&JwtKey::new(format!("{KEY}-other")), &claims) {
        assert!(verify_token(&key, &other).is_err(), "a token signed with another key passed");
    }
    if let Ok(good) = mint_token(&key, &claims) {
        assert_eq!(verify_token(&key, &good).ok(), Some(claims), "a well-signed token failed");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuzz_regressions_still_hold() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/jwt");
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if let Ok(bytes) = std::fs::read(entry.path()) {
                super::token(&String::from_utf8_lossy(&bytes));
            }
        }
        super::token("eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.eyJ0ZW5hbnQiOiJ0In0.");
    }
}
