//! Logs, set up once for every binary: JSON lines where a machine reads them (Lambda's
//! CloudWatch, a file, a pipe), readable coloured lines on a terminal, the same fields
//! either way: those each stage attaches and those of the span it runs in (tenant,
//! hook_id, delivery_id), so every line a stage writes about a delivery names it (the
//! HTTP client's too while the worker's `delivery` span is on: README). `RUST_LOG` filters
//! (default `info`; one that does not parse is refused); `HOOKBRIDGE_LOG_FORMAT=json|pretty`
//! overrides the choice.

use std::io::IsTerminal;

use hookbridge_core::settings::SettingsError;
use tracing_subscriber::filter::{LevelFilter, Targets, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// `HOOKBRIDGE_LOG_FORMAT`: `json` or `pretty` (default: `pretty` on a terminal, else `json`).
pub const LOG_FORMAT: &str = "HOOKBRIDGE_LOG_FORMAT";

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Standard output: Lambda hands it to CloudWatch Logs.
    Stdout,
    /// Standard error: the `hookbridge` command, whose standard output is for the user.
    Stderr,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object a line.
    Json,
    /// One readable, coloured line an event.
    Pretty,
}

impl Format {
    /// The format `HOOKBRIDGE_LOG_FORMAT` names, or the default for an output that is (or
    /// is not) a terminal.
    pub fn choose(variable: Option<&str>, terminal: bool) -> Result<Self, SettingsError> {
        match variable.map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(if terminal { Self::Pretty } else { Self::Json }),
            Some("json") => Ok(Self::Json),
            Some("pretty") => Ok(Self::Pretty),
            Some(other) => {
                Err(SettingsError { variable: LOG_FORMAT, message: format!("{other:?} is not json or pretty") })
            }
        }
    }
}

/// `RUST_LOG`: which lines are written (default `info`).
pub const LOG_FILTER: &str = "RUST_LOG";

/// The filter `RUST_LOG` names, or `info` when it is unset or empty. A filter that does not
/// parse is refused: falling back to `info` would hide the very lines someone asked for.
///
/// The directives are levels by target prefix (`warn,hookbridge_outbound=debug`), not
/// `EnvFilter`'s span and field matches: those need a regular-expression engine, about
/// 0.4 MB of each Lambda binary, for a filter nobody sets on a function.
pub fn filter(variable: Option<&str>) -> Result<Targets, SettingsError> {
    match variable.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(Targets::new().with_default(LevelFilter::INFO)),
        Some(directives) => targets(directives).map_err(|e| SettingsError {
            variable: LOG_FILTER,
            message: format!("{directives:?} is not a filter: {e}"),
        }),
    }
}

/// `Targets` as `EnvFilter` read them: blanks around a directive ignored and an empty one
/// skipped (`Targets` read `info,` as `info,error`, so everything but errors went unseen),
/// and a span directive refused (`Targets` took `[deliver]=debug` as a target that never
/// matches).
fn targets(directives: &str) -> Result<Targets, String> {
    let kept: Vec<&str> = directives.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
    if let Some(span) = kept.iter().find(|d| d.contains(['[', ']', '{', '}'])) {
        return Err(format!("{span:?} filters by span or field, which is not supported: levels by target only"));
    }
    if kept.is_empty() {
        return Ok(Targets::new().with_default(LevelFilter::INFO));
    }
    kept.join(",").parse::<Targets>().map_err(|e| e.to_string())
}

/// Whether a line may be written whatever `RUST_LOG` asks: not the Lambda runtime's
/// `trace` lines, which carry whole invocation events (an API request's `authorization`
/// header, its cookies, a portal link's code, a body with passwords and secrets).
fn not_the_runtimes_trace(meta: &tracing::Metadata<'_>) -> bool {
    !(*meta.level() == tracing::Level::TRACE && meta.target().starts_with("lambda_runtime"))
}

