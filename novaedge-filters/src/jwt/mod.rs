//! JWT authentication, after Envoy's `jwt_authn` filter.
//!
//! A request must carry a JSON Web Token (RFC 7519) in compact JWS form (RFC 7515), signed by
//! one of the keys of a JSON Web Key Set (RFC 7517). The filter:
//!
//! 1. finds the token in the first configured [`TokenLocation`] that holds one
//!    (`Authorization: Bearer` by default, or a header, a cookie, a query parameter);
//! 2. reads the JOSE header: `alg: none`, unknown algorithms, algorithms outside
//!    [`JwtConfig::algorithms`] and unknown `crit` extensions are refused;
//! 3. chooses the keys: by `kid` when the token names one, else the keys whose type (and `alg`
//!    and curve, if the JWK gives them) fit the algorithm, at most
//!    [`JwtConfig::max_keys_without_kid`] of them (keys without a `kid` are also tried for a
//!    token that names one, as Envoy does). A key is only ever used for its own family, so an
//!    RSA or EC public key is never taken as an HMAC secret (algorithm confusion). Keys that a
//!    token carries or points to (`jwk`, `jku`, `x5u`, `x5c`) are never used;
//! 4. verifies the signature (jsonwebtoken, aws-lc-rs backend): RS256/384/512,
//!    PS256/384/512, ES256, ES384, EdDSA (Ed25519), HS256/384/512;
//! 5. checks `exp` and `nbf` with [`JwtConfig::clock_skew`] (default 60 s), `iss` against
//!    [`JwtConfig::issuers`], `aud` against [`JwtConfig::audiences`] (any one of them), and
//!    the presence of [`JwtConfig::required_claims`];
//! 6. passes the request on with the chosen claims as headers ([`JwtConfig::forward_claims`]),
//!    after removing every client-sent copy of those headers, with the verified claims as a
//!    [`VerifiedClaims`] request extension (for a later filter, such as a rate limit keyed by
//!    a claim), and without the token if [`JwtConfig::remove_token`] is set.
//!
//! A refused request gets `401` with an empty body and, as RFC 6750 §3 says,
//! `WWW-Authenticate: Bearer realm="..."` when no token was sent, or
//! `Bearer realm="...", error="invalid_token", error_description="..."` otherwise. With
//! [`JwtConfig::allow_missing`] a request without a token passes on without claims (but a bad
//! token is still refused: Envoy's `allow_missing`). Nothing taken from a token is logged.
//!
//! Keys come from a [`KeySource`]: an inline JWKS, an HMAC secret, or a JWKS file or
//! `http://`/`https://` URL that is cached, refreshed every [`RefreshPolicy::interval`], loaded
//! again at once (rate-limited) when a token names an unknown `kid`, and kept for at most
//! [`RefreshPolicy::max_stale`] when refreshing fails; see [`RefreshPolicy`]. An `https://` URL
//! is fetched with rustls (TLS 1.2 and 1.3, aws-lc-rs), verifying the server against the public
//! web PKI roots compiled in (webpki-roots: no system store, no download) or against the CAs of
//! [`tls_client_config`], e.g. a cluster's own issuer.
//!
//! # Example
//!
//! ```
//! use http::{Request, Response, StatusCode, header::HeaderName};
//! use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
//! use novaedge_filters::jwt::{ClaimToHeader, JwtConfig, JwtLayer, KeySource, VerifiedClaims};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A JWKS with one HMAC key ("c2VjcmV0LXNlY3JldC1zZWNyZXQ" is base64url of the secret).
//! let jwks = r#"{"keys":[{"kty":"oct","kid":"k1","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQ"}]}"#;
//! let mut config = JwtConfig::new(KeySource::Jwks(jwks.into()));
//! config.issuers = vec!["https://issuer.example".into()];
//! config.audiences = vec!["api".into()];
//! config.forward_claims = vec![ClaimToHeader::new("sub", HeaderName::from_static("x-user"))];
//! let layer = JwtLayer::new(config)?;
//!
//! let upstream = service_fn(|req: Request<String>| async move {
//!     let user = req.headers()["x-user"].to_str().unwrap().to_owned();
//!     assert!(req.extensions().get::<VerifiedClaims>().is_some());
//!     Ok::<_, std::convert::Infallible>(Response::new(user))
//! });
//! let service = layer.layer(upstream);
//!
//! let mut header = Header::new(Algorithm::HS256);
//! header.kid = Some("k1".into());
//! let claims = serde_json::json!({
//!     "iss": "https://issuer.example", "aud": "api", "sub": "alice", "exp": 4102444800u64,
//! });
//! let token = encode(&header, &claims, &EncodingKey::from_secret(b"secret-secret-secret"))?;
//!
//! let request = Request::get("/")
//!     .header("authorization", format!("Bearer {token}"))
//!     .header("x-user", "mallory") // a client's attempt to pass as someone: removed
//!     .body(String::new())?;
//! let response = service.clone().oneshot(request).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(response.body(), "alice");
//!
//! let response = service.oneshot(Request::get("/").body(String::new())?).await?;
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(response.headers()["www-authenticate"], r#"Bearer realm="novaedge""#);
//! # Ok(())
//! # }
//! ```

mod extract;
mod jwks;
mod store;
mod verify;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use http::header::WWW_AUTHENTICATE;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use pin_project_lite::pin_project;
use serde_json::{Map, Value};
use tower::{Layer, Service};

pub use extract::TokenLocation;
pub use jsonwebtoken::Algorithm;
pub use jwks::JwksError;
pub use store::{KeyFetchError, RefreshPolicy};

use jwks::{Key, KeySet};
use store::{Dynamic, KeyStore, Origin, Snapshot, Trigger};
use verify::{ClaimRules, Rejection};

/// Where the verification keys come from.
#[derive(Clone)]
pub enum KeySource {
    /// A JWKS document, inline (JSON text).
    Jwks(String),
    /// One HMAC secret (for HS256/384/512), as raw bytes.
    HmacSecret(Vec<u8>),
    /// A JWKS file, read on the first request and again on every refresh.
    File {
        /// The file.
        path: PathBuf,
        /// How it is kept up to date.
        refresh: RefreshPolicy,
    },
    /// A JWKS served over `http://` or `https://` (HTTP/1.1), fetched on the first request
    /// and cached.
    Url {
        /// The URL.
        url: Uri,
        /// How it is kept up to date.
        refresh: RefreshPolicy,
        /// For an `https://` URL, the TLS client configuration (see [`tls_client_config`]);
        /// `None` verifies the server against the public web PKI roots. Its ALPN list is
        /// replaced by `http/1.1`. Must be `None` for an `http://` URL.
        tls: Option<Arc<rustls::ClientConfig>>,
    },
}

impl KeySource {
    /// A JWKS file with the default [`RefreshPolicy`].
    pub fn file(path: impl Into<PathBuf>) -> Self {
        KeySource::File {
            path: path.into(),
            refresh: RefreshPolicy::default(),
        }
    }

    /// A JWKS URL with the default [`RefreshPolicy`] and, for `https://`, the public web PKI
    /// roots.
    pub fn url(url: Uri) -> Self {
        KeySource::Url {
            url,
            refresh: RefreshPolicy::default(),
            tls: None,
        }
    }
}

/// A TLS client configuration for [`KeySource::Url`] that trusts exactly the CA certificates
/// in `ca_pem` (one or more PEM `CERTIFICATE` blocks; other blocks are ignored): TLS 1.2 and
/// 1.3 with the aws-lc-rs provider, no client certificate.
pub fn tls_client_config(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, JwtConfigError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let field = "keys.url.ca";
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| invalid(field, format!("bad PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| invalid(field, format!("unusable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(invalid(field, "no CERTIFICATE block in the PEM"));
    }
    client_config(roots).map_err(|e| invalid(field, e.to_string()))
}

/// The configuration for `https://` URLs without one of their own: the Mozilla roots.
fn web_pki_client_config() -> Result<Arc<rustls::ClientConfig>, JwtConfigError> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    if let Some(config) = CONFIG.get() {
        return Ok(Arc::clone(config));
    }
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = client_config(roots).map_err(|e| invalid("keys.url", e.to_string()))?;
    Ok(Arc::clone(CONFIG.get_or_init(|| config)))
}

fn client_config(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl fmt::Debug for KeySource {
    // Secrets (an HMAC secret, `oct` keys in an inline JWKS) stay out of debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Jwks(json) => f
                .debug_tuple("Jwks")
                .field(&format_args!("<{} bytes>", json.len()))
                .finish(),
            KeySource::HmacSecret(_) => f.debug_tuple("HmacSecret").field(&"<redacted>").finish(),
            KeySource::File { path, refresh } => f
                .debug_struct("File")
                .field("path", path)
                .field("refresh", refresh)
                .finish(),
            KeySource::Url { url, refresh, tls } => f
                .debug_struct("Url")
                .field("url", url)
                .field("refresh", refresh)
                .field(
                    "tls",
                    &format_args!(
                        "{}",
                        if tls.is_some() {
                            "custom"
                        } else {
                            "web PKI roots"
                        }
                    ),
                )
                .finish(),
        }
    }
}

