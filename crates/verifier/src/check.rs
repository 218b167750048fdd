//! The two checks and how their findings change a hook.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hookbridge_core::hook::{AuthConfig, ConnectionState, Hook, HookConfig, SecretsOwner, VerificationStatus};
use hookbridge_core::message::event_type;

use crate::Verifier;

/// The operation of the error a check returns when the hook's endpoint had trouble
/// answering its challenge: no finding, the check comes back.
pub(crate) const ENDPOINT_TROUBLE: &str = "verifier.challenge";

/// Likewise when its token endpoint had trouble.
pub(crate) const TOKEN_TROUBLE: &str = "oauth.token";

/// A fresh, unguessable challenge value (256 random bits).
pub fn challenge_value() -> String {
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What the checks found; `None` where a check did not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Findings {
    /// The ownership challenge: passed, or why not.
    pub challenge: Option<Result<(), String>>,
    /// The OAuth token fetch: worked, or the token endpoint's error.
    pub token: Option<Result<(), String>>,
    /// The token endpoint had trouble of its own (no answer, a 5xx, a 429) after a
    /// change's challenge passed: the pass is a finding, kept, and the check comes back
    /// for the token alone, with the hook's connection state as it was.
    pub token_put_off: bool,
    /// When the checks began (the challenge was sent then).
    pub began: DateTime<Utc>,
}

/// Runs the checks the hook needs. Fails, for the message to be retried, when the hook's
/// secrets cannot be opened this time (the key service failing or refusing), or, before the
/// `last_try`, the token endpoint gave no answer or had trouble of its own (a 5xx, a 429),
/// or a proven endpoint of a hook that requires proof did so to its challenge (and the
/// token endpoint did not refuse the credentials): that says nothing about the
/// credentials or the owner, so it is no finding.
pub(crate) async fn run(
    v: &Verifier,
    hook: &Hook,
    force_challenge: bool,
    last_try: bool,
) -> hookbridge_core::Result<Findings> {
    let began = Utc::now();
    let cfg = &hook.config;
    let wants_challenge = force_challenge
        || (cfg.verification.required && hook.state.verification.status != VerificationStatus::Verified);
    let oauth = match &cfg.auth {
        AuthConfig::OauthClientCredentials(oauth) => Some(oauth),
        _ => None,
    };
    // Opened once, only if a check sends one of them. Unreadable (`Corrupt`) is a finding
    // of each check that needed them; the key service failing is none.
    let secrets = if reads_secrets(cfg, wants_challenge) {
        match v.ports.sealer.open(SecretsOwner::of(hook), &hook.sealed).await {
            Ok(secrets) => Some(Ok(secrets)),
            Err(e @ hookbridge_core::Error::Corrupt { .. }) => {
                Some(Err(format!("cannot open the hook's secrets: {e}")))
            }
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    // A challenge put off: its endpoint's trouble is no finding this time.
    let mut put_off = None;
    let challenge = if wants_challenge {
        let value = challenge_value();
        let found = match &secrets {
            Some(Err(unreadable)) if hookbridge_outbound::challenge_needs_secrets(cfg) => Some(Err(unreadable.clone())),
            opened => match v.outbound.challenge(cfg, opened.as_ref().and_then(|s| s.as_ref().ok()), &value).await {
                Ok(()) => Some(Ok(())),
                // A proven endpoint of a hook that requires proof keeps receiving while
                // it is checked again; a moment's outage is no answer about its owner,
                // and taken for one it cancelled every delivery until someone asked
                // again. Any other endpoint is told at once: nothing hangs on the answer
                // (an unproven one gets nothing meanwhile), and a wrong URL is best seen
                // early.
                Err(e)
                    if endpoints_own_trouble(&e)
                        && cfg.verification.required
                        && hook.state.verification.proven()
                        && !last_try =>
                {
                    put_off = Some(e.to_string());
                    None
                }
                Err(e) => Some(Err(e.to_string())),
            },
        };
        tracing::info!(
            hook_id = %hook.id,
            tenant = %hook.tenant,
            passed = matches!(found, Some(Ok(()))),
            put_off = put_off.is_some(),
            "ownership challenge"
        );
        found
    } else {
        None
    };
    let mut token_put_off = false;
    let token = match (oauth, &secrets) {
        (Some(oauth), Some(opened)) => {
            let r = match opened {
                Ok(secrets) => {
                    match v.outbound.oauth_token(hook.id, oauth, secrets, hookbridge_outbound::TokenWanted::Fresh).await
                    {
                        Ok(_) => Some(Ok(())),
                        // A challenge just passed is kept: dropped with the token, it left
                        // an endpoint that must prove itself unproven, and every delivery
                        // cancelled "hook not verified", for as long as the token endpoint
                        // was down. Its deliveries now get tokens for themselves. Not for
                        // a check asked for (`POST /verify`): its message challenges on
                        // every receive, and would tell `hook.verified` on each.
                        Err(e) if passing(&e) && !last_try && !force_challenge && matches!(challenge, Some(Ok(()))) => {
                            token_put_off = true;
                            None
                        }
                        Err(e) if passing(&e) && !last_try => {
                            return Err(hookbridge_core::Error::backend(TOKEN_TROUBLE, e.to_string()));
                        }
                        Err(e) => Some(Err(e.to_string())),
                    }
                }
                Err(unreadable) => Some(Err(unreadable.clone())),
            };
            tracing::info!(
                hook_id = %hook.id,
                tenant = %hook.tenant,
                authorized = matches!(r, Some(Ok(()))),
                put_off = token_put_off,
                "oauth authorization"
            );
            r
        }
        _ => None,
    };
    // The challenge comes back with the message, unless the token endpoint refused the
    // credentials: that is a finding now, and the hook, still `PENDING`, is challenged
    // again at its next check.
    match put_off {
        Some(why) if !matches!(token, Some(Err(_))) => Err(hookbridge_core::Error::backend(ENDPOINT_TROUBLE, why)),
        _ => Ok(Findings { challenge, token, token_put_off, began }),
    }
}

/// Whether a token fetch's failure may pass: no answer (a timeout, a refused connection),
/// or the token endpoint's own trouble (5xx, 429, 408). A refusal of the credentials
/// (`invalid_client`, any other 4xx) or an address the deployment does not allow may not.
fn passing(e: &hookbridge_outbound::TokenError) -> bool {
    match e {
        hookbridge_outbound::TokenError::Request { class, .. } => {
            *class != hookbridge_core::delivery::ErrorClass::SsrfBlocked
        }
        hookbridge_outbound::TokenError::Rejected { status, .. } => matches!(status, 408 | 429 | 500..=599),
    }
}

/// Whether a challenge's failure is the endpoint's own trouble, which may pass as a token
/// fetch's may: no answer (not an address the deployment refuses), or a 5xx, 429 or 408.
fn endpoints_own_trouble(e: &hookbridge_outbound::ChallengeError) -> bool {
    match e {
        hookbridge_outbound::ChallengeError::NoResponse { class, .. } => *class != "ssrf_blocked",
        hookbridge_outbound::ChallengeError::Status(status) => matches!(status, 408 | 429 | 500..=599),
        _ => false,
    }
}

/// Whether a check of the hook sends one of its secrets: the token fetch always, the
/// challenge (when `challenged`) if the hook's requests carry a static credential or a
/// secret header.
pub(crate) fn reads_secrets(cfg: &HookConfig, challenged: bool) -> bool {
    matches!(cfg.auth, AuthConfig::OauthClientCredentials(_))
        || (challenged && hookbridge_outbound::challenge_needs_secrets(cfg))
}

impl Findings {
    /// Writes the findings into the hook's state, which was `was` before the check (it
    /// reads AUTHORIZING while the check runs); returns the events to publish.
    ///
    /// Another check may have ended while this one ran (a change's, and one asked for):
    /// what it wrote is then what this one changes, and the outcome of a challenge sent
    /// before the one stored is left out, so a slow failure cannot overwrite a newer pass.
    pub fn apply(
        &self,
        hook: &mut Hook,
        was: ConnectionState,
        now: DateTime<Utc>,
    ) -> Vec<(&'static str, Option<String>)> {
        let was = match hook.state.connection_state {
            ConnectionState::Authorizing => was,
            written_meanwhile => written_meanwhile,
        };
        let mut events = Vec::new();
        let v = &mut hook.state.verification;
        let challenge = self.challenge.as_ref().filter(|_| v.challenged_at.is_none_or(|at| at <= self.began));
        if challenge.is_some() {
            v.challenged_at = Some(self.began);
        }
        match challenge {
            Some(Ok(())) => {
                v.status = VerificationStatus::Verified;
                v.verified_at = Some(now);
                v.last_error = None;
                events.push((event_type::HOOK_VERIFIED, None));
            }
            Some(Err(why)) => {
                v.status = VerificationStatus::Failed;
                v.last_error = Some(why.clone());
                events.push((event_type::HOOK_VERIFICATION_FAILED, Some(why.clone())));
            }
            None => {}
        }
        if self.token_put_off {
            // The token is still to be had: the hook reads as it did until it is.
            hook.state.connection_state = was;
            hook.state.checked_from = None;
            return events;
        }
        // Proven as delivery judges it: a proven endpoint being checked again on request
        // (`POST /verify`) is still proven while the check runs.
        let ownership_ok = !hook.config.verification.required || v.proven();
        let token_ok = !matches!(self.token, Some(Err(_)));
        hook.state.connection_error = match &self.token {
            Some(Err(why)) => Some(why.clone()),
            _ => None,
        };
        hook.state.connection_state =
            if ownership_ok && token_ok { ConnectionState::Authorized } else { ConnectionState::Deauthorized };
        hook.state.checked_from = None;
        match (hook.state.connection_state, &self.token) {
            (ConnectionState::Authorized, _) if was != ConnectionState::Authorized => {
                events.push((event_type::HOOK_AUTHORIZED, None));
            }
            (ConnectionState::Deauthorized, Some(Err(why))) => {
                events.push((event_type::HOOK_DEAUTHORIZED, Some(why.clone())));
            }
            (ConnectionState::Deauthorized, _) => {
                events.push((event_type::HOOK_DEAUTHORIZED, Some("ownership not verified".to_owned())));
            }
            _ => {}
        }
        events
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

    use hookbridge_core::ids::HookId;

    use super::*;

    /// A hook that must prove ownership, proven once, being checked again on request
    /// (`POST /verify` leaves it `PENDING` with its `verified_at`): a check that did not run
    /// the challenge (one asked for by a change of its headers, say) finds it still
    /// authorized, as delivery does. It wrote `DEAUTHORIZED` and told `hook.deauthorized`
    /// ("ownership not verified") while its deliveries went on.
    #[test]
    fn a_proven_hook_checked_again_on_request_stays_authorized() {
        let (mut hook, _) = hookbridge_testkit::contract::unsealed_hook(
            "acme",
            HookId::generate(),
            serde_json::json!({"name": "h", "url": "http://127.0.0.1:9/", "verification": {"required": true}}),
        );
        let now = Utc::now();
        hook.state.connection_state = ConnectionState::Authorized;
        let v = &mut hook.state.verification;
        (v.status, v.verified_at, v.last_error) = (VerificationStatus::Pending, Some(now), None);
        assert!(hook.deliverable().is_ok(), "delivery holds it proven");

        // It reads AUTHORIZING while the check runs, as the verifier writes it.
        hook.state.connection_state = ConnectionState::Authorizing;
        let found = Findings { challenge: None, token: Some(Ok(())), token_put_off: false, began: now };
        let events = found.apply(&mut hook, ConnectionState::Authorized, now);
        assert_eq!(hook.state.connection_state, ConnectionState::Authorized);
        assert!(events.is_empty(), "no news, though it read AUTHORIZING meanwhile: {events:?}");
        // From another state, it is news.
        hook.state.connection_state = ConnectionState::Authorizing;
        let events = found.apply(&mut hook, ConnectionState::Updating, now);
        assert_eq!(events, [(event_type::HOOK_AUTHORIZED, None)]);
    }
}
