//! Access logs: one line per request, written by a thread of its own.
//!
//! A line is formatted on the request's own thread, straight from the request: its arrival
//! fields when it arrives (so nothing of the request is copied or kept for the log but the
//! line itself), the rest when its response ends. The finished line is then appended to the
//! queue of the request's thread, under a lock held for the copy that only the writer ever
//! contends: each thread has a queue of its own (past 16 threads, a few share one), so
//! threads logging at once neither wait for each other nor write to the same memory, and the
//! line's buffer stays with the thread for its next line. When the thread's share of `queue`
//! lines is already waiting (the writer fell behind), the line is dropped and counted
//! ([`AccessLog::dropped`], and `novaedge_access_log_dropped_total` when metrics are
//! registered); a request never waits for the log. The writer, a thread of its own, takes
//! every queue at once and writes each in one write. After writing it lingers until a queue
//! holds 64 KiB of lines or 100 ms have passed, so that under load lines share large writes
//! and logging one wakes nobody (Envoy's file logs and nginx's `buffer=` also flush on a
//! timer); the first line after a quiet spell is written at once. Lines of different threads
//! may reach the file out of the order in which their requests ended.
//!
//! Both formats carry the same fields. The path is logged **without its query**: queries carry
//! tokens, session ids and personal data more often than paths, and their length is the
//! client's to choose. Request data is capped (path 1024 bytes, authority, user agent and
//! referer 256) and escaped (JSON string escapes; `\xHH` in the common format, as Apache does).
//!
//! **json**: one object per line,
//! `{"time":"2026-11-26T10:00:00.123Z","request_id":"…","trace_id":"…","client":"10.0.0.1:5123",
//! "method":"GET","authority":"shop.example","path":"/cart","protocol":"HTTP/1.1","status":200,
//! "bytes_in":0,"bytes_out":512,"duration_ms":1.234,"upstream":"10.1.0.7:8080",
//! "listener":"web","route":"shop/cart","backend":"shop/cart-v2","flags":"-",
//! "user_agent":"curl/8.5.0","referer":null}`; absent values are `null`.
//!
//! **common**: Apache's combined format followed by ours, absent values as `-`:
//! `10.0.0.1 - - [26/Nov/2026:10:00:00 +0000] "GET /cart HTTP/1.1" 200 512 "-" "curl/8.5.0"
//! rid=… trace=… authority="shop.example" dur_ms=1.234 upstream=10.1.0.7:8080 listener=web
//! route=shop/cart backend=shop/cart-v2 flags=- bytes_in=0`.
//!
//! `flags` are Envoy's response flags where one fits: `NR` no route, `NC` no backend for the
//! route, `UH` no healthy endpoint, `UO` circuit breaker overflow, `UF` upstream connect (or
//! TLS) failure, `UC` upstream connection ended or reset, `UT` request timeout, `SI` the
//! upstream's response body went idle for the idle timeout, `RL` rate limited, `DC` the client
//! went away before the response ended, `DPE` a request the proxy could not use (bad path, no
//! host), `UPE` an upgrade the upstream cannot do, and NovaEdge's
//! own `SD` for a request refused because the engine is shutting down. Several are joined by
//! commas; none is `-`.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method, Version};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::oneshot;

use super::Flags;
use super::request_id::RequestId;
use crate::ascii::{digits, hex_byte, hex128, number, socket_addr};
use crate::sync::lock;

/// Longest path logged; longer ones are cut.
pub(crate) const MAX_PATH: usize = 1024;
/// Longest authority, user agent or referer logged.
pub(crate) const MAX_HEADER: usize = 256;

/// How access log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// Apache's combined log format, then NovaEdge's fields as `key=value`.
    Common,
}

impl std::str::FromStr for AccessLogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Self::Json),
            "common" => Ok(Self::Common),
            other => Err(format!(
                "access log format {other:?} is neither \"json\" nor \"common\""
            )),
        }
    }
}

/// What a request looked like when it arrived, borrowed from the request itself.
#[derive(Debug)]
pub(crate) struct Arrival<'a> {
    pub(crate) time: SystemTime,
    pub(crate) request_id: Option<&'a RequestId>,
    pub(crate) trace_id: Option<u128>,
    pub(crate) client: &'a ClientText,
    pub(crate) method: &'a Method,
    /// The URI's authority, else the `Host` header.
    pub(crate) authority: Option<&'a [u8]>,
    /// The path without its query; cut to [`MAX_PATH`] here.
    pub(crate) path: &'a [u8],
    pub(crate) version: Version,
    pub(crate) user_agent: Option<&'a HeaderValue>,
    pub(crate) referer: Option<&'a HeaderValue>,
}

/// How a request ended, as the access log sees it.
#[derive(Debug)]
pub(crate) struct Outcome<'a> {
    pub(crate) status: u16,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) duration: Duration,
    pub(crate) upstream: Option<SocketAddr>,
    /// The listener and the route.
    pub(crate) route: &'a Names,
    pub(crate) backend: &'a Names,
    pub(crate) flags: Flags,
}

/// Names from the configuration (a listener and its route, or a backend) as both formats write
/// them, made once per runtime: a line copies them as they are, where names written afresh
/// would be looked at for bytes to escape, one by one, in every line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Names {
    /// `,"listener":"web","route":"shop/cart"`.
    json: Box<[u8]>,
    /// ` listener=web route=shop/cart`.
    common: Box<[u8]>,
}

impl Names {
    /// The listener and route fields (`None`: absent).
    pub(crate) fn route(listener: Option<&str>, route: Option<&str>) -> Self {
        Self::new(&[("listener", listener), ("route", route)])
    }

    /// The backend field (`None`: absent).
    pub(crate) fn backend(backend: Option<&str>) -> Self {
        Self::new(&[("backend", backend)])
    }

