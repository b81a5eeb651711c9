//! Access logs: one line per request, written by a thread of its own.
//!
//! The request path only moves an `Entry` into a bounded queue (`try_send`, never waiting);
//! when the writer falls behind and the queue is full, the line is dropped and counted
//! ([`AccessLog::dropped`], and `novaedge_access_log_dropped_total` when metrics are
//! registered). The writer, a thread of its own, formats lines into one buffer and writes
//! whatever is queued in one write whenever the queue runs empty; under load it lingers a
//! millisecond between writes, so that lines share writes and queueing one wakes nobody, while
//! a quiet proxy's lines appear at once.
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
//! rid=… trace=… dur_ms=1.234 authority="shop.example" upstream=10.1.0.7:8080 listener=web
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

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method, Version};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, oneshot};

use super::Flags;
use crate::ascii::{digits, hex_byte, hex128, ip, number, socket_addr};

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

/// What a request looked like when it arrived, as the access log and spans show it. Made only
/// when something shows it (not for metrics alone), and boxed, so that what moves with every
/// observed request stays small.
#[derive(Debug)]
pub(crate) struct Arrival {
    pub(crate) time: SystemTime,
    pub(crate) request_id: Option<HeaderValue>,
    pub(crate) trace_id: Option<u128>,
    pub(crate) client: SocketAddr,
    pub(crate) method: Method,
    pub(crate) authority: Option<HeaderValue>,
    /// Already capped to [`MAX_PATH`].
    pub(crate) path: String,
    pub(crate) version: Version,
    pub(crate) user_agent: Option<HeaderValue>,
    pub(crate) referer: Option<HeaderValue>,
}

/// One request, as the access log sees it.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) arrival: Box<Arrival>,
    pub(crate) status: u16,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) duration: Duration,
    pub(crate) upstream: Option<SocketAddr>,
    pub(crate) listener: Option<Arc<str>>,
    pub(crate) route: Option<Arc<str>>,
    pub(crate) backend: Option<Arc<str>>,
    pub(crate) flags: Flags,
}

enum Message {
    Line(Entry),
    Flush(oneshot::Sender<()>),
}

/// The access log: a handle on its writer thread. Cheap to clone; clones share the queue. The
/// thread ends once every handle is dropped and the queue is written out.
#[derive(Clone)]
pub struct AccessLog {
    tx: mpsc::Sender<Message>,
    dropped: Counter,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("queued", &(self.tx.max_capacity() - self.tx.capacity()))
            .field("dropped", &self.dropped.get())
            .finish()
    }
}

impl AccessLog {
    /// Lines queued at most while the writer is busy; more are dropped.
    pub const DEFAULT_QUEUE: usize = 4096;

    /// Starts a writer thread writing `format` lines to `out`, with room for `queue` lines
    /// waiting.
    ///
    /// The writer is a thread of its own, not a task: formatting and `write(2)` stay off the
    /// proxy's runtime threads, and a slow disk or a full pipe blocks only the writer (whose
    /// queue then fills, and lines are dropped and counted) — never a request.
    ///
    /// # Errors
    ///
    /// When the operating system cannot start the thread.
    pub fn new<W>(format: AccessLogFormat, out: W, queue: usize) -> std::io::Result<Self>
    where
        W: Write + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(queue.max(1));
        std::thread::Builder::new()
            .name("novaedge-access-log".into())
            .spawn(move || write(format, out, rx))?;
        Ok(Self {
            tx,
            dropped: Counter::default(),
        })
    }

    /// Lines dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    pub(crate) fn dropped_counter(&self) -> Counter {
        self.dropped.clone()
    }

    /// Waits until every line queued before this call is written and flushed.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    pub(crate) fn log(&self, entry: Entry) {
        if self.tx.try_send(Message::Line(entry)).is_err() {
            self.dropped.inc();
        }
    }
}

/// Bytes of lines written at most in one write.
const CHUNK: usize = 64 * 1024;

