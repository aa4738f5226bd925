//! Logs on stderr, as text or JSON lines (`log.format`).
//!
//! Under systemd stderr is a stream to the journal (`JOURNAL_STREAM` names
//! it). There each line starts with its syslog priority, `<3>` to `<7>`,
//! which journald takes off and keeps as the entry's priority
//! (`journalctl -p warning`), and text lines leave out their own time stamp:
//! the journal's is on every entry already.
#![forbid(unsafe_code)]

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogFormat;

/// Where lines go and how they look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    pub format: LogFormat,
    /// stderr is the journal: a priority prefix, no time stamp on text.
    pub journal: bool,
    /// stderr is a terminal: colours on text.
    pub ansi: bool,
}

impl Output {
    /// What stderr is, with `journal_stream` the value of `JOURNAL_STREAM`.
    #[must_use]
    pub fn stderr(format: LogFormat, journal_stream: Option<&str>) -> Self {
        let stderr = std::io::stderr();
        Self {
            format,
            journal: journal_stream.is_some_and(|v| is_stream(&stderr, v)),
            ansi: std::io::IsTerminal::is_terminal(&stderr),
        }
    }
}

/// Installs the global subscriber writing to stderr; `log` records (aya)
/// are bridged in.
pub fn init(filter: &str, output: Output) -> Result<(), LoggingError> {
    subscriber(filter, output, std::io::stderr)?
        .try_init()
        .map_err(|e| LoggingError::Install(e.to_string()))
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoggingError {
    #[error("log filter {filter:?}: {source}")]
    Filter {
        filter: String,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("logging: {0}")]
    Install(String),
}

/// The subscriber `init` installs, writing to `writer`.
pub fn subscriber<W>(
    filter: &str,
    output: Output,
    writer: W,
) -> Result<Box<dyn Subscriber + Send + Sync>, LoggingError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let env_filter =
        tracing_subscriber::EnvFilter::try_new(filter).map_err(|source| LoggingError::Filter {
            filter: filter.to_owned(),
            source,
        })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(writer);
    let journal = output.journal;
    Ok(match output.format {
        LogFormat::Json => Box::new(
            builder
                .fmt_fields(JsonFields::new())
                .event_format(Priority {
                    inner: tracing_subscriber::fmt::format().json().flatten_event(true),
                    journal,
                })
                .finish(),
        ),
        LogFormat::Text if journal => Box::new(
            builder
                .event_format(Priority {
                    inner: tracing_subscriber::fmt::format()
                        .with_ansi(false)
                        .without_time(),
                    journal,
                })
                .finish(),
        ),
        LogFormat::Text => Box::new(builder.with_ansi(output.ansi).finish()),
    })
}

/// The syslog priority journald reads from a `<N>` line prefix
/// (sd-daemon(3)): error 3, warning 4, info 6, debug and trace 7.
#[must_use]
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// An event format with the priority prefix in front when on the journal.
struct Priority<F> {
    inner: F,
    journal: bool,
}

impl<S, N, F> FormatEvent<S, N> for Priority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if self.journal {
            write!(writer, "<{}>", priority(*event.metadata().level()))?;
        }
        self.inner.format_event(ctx, writer, event)
    }
}

/// Whether `fd` is the stream `JOURNAL_STREAM` names as `DEVICE:INODE`
/// (systemd.exec(5)): a service whose stderr was redirected elsewhere
/// inherits the variable but not the stream.
fn is_stream(fd: &impl std::os::fd::AsFd, journal_stream: &str) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Some((dev, ino)) = journal_stream.split_once(':') else {
        return false;
    };
    let Ok(owned) = fd.as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(owned).metadata() else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer that keeps what was written.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buf {
        type Writer = Self;
        fn make_writer(&'w self) -> Self {
            self.clone()
        }
    }

    /// The lines written for one info and one warning event.
    fn written(format: LogFormat, journal: bool) -> Vec<String> {
        let buf = Buf::default();
        let output = Output {
            format,
            journal,
            ansi: false,
        };
        let sub = subscriber("info", output, buf.clone()).unwrap();
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("call", call_id = "c-1");
            let _in = span.enter();
            tracing::info!(src = %"192.0.2.7", app = "MA1", "admitted");
            tracing::warn!(attempts = 3_u32, "locked out");
            tracing::debug!("filtered away");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn json_lines_carry_the_fields_at_the_top() {
        let lines = written(LogFormat::Json, false);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["message"], "admitted");
        assert_eq!(first["src"], "192.0.2.7");
        assert_eq!(first["app"], "MA1");
        assert_eq!(first["span"]["call_id"], "c-1");
        assert!(first["timestamp"].is_string(), "{first}");
        let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(second["level"], "WARN");
        assert_eq!(second["attempts"], 3);
    }

    #[test]
    fn on_the_journal_lines_start_with_their_priority() {
        let lines = written(LogFormat::Json, true);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let json = lines[0].strip_prefix("<6>").expect("info is priority 6");
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["message"], "admitted");
        assert!(lines[1].starts_with("<4>{"), "{}", lines[1]);

        let lines = written(LogFormat::Text, true);
        assert_eq!(lines.len(), 2, "{lines:?}");
        // No time stamp of its own: the level follows the priority.
        assert!(lines[0].starts_with("<6> INFO call{"), "{}", lines[0]);
        assert!(
            lines[0].ends_with("admitted src=192.0.2.7 app=\"MA1\""),
            "{}",
            lines[0]
        );
        assert!(lines[1].starts_with("<4> WARN "), "{}", lines[1]);
    }

    #[test]
    fn text_off_the_journal_has_a_time_stamp_and_no_priority() {
        let lines = written(LogFormat::Text, false);
        assert_eq!(lines.len(), 2, "{lines:?}");
        // 2026-04-14T10:00:00.123456Z  INFO ...
        assert!(
            lines[0].as_bytes()[4] == b'-' && lines[0].contains("Z  INFO "),
            "{}",
            lines[0]
        );
        assert!(lines[1].contains(" WARN "), "{}", lines[1]);
    }

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(
            [
                Level::ERROR,
                Level::WARN,
                Level::INFO,
                Level::DEBUG,
                Level::TRACE
            ]
            .map(priority),
            [3, 4, 6, 7, 7]
        );
    }

    #[test]
    fn the_journal_stream_must_be_stderr_itself() {
        use std::os::unix::fs::MetadataExt as _;
        let file = tempfile::tempfile().unwrap();
        let meta = file.metadata().unwrap();
        let mine = format!("{}:{}", meta.dev(), meta.ino());
        assert!(is_stream(&file, &mine));
        assert!(!is_stream(
            &file,
            &format!("{}:{}", meta.dev(), meta.ino() + 1)
        ));
        assert!(!is_stream(&file, "garbage"));
        assert!(!is_stream(&file, ""));
    }

    #[test]
    fn a_bad_filter_is_an_error() {
        let output = Output {
            format: LogFormat::Text,
            journal: false,
            ansi: false,
        };
        let e = subscriber("info,=[", output, Buf::default()).err().unwrap();
        assert!(e.to_string().contains("info,=["), "{e}");
    }
}