    /// The listener and route of a request that no listener took.
    pub(crate) fn no_route() -> &'static Self {
        static NONE: std::sync::LazyLock<Names> =
            std::sync::LazyLock::new(|| Names::route(None, None));
        &NONE
    }

    /// The backend of a request that went to none.
    pub(crate) fn no_backend() -> &'static Self {
        static NONE: std::sync::LazyLock<Names> = std::sync::LazyLock::new(|| Names::backend(None));
        &NONE
    }

    /// `fields`, keys (plain words) and values, in order.
    fn new(fields: &[(&str, Option<&str>)]) -> Self {
        let (mut json, mut common) = (Vec::new(), Vec::new());
        for &(key, value) in fields {
            let value = value.map(str::as_bytes);
            json.extend_from_slice(b",\"");
            json.extend_from_slice(key.as_bytes());
            json.extend_from_slice(b"\":");
            json_opt(value, &mut json);
            common.push(b' ');
            common.extend_from_slice(key.as_bytes());
            common.push(b'=');
            clf_bare(value, &mut common);
        }
        Self {
            json: json.into(),
            common: common.into(),
        }
    }
}

/// A client's address as access log lines show it, formatted once per connection.
#[derive(Debug)]
pub(crate) struct ClientText {
    /// `ip:port` (`[ip]:port` for IPv6).
    text: Vec<u8>,
    /// Where the IP is in `text`.
    ip: std::ops::Range<usize>,
}

impl ClientText {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        let mut text = Vec::new();
        socket_addr(addr, &mut text);
        // The IP ends at the port's colon, and an IPv6 one is in brackets.
        let colon = text.iter().rposition(|&b| b == b':').unwrap_or(text.len());
        let ip = match addr {
            SocketAddr::V4(_) => 0..colon,
            SocketAddr::V6(_) => 1..colon.saturating_sub(1),
        };
        Self { text, ip }
    }

    fn socket_addr(&self) -> &[u8] {
        &self.text
    }

    fn ip(&self) -> &[u8] {
        &self.text[self.ip.clone()]
    }
}

/// A request's line while the request is under way: its arrival fields, already formatted.
///
/// A line interleaves what is known at arrival with what is known at the end (the common
/// format puts the status between the request line and the referer), so the arrival fields
/// are kept as two parts, `buf[..split]` and `buf[split..]`, and the line is written, straight
/// into the writer's queue, as arrival part 1, outcome part 1, arrival part 2, outcome part 2.
#[derive(Debug)]
pub(crate) struct Line {
    buf: Vec<u8>,
    split: usize,
}

/// Room for a typical line (about 400 bytes) with its outcome, so that it is never regrown.
const LINE_CAPACITY: usize = 512;

/// The access log: a handle on its writer thread. Cheap to clone; clones share the writer. The
/// thread ends once every handle is dropped and what they logged is written out.
#[derive(Clone)]
pub struct AccessLog {
    handle: Arc<Handle>,
}

/// What the handles share; the writer thread ends when the last one is dropped.
struct Handle {
    shared: Arc<Shared>,
    writer: std::thread::Thread,
}

/// What the request threads and the writer thread share.
struct Shared {
    format: AccessLogFormat,
    /// Where finished lines wait for the writer: a queue per request thread (threads take
    /// them in turn, so past [`MAX_SHARDS`] threads share), so that threads logging at the
    /// same moment neither wait for one lock nor write to the same memory.
    shards: Box<[Shard]>,
    /// Lines waiting in one shard at most; more are dropped.
    capacity: usize,
    /// Flushes asked for and not answered yet.
    flushes: Mutex<Vec<oneshot::Sender<()>>>,
    /// What the writer waits for ([`IDLE`], [`LINGERING`] or [`BUSY`]). The writer sets it
    /// before it looks at the shards a last time, and a request thread reads it after
    /// queueing a line; the shard's lock orders the two, so a line the writer missed is a
    /// line that finds it waiting. Whoever gives the writer what it waits for takes the state
    /// back to `BUSY` and wakes it.
    waiting: AtomicU8,
    /// Every handle is gone: the writer writes what is left and ends.
    closed: AtomicBool,
    /// The writer thread ended (a panic in the output); flushes return at once.
    gone: AtomicBool,
    dropped: Counter,
}

/// One queue of finished lines, on cache lines of its own.
#[derive(Default)]
#[repr(align(128))]
struct Shard(Mutex<Pending>);

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    lines: usize,
}

/// Shards at most. One per core, twice over, keeps threads apart even when a few threads
/// besides the runtime's workers log.
const MAX_SHARDS: usize = 16;

/// Gives the threads that log their numbers, in turn.
static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's number: which shard of each access log it queues lines in.
    static THREAD: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
    /// Buffers of lines already queued, for the next lines this thread begins: a line costs
    /// no allocation once a thread has logged a few.
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Spare line buffers a thread keeps at most (a few more than the requests an HTTP/2
/// connection usually has under way at once).
const SPARES: usize = 64;

/// A buffer for a new line: a spare one if this thread has any.
fn line_buffer() -> Vec<u8> {
    SPARE
        .try_with(|spare| spare.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| Vec::with_capacity(LINE_CAPACITY))
}

/// Keeps a queued line's buffer for a later line, unless this thread has enough or it grew
/// for a long line.
fn recycle(mut buf: Vec<u8>) {
    if buf.capacity() > 8 * LINE_CAPACITY {
        return;
    }
    buf.clear();
    let _ = SPARE.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < SPARES {
            spare.push(buf);
        }
    });
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shared = &self.handle.shared;
        let queued: usize = shared.shards.iter().map(|s| lock(&s.0).lines).sum();
        f.debug_struct("AccessLog")
            .field("format", &shared.format)
            .field("queued", &queued)
            .field("dropped", &shared.dropped.get())
            .finish()
    }
}

impl AccessLog {
    /// Lines queued at most while the writer is busy; more are dropped.
    pub const DEFAULT_QUEUE: usize = 4096;

