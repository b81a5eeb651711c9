//! A WebSocket load client, for `bench/soak.sh`: `--connections` WebSockets, each sending a text
//! message and awaiting its echo in a loop; a WebSocket that fails is counted by the kind of
//! failure and opened again. After `--seconds` (or Ctrl-C) every WebSocket is closed and the
//! totals are printed as one line of `key=value` pairs:
//!
//! ```text
//! cargo run --release -p novaedge-echo --example ws_load -- \
//!     --url ws://127.0.0.1:8080/ws --host app.example --connections 16 --seconds 60
//! messages_ok=812345 failures=8 connect=0 going_away=8 closed=0 error=0 timeout=0 mismatch=0 reconnects=8
//! ```
//!
//! Failure kinds: `connect` (no WebSocket: TCP connect or handshake failed), `going_away` (the
//! peer closed with `1001 Going Away`, as a server that shuts down does), `closed` (any other
//! close, or the stream ended), `error` (I/O or protocol error), `timeout` (no echo within
//! `--timeout-ms`), `mismatch` (the echo differed from the message). Every failure but
//! `connect` loses the one message that was awaiting its echo.
// A command-line tool: its report goes to stdout, usage errors to stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::{
    error::Error,
    fmt, process,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, header};
use tokio::{
    net::TcpStream,
    sync::watch,
    task::JoinSet,
    time::{sleep, timeout},
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{
        self, Message, client::IntoClientRequest, handshake::client::Request,
        protocol::frame::coding::CloseCode,
    },
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Pause before opening a WebSocket again, so that a proxy that is down is not hammered.
const RECONNECT_DELAY: Duration = Duration::from_millis(50);

/// How long the WebSockets get to close at the end before they are dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

const USAGE: &str = "usage: ws_load --url ws://HOST:PORT/PATH [--host NAME] [--connections N] \
                     [--seconds N] [--timeout-ms N] [--pause-ms N]";

#[derive(Debug)]
struct Config {
    url: String,
    /// Sent as the `Host` header instead of the URL's authority.
    host: Option<HeaderValue>,
    connections: usize,
    duration: Duration,
    /// How long a message may wait for its echo, and a handshake for its answer.
    timeout: Duration,
    /// Pause after each echo, to bound the load.
    pause: Duration,
}

// === impl Config ===

impl Config {
    fn from_args(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut url = None;
        let mut config = Config {
            url: String::new(),
            host: None,
            connections: 16,
            duration: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
            pause: Duration::ZERO,
        };
        while let Some(flag) = args.next() {
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|e| format!("{flag} {value:?}: {e}"))
            };
            match flag.as_str() {
                "--url" => url = Some(value.clone()),
                "--host" => {
                    let host = HeaderValue::from_str(&value)
                        .map_err(|e| format!("--host {value:?}: {e}"))?;
                    config.host = Some(host);
                }
                "--connections" => {
                    config.connections = usize::try_from(number()?)
                        .map_err(|e| format!("--connections {value:?}: {e}"))?;
                }
                "--seconds" => config.duration = Duration::from_secs(number()?),
                "--timeout-ms" => config.timeout = Duration::from_millis(number()?),
                "--pause-ms" => config.pause = Duration::from_millis(number()?),
                _ => return Err(format!("unknown argument {flag:?}")),
            }
        }
        config.url = url.ok_or("--url is required")?;
        if config.connections == 0 {
            return Err("--connections must be at least 1".to_owned());
        }
        Ok(config)
    }

    /// A handshake request; every call draws a new `Sec-WebSocket-Key`.
    fn request(&self) -> Result<Request, tungstenite::Error> {
        let mut request = self.url.as_str().into_client_request()?;
        if let Some(host) = &self.host {
            request.headers_mut().insert(header::HOST, host.clone());
        }
        Ok(request)
    }
}

/// Why a WebSocket was given up.
#[derive(Clone, Copy, Debug)]
enum Failure {
    Connect,
    GoingAway,
    Closed,
    Error,
    Timeout,
    Mismatch,
}

/// Counters shared by every connection.
#[derive(Debug, Default)]
struct Totals {
    messages_ok: AtomicU64,
    connect: AtomicU64,
    going_away: AtomicU64,
    closed: AtomicU64,
    error: AtomicU64,
    timeout: AtomicU64,
    mismatch: AtomicU64,
    reconnects: AtomicU64,
}

// === impl Totals ===