/// A claim forwarded to the upstream as a request header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimToHeader {
    /// The claim's name; a name with dots that is not a top-level claim is a path into nested
    /// objects (`"org.id"`).
    pub claim: String,
    /// The header it is sent as. Strings are sent as they are, numbers and booleans as text,
    /// arrays and objects as compact JSON; a value no header can carry is not sent.
    pub header: HeaderName,
}

impl ClaimToHeader {
    /// Forwards `claim` as `header`.
    pub fn new(claim: impl Into<String>, header: HeaderName) -> Self {
        ClaimToHeader {
            claim: claim.into(),
            header,
        }
    }
}

/// The configuration of a [`JwtLayer`].
#[derive(Clone, Debug)]
pub struct JwtConfig {
    /// The verification keys.
    pub keys: KeySource,
    /// The allowed `iss` values; empty: `iss` is not checked.
    pub issuers: Vec<String>,
    /// The allowed audiences: `aud` (a string or an array) must hold one of them. Empty: `aud`
    /// is not checked.
    pub audiences: Vec<String>,
    /// The accepted signature algorithms. Default: all twelve supported ones.
    pub algorithms: Vec<Algorithm>,
    /// The tolerance on `exp` and `nbf`. Default 60 s.
    pub clock_skew: Duration,
    /// Claims a token must carry (not `null`). Default none: like Envoy, a token without `exp`
    /// does not expire unless `"exp"` is listed here.
    pub required_claims: Vec<String>,
    /// Where the token is looked for, in order; the first location that holds one wins.
    /// Default: `Authorization: Bearer`.
    pub locations: Vec<TokenLocation>,
    /// Claims forwarded as request headers. Client-sent headers of those names are always
    /// removed, also from requests that pass without a token.
    pub forward_claims: Vec<ClaimToHeader>,
    /// Remove the token from the forwarded request. Default `false`.
    pub remove_token: bool,
    /// Let requests without a token pass on (without claims). A token that is present must
    /// still be valid. Default `false`.
    pub allow_missing: bool,
    /// The `realm` of `WWW-Authenticate`. Default `"novaedge"`.
    pub realm: String,
    /// For a token without `kid`, try at most this many fitting keys. Default 4.
    pub max_keys_without_kid: usize,
}