    /// Starts a writer thread writing `format` lines to `out`, with room for `queue` lines
    /// waiting (shared out evenly among the request threads' queues).
    ///
    /// The writer is a thread of its own, not a task: `write(2)` stays off the proxy's runtime
    /// threads, and a slow disk or a full pipe blocks only the writer (lines then wait, up to
    /// `queue` of them, and the rest are dropped and counted) — never a request.
    ///
    /// # Errors
    ///
    /// When the operating system cannot start the thread.
    pub fn new<W>(format: AccessLogFormat, out: W, queue: usize) -> std::io::Result<Self>
    where
        W: Write + Send + 'static,
    {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self::with_shards(format, out, queue, (2 * cores).min(MAX_SHARDS))
    }

    fn with_shards<W>(
        format: AccessLogFormat,
        out: W,
        queue: usize,
        shards: usize,
    ) -> std::io::Result<Self>
    where
        W: Write + Send + 'static,
    {
        let shards = shards.clamp(1, queue.max(1));
        let shared = Arc::new(Shared {
            format,
            shards: (0..shards).map(|_| Shard::default()).collect(),
            capacity: queue.max(1).div_ceil(shards),
            flushes: Mutex::default(),
            waiting: AtomicU8::new(BUSY),
            closed: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            dropped: Counter::default(),
        });
        let writer = std::thread::Builder::new()
            .name("novaedge-access-log".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || write(&shared, out)
            })?;
        Ok(Self {
            handle: Arc::new(Handle {
                shared,
                writer: writer.thread().clone(),
            }),
        })
    }

    /// Lines dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.handle.shared.dropped.get()
    }

    pub(crate) fn dropped_counter(&self) -> Counter {
        self.handle.shared.dropped.clone()
    }

    /// Waits until every line logged before this call is written and flushed.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        {
            let shared = &self.handle.shared;
            let mut flushes = lock(&shared.flushes);
            if shared.gone.load(Ordering::Acquire) {
                return;
            }
            flushes.push(done);
        }
        self.handle.wake(true);
        let _ = wait.await;
    }

    /// A request arrived: its line, with what is known of it so far.
    pub(crate) fn begin(&self, arrival: &Arrival<'_>) -> Line {
        self.handle.shared.format.begin(arrival, line_buffer())
    }

    /// The request ended: completes its line and queues it for the writer (never waiting for
    /// it); drops and counts it when the thread's queue is full.
    pub(crate) fn log(&self, line: Line, outcome: &Outcome<'_>) {
        let shared = &self.handle.shared;
        let shard = THREAD.try_with(|n| *n).unwrap_or(0) % shared.shards.len();
        let full = {
            let mut pending = lock(&shared.shards[shard].0);
            if pending.lines < shared.capacity {
                shared.format.finish(&line, outcome, &mut pending.buf);
                pending.lines += 1;
                Some(shared.full(&pending))
            } else {
                None
            }
        };
        recycle(line.buf);
        match full {
            Some(full) => self.handle.wake(full),
            None => {
                shared.dropped.inc();
            }
        }
    }
}

impl Handle {
    /// Wakes the writer if it waits for what the caller just queued: any line when it is
    /// idle, a `full` batch (or a flush) when it lingers. Other lines cost a look at a flag.
    fn wake(&self, full: bool) {
        let waiting = &self.shared.waiting;
        let wanted = match waiting.load(Ordering::Relaxed) {
            IDLE => IDLE,
            LINGERING if full => LINGERING,
            _ => return,
        };
        if waiting
            .compare_exchange(wanted, BUSY, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.writer.unpark();
        }
    }
}

impl Shared {
    /// Whether the lines waiting in a shard make a batch worth writing now.
    fn full(&self, pending: &Pending) -> bool {
        pending.buf.len() >= BATCH || pending.lines >= self.capacity.div_ceil(2)
    }

    /// Takes every shard's lines: each shard's buffer trades places with the writer's empty
    /// one of the same index in `batches`, so that no line is copied again.
    fn take_lines(&self, batches: &mut [Vec<u8>]) {
        for (shard, batch) in self.shards.iter().zip(batches) {
            let mut pending = lock(&shard.0);
            if pending.lines > 0 {
                std::mem::swap(&mut pending.buf, batch);
                pending.lines = 0;
            }
        }
    }

    /// Whether the writer has something to do: the end, a flush, or a shard whose lines are
    /// `ready`.
    fn wanted(&self, ready: impl Fn(&Pending) -> bool) -> bool {
        self.closed.load(Ordering::Acquire)
            || !lock(&self.flushes).is_empty()
            || self.shards.iter().any(|shard| ready(&lock(&shard.0)))
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.writer.unpark();
    }
}

/// A shard's buffer kept between writes at most; a bigger one (after a backlog) is let go.
const KEEP: usize = 256 * 1024;

/// The writer is writing (or about to look at the queue): nobody wakes it.
const BUSY: u8 = 0;
/// The writer found nothing to write: the next line wakes it.
const IDLE: u8 = 1;
/// The writer lingers after a write: a full batch, a flush or the end wakes it.
const LINGERING: u8 = 2;

/// How long the writer lingers after a write, at most, for more lines to write together.
///
/// A writer that went back to waiting at once would be woken by the next line: under load, one
/// wake-up (a futex call on the request's thread) and one small write per request or so, and
/// the kernel takes about twice as long per byte for writes of a few KiB to a file as for
/// writes of 64 KiB. Lingering, it is not woken while lines arrive, so logging one costs the
/// request an uncontended lock and a copy. The first line after a quiet spell goes out at once.
const LINGER: Duration = Duration::from_millis(100);

/// Lines worth writing at once: a shard this full ends the writer's lingering.
const BATCH: usize = 64 * 1024;