impl Totals {
    fn count(&self, failure: Failure) {
        let counter = match failure {
            Failure::Connect => &self.connect,
            Failure::GoingAway => &self.going_away,
            Failure::Closed => &self.closed,
            Failure::Error => &self.error,
            Failure::Timeout => &self.timeout,
            Failure::Mismatch => &self.mismatch,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl fmt::Display for Totals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let kinds = [
            ("connect", get(&self.connect)),
            ("going_away", get(&self.going_away)),
            ("closed", get(&self.closed)),
            ("error", get(&self.error)),
            ("timeout", get(&self.timeout)),
            ("mismatch", get(&self.mismatch)),
        ];
        let failures: u64 = kinds.iter().map(|(_, n)| n).sum();
        write!(
            f,
            "messages_ok={} failures={failures}",
            get(&self.messages_ok)
        )?;
        for (kind, n) in kinds {
            write!(f, " {kind}={n}")?;
        }
        write!(f, " reconnects={}", get(&self.reconnects))
    }
}

/// Opens WebSockets one after the other until `stop` changes, exchanging messages on each.
async fn connection(
    id: usize,
    config: Arc<Config>,
    totals: Arc<Totals>,
    mut stop: watch::Receiver<()>,
) -> Result<(), tungstenite::Error> {
    let mut first = true;
    loop {
        if !first {
            totals.reconnects.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                _ = stop.changed() => return Ok(()),
                () = sleep(RECONNECT_DELAY) => {}
            }
        }
        first = false;
        let request = config.request()?;
        let connect = tokio_tungstenite::connect_async_with_config(request, None, true);
        let mut socket = tokio::select! {
            _ = stop.changed() => return Ok(()),
            connected = timeout(config.timeout, connect) => match connected {
                Ok(Ok((socket, _response))) => socket,
                Ok(Err(_)) | Err(_) => {
                    totals.count(Failure::Connect);
                    continue;
                }
            },
        };
        tokio::select! {
            _ = stop.changed() => {
                // The message in flight, if any, is neither a success nor a failure.
                let _ = timeout(CLOSE_GRACE, socket.close(None)).await;
                return Ok(());
            }
            failure = exchange(&mut socket, id, &config, &totals) => {
                totals.count(failure);
                // Complete an orderly close (tungstenite has queued the answer) before the next.
                if matches!(failure, Failure::GoingAway | Failure::Closed) {
                    let _ = timeout(CLOSE_GRACE, socket.close(None)).await;
                }
            }
        }
    }
}

/// Sends a message and awaits its echo, again and again, until something fails.
async fn exchange(socket: &mut Socket, id: usize, config: &Config, totals: &Totals) -> Failure {
    let mut sequence = 0u64;
    loop {
        let message = format!("{id}:{sequence}");
        sequence += 1;
        if let Err(error) = socket.send(Message::text(message.as_str())).await {
            return classify(&error);
        }
        match timeout(config.timeout, next_text(socket)).await {
            Err(_elapsed) => return Failure::Timeout,
            Ok(Err(failure)) => return failure,
            Ok(Ok(echo)) if echo.as_str() == message => {
                totals.messages_ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Ok(_)) => return Failure::Mismatch,
        }
        if !config.pause.is_zero() {
            sleep(config.pause).await;
        }
    }
}

/// The next text message; pings are answered by tungstenite while it reads.
async fn next_text(socket: &mut Socket) -> Result<tungstenite::Utf8Bytes, Failure> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text),
            Some(Ok(Message::Binary(_))) => return Err(Failure::Mismatch),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Close(Some(frame)))) if frame.code == CloseCode::Away => {
                return Err(Failure::GoingAway);
            }
            Some(Ok(Message::Close(_))) | None => return Err(Failure::Closed),
            Some(Err(error)) => return Err(classify(&error)),
        }
    }
}

fn classify(error: &tungstenite::Error) -> Failure {
    match error {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => Failure::Closed,
        _ => Failure::Error,
    }
}

#[tokio::main]
async fn main() {
    let config = match Config::from_args(std::env::args().skip(1)) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("ws_load: {message}\n{USAGE}");
            process::exit(2);
        }
    };
    if let Err(error) = run(config).await {
        eprintln!("ws_load: {error}");
        process::exit(1);
    }
}

async fn run(config: Config) -> Result<(), Box<dyn Error>> {
    // A URL that cannot make a request is a usage error, reported before any load starts.
    let request = config
        .request()
        .map_err(|e| format!("--url {:?}: {e}", config.url))?;
    // Built without TLS: `wss` could never connect.
    if request.uri().scheme_str() != Some("ws") {
        return Err(format!("--url {:?}: the scheme must be ws", config.url).into());
    }
    let config = Arc::new(config);
    let totals = Arc::new(Totals::default());
    let (stop, stopped) = watch::channel(());
    let mut connections = JoinSet::new();
    for id in 0..config.connections {
        connections.spawn(connection(
            id,
            config.clone(),
            totals.clone(),
            stopped.clone(),
        ));
    }
    tokio::select! {
        () = sleep(config.duration) => {}
        interrupted = tokio::signal::ctrl_c() => interrupted?,
    }
    stop.send(())?;
    while let Some(finished) = connections.join_next().await {
        finished??;
    }
    println!("{totals}");
    Ok(())
}