/// Installs the subscriber; call once at the top of `main`.
pub fn init(output: Output) -> Result<(), SettingsError> {
    let terminal = match output {
        Output::Stdout => std::io::stdout().is_terminal(),
        Output::Stderr => std::io::stderr().is_terminal(),
    };
    let format = Format::choose(std::env::var(LOG_FORMAT).ok().as_deref(), terminal)?;
    let filter = filter(std::env::var(LOG_FILTER).ok().as_deref())?;
    let subscriber = tracing_subscriber::registry().with(filter).with(filter_fn(not_the_runtimes_trace));
    let layer = tracing_subscriber::fmt::layer();
    // `try_init`: a second call (tests) keeps the first subscriber.
    let _ = match (format, output) {
        (Format::Json, Output::Stdout) => {
            subscriber.with(layer.json().with_ansi(false).with_current_span(true).with_span_list(false)).try_init()
        }
        (Format::Json, Output::Stderr) => subscriber
            .with(
                layer
                    .json()
                    .with_ansi(false)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        (Format::Pretty, Output::Stdout) => subscriber.with(layer.with_ansi(terminal).with_target(false)).try_init(),
        (Format::Pretty, Output::Stderr) => {
            subscriber.with(layer.with_ansi(terminal).with_target(false).with_writer(std::io::stderr)).try_init()
        }
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_for_machines_pretty_for_people_and_the_variable_decides() {
        assert_eq!(Format::choose(None, false).unwrap(), Format::Json);
        assert_eq!(Format::choose(None, true).unwrap(), Format::Pretty);
        assert_eq!(Format::choose(Some("json"), true).unwrap(), Format::Json);
        assert_eq!(Format::choose(Some("pretty"), false).unwrap(), Format::Pretty);
        assert_eq!(Format::choose(Some("xml"), false).unwrap_err().variable, LOG_FORMAT);
    }

    /// `RUST_LOG=trace` writes everyone's `trace` lines but the Lambda runtime's, which
    /// hold whole requests, tokens included.
    #[test]
    fn the_runtimes_trace_lines_are_never_written() {
        #[derive(Clone, Default)]
        struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        for asked in ["trace", "lambda_runtime=trace", "lambda_runtime::layers::api_response=trace,lambda=trace"] {
            let lines = Lines::default();
            let writer = lines.clone();
            let subscriber = tracing_subscriber::registry()
                .with(filter(Some(asked)).unwrap_or_else(|e| panic!("{e:?}")))
                .with(filter_fn(not_the_runtimes_trace))
                .with(tracing_subscriber::fmt::layer().with_writer(move || writer.clone()));
            tracing::subscriber::with_default(subscriber, || {
                tracing::trace!(target: "lambda_runtime::layers::api_response", "Bearer eyJ-secret");
                tracing::debug!(target: "lambda_runtime::layers::api_response", "a debug line");
                tracing::trace!(target: "hookbridge_outbound", "an outbound trace");
            });
            let written = String::from_utf8_lossy(&lines.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
                .into_owned();
            assert!(!written.contains("eyJ-secret"), "{asked}: {written}");
            assert!(written.contains("a debug line"), "{asked}: {written}");
            assert_eq!(written.contains("an outbound trace"), asked == "trace", "{asked}: {written}");
        }
    }

    #[test]
    fn a_filter_that_does_not_parse_is_refused_and_none_means_info() {
        assert_eq!(filter(None).unwrap().to_string(), "info");
        assert_eq!(filter(Some("  ")).unwrap().to_string(), "info");
        assert_eq!(filter(Some("hookbridge=debug")).unwrap().to_string(), "hookbridge=debug");
        let refused = filter(Some("hookbridge=loud")).unwrap_err();
        assert_eq!(refused.variable, LOG_FILTER);
        assert!(refused.message.contains("hookbridge=loud"), "{}", refused.message);
        // `EnvFilter`'s span and field directives are not levels by target.
        for span in ["[deliver{hook_id=h1}]=debug", "[deliver]=debug", "delivery_worker[deliver]=debug"] {
            assert_eq!(filter(Some(span)).unwrap_err().variable, LOG_FILTER, "{span}");
        }
    }

    /// Written by hand or put together by a script: a trailing comma and blanks after the
    /// commas mean what they seem to. `Targets` alone read `info,` as errors only.
    #[test]
    fn blanks_and_empty_directives_are_ignored() {
        use tracing::Level;
        let trailing = filter(Some("info,")).unwrap();
        assert!(trailing.would_enable("delivery_worker", &Level::INFO));
        let spaced = filter(Some("warn, hookbridge_outbound=debug ,")).unwrap();
        assert!(spaced.would_enable("hookbridge_outbound::send", &Level::DEBUG));
        assert!(!spaced.would_enable("delivery_worker", &Level::INFO));
        assert!(spaced.would_enable("delivery_worker", &Level::WARN));
        assert!(filter(Some(" , ")).unwrap().would_enable("delivery_worker", &Level::INFO), "nothing set: info");
    }

    #[test]
    fn a_filter_sets_levels_by_target_prefix() {
        use tracing::Level;
        let targets = filter(Some("warn,hookbridge_outbound=debug")).unwrap();
        assert!(targets.would_enable("hookbridge_outbound::send", &Level::DEBUG));
        assert!(!targets.would_enable("hookbridge_outbound::send", &Level::TRACE));
        assert!(targets.would_enable("delivery_worker", &Level::WARN));
        assert!(!targets.would_enable("delivery_worker", &Level::INFO));
        let default = filter(None).unwrap();
        assert!(default.would_enable("delivery_worker", &Level::INFO));
        assert!(!default.would_enable("delivery_worker", &Level::DEBUG));
    }
}