/// The writer thread: takes whatever lines are waiting, writes each shard's in one write, and
/// so on.
fn write<W: Write>(shared: &Shared, mut out: W) {
    /// Marks the writer gone however it ends, and lets waiting flushes return.
    struct Gone<'a>(&'a Shared);
    impl Drop for Gone<'_> {
        fn drop(&mut self) {
            let flushes = {
                let mut flushes = lock(&self.0.flushes);
                self.0.gone.store(true, Ordering::Release);
                std::mem::take(&mut *flushes)
            };
            drop(flushes);
        }
    }
    let _gone = Gone(shared);

    let mut batches = vec![Vec::new(); shared.shards.len()];
    let mut flushes = Vec::new();
    let mut failed = false;
    loop {
        // Flushes first: the lines logged before them are in the shards by now.
        std::mem::swap(&mut *lock(&shared.flushes), &mut flushes);
        // Read before the shards: once every handle is gone, no line comes after.
        let closed = shared.closed.load(Ordering::Acquire);
        shared.take_lines(&mut batches);
        let wrote = batches.iter().any(|batch| !batch.is_empty());
        if !wrote && flushes.is_empty() {
            if closed {
                return;
            }
            shared.waiting.store(IDLE, Ordering::Relaxed);
            if !shared.wanted(|pending| pending.lines > 0) {
                // Woken by a line, a flush or the last handle going; a spurious wake-up
                // just looks again.
                std::thread::park();
            }
            shared.waiting.store(BUSY, Ordering::Relaxed);
            continue;
        }
        if wrote {
            let written = batches
                .iter()
                .filter(|batch| !batch.is_empty())
                .try_for_each(|batch| out.write_all(batch))
                .and_then(|()| out.flush());
            match written {
                // Logged once per run of failures: a full disk must not flood the log too.
                Err(e) if !failed => {
                    tracing::warn!(error = %e, "access log write failed; lines are lost");
                    failed = true;
                }
                Err(_) => {}
                Ok(()) => failed = false,
            }
            for batch in &mut batches {
                batch.clear();
                if batch.capacity() > KEEP {
                    *batch = Vec::new();
                }
            }
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
        if wrote {
            linger(shared);
        }
    }
}

/// Waits, after a write, until a shard holds a batch, a flush is asked for, every handle is
/// gone or [`LINGER`] has passed.
fn linger(shared: &Shared) {
    let until = Instant::now() + LINGER;
    loop {
        shared.waiting.store(LINGERING, Ordering::Relaxed);
        if shared.wanted(|pending| shared.full(pending)) {
            break;
        }
        let now = Instant::now();
        if now >= until {
            break;
        }
        // A wake-up (or a stale one, or none) just looks again.
        std::thread::park_timeout(until - now);
    }
    shared.waiting.store(BUSY, Ordering::Relaxed);
}

// === formats ===
//
// Lines are built byte by byte into a `Vec<u8>` without `core::fmt`: its machinery (padding,
// alignment, dynamic dispatch) cost several times the rest of a line together, and a line is
// made for every request. Everything written is ASCII; request bytes are escaped.

impl AccessLogFormat {
    /// The line of a request that just arrived, with its arrival fields.
    fn begin(self, a: &Arrival<'_>, mut buf: Vec<u8>) -> Line {
        let split = match self {
            AccessLogFormat::Json => json_arrival(a, &mut buf),
            AccessLogFormat::Common => common_arrival(a, &mut buf),
        };
        Line { buf, split }
    }

    /// Writes `line` with its outcome to `out`.
    fn finish(self, line: &Line, o: &Outcome<'_>, out: &mut Vec<u8>) {
        let (arrival, rest) = line.buf.split_at(line.split);
        out.extend_from_slice(arrival);
        match self {
            AccessLogFormat::Json => {
                json_outcome(o, out);
                out.extend_from_slice(rest);
            }
            AccessLogFormat::Common => {
                common_status(o, out);
                out.extend_from_slice(rest);
                common_outcome(o, out);
            }
        }
    }
}