impl JwtConfig {
    /// A configuration with these keys and the defaults listed on each field.
    pub fn new(keys: KeySource) -> Self {
        JwtConfig {
            keys,
            issuers: Vec::new(),
            audiences: Vec::new(),
            algorithms: ALL_ALGORITHMS.to_vec(),
            clock_skew: Duration::from_secs(60),
            required_claims: Vec::new(),
            locations: vec![TokenLocation::AuthorizationBearer],
            forward_claims: Vec::new(),
            remove_token: false,
            allow_missing: false,
            realm: "novaedge".to_owned(),
            max_keys_without_kid: 4,
        }
    }
}

const ALL_ALGORITHMS: [Algorithm; 12] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
];

/// A configuration that cannot be used; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    /// A field with a value that cannot be used.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, e.g. `keys.url` or `locations[1]`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The inline JWKS cannot be used.
    #[error("keys.jwks: {0}")]
    Jwks(#[source] JwksError),
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> JwtConfigError {
    JwtConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The claims of the verified token, as a request extension for the filters and services
/// after this one.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedClaims(pub Map<String, Value>);

impl VerifiedClaims {
    /// A claim by name, or by dotted path into nested objects (`"org.id"`) when no top-level
    /// claim has that name.
    pub fn get(&self, claim: &str) -> Option<&Value> {
        verify::lookup(&self.0, claim)
    }
}

/// Builds [`Jwt`] services; cheap to clone (the configuration and the key cache are shared).
#[derive(Clone, Debug)]
pub struct JwtLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    keys: KeyStore,
    algorithms: Vec<Algorithm>,
    rules: ClaimRules,
    locations: Vec<TokenLocation>,
    forward: Vec<(String, HeaderName)>,
    remove_token: bool,
    allow_missing: bool,
    max_kidless: usize,
    realm: String,
    challenge_missing: HeaderValue,
}

impl JwtLayer {
    /// Checks the configuration and builds the layer. An inline JWKS is parsed here; a JWKS file
    /// or URL is loaded on the first request (or by [`JwtLayer::refresh_keys`]).
    pub fn new(config: JwtConfig) -> Result<Self, JwtConfigError> {
        let keys = key_store(config.keys)?;
        if config.algorithms.is_empty() {
            return Err(invalid("algorithms", "empty: no token could be accepted"));
        }
        check_list("issuers", &config.issuers)?;
        check_list("audiences", &config.audiences)?;
        check_list("required_claims", &config.required_claims)?;
        if config.locations.is_empty() {
            return Err(invalid("locations", "empty: no token could be found"));
        }
        for (i, location) in config.locations.iter().enumerate() {
            let empty = match location {
                TokenLocation::AuthorizationBearer => false,
                TokenLocation::Header { prefix, .. } => {
                    if prefix.as_deref().is_some_and(|p| !p.is_ascii()) {
                        return Err(invalid(
                            format!("locations[{i}].prefix"),
                            "not ASCII (header values are matched as ASCII)",
                        ));
                    }
                    false
                }
                TokenLocation::Cookie(name) | TokenLocation::Query(name) => name.is_empty(),
            };
            if empty {
                return Err(invalid(format!("locations[{i}]"), "empty name"));
            }
        }
        for (i, forward) in config.forward_claims.iter().enumerate() {
            if forward.claim.is_empty() {
                return Err(invalid(
                    format!("forward_claims[{i}].claim"),
                    "empty claim name",
                ));
            }
        }
        if config.max_keys_without_kid == 0 {
            return Err(invalid("max_keys_without_kid", "must be at least 1"));
        }
        let realm_ok = config
            .realm
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\');
        if !realm_ok {
            return Err(invalid(
                "realm",
                "must be printable ASCII without '\"' or '\\'",
            ));
        }
        let challenge_missing =
            HeaderValue::from_str(&format!("Bearer realm=\"{}\"", config.realm))
                .map_err(|_| invalid("realm", "not a valid header value"))?;
        let shared = Shared {
            keys,
            algorithms: config.algorithms,
            rules: ClaimRules {
                issuers: config.issuers,
                audiences: config.audiences,
                required: config.required_claims,
                clock_skew: config.clock_skew,
            },
            locations: config.locations,
            forward: config
                .forward_claims
                .into_iter()
                .map(|f| (f.claim, f.header))
                .collect(),
            remove_token: config.remove_token,
            allow_missing: config.allow_missing,
            max_kidless: config.max_keys_without_kid,
            realm: config.realm,
            challenge_missing,
        };
        Ok(JwtLayer {
            shared: Arc::new(shared),
        })
    }

    /// Loads the JWKS file or URL now, whatever the refresh schedule says, and reports how it
    /// went (a key set that fails to load leaves the last good one in place). Useful to warm
    /// the cache before traffic arrives. Does nothing for inline keys.
    pub async fn refresh_keys(&self) -> Result<(), KeyFetchError> {
        match &self.shared.keys {
            KeyStore::Fixed(_) => Ok(()),
            KeyStore::Dynamic(store) => store.force_reload().await,
        }
    }
}

fn check_list(field: &str, values: &[String]) -> Result<(), JwtConfigError> {
    match values.iter().position(String::is_empty) {
        Some(i) => Err(invalid(format!("{field}[{i}]"), "empty")),
        None => Ok(()),
    }
}

fn key_store(source: KeySource) -> Result<KeyStore, JwtConfigError> {
    let check_refresh = |field: &str, refresh: &RefreshPolicy| {
        for (name, value) in [
            ("interval", refresh.interval),
            ("fetch_timeout", refresh.fetch_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(
                    format!("keys.{field}.refresh.{name}"),
                    "must be greater than zero",
                ));
            }
        }
        Ok(())
    };
    Ok(match source {
        KeySource::Jwks(json) => KeyStore::Fixed(Arc::new(
            KeySet::parse(json.as_bytes()).map_err(JwtConfigError::Jwks)?,
        )),
        KeySource::HmacSecret(secret) => {
            if secret.is_empty() {
                return Err(invalid("keys.hmac_secret", "empty"));
            }
            KeyStore::Fixed(Arc::new(KeySet::new(vec![Key::hmac_secret(&secret)])))
        }
        KeySource::File { path, refresh } => {
            if path.as_os_str().is_empty() {
                return Err(invalid("keys.file.path", "empty"));
            }
            check_refresh("file", &refresh)?;
            KeyStore::Dynamic(Dynamic::new(Origin::File(path), refresh))
        }
        KeySource::Url { url, refresh, tls } => {
            let field = "keys.url";
            let tls = match (url.scheme_str(), tls) {
                (Some("http"), None) => None,
                (Some("http"), Some(_)) => {
                    return Err(invalid(
                        field,
                        format!("{url}: a TLS configuration is given for an http:// URL"),
                    ));
                }
                (Some("https"), Some(config)) if config.alpn_protocols != [b"http/1.1"] => {
                    let mut config = rustls::ClientConfig::clone(&config);
                    config.alpn_protocols = vec![b"http/1.1".to_vec()];
                    Some(Arc::new(config))
                }
                (Some("https"), Some(config)) => Some(config),
                (Some("https"), None) => Some(web_pki_client_config()?),
                _ => {
                    return Err(invalid(
                        field,
                        format!("{url}: must be an http:// or https:// URL"),
                    ));
                }
            };
            if url.host().is_none_or(str::is_empty) {
                return Err(invalid(field, format!("{url}: no host")));
            }
            if url.authority().is_some_and(|a| a.as_str().contains('@')) {
                return Err(invalid(field, "credentials in the URL are not supported"));
            }
            check_refresh("url", &refresh)?;
            KeyStore::Dynamic(Dynamic::new(Origin::Url(url, tls), refresh))
        }
    })
}

