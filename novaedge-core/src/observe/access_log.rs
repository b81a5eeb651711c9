//! Access logs: one line per request, written by a task of its own.
//!
//! The request path only moves an `Entry` into a bounded queue (`try_send`, never waiting);
//! when the writer falls behind and the queue is full, the line is dropped and counted
//! ([`AccessLog::dropped`], and `novaedge_access_log_dropped_total` when metrics are
//! registered). The writer formats lines into one buffer, writes whatever is queued in one
//! write, and flushes whenever the queue runs empty (after letting the proxy's tasks run once,
//! so that lines queued meanwhile share the write), so a quiet proxy's lines appear at once.
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
//! TLS) failure, `UC` upstream connection ended or reset, `UT` request timeout, `RL` rate
//! limited, `DC` the client went away before the response ended, `DPE` a request the proxy
//! could not use (bad path, no host), `UPE` an upgrade the upstream cannot do, and NovaEdge's
//! own `SD` for a request refused because the engine is shutting down. Several are joined by
//! commas; none is `-`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method, Version};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::Flags;

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

/// One request, as the access log sees it.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) time: SystemTime,
    pub(crate) request_id: Option<HeaderValue>,
    pub(crate) trace_id: Option<u128>,
    pub(crate) client: SocketAddr,
    pub(crate) method: Method,
    pub(crate) authority: Option<HeaderValue>,
    /// Already capped to [`MAX_PATH`].
    pub(crate) path: String,
    pub(crate) version: Version,
    pub(crate) status: u16,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) duration: Duration,
    pub(crate) upstream: Option<SocketAddr>,
    pub(crate) listener: Option<Arc<str>>,
    pub(crate) route: Option<Arc<str>>,
    pub(crate) backend: Option<Arc<str>>,
    pub(crate) flags: Flags,
    pub(crate) user_agent: Option<HeaderValue>,
    pub(crate) referer: Option<HeaderValue>,
}

/// Lines go by value: a box would be one more allocation on the request path, freed on the
/// writer's thread.
#[expect(clippy::large_enum_variant, reason = "see above; Flush is rare")]
enum Message {
    Line(Entry),
    Flush(oneshot::Sender<()>),
}

/// The access log: a handle on its writer task. Cheap to clone; clones share the queue. The
/// task ends once every handle is dropped and the queue is written out.
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

    /// Starts a writer task writing `format` lines to `out`, with room for `queue` lines
    /// waiting. Must be called within a tokio runtime.
    pub fn new<W>(format: AccessLogFormat, out: W, queue: usize) -> Self
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(queue.max(1));
        tokio::spawn(write(format, out, rx));
        Self {
            tx,
            dropped: Counter::default(),
        }
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

async fn write<W>(format: AccessLogFormat, mut out: W, mut rx: mpsc::Receiver<Message>)
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut buf = String::with_capacity(CHUNK + 4 * 1024);
    let mut flushed = Vec::new();
    let mut failed = false;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut yielded = false;
        loop {
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
            // The queue ran dry. Under load more lines are a moment away: let the proxy's
            // tasks run once and take what they queued meanwhile, rather than pay a write (for
            // a file, a trip through the blocking pool) for a handful of lines. Once only, so a
            // quiet proxy's lines still appear at once.
            if yielded || buf.len() >= CHUNK || !flushed.is_empty() {
                break;
            }
            yielded = true;
            tokio::task::yield_now().await;
            match rx.try_recv() {
                Ok(message) => next = Some(message),
                Err(_) => break,
            }
        }
        if !buf.is_empty() {
            let result = async {
                out.write_all(buf.as_bytes()).await?;
                out.flush().await
            }
            .await;
            match result {
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
    }
}

// === formats ===

impl AccessLogFormat {
    pub(crate) fn write(self, e: &Entry, out: &mut String) {
        match self {
            AccessLogFormat::Json => json(e, out),
            AccessLogFormat::Common => common(e, out),
        }
    }
}

