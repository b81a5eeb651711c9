//! Where the keys live: fixed (inline JWKS, HMAC secret) or loaded from a file or an `http://`
//! or `https://` URL, cached and refreshed.
//!
//! A loaded key set is *fresh* for `interval` after it was loaded. After that, the next request
//! starts a refresh in the background and goes on with the keys it has. If refreshing keeps
//! failing, the last good set stays in use for `max_stale` more, then requests are refused until
//! a load succeeds (Envoy's `jwks_cache_duration`, with a bounded grace period). A token naming a
//! `kid` the set does not hold makes the request wait for a reload, so a rotated key is picked up
//! at once. One load runs at a time, and apart from the scheduled refresh, loads (for an unknown
//! `kid`, for a request that has no usable keys, retries of a failed refresh) start at most once
//! per `min_refetch_interval`, so neither a flood of unknown `kid`s nor a dead server turns into
//! a flood of fetches.
//!
//! There is no long-lived background task: a refresh is a short task that a request spawns and
//! that ends with its load (bounded by `fetch_timeout`). A filter that gets no traffic fetches
//! nothing, and a dropped layer (after a configuration reload, say) leaves no timer behind.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header::{ACCEPT, HOST, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::jwks::{JwksError, KeySet};

/// The largest JWKS document accepted from a file or URL.
pub(crate) const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// How a JWKS loaded from a file or URL is kept up to date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// How long a loaded key set is used before it is loaded again. Default 10 minutes (Envoy's
    /// default cache duration).
    pub interval: Duration,
    /// The least time between the start of a load and that of a load on demand (for a token
    /// with an unknown `kid`, or when no usable keys are left) or of a retry of a failed
    /// refresh. The scheduled refresh itself is not held back by it. Default 10 seconds.
    pub min_refetch_interval: Duration,
    /// How long after `interval` the last good key set is still used while refreshing fails.
    /// After that, requests are refused until a load succeeds. Default 1 hour.
    pub max_stale: Duration,
    /// The time allowed for one fetch over HTTP: connect, request, whole body. Default 5 s.
    pub fetch_timeout: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            interval: Duration::from_secs(600),
            min_refetch_interval: Duration::from_secs(10),
            max_stale: Duration::from_secs(3600),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

/// A failure to load a JWKS from its file or URL.
#[derive(Debug, thiserror::Error)]
pub enum KeyFetchError {
    /// The file could not be read.
    #[error("JWKS file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The connection or the HTTP exchange failed.
    #[error("JWKS URL {url}: {source}")]
    Http {
        /// The URL.
        url: Uri,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The server answered with a status other than 200.
    #[error("JWKS URL {url}: status {status}")]
    Status {
        /// The URL.
        url: Uri,
        /// The status.
        status: StatusCode,
    },
    /// The fetch took longer than `fetch_timeout`.
    #[error("JWKS URL {url}: no complete answer within {timeout:?}")]
    Timeout {
        /// The URL.
        url: Uri,
        /// The timeout.
        timeout: Duration,
    },
    /// The document is larger than 1 MiB.
    #[error("JWKS from {from}: larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge {
        /// The file or URL.
        from: String,
    },
    /// The document is not a usable JWKS.
    #[error("JWKS from {from}: {source}")]
    Invalid {
        /// The file or URL.
        from: String,
        /// Why.
        #[source]
        source: JwksError,
    },
}

/// Where a dynamic key set is loaded from.
#[derive(Debug, Clone)]
pub(crate) enum Origin {
    File(PathBuf),
    /// With the TLS client configuration for an `https://` URL.
    Url(Uri, Option<Arc<rustls::ClientConfig>>),
}

/// A key set and when it was loaded.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) keys: KeySet,
    loaded_at: Instant,
    /// Counts loads, so that a request waiting for a reload sees whether another did it.
    generation: u64,
}

/// The keys of one filter.
#[derive(Debug)]
pub(crate) enum KeyStore {
    Fixed(Arc<KeySet>),
    Dynamic(Arc<Dynamic>),
}