/// How long the writer waits, after writing a batch, before it looks at the queue again.
///
/// A writer that went back to waiting on the queue at once would be woken by the next line —
/// under load, one wake-up (a futex call on the request's thread) per request. Lingering
/// instead, it is not waiting while lines arrive, so queueing one costs the request a few
/// atomic operations, and the lines of the last millisecond share one write. Lines of a quiet
/// proxy still go out at once: the first line after a quiet spell wakes the writer.
const LINGER: Duration = Duration::from_millis(1);

fn write<W: Write>(format: AccessLogFormat, mut out: W, mut rx: mpsc::Receiver<Message>) {
    let mut buf = Vec::with_capacity(CHUNK + 4 * 1024);
    let mut flushed = Vec::new();
    let mut failed = false;
    let mut next = rx.blocking_recv();
    while next.is_some() {
        while let Some(message) = next.take() {
            match message {
                Message::Line(entry) => format.write(&entry, &mut buf),
                Message::Flush(done) => flushed.push(done),
            }
            // Write in chunks of a reasonable size even while the queue stays busy.
            if buf.len() < CHUNK {
                next = rx.try_recv().ok();
            }
        }
        let wrote = !buf.is_empty();
        if wrote {
            match out.write_all(&buf).and_then(|()| out.flush()) {
                // Logged once per run of failures: a full disk must not flood the log too.
                Err(e) if !failed => {
                    tracing::warn!(error = %e, "access log write failed; lines are lost");
                    failed = true;
                }
                Err(_) => {}
                Ok(()) => failed = false,
            }
            buf.clear();
        }
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
        next = match rx.try_recv() {
            Ok(message) => Some(message),
            Err(mpsc::error::TryRecvError::Empty) => {
                if wrote {
                    std::thread::sleep(LINGER);
                }
                match rx.try_recv() {
                    Ok(message) => Some(message),
                    Err(mpsc::error::TryRecvError::Empty) => rx.blocking_recv(),
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => None,
        };
    }
}

// === formats ===
//
// Lines are built byte by byte into a `Vec<u8>` without `core::fmt`: its machinery (padding,
// alignment, dynamic dispatch) cost several times the rest of a line together, and a line is
// made for every request. Everything written is ASCII; request bytes are escaped.

impl AccessLogFormat {
    pub(crate) fn write(self, e: &Entry, out: &mut Vec<u8>) {
        match self {
            AccessLogFormat::Json => json(e, out),
            AccessLogFormat::Common => common(e, out),
        }
    }
}

fn json(e: &Entry, out: &mut Vec<u8>) {
    let a = &e.arrival;
    out.extend_from_slice(b"{\"time\":\"");
    rfc3339(a.time, out);
    out.extend_from_slice(b"\",\"request_id\":");
    json_opt(a.request_id.as_ref().map(HeaderValue::as_bytes), out);
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
    socket_addr(a.client, out);
    out.extend_from_slice(b"\",\"method\":");
    json_str(a.method.as_str().as_bytes(), out);
    out.extend_from_slice(b",\"authority\":");
    json_opt(
        a.authority.as_ref().map(|a| cap(a.as_bytes(), MAX_HEADER)),
        out,
    );
    out.extend_from_slice(b",\"path\":");
    json_str(a.path.as_bytes(), out);
    out.extend_from_slice(b",\"protocol\":\"");
    out.extend_from_slice(protocol(a.version).as_bytes());
    out.extend_from_slice(b"\",\"status\":");
    number(u64::from(e.status), out);
    out.extend_from_slice(b",\"bytes_in\":");
    number(e.bytes_in, out);
    out.extend_from_slice(b",\"bytes_out\":");
    number(e.bytes_out, out);
    out.extend_from_slice(b",\"duration_ms\":");
    millis(e.duration, out);
    out.extend_from_slice(b",\"upstream\":");
    match e.upstream {
        Some(addr) => {
            out.push(b'"');
            socket_addr(addr, out);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    for (key, value) in [
        (&b",\"listener\":"[..], &e.listener),
        (b",\"route\":", &e.route),
        (b",\"backend\":", &e.backend),
    ] {
        out.extend_from_slice(key);
        json_opt(value.as_deref().map(str::as_bytes), out);
    }
    out.extend_from_slice(b",\"flags\":\"");
    flags(e.flags, out);
    out.extend_from_slice(b"\",\"user_agent\":");
    json_opt(
        a.user_agent.as_ref().map(|v| cap(v.as_bytes(), MAX_HEADER)),
        out,
    );
    out.extend_from_slice(b",\"referer\":");
    json_opt(
        a.referer.as_ref().map(|v| cap(v.as_bytes(), MAX_HEADER)),
        out,
    );
    out.extend_from_slice(b"}\n");
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
/// byte by byte (header values may hold obs-text, which is not UTF-8).
fn json_str(value: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    let mut rest = value;
    while !rest.is_empty() {
        // Runs of plain bytes are copied whole: most values are nothing else.
        let plain = rest
            .iter()
            .position(|&b| ESCAPED[usize::from(b)])
            .unwrap_or(rest.len());
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
    out.push(b'"');
}

/// Milliseconds with three decimals, rounded half up (`1.234`), in integer arithmetic.
fn millis(duration: Duration, out: &mut Vec<u8>) {
    let micros = u64::try_from((duration.as_nanos() + 500) / 1000).unwrap_or(u64::MAX);
    number(micros / 1000, out);
    out.push(b'.');
    digits(micros % 1000, 3, out);
}

fn common(e: &Entry, out: &mut Vec<u8>) {
    let a = &e.arrival;
    ip(a.client.ip(), out);
    out.extend_from_slice(b" - - [");
    clf_time(a.time, out);
    out.extend_from_slice(b"] \"");
    out.extend_from_slice(a.method.as_str().as_bytes());
    out.push(b' ');
    clf_escape(a.path.as_bytes(), out);
    out.push(b' ');
    out.extend_from_slice(protocol(a.version).as_bytes());
    out.extend_from_slice(b"\" ");
    number(u64::from(e.status), out);
    out.push(b' ');
    number(e.bytes_out, out);
    out.push(b' ');
    clf_quoted(
        a.referer.as_ref().map(|v| cap(v.as_bytes(), MAX_HEADER)),
        out,
    );
    out.push(b' ');
    clf_quoted(
        a.user_agent.as_ref().map(|v| cap(v.as_bytes(), MAX_HEADER)),
        out,
    );
    out.extend_from_slice(b" rid=");
    clf_bare(a.request_id.as_ref().map(HeaderValue::as_bytes), out);
    out.extend_from_slice(b" trace=");
    match a.trace_id {
        Some(id) => hex128(id, out),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" dur_ms=");
    millis(e.duration, out);
    out.extend_from_slice(b" authority=");
    clf_quoted(
        a.authority.as_ref().map(|a| cap(a.as_bytes(), MAX_HEADER)),
        out,
    );
    out.extend_from_slice(b" upstream=");
    match e.upstream {
        Some(addr) => socket_addr(addr, out),
        None => out.push(b'-'),
    }
    for (key, value) in [
        (&b" listener="[..], &e.listener),
        (b" route=", &e.route),
        (b" backend=", &e.backend),
    ] {
        out.extend_from_slice(key);
        clf_bare(value.as_deref().map(str::as_bytes), out);
    }
    out.extend_from_slice(b" flags=");
    flags(e.flags, out);
    out.extend_from_slice(b" bytes_in=");
    number(e.bytes_in, out);
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

/// Calendar fields of a UTC time: (year, month, day, hour, minute, second, millisecond).
fn civil(time: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem / 60 % 60) as u32,
        (rem % 60) as u32,
        since.subsec_millis(),
    )
}

/// `2026-11-26T10:00:00.123Z`.
fn rfc3339(time: SystemTime, out: &mut Vec<u8>) {
    let (y, mo, d, h, mi, s, ms) = civil(time);
    digits(y.unsigned_abs(), 4, out);
    for (sep, value) in [(b'-', mo), (b'-', d), (b'T', h), (b':', mi), (b':', s)] {
        out.push(sep);
        digits(u64::from(value), 2, out);
    }
    out.push(b'.');
    digits(u64::from(ms), 3, out);
    out.push(b'Z');
}

/// `26/Nov/2026:10:00:00 +0000`.
fn clf_time(time: SystemTime, out: &mut Vec<u8>) {
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let (y, mo, d, h, mi, s, _) = civil(time);
    digits(u64::from(d), 2, out);
    out.push(b'/');
    out.extend_from_slice(MONTHS[(mo - 1) as usize]);
    out.push(b'/');
    digits(y.unsigned_abs(), 4, out);
    for value in [h, mi, s] {
        out.push(b':');
        digits(u64::from(value), 2, out);
    }
    out.extend_from_slice(b" +0000");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            arrival: Box::new(Arrival {
                // 2026-11-26T10:00:00.123Z
                time: UNIX_EPOCH + Duration::from_millis(1_795_687_200_123),
                request_id: Some(HeaderValue::from_static("rid-1")),
                trace_id: Some(0x4bf92f3577b34da6a3ce929d0e0e4736),
                client: "10.0.0.1:5123".parse().unwrap(),
                method: Method::GET,
                authority: Some(HeaderValue::from_static("shop.example")),
                path: "/a\"b".into(),
                version: Version::HTTP_11,
                user_agent: Some(HeaderValue::from_bytes(b"ua \xff").unwrap()),
                referer: None,
            }),
            status: 200,
            bytes_in: 3,
            bytes_out: 512,
            duration: Duration::from_micros(1234),
            upstream: Some("10.1.0.7:8080".parse().unwrap()),
            listener: Some("web".into()),
            route: Some("shop/cart".into()),
            backend: None,
            flags: Flags::default(),
        }
    }

    #[test]
    fn json_line() {
        let mut out = Vec::new();
        AccessLogFormat::Json.write(&entry(), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
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
        let mut e = entry();
        e.flags.set(Flags::UF);
        e.flags.set(Flags::UT);
        let mut out = Vec::new();
        AccessLogFormat::Common.write(&e, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                r#"10.0.0.1 - - [26/Nov/2026:10:00:00 +0000] "GET /a\"b HTTP/1.1" 200 512 "-" "ua\x20\xff" "#,
                r#"rid=rid-1 trace=4bf92f3577b34da6a3ce929d0e0e4736 dur_ms=1.234 authority="shop.example" "#,
                r#"upstream=10.1.0.7:8080 listener=web route=shop/cart backend=- flags=UF,UT bytes_in=3"#,
                "\n"
            )
        );
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
    fn civil_dates() {
        let mut out = Vec::new();
        rfc3339(UNIX_EPOCH, &mut out);
        assert_eq!(out, b"1970-01-01T00:00:00.000Z");
        out.clear();
        // 2000-02-29T23:59:59Z, a leap day in a century leap year.
        rfc3339(UNIX_EPOCH + Duration::from_secs(951_868_799), &mut out);
        assert_eq!(out, b"2000-02-29T23:59:59.000Z");
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
        let log = AccessLog::new(AccessLogFormat::Json, stuck, 2).unwrap();
        // The writer takes the first line and blocks writing it; two more fill the queue.
        log.log(entry());
        tokio::time::timeout(Duration::from_secs(5), async {
            while !entered.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap();
        for _ in 0..10 {
            log.log(entry());
        }
        assert_eq!(log.dropped(), 8);
        drop(go);
        log.flush().await;
        let written = written.lock().unwrap();
        assert_eq!(written.iter().filter(|&&b| b == b'\n').count(), 3);
    }
}
