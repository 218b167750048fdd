//! Event-type patterns: globs where `*` matches any run of characters.
//!
//! Every other character is literal, `.` included. Treating patterns as regular
//! expressions (as one well-known implementation does) makes `admin.CLIENT-*` mean
//! "admin, any character, CLIENT, any number of dashes", which does not match
//! `admin.CLIENT-CREATE` as a whole and does match `adminXCLIENT`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest pattern accepted; event types are short dotted names.
pub const MAX_PATTERN_LEN: usize = 128;

/// A validated event-type pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventTypePattern(String);

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPattern {
    /// Empty or longer than [`MAX_PATTERN_LEN`].
    #[error("must be 1-{MAX_PATTERN_LEN} bytes")]
    Length,
    /// A control character, one a queue cannot carry, or a space at either end.
    #[error("must not hold control characters, nor begin or end with a space")]
    Character,
}

impl EventTypePattern {
    /// The pattern that matches every event type.
    pub fn any() -> Self {
        Self("*".to_owned())
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `event_type` matches the whole pattern.
    pub fn matches(&self, event_type: &str) -> bool {
        glob_match(self.0.as_bytes(), event_type.as_bytes())
    }
}

/// Greedy wildcard matching with one backtrack point: linear in practice, and never
/// exponential, whatever a hostile pattern holds.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            // Let the last star swallow one more character and try again from there.
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

impl FromStr for EventTypePattern {
    type Err = InvalidPattern;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > MAX_PATTERN_LEN {
            return Err(InvalidPattern::Length);
        }
        // Whatever an event's `detail-type` may hold, so every type published can be named
        // exactly: EventBridge's own types have spaces ("EC2 Instance State-change
        // Notification"), and ASCII without spaces left `Order*Created` the only way to
        // catch `Order Created`, which catches `Order Not Created` too.
        // (Not a space at either end: a console form, one pattern a line, trims its lines.)
        if s.chars().any(|c| c.is_control() || matches!(c, '\u{FFFE}' | '\u{FFFF}')) || s.trim() != s {
            return Err(InvalidPattern::Character);
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for EventTypePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for EventTypePattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EventTypePattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether any of `patterns` matches `event_type`.
pub fn any_matches(patterns: &[EventTypePattern], event_type: &str) -> bool {
    patterns.iter().any(|p| p.matches(event_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        p.parse::<EventTypePattern>().unwrap().matches(t)
    }

    #[test]
    fn star_matches_everything() {
        assert!(m("*", "user.session.start"));
        assert!(m("*", ""));
    }

    #[test]
    fn prefix_patterns() {
        assert!(m("access.*", "access.LOGIN"));
        assert!(m("access.*", "access."));
        assert!(!m("access.*", "accessX"));
        assert!(!m("access.*", "admin.access.LOGIN"));
    }

    #[test]
    fn keycloak_admin_client_pattern_is_a_glob_not_a_regex() {
        assert!(m("admin.CLIENT-*", "admin.CLIENT-CREATE"));
        assert!(m("admin.CLIENT-*", "admin.CLIENT-DELETE"));
        assert!(!m("admin.CLIENT-*", "adminXCLIENT-CREATE"));
        assert!(!m("admin.CLIENT-*", "admin.CLIENT"));
        assert!(!m("admin.CLIENT-*", "admin.USER-CREATE"));
    }

    #[test]
    fn exact_and_inner_stars() {
        assert!(m("user.session.start", "user.session.start"));
        assert!(!m("user.session.start", "user.session.started"));
        assert!(m("user.*.start", "user.session.start"));
        assert!(m("*.start", "user.session.start"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("a**", "a"));
    }

    #[test]
    fn regex_metacharacters_are_literal() {
        assert!(m("a+b", "a+b"));
        assert!(!m("a+b", "aab"));
        assert!(!m("a.c", "abc"));
        assert!(m("[x]", "[x]"));
    }

    #[test]
    fn hostile_pattern_stays_fast() {
        let p = format!("{}b", "*a".repeat(60));
        let t = "a".repeat(5_000);
        assert!(!m(&p, &t));
    }

    #[test]
    fn any_type_that_can_be_published_can_be_named_exactly() {
        for t in ["Order Created", "EC2 Instance State-change Notification", "user.créé", "注文.作成"] {
            let p: EventTypePattern = t.parse().unwrap();
            assert!(p.matches(t), "{t}");
        }
        let p: EventTypePattern = "Order Created".parse().unwrap();
        assert!(!p.matches("Order Not Created"));
        assert!(m("user.cr*", "user.créé") && m("*é", "user.créé") && !m("*e", "user.créé"));
    }

    #[test]
    fn invalid_patterns() {
        assert_eq!("".parse::<EventTypePattern>(), Err(InvalidPattern::Length));
        assert_eq!("a\tb".parse::<EventTypePattern>(), Err(InvalidPattern::Character));
        assert_eq!("a\u{FFFE}".parse::<EventTypePattern>(), Err(InvalidPattern::Character));
        assert_eq!(" a".parse::<EventTypePattern>(), Err(InvalidPattern::Character));
        assert_eq!("   ".parse::<EventTypePattern>(), Err(InvalidPattern::Character));
        assert!("x".repeat(129).parse::<EventTypePattern>().is_err());
    }
}
