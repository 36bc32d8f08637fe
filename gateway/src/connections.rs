//! The accept loop: hyper's HTTP/1 connections driven directly, because `axum::serve` has no
//! connection cap and no header-read or idle timeouts.
//!
//! Every connection is in one of three phases, and each has its own deadline:
//! - **headers**: from accept, or on a kept-alive connection from the first byte of its next
//!   request, until the request's headers are complete. Closed after `header_read_timeout`
//!   (a half-sent request, slowloris).
//! - **busy**: at least one request is being answered. The handler is bounded by the request
//!   timeout layer; sending the response is bounded by `send_stall`: a response the client has
//!   not read any of for that long is dropped with its connection (a client that never reads).
//! - **idle**: kept alive between requests. Closed after `keep_alive_idle`.
//!
//! At most `max_connections` are open at once. When a connection arrives at the cap, the one
//! that has been idle or sending headers the longest is closed to make room; when every
//! connection is busy, new ones wait in the listen backlog. The accept loop never holds more
//! than one socket beyond the cap, so the process never runs out of file descriptors.
//!
//! Shutdown: the listener is closed, idle connections and those still sending headers are
//! closed, busy ones finish their responses, then `serve` returns.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::config::HttpConfig;

/// File descriptors kept free below the open-file limit for everything but client
/// connections: the database pool, the listener, logs, the runtime.
pub const FD_RESERVE: u64 = 128;

/// How often a full accept loop looks again for a connection to close (one that was busy may
/// have become idle).
const ROOM_RETRY: Duration = Duration::from_millis(100);

/// The connection limits `serve` enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub keep_alive_idle: Duration,
    pub send_stall: Duration,
    pub max_connections: usize,
}

impl Limits {
    /// The configured limits, with `max_connections` lowered (and a warning logged) when the
    /// process's open-file limit cannot hold that many connections plus [`FD_RESERVE`].
    pub fn from_config(http: &HttpConfig) -> Self {
        let configured = http.max_connections;
        let max_connections = match open_files_soft_limit() {
            Some(soft) => {
                let cap = connection_cap(configured, soft);
                if cap < configured {
                    tracing::warn!(
                        configured,
                        allowed = cap,
                        open_files_limit = soft,
                        "http.max_connections is above what the open-file limit (ulimit -n) \
                         allows with {FD_RESERVE} descriptors kept in reserve; serving at most \
                         {cap} connections (raise ulimit -n to allow more)"
                    );
                }
                cap
            }
            None => configured,
        };
        Self {
            header_read_timeout: Duration::from_secs(http.header_read_timeout_secs),
            keep_alive_idle: Duration::from_secs(http.keep_alive_idle_secs),
            send_stall: Duration::from_secs(http.request_timeout_secs),
            max_connections,
        }
    }
}

/// The most connections an open-file limit of `soft` leaves room for: the limit less
/// [`FD_RESERVE`] (or less half of it, for very low limits), and never more than configured.
pub fn connection_cap(configured: usize, soft: u64) -> usize {
    let reserve = FD_RESERVE.min(soft / 2);
    let room = usize::try_from(soft - reserve).unwrap_or(usize::MAX);
    configured.min(room).max(1)
}

/// The soft limit on open files (`ulimit -n`), from `/proc/self/limits`; `None` where that
/// file does not exist (not Linux) or says `unlimited`.
pub fn open_files_soft_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files_soft_limit(&limits)
}

fn parse_open_files_soft_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// How long the rest of a refused request body is read and thrown away, so that a client
/// still sending it receives the answer rather than a reset connection.
pub const LINGER: Duration = Duration::from_secs(5);
/// The most bytes of a refused body read while lingering.
const LINGER_BYTES: u64 = 64 * 1024 * 1024;