impl<S> Layer<S> for JwtLayer {
    type Service = Jwt<S>;

    fn layer(&self, inner: S) -> Jwt<S> {
        Jwt {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

// === impl Shared ===

/// The outcome of verification, now or later.
enum Step {
    Done(Result<Map<String, Value>, Rejection>),
    Wait(BoxFuture<'static, Result<Map<String, Value>, Rejection>>),
}

impl Shared {
    fn verify(self: &Arc<Self>, token: String) -> Step {
        let header = match verify::parse_header(&token) {
            Ok(header) => header,
            Err(rejection) => return Step::Done(Err(rejection)),
        };
        if !self.algorithms.contains(&header.alg) {
            return Step::Done(Err(Rejection::AlgNotAllowed));
        }
        let store = match &self.keys {
            KeyStore::Fixed(keys) => return Step::Done(self.check(&token, &header, keys)),
            KeyStore::Dynamic(store) => Arc::clone(store),
        };
        let seen = match store.snapshot() {
            Snapshot::Usable(loaded) => match self.check(&token, &header, &loaded.keys) {
                Err(Rejection::UnknownKid) => loaded.generation(),
                done => return Step::Done(done),
            },
            Snapshot::NeedLoad(seen) => seen,
        };
        let this = Arc::clone(self);
        Step::Wait(Box::pin(async move {
            let loaded = store
                .reload(seen, Trigger::Demand)
                .await
                .filter(|loaded| store.usable(loaded))
                .ok_or(Rejection::KeysUnavailable)?;
            this.check(&token, &header, &loaded.keys)
        }))
    }

    fn check(
        &self,
        token: &str,
        header: &verify::TokenHeader,
        keys: &KeySet,
    ) -> Result<Map<String, Value>, Rejection> {
        let claims = verify::verify_signature(token, header, keys, self.max_kidless)?;
        verify::check_claims(&claims, &self.rules, SystemTime::now())?;
        Ok(claims)
    }

    /// Prepares an accepted request for the upstream.
    fn accept<B>(&self, req: &mut Request<B>, found: &extract::Found, claims: Map<String, Value>) {
        verify::strip_forwarded(req.headers_mut(), &self.forward);
        verify::forward_claims(req.headers_mut(), &claims, &self.forward);
        if self.remove_token {
            extract::remove(req, &self.locations[found.location]);
        }
        req.extensions_mut().insert(VerifiedClaims(claims));
    }

    /// Prepares a request without token, when that is allowed.
    fn pass_without_token<B>(&self, req: &mut Request<B>) {
        verify::strip_forwarded(req.headers_mut(), &self.forward);
        req.extensions_mut().remove::<VerifiedClaims>();
    }

    fn challenge(&self, rejection: Rejection) -> HeaderValue {
        if rejection == Rejection::Missing {
            return self.challenge_missing.clone();
        }
        let value = format!(
            "Bearer realm=\"{}\", error=\"invalid_token\", error_description=\"{}\"",
            self.realm,
            rejection.description()
        );
        // Both parts were checked to be header-safe (realm in `new`, descriptions by a test).
        HeaderValue::from_str(&value).unwrap_or_else(|_| self.challenge_missing.clone())
    }

    fn reject<B: Default>(&self, rejection: Rejection) -> Response<B> {
        tracing::debug!(reason = rejection.description(), "JWT: request refused");
        let mut response = Response::new(B::default());
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, self.challenge(rejection));
        response
    }
}

// === impl Jwt ===

/// The JWT authentication service; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Jwt<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Jwt<S> {
    /// Wraps `inner` with the layer's configuration.
    pub fn new(inner: S, layer: &JwtLayer) -> Self {
        layer.layer(inner)
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Jwt<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    ResB: Default,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let shared = &self.shared;
        let Some(found) = extract::find(&req, &shared.locations) else {
            if shared.allow_missing {
                shared.pass_without_token(&mut req);
                return ResponseFuture::inner(self.inner.call(req));
            }
            return ResponseFuture::rejected(shared.reject(Rejection::Missing));
        };
        match shared.verify(found.token.clone()) {
            Step::Done(Ok(claims)) => {
                shared.accept(&mut req, &found, claims);
                ResponseFuture::inner(self.inner.call(req))
            }
            Step::Done(Err(rejection)) => ResponseFuture::rejected(shared.reject(rejection)),
            Step::Wait(verify) => {
                // The service that was made ready goes with the request; this one gets a clone
                // (tower's usual way for a service whose call waits on something first).
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture {
                    state: State::Verifying {
                        verify,
                        pending: Some(Pending { inner, req, found }),
                        shared: Arc::clone(shared),
                    },
                }
            }
        }
    }
}

struct Pending<S, ReqB> {
    inner: S,
    req: Request<ReqB>,
    found: extract::Found,
}

pin_project! {
    /// The response future of [`Jwt`].
    pub struct ResponseFuture<S, ReqB>
    where
        S: Service<Request<ReqB>>,
    {
        #[pin]
        state: State<S, ReqB>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqB>
    where
        S: Service<Request<ReqB>>,
    {
        Verifying {
            verify: BoxFuture<'static, Result<Map<String, Value>, Rejection>>,
            pending: Option<Pending<S, ReqB>>,
            shared: Arc<Shared>,
        },
        Inner {
            #[pin]
            future: S::Future,
        },
        Rejected {
            response: Option<S::Response>,
        },
    }
}

impl<S, ReqB> ResponseFuture<S, ReqB>
where
    S: Service<Request<ReqB>>,
{
    fn inner(future: S::Future) -> Self {
        ResponseFuture {
            state: State::Inner { future },
        }
    }

    fn rejected(response: S::Response) -> Self {
        ResponseFuture {
            state: State::Rejected {
                response: Some(response),
            },
        }
    }
}

impl<S, ReqB> fmt::Debug for ResponseFuture<S, ReqB>
where
    S: Service<Request<ReqB>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, ReqB, ResB> Future for ResponseFuture<S, ReqB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Default,
{
    type Output = Result<Response<ResB>, S::Error>;

    #[allow(
        clippy::expect_used,
        reason = "Future's contract: a future polled after it completed may panic"
    )]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Verifying {
                    verify,
                    pending,
                    shared,
                } => {
                    let verdict = ready!(verify.as_mut().poll(cx));
                    let Pending {
                        mut inner,
                        mut req,
                        found,
                    } = pending.take().expect("polled after completion");
                    match verdict {
                        Ok(claims) => {
                            shared.accept(&mut req, &found, claims);
                            let future = inner.call(req);
                            state.set(State::Inner { future });
                        }
                        Err(rejection) => return Poll::Ready(Ok(shared.reject(rejection))),
                    }
                }
                StateProj::Inner { future } => return future.poll(cx),
                StateProj::Rejected { response } => {
                    return Poll::Ready(Ok(response.take().expect("polled after completion")));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