/// `{"time":…,"protocol":"HTTP/1.1"` then `,"user_agent":…,"referer":…}\n`; returns where the
/// second part starts.
fn json_arrival(a: &Arrival<'_>, out: &mut Vec<u8>) -> usize {
    out.extend_from_slice(b"{\"time\":\"");
    rfc3339(a.time, out);
    out.extend_from_slice(b"\",\"request_id\":");
    match a.request_id {
        // Nothing in an id needs escaping.
        Some(id) => {
            out.push(b'"');
            out.extend_from_slice(id.as_bytes());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"trace_id\":");
    match a.trace_id {
        Some(id) => {
            out.push(b'"');
            hex128(id, out);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"client\":\"");
    out.extend_from_slice(a.client.socket_addr());
    // A method is a token (RFC 9110): nothing in it needs escaping.
    out.extend_from_slice(b"\",\"method\":\"");
    out.extend_from_slice(a.method.as_str().as_bytes());
    out.extend_from_slice(b"\",\"authority\":");
    json_opt(a.authority.map(|a| cap(a, MAX_HEADER)), out);
    out.extend_from_slice(b",\"path\":");
    json_str(cap(a.path, MAX_PATH), out);
    out.extend_from_slice(b",\"protocol\":\"");
    out.extend_from_slice(protocol(a.version).as_bytes());
    out.push(b'"');
    let split = out.len();
    out.extend_from_slice(b",\"user_agent\":");
    json_opt(a.user_agent.map(|v| cap(v.as_bytes(), MAX_HEADER)), out);
    out.extend_from_slice(b",\"referer\":");
    json_opt(a.referer.map(|v| cap(v.as_bytes(), MAX_HEADER)), out);
    out.extend_from_slice(b"}\n");
    split
}

/// `,"status":…,"flags":"-"`, all of it before the arrival's second part.
fn json_outcome(o: &Outcome<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b",\"status\":");
    number(u64::from(o.status), out);
    out.extend_from_slice(b",\"bytes_in\":");
    number(o.bytes_in, out);
    out.extend_from_slice(b",\"bytes_out\":");
    number(o.bytes_out, out);
    out.extend_from_slice(b",\"duration_ms\":");
    millis(o.duration, out);
    out.extend_from_slice(b",\"upstream\":");
    match o.upstream {
        Some(addr) => {
            out.push(b'"');
            endpoint(addr, out);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(&o.route.json);
    out.extend_from_slice(&o.backend.json);
    out.extend_from_slice(b",\"flags\":\"");
    flags(o.flags, out);
    out.push(b'"');
}

/// An endpoint's address as [`socket_addr`] writes it, copied from this thread's text of the
/// last IPv4 endpoint it wrote when it is the same: a thread's requests go to a few endpoints,
/// again and again.
fn endpoint(addr: SocketAddr, out: &mut Vec<u8>) {
    /// Room for `255.255.255.255:65535`.
    const TEXT: usize = 21;
    thread_local! {
        static LAST: Cell<Option<(SocketAddrV4, [u8; TEXT], u8)>> = const { Cell::new(None) };
    }
    let SocketAddr::V4(v4) = addr else {
        return socket_addr(addr, out);
    };
    let last = LAST.try_with(Cell::get).ok().flatten();
    if let Some((last, text, len)) = last
        && last == v4
    {
        out.extend_from_slice(&text[..usize::from(len)]);
        return;
    }
    let start = out.len();
    socket_addr(addr, out);
    let written = &out[start..];
    if let Ok(len) = u8::try_from(written.len())
        && written.len() <= TEXT
    {
        let mut text = [0; TEXT];
        text[..written.len()].copy_from_slice(written);
        let _ = LAST.try_with(|cell| cell.set(Some((v4, text, len))));
    }
}

fn json_opt(value: Option<&[u8]>, out: &mut Vec<u8>) {
    match value {
        Some(v) => json_str(v, out),
        None => out.extend_from_slice(b"null"),
    }
}

/// The bytes [`json_str`] escapes: controls, DEL and above, quote and backslash. A table, as
/// every byte of every string of every line is looked up in it.
const ESCAPED: [bool; 256] = {
    let mut table = [true; 256];
    let mut b = 0x20;
    while b <= 0x7e {
        table[b] = b == b'"' as usize || b == b'\\' as usize;
        b += 1;
    }
    table
};

/// A JSON string of header or path bytes: printable ASCII as is, everything else escaped
/// byte by byte (header values may hold obs-text, which is not UTF-8). Inlined: a line has
/// seven of them, and a call's own cost (registers saved and restored, constants loaded) was
/// as much as the look at a short value.
#[inline(always)]
fn json_str(value: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    // Most values need no escape at all: one look at them, one copy.
    if plain(value) {
        out.extend_from_slice(value);
    } else {
        json_escaped(value, out);
    }
    out.push(b'"');
}

#[cold]
#[inline(never)]
fn json_escaped(value: &[u8], out: &mut Vec<u8>) {
    let mut rest = value;
    while !rest.is_empty() {
        // Runs of plain bytes are copied whole.
        let plain = plain_prefix(rest);
        out.extend_from_slice(&rest[..plain]);
        let Some(&b) = rest.get(plain) else {
            break;
        };
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            _ => {
                out.extend_from_slice(b"\\u00");
                hex_byte(b, out);
            }
        }
        rest = &rest[plain + 1..];
    }
}

/// Whether none of `bytes` needs escaping: eight at a time (the last eight overlapping the
/// ones before), or, in values of four to seven bytes, their first and last four together.
#[inline(always)]
fn plain(bytes: &[u8]) -> bool {
    let len = bytes.len();
    if len >= 8 {
        let mut words = bytes.chunks_exact(8);
        let mut last = [0; 8];
        last.copy_from_slice(&bytes[len - 8..]);
        return words.all(|w| !needs_escape(word(w))) && !needs_escape(u64::from_le_bytes(last));
    }
    if len >= 4 {
        let four = |at: usize| {
            let mut four = [0; 4];
            four.copy_from_slice(&bytes[at..at + 4]);
            u64::from(u32::from_le_bytes(four))
        };
        return !needs_escape(four(0) | (four(len - 4) << 32));
    }
    bytes.iter().all(|&b| !ESCAPED[usize::from(b)])
}

/// Eight bytes as one word.
fn word(eight: &[u8]) -> u64 {
    let mut w = [0; 8];
    w.copy_from_slice(eight);
    u64::from_le_bytes(w)
}

/// How many bytes at the start of `bytes` [`json_escaped`] copies as they are: eight at a time
/// while none of the eight needs escaping, the last (partial) eight as the eight bytes that end
/// the value (overlapping the ones already looked at), and byte by byte only around a byte
/// that needs escaping, or in values shorter than eight bytes.
fn plain_prefix(bytes: &[u8]) -> usize {
    let len = bytes.len();
    let mut at = 0;
    if len >= 8 {
        while at + 8 <= len && !needs_escape(word(&bytes[at..at + 8])) {
            at += 8;
        }
        if at == len || (at + 8 > len && !needs_escape(word(&bytes[len - 8..]))) {
            return len;
        }
    }
    at + bytes[at..]
        .iter()
        .position(|&b| ESCAPED[usize::from(b)])
        .unwrap_or(len - at)
}

/// Whether any of the eight bytes in `w` is one [`json_str`] escapes (below 0x20, 0x7f and
/// above, `"` or `\`), by the bit tricks of "Bit Twiddling Hacks" (haszero, hasless).
fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    let quote = zero_byte(w ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(w ^ (ONES * u64::from(b'\\')));
    let delete = zero_byte(w ^ (ONES * 0x7f));
    (control | quote | backslash | delete | (w & HIGH)) != 0
}

/// Milliseconds with three decimals, rounded half up (`1.234`), in integer arithmetic.
fn millis(duration: Duration, out: &mut Vec<u8>) {
    // In `u64`: `as_nanos` is a `u128`, whose division is a library call.
    let micros = duration
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from((duration.subsec_nanos() + 500) / 1000));
    number(micros / 1000, out);
    out.push(b'.');
    digits::<3>(micros % 1000, out);
}

/// `1.2.3.4 - - [time] "GET /path HTTP/1.1" ` then `"referer" "agent" rid=… trace=…
/// authority="…"`; returns where the second part starts.
fn common_arrival(a: &Arrival<'_>, out: &mut Vec<u8>) -> usize {
    out.extend_from_slice(a.client.ip());
    out.extend_from_slice(b" - - [");
    clf_time(a.time, out);
    out.extend_from_slice(b"] \"");
    out.extend_from_slice(a.method.as_str().as_bytes());
    out.push(b' ');
    clf_escape(cap(a.path, MAX_PATH), out);
    out.push(b' ');
    out.extend_from_slice(protocol(a.version).as_bytes());
    out.extend_from_slice(b"\" ");
    let split = out.len();
    clf_quoted(a.referer.map(|v| cap(v.as_bytes(), MAX_HEADER)), out);
    out.push(b' ');
    clf_quoted(a.user_agent.map(|v| cap(v.as_bytes(), MAX_HEADER)), out);
    out.extend_from_slice(b" rid=");
    clf_bare(a.request_id.map(RequestId::as_bytes), out);
    out.extend_from_slice(b" trace=");
    match a.trace_id {
        Some(id) => hex128(id, out),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" authority=");
    clf_quoted(a.authority.map(|a| cap(a, MAX_HEADER)), out);
    split
}

/// `200 512 ` (between the request line and the referer), then ` dur_ms=… bytes_in=…\n`;
/// returns the length of the first part.
fn common_status(o: &Outcome<'_>, out: &mut Vec<u8>) {
    number(u64::from(o.status), out);
    out.push(b' ');
    number(o.bytes_out, out);
    out.push(b' ');
}

/// ` dur_ms=… bytes_in=…\n`, after the arrival's second part.
fn common_outcome(o: &Outcome<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b" dur_ms=");
    millis(o.duration, out);
    out.extend_from_slice(b" upstream=");
    match o.upstream {
        Some(addr) => endpoint(addr, out),
        None => out.push(b'-'),
    }
    out.extend_from_slice(&o.route.common);
    out.extend_from_slice(&o.backend.common);
    out.extend_from_slice(b" flags=");
    flags(o.flags, out);
    out.extend_from_slice(b" bytes_in=");
    number(o.bytes_in, out);
    out.push(b'\n');
}