/// Reads and discards a refused request's body in the background, for at most [`LINGER`] and
/// [`LINGER_BYTES`]; answer with `Connection: close`, so the connection closes after it.
pub fn discard_in_background(mut body: Body) {
    tokio::spawn(async move {
        let mut discarded = 0u64;
        let _ = tokio::time::timeout(LINGER, async {
            while let Some(Ok(frame)) =
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            {
                discarded += frame.data_ref().map_or(0, |data| data.len() as u64);
                if discarded > LINGER_BYTES {
                    break;
                }
            }
        })
        .await;
    });
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes, then drains: see
/// the module documentation. Handlers see the peer address as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (stop, stopped) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let registry = Arc::new(Registry::default());
    let mut tasks = JoinSet::new();
    let mut builder = http1::Builder::new();
    // The phases above replace hyper's own header timer, which would also close idle
    // connections after the header-read timeout.
    builder.keep_alive(true).header_read_timeout(None);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(&error, &registry).await;
                    continue;
                }
            },
        };
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = make_room(&permits, &registry) => permit,
        };
        let activity = Arc::new(Activity::new());
        let registered = registry.add(activity.clone());
        tasks.spawn(serve_connection(Connection {
            io: TokioIo::new(TrackedIo {
                stream,
                activity: activity.clone(),
                _permit: permit,
            }),
            peer,
            app: app.clone(),
            builder: builder.clone(),
            limits,
            activity,
            _registered: registered,
            stopped: stopped.clone(),
        }));
    }
    drop(listener);
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// An accept error: out of file descriptors (another part of the process, or a limit lowered
/// since start) frees an idle connection and pauses; anything else concerns one connection.
async fn accept_failed(error: &io::Error, registry: &Registry) {
    // EMFILE (24) and ENFILE (23): the process's or the system's descriptors are used up.
    if matches!(error.raw_os_error(), Some(23 | 24)) {
        tracing::warn!(%error, "cannot accept a connection: out of file descriptors");
        registry.close_longest_waiting();
        tokio::time::sleep(ROOM_RETRY).await;
    } else {
        tracing::debug!(%error, "accept failed");
    }
}

/// A permit for one more connection: at once below the cap; at the cap, after closing the
/// connection that has waited longest without a request running (or, when all are busy,
/// once one ends).
async fn make_room(permits: &Arc<Semaphore>, registry: &Registry) -> OwnedSemaphorePermit {
    loop {
        if let Ok(permit) = permits.clone().try_acquire_owned() {
            return permit;
        }
        registry.close_longest_waiting();
        if let Ok(Ok(permit)) =
            tokio::time::timeout(ROOM_RETRY, permits.clone().acquire_owned()).await
        {
            return permit;
        }
    }
}

/// The open connections, for closing one to make room.
#[derive(Default)]
struct Registry {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
}

impl Registry {
    fn add(self: &Arc<Self>, activity: Arc<Activity>) -> Registered {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.open).insert(id, activity);
        Registered {
            registry: self.clone(),
            id,
        }
    }

    /// Asks the connection idle or sending headers the longest to close; false when every
    /// connection is busy (or already closing).
    fn close_longest_waiting(&self) -> bool {
        let open = lock(&self.open);
        let longest = open
            .values()
            .filter_map(|activity| activity.waiting_since().map(|since| (since, activity)))
            .min_by_key(|(since, _)| *since);
        match longest {
            Some((_, activity)) => {
                activity.evict();
                true
            }
            None => false,
        }
    }
}

/// Removes a connection from the registry when its task ends (however it ends).
struct Registered {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.registry.open).remove(&self.id);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Headers,
    Busy(usize),
    Idle,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// When the phase began.
    since: Instant,
    /// Since when a write has been waiting for the client to read.
    stalled_since: Option<Instant>,
    /// Asked to close to make room.
    evicted: bool,
}

