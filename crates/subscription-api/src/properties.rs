//! The token check's property, for the `jwt` fuzz target and its regression test: no token
//! panics the check, and only a token signed with the key passes it.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use crate::auth::{Claims, JwtKey, Tokens, mint_token};

/// The key the fuzz target's valid tokens are signed with.
const KEY: &str = "fuzz-key-0123456789abcdef0123456789";

/// Runs a check that never waits (an HS256 key in memory) to its end.
fn at_once<T>(f: impl Future<Output = T>) -> T {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("an HS256 check with a key in memory never waits"),
    }
}

/// Checks `token`; it must be refused unless it verifies under the key, and a token minted
/// with another key must never pass.
pub fn token(token: &str) {
    let key = JwtKey::new(KEY);
    let tokens = Tokens::hs256(key.clone());
    if let Ok(caller) = at_once(tokens.check(token)) {
        // Only reachable with a correctly signed token, which a fuzzer cannot forge.
        panic!("an arbitrary token passed the check: {caller:?}");
    }
    let claims = Claims {
        sub: token.chars().take(64).collect(),
        tenant: "t".into(),
        scope: token.chars().take(64).collect(),
        exp: chrono::Utc::now().timestamp() as u64 + 600,
    };
    if let Ok(other) = mint_token(&JwtKey::new(format!("{KEY}-other")), &claims) {
        assert!(at_once(tokens.check(&other)).is_err(), "a token signed with another key passed");
    }
    if let Ok(good) = mint_token(&key, &claims) {
        let caller = at_once(tokens.check(&good)).unwrap_or_else(|e| panic!("a well-signed token failed: {e}"));
        assert_eq!(caller.sub, claims.sub, "a well-signed token read wrong");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuzz_regressions_still_hold() {
        // A folder missing or empty is a failure, not a pass.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/jwt");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap_or_else(|e| panic!("{}: {e}", dir.display())).path();
            if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            super::token(&String::from_utf8_lossy(&bytes));
            checked += 1;
        }
        assert!(checked > 0, "no inputs in {}", dir.display());
    }
}