#[derive(Debug)]
pub(crate) struct Dynamic {
    origin: Origin,
    policy: RefreshPolicy,
    current: ArcSwapOption<Loaded>,
    /// Held while loading; holds the start of the last load attempt.
    loading: tokio::sync::Mutex<Option<Instant>>,
    /// Set while a background refresh is queued or running.
    refreshing: AtomicBool,
}

/// What a load is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// The key set is older than `interval`.
    Refresh,
    /// A request needs keys: there are none usable, or its `kid` is unknown.
    Demand,
}

/// The keys a request may use right now.
#[derive(Debug)]
pub(crate) enum Snapshot {
    /// Use these keys.
    Usable(Arc<Loaded>),
    /// Nothing usable: wait for a load.
    NeedLoad(u64),
}

impl Dynamic {
    pub(crate) fn new(origin: Origin, policy: RefreshPolicy) -> Arc<Self> {
        Arc::new(Dynamic {
            origin,
            policy,
            current: ArcSwapOption::empty(),
            loading: tokio::sync::Mutex::new(None),
            refreshing: AtomicBool::new(false),
        })
    }

    /// The keys to use now, starting a background refresh if one is due.
    pub(crate) fn snapshot(self: &Arc<Self>) -> Snapshot {
        let Some(loaded) = self.current.load_full() else {
            return Snapshot::NeedLoad(0);
        };
        let now = Instant::now();
        let age = now.saturating_duration_since(loaded.loaded_at);
        if age >= self.policy.interval + self.policy.max_stale {
            return Snapshot::NeedLoad(loaded.generation);
        }
        if age >= self.policy.interval {
            self.refresh_in_background(&loaded);
        }
        Snapshot::Usable(loaded)
    }

    fn refresh_in_background(self: &Arc<Self>, loaded: &Loaded) {
        // Checked here too, so that requests while a failed refresh waits for its retry do not
        // each spawn a task that would do nothing.
        if let Ok(last) = self.loading.try_lock()
            && !self.may_load(*last, Some(loaded), Trigger::Refresh)
        {
            return;
        }
        let generation = loaded.generation;
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.refreshing.store(false, Ordering::Release);
            return;
        };
        let this = Arc::clone(self);
        runtime.spawn(async move {
            this.reload(generation, Trigger::Refresh).await;
            this.refreshing.store(false, Ordering::Release);
        });
    }

    /// Whether a load may start now, given the start of the last attempt.
    fn may_load(
        &self,
        last_attempt: Option<Instant>,
        current: Option<&Loaded>,
        why: Trigger,
    ) -> bool {
        let Some(last) = last_attempt else {
            return true;
        };
        if last.elapsed() >= self.policy.min_refetch_interval {
            return true;
        }
        // The scheduled refresh is not held back by a load that came before it was due (a
        // refetch for an unknown kid, say); its retries after a failure are.
        why == Trigger::Refresh
            && current.is_some_and(|c| last < c.loaded_at + self.policy.interval)
    }

    /// Loads the key set again, unless another load happened since `seen` (the generation the
    /// caller saw) or the rate limit says no. Returns what is current afterwards.
    pub(crate) async fn reload(&self, seen: u64, why: Trigger) -> Option<Arc<Loaded>> {
        let mut last_attempt = self.loading.lock().await;
        let current = self.current.load_full();
        let generation = current.as_ref().map_or(0, |l| l.generation);
        if generation != seen {
            return current;
        }
        if !self.may_load(*last_attempt, current.as_deref(), why) {
            return current;
        }
        *last_attempt = Some(Instant::now());
        match self.load_locked(generation).await {
            Ok(loaded) => Some(loaded),
            Err(error) => {
                tracing::warn!(%error, "JWKS load failed; keeping the last good key set, if any");
                current
            }
        }
    }

    /// Loads now, whatever the rate limit says (the layer's `refresh_keys`).
    pub(crate) async fn force_reload(&self) -> Result<(), KeyFetchError> {
        let mut last_attempt = self.loading.lock().await;
        *last_attempt = Some(Instant::now());
        let generation = self.current.load().as_ref().map_or(0, |l| l.generation);
        self.load_locked(generation).await.map(drop)
    }

    async fn load_locked(&self, generation: u64) -> Result<Arc<Loaded>, KeyFetchError> {
        let (from, bytes) = match &self.origin {
            Origin::File(path) => (path.display().to_string(), read_file(path).await?),
            Origin::Url(url, tls) => (
                url.to_string(),
                fetch_url(url, tls.as_ref(), self.policy.fetch_timeout).await?,
            ),
        };
        let keys =
            KeySet::parse(&bytes).map_err(|source| KeyFetchError::Invalid { from, source })?;
        tracing::debug!(keys = keys.len(), "JWKS loaded");
        let loaded = Arc::new(Loaded {
            keys,
            loaded_at: Instant::now(),
            generation: generation + 1,
        });
        self.current.store(Some(Arc::clone(&loaded)));
        Ok(loaded)
    }

    /// Whether a key set loaded at that time may still be used.
    pub(crate) fn usable(&self, loaded: &Loaded) -> bool {
        loaded.loaded_at.elapsed() < self.policy.interval + self.policy.max_stale
    }
}