fn clf_quoted(value: Option<&[u8]>, out: &mut Vec<u8>) {
    out.push(b'"');
    match value {
        Some(v) => clf_escape(v, out),
        None => out.push(b'-'),
    }
    out.push(b'"');
}

/// An unquoted value (names from the configuration, request ids): `-` when absent or empty.
fn clf_bare(value: Option<&[u8]>, out: &mut Vec<u8>) {
    match value {
        Some(v) if !v.is_empty() => clf_escape(v, out),
        _ => out.push(b'-'),
    }
}

/// Apache's escaping: `"` and `\` backslashed, bytes outside printable ASCII as `\xHH`; spaces
/// too, so that a field never splits.
fn clf_escape(value: &[u8], out: &mut Vec<u8>) {
    for &b in value {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x21..=0x7e => out.push(b),
            _ => {
                out.extend_from_slice(b"\\x");
                hex_byte(b, out);
            }
        }
    }
}

fn cap(value: &[u8], max: usize) -> &[u8] {
    &value[..value.len().min(max)]
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}

fn flags(flags: Flags, out: &mut Vec<u8>) {
    if flags.0 == 0 {
        out.push(b'-');
        return;
    }
    // Rare (a request that went wrong), so the Display impl is good enough.
    let _ = write!(out, "{flags}");
}

/// `2026-11-26T10:00:00.123Z`.
fn rfc3339(time: SystemTime, out: &mut Vec<u8>) {
    thread_local! {
        static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
    }
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = per_second(&SECOND, since.as_secs(), |(y, mo, d, h, mi, s), line| {
        digits::<4>(y, line);
        for (sep, value) in [(b'-', mo), (b'-', d), (b'T', h), (b':', mi), (b':', s)] {
            line.push(sep);
            digits::<2>(value, line);
        }
    });
    out.extend_from_slice(&seconds);
    out.push(b'.');
    digits::<3>(u64::from(since.subsec_millis()), out);
    out.push(b'Z');
}

/// `26/Nov/2026:10:00:00 +0000`.
fn clf_time(time: SystemTime, out: &mut Vec<u8>) {
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    thread_local! {
        static SECOND: Cell<(u64, [u8; 26])> = const { Cell::new((u64::MAX, [0; 26])) };
    }
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = per_second(&SECOND, since.as_secs(), |(y, mo, d, h, mi, s), line| {
        digits::<2>(d, line);
        line.push(b'/');
        line.extend_from_slice(MONTHS[(mo - 1) as usize]);
        line.push(b'/');
        digits::<4>(y, line);
        for value in [h, mi, s] {
            line.push(b':');
            digits::<2>(value, line);
        }
        line.extend_from_slice(b" +0000");
    });
    out.extend_from_slice(&seconds);
}

/// The time of day to the second as `write` puts it, made once per second per thread: lines
/// of the same second (under load, thousands) share the calendar arithmetic.
fn per_second<const N: usize>(
    cache: &'static std::thread::LocalKey<Cell<(u64, [u8; N])>>,
    seconds: u64,
    write: impl FnOnce((u64, u64, u64, u64, u64, u64), &mut Vec<u8>),
) -> [u8; N] {
    cache.with(|cell| {
        let (cached, text) = cell.get();
        if cached == seconds {
            return text;
        }
        let mut line = Vec::with_capacity(N);
        write(civil(seconds), &mut line);
        let mut text = [0; N];
        text.copy_from_slice(&line[..N]);
        cell.set((seconds, text));
        text
    })
}

