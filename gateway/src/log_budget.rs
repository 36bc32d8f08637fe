//! Bounded failure logging per request.
//!
//! One failing database fails every DataLoader batch and resolver of a request at once: a
//! page of 100 products with variants, stock and prices asks the pool hundreds of times, and
//! each failure used to write its own error line (one attacking request wrote 440,000
//! pool-timeout lines). Each request now logs at most [`MAX_LINES_PER_KIND`] lines per kind of
//! failure; the rest are counted, and one summary line with the count is written when the
//! request's scope ends ([`crate::metrics::RequestScope`]), in the request's span (so it
//! carries its `request_id`). Outside a request (start-up, background tasks) every failure is
//! logged.

use std::sync::{Mutex, PoisonError};

use sea_orm::{ConnAcquireErr, DbErr};

/// Lines one request writes for one kind of failure; the rest are summed up in one line.
pub const MAX_LINES_PER_KIND: u64 = 5;

/// The failures a request has seen, by kind, and the span their summary is written in.
pub struct RequestLogs {
    /// `(kind, failures seen)`; a request meets few kinds, so a short list.
    counts: Mutex<Vec<(&'static str, u64)>>,
    span: tracing::Span,
}

impl Default for RequestLogs {
    /// Empty, in the current span (the request's: the scope is made inside it).
    fn default() -> Self {
        Self {
            counts: Mutex::new(Vec::new()),
            span: tracing::Span::current(),
        }
    }
}

impl RequestLogs {
    /// Counts one failure of `kind`: `true` while it is among the first
    /// [`MAX_LINES_PER_KIND`] of its kind (log it), `false` after (counted for the summary).
    pub fn admit(&self, kind: &'static str) -> bool {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = match counts.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, seen)) => {
                *seen += 1;
                *seen
            }
            None => {
                counts.push((kind, 1));
                1
            }
        };
        seen <= MAX_LINES_PER_KIND
    }

    /// The kinds with failures that were not logged, and how many were not.
    pub fn suppressed(&self) -> Vec<(&'static str, u64)> {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, seen)| *seen > MAX_LINES_PER_KIND)
            .map(|(kind, seen)| (*kind, seen - MAX_LINES_PER_KIND))
            .collect()
    }
}

impl Drop for RequestLogs {
    /// The summary: one line per kind that went over the limit.
    fn drop(&mut self) {
        for (kind, suppressed) in self.suppressed() {
            self.span.in_scope(|| {
                tracing::error!(
                    kind,
                    suppressed,
                    "{suppressed} more {kind} failures of this request were not logged (at most \
                     {MAX_LINES_PER_KIND} lines per kind and request)"
                );
            });
        }
    }
}

/// The kind of a database failure, for [`RequestLogs::admit`].
pub fn database_kind(err: &DbErr) -> &'static str {
    match err {
        DbErr::ConnectionAcquire(ConnAcquireErr::Timeout) => "database pool timeout",
        DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed) => "database pool closed",
        DbErr::Conn(_) => "database connection",
        DbErr::Exec(_) | DbErr::Query(_) => "database statement",
        _ => "database",
    }
}

/// Logs a database failure: within the running request's budget, or always outside one.
pub fn database_failure(err: &DbErr) {
    let kind = database_kind(err);
    let admitted = crate::metrics::current_scope().is_none_or(|scope| scope.logs.admit(kind));
    if admitted {
        tracing::error!(error = %err, kind, "database failure");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::Write;
    use std::sync::Arc;

    use crate::metrics::{RequestScope, in_scope};

    /// A tracing writer that keeps every line.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn the_limiter_admits_the_first_lines_of_each_kind() {
        let logs = RequestLogs::default();
        let admitted = (0..1000).filter(|_| logs.admit("a")).count();
        assert_eq!(admitted as u64, MAX_LINES_PER_KIND);
        assert!(logs.admit("b"), "another kind has a budget of its own");
        assert_eq!(logs.suppressed(), vec![("a", 1000 - MAX_LINES_PER_KIND)]);
    }

    #[test]
    fn kinds_follow_the_database_error() {
        assert_eq!(
            database_kind(&DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)),
            "database pool timeout"
        );
        assert_eq!(
            database_kind(&DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed)),
            "database pool closed"
        );
        assert_eq!(database_kind(&DbErr::Custom("x".into())), "database");
    }

    /// Through the one path every resolver and DataLoader batch takes (a core error becoming
    /// an API error): 1,000 pool timeouts and 3 other failures in one request write 5 + 3
    /// lines and one summary, all with the request's id; outside a request nothing is held
    /// back.
    #[tokio::test]
    async fn one_request_writes_a_bounded_number_of_lines() {
        use crate::errors::ApiError;
        use commerce_core::CoreError;
        use tracing::Instrument;

        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);

        let span = tracing::info_span!("request", request_id = "req-42");
        async {
            let scope = Arc::new(RequestScope::default());
            in_scope(scope, async {
                let mut batches = Vec::new();
                for i in 0..1000 {
                    let fail = async {
                        let _ = ApiError::from(CoreError::Database(DbErr::ConnectionAcquire(
                            ConnAcquireErr::Timeout,
                        )));
                    };
                    // Half of them in DataLoader-style tasks of the request.
                    if i % 2 == 0 {
                        batches.push(crate::metrics::spawn_in_request(fail));
                    } else {
                        fail.await;
                    }
                }
                for batch in batches {
                    batch.await.unwrap();
                }
                for _ in 0..3 {
                    let _ = ApiError::from(CoreError::Database(DbErr::Custom("boom".into())));
                }
            })
            .await;
        }
        .instrument(span)
        .await;

        let text = lines.text();
        let count = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
        assert_eq!(count("database pool timeout"), 5 + 1, "{text}");
        assert_eq!(count("kind=\"database\""), 3, "{text}");
        assert_eq!(text.lines().count(), 5 + 3 + 1, "{text}");
        let summary = text
            .lines()
            .find(|l| l.contains("were not logged"))
            .expect("a summary line");
        assert!(
            summary.contains("995 more database pool timeout failures"),
            "{summary}"
        );
        assert!(summary.contains("suppressed=995"), "{summary}");
        assert!(
            text.lines().all(|l| l.contains("req-42")),
            "every line carries the request id: {text}"
        );

        // Outside a request every failure is logged.
        for _ in 0..7 {
            database_failure(&DbErr::ConnectionAcquire(ConnAcquireErr::Timeout));
        }
        assert_eq!(lines.text().lines().count(), 9 + 7);
    }
}