/// What a connection is doing, updated by its socket and its requests, watched by
/// [`Activity::expired`].
#[derive(Debug)]
struct Activity {
    state: Mutex<State>,
    /// Mirrors `state.stalled_since.is_some()`, so that writes lock only on a change.
    stalled: AtomicBool,
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            state: Mutex::new(State {
                phase: Phase::Headers,
                since: Instant::now(),
                stalled_since: None,
                evicted: false,
            }),
            stalled: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        change(&mut lock(&self.state));
        self.changed.notify_one();
    }

    /// Bytes arrived: on an idle connection, the next request's headers have begun.
    fn bytes_read(&self) {
        let mut state = lock(&self.state);
        if state.phase == Phase::Idle {
            state.phase = Phase::Headers;
            state.since = Instant::now();
            drop(state);
            self.changed.notify_one();
        }
    }

    /// A request's headers are complete; the connection is busy until the guard drops.
    fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.update(|state| {
            state.phase = match state.phase {
                Phase::Busy(n) => Phase::Busy(n + 1),
                Phase::Headers | Phase::Idle => Phase::Busy(1),
            };
            state.since = Instant::now();
        });
        RequestGuard {
            activity: self.clone(),
        }
    }

    fn request_finished(&self) {
        self.update(|state| match state.phase {
            Phase::Busy(n) if n > 1 => state.phase = Phase::Busy(n - 1),
            _ => {
                state.phase = Phase::Idle;
                state.since = Instant::now();
                state.stalled_since = None;
            }
        });
        self.stalled.store(false, Ordering::Relaxed);
    }

    fn write_pending(&self) {
        if !self.stalled.swap(true, Ordering::Relaxed) {
            self.update(|state| state.stalled_since = Some(Instant::now()));
        }
    }

    fn write_progressed(&self) {
        if self.stalled.swap(false, Ordering::Relaxed) {
            lock(&self.state).stalled_since = None;
        }
    }

    fn is_busy(&self) -> bool {
        matches!(lock(&self.state).phase, Phase::Busy(_))
    }

    /// Since when the connection has waited without a request running; `None` when busy or
    /// already asked to close.
    fn waiting_since(&self) -> Option<Instant> {
        let state = lock(&self.state);
        match state.phase {
            Phase::Busy(_) => None,
            _ if state.evicted => None,
            Phase::Headers | Phase::Idle => Some(state.since),
        }
    }

    fn evict(&self) {
        self.update(|state| state.evicted = true);
    }

    /// When the connection must close, given its phase; `None`: not while nothing changes.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let mut state = lock(&self.state);
        if state.evicted {
            if !matches!(state.phase, Phase::Busy(_)) {
                return Some(state.since);
            }
            // A request began just before the eviction: it is not interrupted.
            state.evicted = false;
        }
        match state.phase {
            Phase::Headers => Some(state.since + limits.header_read_timeout),
            Phase::Idle => Some(state.since + limits.keep_alive_idle),
            Phase::Busy(_) => state.stalled_since.map(|since| since + limits.send_stall),
        }
    }

    /// Completes when the connection has outlived its phase's deadline (or was evicted).
    async fn expired(&self, limits: &Limits) {
        loop {
            let changed = self.changed.notified();
            match self.deadline(limits) {
                Some(deadline) if deadline <= Instant::now() => return,
                Some(deadline) => {
                    tokio::select! {
                        () = changed => {}
                        () = tokio::time::sleep_until(deadline) => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// Marks the connection busy while a request's response is being produced and sent.
struct RequestGuard {
    activity: Arc<Activity>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.activity.request_finished();
    }
}

/// A response body that keeps its connection busy until hyper has taken its last frame.
struct TrackedBody {
    body: Body,
    _guard: RequestGuard,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The client socket: reports reads and stalled writes to the connection's activity, and
/// holds the connection's permit for as long as the socket is open (an upgraded connection
/// keeps it after hyper lets go).
struct TrackedIo {
    stream: TcpStream,
    activity: Arc<Activity>,
    _permit: OwnedSemaphorePermit,
}

impl TrackedIo {
    fn track_write<T>(&self, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => self.activity.write_pending(),
            Poll::Ready(_) => self.activity.write_progressed(),
        }
        polled
    }
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.track_write(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.track_write(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

struct Connection {
    io: TokioIo<TrackedIo>,
    peer: SocketAddr,
    app: Router,
    builder: http1::Builder,
    limits: Limits,
    activity: Arc<Activity>,
    _registered: Registered,
    stopped: watch::Receiver<bool>,
}

/// Serves one connection until the client closes it, its phase's deadline passes, or the
/// server stops (busy connections finish their responses first).
async fn serve_connection(connection: Connection) {
    let Connection {
        io,
        peer,
        app,
        builder,
        limits,
        activity,
        _registered,
        mut stopped,
    } = connection;
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let guard = activity.request_started();
            request.extensions_mut().insert(ConnectInfo(peer));
            let response = app.clone().oneshot(request);
            async move {
                let response = response.await?;
                Ok::<_, Infallible>(response.map(|body| TrackedBody {
                    body,
                    _guard: guard,
                }))
            }
        })
    };
    let connection = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(error) = served {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            () = activity.expired(&limits) => {
                tracing::debug!(%peer, "connection closed: its time limit passed, or room was needed");
                return;
            }
            _ = stopped.wait_for(|&stop| stop), if !draining => {
                if !activity.is_busy() {
                    return;
                }
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        header_read_timeout: Duration::from_secs(10),
        keep_alive_idle: Duration::from_secs(60),
        send_stall: Duration::from_secs(30),
        max_connections: 10,
    };

    #[test]
    fn the_open_files_limit_is_read_from_proc_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63704                63704                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_files_soft_limit(limits), Some(1024));
        assert_eq!(
            parse_open_files_soft_limit("Max open files unlimited unlimited files"),
            None
        );
        if cfg!(target_os = "linux") {
            assert!(open_files_soft_limit().is_some());
        }
    }

    #[test]
    fn the_cap_leaves_descriptors_in_reserve() {
        assert_eq!(connection_cap(10_000, 1024), 1024 - FD_RESERVE as usize);
        assert_eq!(connection_cap(10_000, 1_048_576), 10_000);
        assert_eq!(connection_cap(100, 1024), 100);
        assert_eq!(connection_cap(10_000, 64), 32);
        assert_eq!(connection_cap(10_000, 1), 1);
    }

    fn since(activity: &Activity) -> Instant {
        lock(&activity.state).since
    }

    #[tokio::test]
    async fn each_phase_has_its_deadline() {
        let activity = Arc::new(Activity::new());
        assert_eq!(
            activity.deadline(&LIMITS),
            Some(since(&activity) + LIMITS.header_read_timeout),
            "from accept, the headers are timed"
        );
        let guard = activity.request_started();
        assert_eq!(activity.deadline(&LIMITS), None, "busy: no deadline");
        assert_eq!(activity.waiting_since(), None, "busy: never evicted");
        activity.write_pending();
        let stalled = lock(&activity.state).stalled_since.expect("a stall");
        assert_eq!(
            activity.deadline(&LIMITS),
            Some(stalled + LIMITS.send_stall)
        );
        activity.write_progressed();
        assert_eq!(activity.deadline(&LIMITS), None);
        drop(guard);
        assert_eq!(
            activity.deadline(&LIMITS),
            Some(since(&activity) + LIMITS.keep_alive_idle),
            "kept alive: the idle timeout"
        );
        assert_eq!(activity.waiting_since(), Some(since(&activity)));
        activity.bytes_read();
        assert_eq!(
            lock(&activity.state).phase,
            Phase::Headers,
            "the next request's headers are timed from its first byte"
        );
        assert_eq!(
            activity.deadline(&LIMITS),
            Some(since(&activity) + LIMITS.header_read_timeout)
        );
    }

    #[tokio::test]
    async fn an_idle_connection_expires_and_an_evicted_one_at_once() {
        let short = Limits {
            keep_alive_idle: Duration::from_millis(20),
            ..LIMITS
        };
        let activity = Arc::new(Activity::new());
        drop(activity.request_started());
        tokio::time::timeout(Duration::from_secs(10), activity.expired(&short))
            .await
            .expect("an idle connection expires");

        let activity = Arc::new(Activity::new());
        let registry = Arc::new(Registry::default());
        let _registered = registry.add(activity.clone());
        let busy = Arc::new(Activity::new());
        let _busy_registered = registry.add(busy.clone());
        let _guard = busy.request_started();
        assert!(registry.close_longest_waiting());
        tokio::time::timeout(Duration::from_secs(5), activity.expired(&LIMITS))
            .await
            .expect("evicted: closes without waiting for its timeout");
        assert!(!registry.close_longest_waiting(), "only a busy one is left");
    }
}