fn json(e: &Entry, out: &mut String) {
    out.push_str("{\"time\":\"");
    rfc3339(e.time, out);
    out.push_str("\",\"request_id\":");
    json_opt(e.request_id.as_ref().map(HeaderValue::as_bytes), out);
    out.push_str(",\"trace_id\":");
    match e.trace_id {
        Some(id) => {
            let _ = write!(out, "\"{id:032x}\"");
        }
        None => out.push_str("null"),
    }
    let _ = write!(out, ",\"client\":\"{}\",\"method\":", e.client);
    json_str(e.method.as_str().as_bytes(), out);
    out.push_str(",\"authority\":");
    json_opt(
        e.authority.as_ref().map(|a| cap(a.as_bytes(), MAX_HEADER)),
        out,
    );
    out.push_str(",\"path\":");
    json_str(e.path.as_bytes(), out);
    let _ = write!(
        out,
        ",\"protocol\":\"{}\",\"status\":{},\"bytes_in\":{},\"bytes_out\":{},\"duration_ms\":",
        protocol(e.version),
        e.status,
        e.bytes_in,
        e.bytes_out,
    );
    millis(e.duration, out);
    out.push_str(",\"upstream\":");
    match e.upstream {
        Some(addr) => {
            let _ = write!(out, "\"{addr}\"");
        }
        None => out.push_str("null"),
    }
    for (key, value) in [
        ("listener", &e.listener),
        ("route", &e.route),
        ("backend", &e.backend),
    ] {
        let _ = write!(out, ",\"{key}\":");
        json_opt(value.as_deref().map(str::as_bytes), out);
    }
    let _ = write!(out, ",\"flags\":\"{}\",\"user_agent\":", e.flags);
    json_opt(
        e.user_agent.as_ref().map(|v| cap(v.as_bytes(), MAX_HEADER)),
        out,
    );
    out.push_str(",\"referer\":");
    json_opt(
        e.referer.as_ref().map(|v| cap(v.as_bytes(), MAX_HEADER)),
        out,
    );
    out.push_str("}\n");
}

fn json_opt(value: Option<&[u8]>, out: &mut String) {
    match value {
        Some(v) => json_str(v, out),
        None => out.push_str("null"),
    }
}

/// A JSON string of header or path bytes: printable ASCII as is, everything else escaped
/// byte by byte (header values may hold obs-text, which is not UTF-8).
fn json_str(value: &[u8], out: &mut String) {
    out.push('"');
    let mut rest = value;
    while !rest.is_empty() {
        // Runs of plain bytes are copied whole: most values are nothing else.
        let plain = rest
            .iter()
            .position(|&b| !(0x20..=0x7e).contains(&b) || b == b'"' || b == b'\\')
            .unwrap_or(rest.len());
        // Printable ASCII, so always UTF-8.
        out.push_str(std::str::from_utf8(&rest[..plain]).unwrap_or_default());
        let Some(&b) = rest.get(plain) else {
            break;
        };
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            _ => {
                let _ = write!(out, "\\u{b:04x}");
            }
        }
        rest = &rest[plain + 1..];
    }
    out.push('"');
}

/// Milliseconds with three decimals, rounded half up (`1.234`): integer arithmetic, as float
/// formatting costs more than the rest of a line.
fn millis(duration: Duration, out: &mut String) {
    let micros = (duration.as_nanos() + 500) / 1000;
    let _ = write!(out, "{}.{:03}", micros / 1000, micros % 1000);
}

fn common(e: &Entry, out: &mut String) {
    let _ = write!(out, "{} - - [", e.client.ip());
    clf_time(e.time, out);
    out.push_str("] \"");
    out.push_str(e.method.as_str());
    out.push(' ');
    clf_escape(e.path.as_bytes(), out);
    let _ = write!(
        out,
        " {}\" {} {} ",
        protocol(e.version),
        e.status,
        e.bytes_out
    );
    clf_quoted(
        e.referer.as_ref().map(|v| cap(v.as_bytes(), MAX_HEADER)),
        out,
    );
    out.push(' ');
    clf_quoted(
        e.user_agent.as_ref().map(|v| cap(v.as_bytes(), MAX_HEADER)),
        out,
    );
    out.push_str(" rid=");
    clf_bare(e.request_id.as_ref().map(HeaderValue::as_bytes), out);
    out.push_str(" trace=");
    match e.trace_id {
        Some(id) => {
            let _ = write!(out, "{id:032x}");
        }
        None => out.push('-'),
    }
    out.push_str(" dur_ms=");
    millis(e.duration, out);
    out.push_str(" authority=");
    clf_quoted(
        e.authority.as_ref().map(|a| cap(a.as_bytes(), MAX_HEADER)),
        out,
    );
    out.push_str(" upstream=");
    match e.upstream {
        Some(addr) => {
            let _ = write!(out, "{addr}");
        }
        None => out.push('-'),
    }
    for (key, value) in [
        ("listener", &e.listener),
        ("route", &e.route),
        ("backend", &e.backend),
    ] {
        let _ = write!(out, " {key}=");
        clf_bare(value.as_deref().map(str::as_bytes), out);
    }
    let _ = writeln!(out, " flags={} bytes_in={}", e.flags, e.bytes_in);
}

