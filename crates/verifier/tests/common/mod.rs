//! What the verifier's tests share: a verifier over a harness's backend, reaching real
//! receivers on this machine.

use std::time::Duration;

use hookbridge_core::hook::NetworkPolicy;
use hookbridge_core::ports::Backend;
use hookbridge_outbound::{Outbound, OutboundSettings};
use verifier::{Verifier, VerifierPorts};

/// A verifier over `backend`, allowed to reach loopback.
#[allow(clippy::expect_used)] // Test support: fails loudly on purpose.
pub fn verifier_on(backend: &Backend) -> Verifier {
    Verifier {
        ports: VerifierPorts::of(backend),
        outbound: Outbound::new(OutboundSettings { timeout: Duration::from_secs(5), network: NetworkPolicy::local() })
            .expect("an outbound client"),
        account: "123456789012".into(),
        region: "us-east-1".into(),
    }
}