impl Loaded {
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }
}

async fn read_file(path: &Path) -> Result<Vec<u8>, KeyFetchError> {
    let file_err = |source| KeyFetchError::File {
        path: path.to_owned(),
        source,
    };
    // What tokio::fs does, without needing its feature: the read runs on the blocking pool.
    let owned = path.to_owned();
    let bytes = tokio::task::spawn_blocking(move || {
        let mut bytes = Vec::new();
        std::fs::File::open(&owned)?
            .take(MAX_JWKS_BYTES as u64 + 1)
            .read_to_end(&mut bytes)?;
        Ok(bytes)
    })
    .await
    .map_err(|join| file_err(std::io::Error::other(join)))?
    .map_err(file_err)?;
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(KeyFetchError::TooLarge {
            from: path.display().to_string(),
        });
    }
    Ok(bytes)
}

/// One `GET` over HTTP/1.1 on a connection of its own, through TLS when `tls` is given (the
/// layer gives it for every `https://` URL and for no other).
async fn fetch_url(
    url: &Uri,
    tls: Option<&Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> Result<Vec<u8>, KeyFetchError> {
    let http_err = |source: Box<dyn std::error::Error + Send + Sync>| KeyFetchError::Http {
        url: url.clone(),
        source,
    };
    let exchange = async {
        let authority = url.authority().ok_or_else(|| http_err("no host".into()))?;
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = authority
            .port_u16()
            .unwrap_or(if tls.is_some() { 443 } else { 80 });
        let stream = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| http_err(e.into()))?;
        let path = url.path_and_query().map_or("/", |p| p.as_str());
        let request = Request::get(path)
            .header(HOST, authority.as_str())
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, "novaedge-jwt")
            .body(Empty::<Bytes>::new())
            .map_err(|e| http_err(e.into()))?;
        let response = match tls {
            None => get(TokioIo::new(stream), request).await,
            Some(config) => {
                // An IP address in the URL is checked against the certificate's IP SANs.
                let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|e| http_err(e.into()))?;
                let stream = tokio_rustls::TlsConnector::from(Arc::clone(config))
                    .connect(name, stream)
                    .await
                    .map_err(|e| http_err(format!("TLS handshake: {e}").into()))?;
                get(TokioIo::new(stream), request).await
            }
        }
        .map_err(http_err)?;
        if response.status() != StatusCode::OK {
            return Err(KeyFetchError::Status {
                url: url.clone(),
                status: response.status(),
            });
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    KeyFetchError::TooLarge {
                        from: url.to_string(),
                    }
                } else {
                    http_err(e)
                }
            })?;
        Ok(body.to_bytes().to_vec())
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| KeyFetchError::Timeout {
            url: url.clone(),
            timeout,
        })?
}

/// Sends `request` on a new HTTP/1.1 connection over `io` and returns the response head; the
/// connection ends once the body is read and the response dropped.
async fn get<I>(
    io: I,
    request: Request<Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, Box<dyn std::error::Error + Send + Sync>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        // Ends when the exchange is done and `sender` is dropped.
        let _ = conn.await;
    });
    Ok(sender.send_request(request).await?)
}