fn clf_quoted(value: Option<&[u8]>, out: &mut String) {
    out.push('"');
    match value {
        Some(v) => clf_escape(v, out),
        None => out.push('-'),
    }
    out.push('"');
}

/// An unquoted value (names from the configuration, request ids): `-` when absent or empty.
fn clf_bare(value: Option<&[u8]>, out: &mut String) {
    match value {
        Some(v) if !v.is_empty() => clf_escape(v, out),
        _ => out.push('-'),
    }
}

/// Apache's escaping: `"` and `\` backslashed, bytes outside printable ASCII as `\xHH`; spaces
/// too, so that a field never splits.
fn clf_escape(value: &[u8], out: &mut String) {
    for &b in value {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x21..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
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
pub(crate) fn rfc3339(time: SystemTime, out: &mut String) {
    let (y, mo, d, h, mi, s, ms) = civil(time);
    let _ = write!(out, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z");
}

/// `26/Nov/2026:10:00:00 +0000`.
fn clf_time(time: SystemTime, out: &mut String) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, _) = civil(time);
    let _ = write!(
        out,
        "{d:02}/{}/{y:04}:{h:02}:{mi:02}:{s:02} +0000",
        MONTHS[(mo - 1) as usize]
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            // 2026-11-26T10:00:00.123Z
            time: UNIX_EPOCH + Duration::from_millis(1_795_687_200_123),
            request_id: Some(HeaderValue::from_static("rid-1")),
            trace_id: Some(0x4bf92f3577b34da6a3ce929d0e0e4736),
            client: "10.0.0.1:5123".parse().unwrap(),
            method: Method::GET,
            authority: Some(HeaderValue::from_static("shop.example")),
            path: "/a\"b".into(),
            version: Version::HTTP_11,
            status: 200,
            bytes_in: 3,
            bytes_out: 512,
            duration: Duration::from_micros(1234),
            upstream: Some("10.1.0.7:8080".parse().unwrap()),
            listener: Some("web".into()),
            route: Some("shop/cart".into()),
            backend: None,
            flags: Flags::default(),
            user_agent: Some(HeaderValue::from_bytes(b"ua \xff").unwrap()),
            referer: None,
        }
    }

    #[test]
    fn json_line() {
        let mut out = String::new();
        AccessLogFormat::Json.write(&entry(), &mut out);
        assert_eq!(
            out,
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
        let mut out = String::new();
        AccessLogFormat::Common.write(&e, &mut out);
        assert_eq!(
            out,
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
            let mut out = String::new();
            millis(Duration::from_nanos(nanos), &mut out);
            assert_eq!(out, want, "{nanos} ns");
        }
    }

    #[test]
    fn json_strings_escape_only_what_they_must() {
        let mut out = String::new();
        json_str(b"plain", &mut out);
        json_str(b"\"q\\\x01\x7f end", &mut out);
        json_str(b"", &mut out);
        assert_eq!(out, r#""plain""\"q\\\u0001\u007f end""""#);
    }

    #[test]
    fn civil_dates() {
        let mut out = String::new();
        rfc3339(UNIX_EPOCH, &mut out);
        assert_eq!(out, "1970-01-01T00:00:00.000Z");
        out.clear();
        // 2000-02-29T23:59:59Z, a leap day in a century leap year.
        rfc3339(UNIX_EPOCH + Duration::from_secs(951_868_799), &mut out);
        assert_eq!(out, "2000-02-29T23:59:59.000Z");
    }

    #[tokio::test]
    async fn full_queue_drops_and_counts() {
        // A writer that never accepts a byte: the queue fills up.
        let (stuck, _other) = tokio::io::duplex(1);
        let log = AccessLog::new(AccessLogFormat::Json, stuck, 2);
        for _ in 0..10 {
            log.log(entry());
        }
        assert!(log.dropped() >= 7, "dropped {}", log.dropped());
    }
}