/// Calendar fields of a UTC time in seconds since the epoch: (year, month, day, hour,
/// minute, second).
fn civil(seconds: u64) -> (u64, u64, u64, u64, u64, u64) {
    let (days, rem) = (seconds / 86_400, seconds % 86_400);
    // Howard Hinnant's days-to-civil algorithm, for days on or after 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day, rem / 3600, rem / 60 % 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    static RID: std::sync::LazyLock<RequestId> = std::sync::LazyLock::new(|| {
        RequestId::sane(HeaderValue::from_static("rid-1")).expect("a sane id")
    });

    static CLIENT: std::sync::LazyLock<ClientText> =
        std::sync::LazyLock::new(|| ClientText::new("10.0.0.1:5123".parse().unwrap()));

    #[test]
    fn endpoints_are_written_alike_from_the_thread_copy() {
        for addr in [
            "10.0.0.1:80",
            "10.0.0.1:80",
            "10.0.0.1:81",
            "255.255.255.255:65535",
            "255.255.255.255:65535",
            "[fd00::1]:443",
            "10.0.0.1:80",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut out = b"x".to_vec();
            endpoint(addr, &mut out);
            assert_eq!(out[1..], *addr.to_string().as_bytes());
        }
    }

    #[test]
    fn client_text_has_the_address_and_the_ip() {
        for (addr, ip) in [("10.0.0.1:5123", "10.0.0.1"), ("[fd00::1]:8080", "fd00::1")] {
            let text = ClientText::new(addr.parse().unwrap());
            assert_eq!(text.socket_addr(), addr.as_bytes());
            assert_eq!(text.ip(), ip.as_bytes());
        }
    }

    fn arrival<'a>(agent: &'a HeaderValue) -> Arrival<'a> {
        Arrival {
            // 2026-11-26T10:00:00.123Z
            time: UNIX_EPOCH + Duration::from_millis(1_795_687_200_123),
            request_id: Some(&RID),
            trace_id: Some(0x4bf92f3577b34da6a3ce929d0e0e4736),
            client: &CLIENT,
            method: &Method::GET,
            authority: Some(b"shop.example"),
            path: b"/a\"b",
            version: Version::HTTP_11,
            user_agent: Some(agent),
            referer: None,
        }
    }

    static ROUTE: std::sync::LazyLock<Names> =
        std::sync::LazyLock::new(|| Names::route(Some("web"), Some("shop/cart")));

    fn outcome() -> Outcome<'static> {
        Outcome {
            status: 200,
            bytes_in: 3,
            bytes_out: 512,
            duration: Duration::from_micros(1234),
            upstream: Some("10.1.0.7:8080".parse().unwrap()),
            route: &ROUTE,
            backend: Names::no_backend(),
            flags: Flags::default(),
        }
    }

    #[test]
    fn names_are_escaped_once_for_both_formats() {
        let names = Names::route(Some("we\"b"), None);
        assert_eq!(&*names.json, br#","listener":"we\"b","route":null"#);
        assert_eq!(&*names.common, br#" listener=we\"b route=-"#);
        let names = Names::backend(Some("shop/cart v2"));
        assert_eq!(&*names.json, br#","backend":"shop/cart v2""#);
        assert_eq!(&*names.common, br" backend=shop/cart\x20v2");
        assert_eq!(
            &*Names::no_route().json,
            br#","listener":null,"route":null"#
        );
    }

    fn agent() -> HeaderValue {
        HeaderValue::from_bytes(b"ua \xff").unwrap()
    }

    fn line(format: AccessLogFormat, a: &Arrival<'_>, o: &Outcome<'_>) -> String {
        let mut out = Vec::new();
        format.finish(&format.begin(a, Vec::new()), o, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_line() {
        assert_eq!(
            line(AccessLogFormat::Json, &arrival(&agent()), &outcome()),
            concat!(
                r#"{"time":"2026-11-26T10:00:00.123Z","request_id":"rid-1","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","#,
                r#""client":"10.0.0.1:5123","method":"GET","authority":"shop.example","path":"/a\"b","#,
                r#""protocol":"HTTP/1.1","status":200,"bytes_in":3,"bytes_out":512,"duration_ms":1.234,"#,
                r#""upstream":"10.1.0.7:8080","listener":"web","route":"shop/cart","backend":null,"#,
                r#""flags":"-","user_agent":"ua \u00ff","referer":null}"#,
                "\n"
            )
        );
    }

    #[test]
    fn common_line() {
        let mut o = outcome();
        o.flags.set(Flags::UF);
        o.flags.set(Flags::UT);
        assert_eq!(
            line(AccessLogFormat::Common, &arrival(&agent()), &o),
            concat!(
                r#"10.0.0.1 - - [26/Nov/2026:10:00:00 +0000] "GET /a\"b HTTP/1.1" 200 512 "-" "ua\x20\xff" "#,
                r#"rid=rid-1 trace=4bf92f3577b34da6a3ce929d0e0e4736 authority="shop.example" dur_ms=1.234 "#,
                r#"upstream=10.1.0.7:8080 listener=web route=shop/cart backend=- flags=UF,UT bytes_in=3"#,
                "\n"
            )
        );
    }

    #[test]
    fn extension_methods_need_no_escaping() {
        let method = Method::from_bytes(b"PURGE!#$%&'*+-.^_`|~").unwrap();
        let agent = agent();
        let mut a = arrival(&agent);
        a.method = &method;
        let json = line(AccessLogFormat::Json, &a, &outcome());
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["method"], method.as_str());
        // What would need escaping is no method at all.
        for bad in [&b"A\"B"[..], b"A\\B", b"A B", b"A\x01", b"A\xff"] {
            assert!(Method::from_bytes(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn request_data_is_capped() {
        let long = vec![b'p'; MAX_PATH + 10];
        let agent = HeaderValue::from_bytes(&[b'a'; MAX_HEADER + 10]).unwrap();
        let mut a = arrival(&agent);
        a.path = &long;
        let json = line(AccessLogFormat::Json, &a, &outcome());
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["path"].as_str().unwrap().len(), MAX_PATH);
        assert_eq!(v["user_agent"].as_str().unwrap().len(), MAX_HEADER);
    }

    #[test]
    fn millis_round_half_up_to_microseconds() {
        for (nanos, want) in [
            (0, "0.000"),
            (499, "0.000"),
            (500, "0.001"),
            (1_234_000, "1.234"),
            (1_234_500, "1.235"),
            (61_000_000_000, "61000.000"),
            // Rounding carries into the next second.
            (1_999_999_600, "2000.000"),
        ] {
            let mut out = Vec::new();
            millis(Duration::from_nanos(nanos), &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), want, "{nanos} ns");
        }
    }

    #[test]
    fn json_strings_escape_only_what_they_must() {
        let mut out = Vec::new();
        json_str(b"plain", &mut out);
        json_str(b"\"q\\\x01\x7f end", &mut out);
        json_str(b"", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#""plain""\"q\\\u0001\u007f end""""#
        );
    }

    #[test]
    fn word_at_a_time_scan_agrees_with_the_table() {
        for b in 0..=255u8 {
            for at in 0..8 {
                let mut word = *b"abcdefgh";
                word[at] = b;
                assert_eq!(
                    needs_escape(u64::from_le_bytes(word)),
                    ESCAPED[usize::from(b)],
                    "byte {b:#x} at {at}"
                );
            }
        }
        let text = b"0123456789abcdef\"ghij";
        assert_eq!(plain_prefix(text), 16);
        assert_eq!(plain_prefix(b"short"), 5);
        assert_eq!(plain_prefix(b"exactly8"), 8);
        assert_eq!(plain_prefix(b"tw\x01"), 2);
        // Every length up to three words, with one byte to escape at every place (or none):
        // the word loop, the overlapping last word and the byte scan all have to agree.
        for len in 0..24 {
            for special in [
                None,
                Some(b'"'),
                Some(b'\\'),
                Some(0x01),
                Some(0x7f),
                Some(0xc3),
            ] {
                for at in 0..len.max(1) {
                    let mut value = vec![b'x'; len];
                    if let (Some(b), true) = (special, at < len) {
                        value[at] = b;
                    }
                    let expected = value
                        .iter()
                        .position(|&b| ESCAPED[usize::from(b)])
                        .unwrap_or(len);
                    assert_eq!(plain_prefix(&value), expected, "{value:?}");
                    assert_eq!(plain(&value), expected == len, "{value:?}");
                }
            }
        }
    }

    #[test]
    fn civil_dates() {
        let mut out = Vec::new();
        rfc3339(UNIX_EPOCH, &mut out);
        assert_eq!(out, b"1970-01-01T00:00:00.000Z");
        out.clear();
        // 2000-02-29T23:59:59Z, a leap day in a century leap year.
        rfc3339(UNIX_EPOCH + Duration::from_secs(951_868_799), &mut out);
        assert_eq!(out, b"2000-02-29T23:59:59.000Z");
        // The same second again, from the per-second cache, with its own milliseconds.
        out.clear();
        rfc3339(
            UNIX_EPOCH + Duration::from_millis(951_868_799_250),
            &mut out,
        );
        assert_eq!(out, b"2000-02-29T23:59:59.250Z");
        out.clear();
        clf_time(UNIX_EPOCH + Duration::from_secs(951_868_799), &mut out);
        assert_eq!(out, b"29/Feb/2000:23:59:59 +0000");
    }

    /// A writer that, once entered, blocks until told to go on, then takes everything.
    struct Stuck {
        entered: Arc<std::sync::atomic::AtomicBool>,
        go: std::sync::mpsc::Receiver<()>,
        written: Arc<std::sync::Mutex<Vec<u8>>>,
    }

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.entered
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = self.go.recv();
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn full_queue_drops_and_counts_and_flush_waits_for_the_rest() {
        let (go, wait) = std::sync::mpsc::channel();
        let entered = Arc::<std::sync::atomic::AtomicBool>::default();
        let written = Arc::<std::sync::Mutex<Vec<u8>>>::default();
        let stuck = Stuck {
            entered: Arc::clone(&entered),
            go: wait,
            written: Arc::clone(&written),
        };
        let log = AccessLog::with_shards(AccessLogFormat::Json, stuck, 2, 1).unwrap();
        let agent = agent();
        let log_one = || log.log(log.begin(&arrival(&agent)), &outcome());
        // The writer takes the first line and blocks writing it; two more fill the queue.
        log_one();
        tokio::time::timeout(Duration::from_secs(5), async {
            while !entered.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap();
        for _ in 0..10 {
            log_one();
        }
        assert_eq!(log.dropped(), 8);
        drop(go);
        log.flush().await;
        let written = written.lock().unwrap();
        assert_eq!(written.iter().filter(|&&b| b == b'\n').count(), 3);
    }

    /// A writer into memory shared with the test.
    struct Memory(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Memory {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn lines_of_many_threads_are_all_written_whole() {
        const THREADS: usize = 6;
        const LINES: usize = 2_000;
        let written = Arc::<std::sync::Mutex<Vec<u8>>>::default();
        // Fewer shards than threads: some threads share one. Each shard has room for every
        // line (threads take shards by their number, and any test's threads take numbers), so
        // that however slow the writer, nothing is dropped.
        const SHARDS: usize = 4;
        let log = AccessLog::with_shards(
            AccessLogFormat::Json,
            Memory(Arc::clone(&written)),
            SHARDS * THREADS * LINES,
            SHARDS,
        )
        .unwrap();
        std::thread::scope(|scope| {
            for _ in 0..THREADS {
                scope.spawn(|| {
                    let agent = agent();
                    for _ in 0..LINES {
                        log.log(log.begin(&arrival(&agent)), &outcome());
                    }
                });
            }
        });
        log.flush().await;
        assert_eq!(log.dropped(), 0);
        let expected = line(AccessLogFormat::Json, &arrival(&agent()), &outcome());
        let written = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        assert_eq!(written.len(), THREADS * LINES * expected.len());
        assert!(written.split_inclusive('\n').all(|l| l == expected));
    }

    #[tokio::test]
    async fn a_line_after_a_quiet_spell_is_written_without_a_flush() {
        let written = Arc::<std::sync::Mutex<Vec<u8>>>::default();
        let log = AccessLog::new(AccessLogFormat::Json, Memory(Arc::clone(&written)), 16).unwrap();
        let agent = agent();
        for round in 1..=3 {
            log.log(log.begin(&arrival(&agent)), &outcome());
            tokio::time::timeout(Duration::from_secs(5), async {
                while written
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
                    < round
                {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await
            .expect("the writer writes a line it was woken for");
            // Past the writer's lingering: it waits idle for the next line.
            tokio::time::sleep(LINGER * 2).await;
        }
    }
}
