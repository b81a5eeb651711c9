//! JWT filter against tokens made by another implementation (PyJWT + cryptography, see
//! `fixtures/jwt/generate.py`), and key sets loaded from a file and from a real HTTP server on
//! 127.0.0.1: rotation, refresh, rate-limited refetch, and the bounded stale period.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, COOKIE, WWW_AUTHENTICATE};
use http::{HeaderName, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use novaedge_filters::jwt::{
    Algorithm, ClaimToHeader, JwtConfig, JwtLayer, KeySource, RefreshPolicy, TokenLocation,
    VerifiedClaims,
};
use serde_json::Value;
use tower::{Layer, ServiceExt, service_fn};

const JWKS: &str = include_str!("fixtures/jwt/jwks.json");
const JWKS_ROTATED: &str = include_str!("fixtures/jwt/jwks_rotated.json");
const HMAC_SECRET: &str = include_str!("fixtures/jwt/hmac_secret.txt");
const RSA_PUBLIC_PEM: &str = include_str!("fixtures/jwt/rsa_public.pem");
const TOKENS: &str = include_str!("fixtures/jwt/tokens.json");

const ISSUER: &str = "https://issuer.example.com";
const AUDIENCE: &str = "novaedge-api";

fn tokens() -> HashMap<String, String> {
    serde_json::from_str(TOKENS).unwrap()
}

fn tok(name: &str) -> String {
    tokens()
        .remove(name)
        .unwrap_or_else(|| panic!("no fixture token {name}"))
}

fn config(keys: KeySource) -> JwtConfig {
    let mut config = JwtConfig::new(keys);
    config.issuers = vec![ISSUER.into(), "https://second-issuer.example.com".into()];
    config.audiences = vec!["other".into(), AUDIENCE.into()];
    config.forward_claims = [
        ("sub", "x-user"),
        ("tenant", "x-tenant"),
        ("admin", "x-admin"),
        ("level", "x-level"),
        ("groups", "x-groups"),
        ("org.id", "x-org-id"),
    ]
    .into_iter()
    .map(|(c, h)| ClaimToHeader::new(c, HeaderName::from_static(h)))
    .collect();
    config
}

fn inline() -> JwtConfig {
    config(KeySource::Jwks(JWKS.into()))
}

/// The outcome of one request: status, `WWW-Authenticate`, and the headers and claims the
/// upstream saw if it was called.
#[derive(Debug)]
struct Outcome {
    status: StatusCode,
    challenge: Option<String>,
    upstream: Option<(http::HeaderMap, Option<VerifiedClaims>)>,
}

async fn send_to(layer: &JwtLayer, req: Request<()>) -> Outcome {
    let seen = Arc::new(Mutex::new(None));
    let record = Arc::clone(&seen);
    let upstream = service_fn(move |req: Request<()>| {
        let record = Arc::clone(&record);
        async move {
            let claims = req.extensions().get::<VerifiedClaims>().cloned();
            *record.lock().unwrap() = Some((req.headers().clone(), claims));
            Ok::<_, Infallible>(Response::new(String::new()))
        }
    });
    let response = layer.layer(upstream).oneshot(req).await.unwrap();
    assert!(response.body().is_empty());
    Outcome {
        status: response.status(),
        challenge: response
            .headers()
            .get(WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned()),
        upstream: seen.lock().unwrap().take(),
    }
}

fn bearer(token: &str) -> Request<()> {
    Request::get("/")
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .body(())
        .unwrap()
}

async fn send(layer: &JwtLayer, token: &str) -> Outcome {
    send_to(layer, bearer(token)).await
}

#[track_caller]
fn assert_accepted(outcome: &Outcome, what: &str) {
    assert_eq!(outcome.status, StatusCode::OK, "{what}: {outcome:?}");
    assert!(outcome.challenge.is_none());
    let (headers, claims) = outcome.upstream.as_ref().expect("upstream called");
    assert_eq!(headers["x-user"], "user-1", "{what}");
    let claims = claims.as_ref().expect("VerifiedClaims");
    assert_eq!(claims.get("iss"), Some(&Value::from(ISSUER)), "{what}");
}

#[track_caller]
fn assert_refused(outcome: &Outcome, description: &str, what: &str) {
    assert_eq!(
        outcome.status,
        StatusCode::UNAUTHORIZED,
        "{what}: {outcome:?}"
    );
    assert!(
        outcome.upstream.is_none(),
        "{what}: the upstream was called"
    );
    assert_eq!(
        outcome.challenge.as_deref(),
        Some(
            format!(
                "Bearer realm=\"novaedge\", error=\"invalid_token\", \
                 error_description=\"{description}\""
            )
            .as_str()
        ),
        "{what}"
    );
}

// === fixtures with an inline JWKS ===

#[tokio::test]
async fn every_algorithm_from_pyjwt_is_accepted() {
    let layer = JwtLayer::new(inline()).unwrap();
    for name in [
        "valid_rs256",
        "valid_rs384",
        "valid_rs512",
        "valid_ps256",
        "valid_ps384",
        "valid_ps512",
        "valid_es256",
        "valid_es384",
        "valid_eddsa",
        "valid_hs256",
        "valid_hs384",
        "valid_hs512",
        "valid_multi_aud",
    ] {
        let outcome = send(&layer, &tok(name)).await;
        assert_accepted(&outcome, name);
    }
}

#[tokio::test]
async fn claims_are_forwarded_as_headers_replacing_client_copies() {
    let layer = JwtLayer::new(inline()).unwrap();
    let mut req = bearer(&tok("valid_es256"));
    for (name, value) in [
        ("x-user", "admin"),
        ("x-tenant", "other"),
        ("x-admin", "true"),
        ("x-org-id", "1"),
    ] {
        req.headers_mut().append(name, value.parse().unwrap());
    }
    let outcome = send_to(&layer, req).await;
    let (headers, claims) = outcome.upstream.unwrap();
    let one = |name: &str| -> Vec<&str> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    };
    assert_eq!(one("x-user"), ["user-1"]);
    assert_eq!(one("x-tenant"), ["acme"]);
    assert_eq!(one("x-admin"), ["true"]);
    assert_eq!(one("x-level"), ["3"]);
    assert_eq!(one("x-groups"), [r#"["dev","ops"]"#]);
    assert_eq!(one("x-org-id"), ["7"]);
    let claims = claims.unwrap();
    assert_eq!(claims.get("email"), Some(&Value::from("alice@example.com")));
    assert_eq!(claims.get("org.name"), Some(&Value::from("Acme")));
}

#[tokio::test]
async fn tokens_without_kid_are_matched_by_algorithm_and_key_type() {
    let layer = JwtLayer::new(inline()).unwrap();
    for name in [
        "valid_rs256_no_kid",
        "valid_es384_no_kid",
        "valid_hs256_no_kid",
    ] {
        assert_accepted(&send(&layer, &tok(name)).await, name);
    }
    assert_refused(
        &send(&layer, &tok("bad_signature_no_kid")).await,
        "signature verification failed",
        "bad_signature_no_kid",
    );
}

#[tokio::test]
async fn bad_tokens_from_pyjwt_are_refused_with_the_reason() {
    let layer = JwtLayer::new(inline()).unwrap();
    let cases = [
        ("expired", "token expired"),
        ("not_yet_valid", "token not yet valid"),
        ("wrong_audience", "audience not allowed"),
        ("no_audience", "audience not allowed"),
        ("wrong_issuer", "issuer not allowed"),
        ("alg_none", "unsigned tokens (alg none) are not accepted"),
        (
            "alg_none_no_kid",
            "unsigned tokens (alg none) are not accepted",
        ),
        // HS256 "signed" with the RSA public key PEM, naming the RSA key: the key type does not
        // fit the algorithm, so the RSA key is never used as an HMAC secret.
        (
            "alg_confusion_hs256",
            "the key named by the token does not fit its algorithm",
        ),
        // Without kid, the only HS256 candidate is the real HMAC key, and it does not verify.
        (
            "alg_confusion_hs256_no_kid",
            "signature verification failed",
        ),
        ("unknown_kid", "no key matches the token's key id"),
        ("rotated_rs256", "no key matches the token's key id"),
        ("bad_signature", "signature verification failed"),
        (
            "es256_names_p384_key",
            "the key named by the token does not fit its algorithm",
        ),
        (
            "rsa_alg_names_ec_key",
            "the key named by the token does not fit its algorithm",
        ),
    ];
    for (name, description) in cases {
        assert_refused(&send(&layer, &tok(name)).await, description, name);
    }

    // Malformed tokens, and a validly signed token with its payload swapped for another's.
    let valid = tok("valid_rs256");
    let parts: Vec<&str> = valid.split('.').collect();
    let other = tok("valid_multi_aud");
    let other_payload = other.split('.').nth(1).unwrap();
    let spliced = format!("{}.{}.{}", parts[0], other_payload, parts[2]);
    assert_refused(
        &send(&layer, &spliced).await,
        "signature verification failed",
        "spliced",
    );
    for junk in [
        "abc",
        "a.b",
        "a.b.c",
        &format!("{valid}.x.y"),
        &format!("{}.{}.!!", parts[0], parts[1]),
        &format!("{}.{}", parts[0], parts[1]),
    ] {
        assert_refused(&send(&layer, junk).await, "malformed token", junk);
    }
}

#[tokio::test]
async fn confusion_against_a_set_of_public_keys_only() {
    // The same confusion token against a set without any HMAC key: nothing may verify it.
    let mut jwks: Value = serde_json::from_str(JWKS).unwrap();
    jwks["keys"]
        .as_array_mut()
        .unwrap()
        .retain(|k| k["kty"] != "oct");
    let layer = JwtLayer::new(config(KeySource::Jwks(jwks.to_string()))).unwrap();
    assert_refused(
        &send(&layer, &tok("alg_confusion_hs256_no_kid")).await,
        "no key fits the token's algorithm",
        "confusion without kid",
    );
    assert_refused(
        &send(&layer, &tok("valid_hs256")).await,
        "no key matches the token's key id",
        "HS256 with the now absent hmac-1",
    );
    assert_accepted(&send(&layer, &tok("valid_ps384")).await, "valid_ps384");
}

#[tokio::test]
async fn a_configured_hmac_secret() {
    let layer = JwtLayer::new(config(KeySource::HmacSecret(HMAC_SECRET.into()))).unwrap();
    for name in [
        "valid_hs256",
        "valid_hs384",
        "valid_hs512",
        "valid_hs256_no_kid",
    ] {
        assert_accepted(&send(&layer, &tok(name)).await, name);
    }
    assert_refused(
        &send(&layer, &tok("alg_confusion_hs256")).await,
        "signature verification failed",
        "confusion token against the real secret",
    );
    assert_refused(
        &send(&layer, &tok("valid_rs256_no_kid")).await,
        "no key fits the token's algorithm",
        "RS256 against an HMAC secret",
    );
    assert_refused(
        &send(&layer, &tok("valid_rs256")).await,
        "no key matches the token's key id",
        "RS256 naming rsa-1 against an HMAC secret",
    );
    // Had someone configured the RSA public key PEM as the HMAC secret, the confusion token
    // would verify: that is why keys from a JWKS keep their type. (This is the attack.)
    let misconfigured =
        JwtLayer::new(config(KeySource::HmacSecret(RSA_PUBLIC_PEM.into()))).unwrap();
    assert_accepted(
        &send(&misconfigured, &tok("alg_confusion_hs256_no_kid")).await,
        "the fixture really is HS256 over the PEM",
    );
}

#[tokio::test]
async fn exp_can_be_required_and_algorithms_restricted() {
    let layer = JwtLayer::new(inline()).unwrap();
    assert_accepted(
        &send(&layer, &tok("valid_no_exp")).await,
        "no exp, not required",
    );
    let mut strict = inline();
    strict.required_claims = vec!["exp".into()];
    strict.algorithms = vec![Algorithm::RS256, Algorithm::EdDSA];
    let layer = JwtLayer::new(strict).unwrap();
    assert_refused(
        &send(&layer, &tok("valid_no_exp")).await,
        "required claim missing",
        "no exp, required",
    );
    assert_accepted(&send(&layer, &tok("valid_eddsa")).await, "EdDSA allowed");
    assert_refused(
        &send(&layer, &tok("valid_es256")).await,
        "algorithm not allowed",
        "ES256 not allowed",
    );
}

#[tokio::test]
async fn locations_first_present_wins() {
    let mut config = inline();
    config.locations = vec![
        TokenLocation::AuthorizationBearer,
        TokenLocation::Header {
            name: HeaderName::from_static("x-jwt-assertion"),
            prefix: None,
        },
        TokenLocation::Cookie("id_token".into()),
        TokenLocation::Query("access_token".into()),
    ];
    config.remove_token = true;
    let layer = JwtLayer::new(config).unwrap();
    let good = tok("valid_es384");
    let expired = tok("expired");

    // The cookie holds the first token found; the bad one in the query is never looked at.
    let req = Request::get(format!("/?access_token={expired}"))
        .header(COOKIE, format!("theme=dark; id_token={good}"))
        .body(())
        .unwrap();
    let outcome = send_to(&layer, req).await;
    assert_accepted(&outcome, "cookie before query");
    assert_eq!(outcome.upstream.unwrap().0[COOKIE], "theme=dark");

    // A header before the cookie: the expired token there decides.
    let req = Request::get("/")
        .header("x-jwt-assertion", &expired)
        .header(COOKIE, format!("id_token={good}"))
        .body(())
        .unwrap();
    assert_refused(&send_to(&layer, req).await, "token expired", "header first");

    let req = Request::get(format!("/p?a=1&access_token={good}"))
        .body(())
        .unwrap();
    assert_accepted(&send_to(&layer, req).await, "query");

    let outcome = send_to(&layer, Request::new(())).await;
    assert_eq!(outcome.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        outcome.challenge.as_deref(),
        Some(r#"Bearer realm="novaedge""#)
    );
}

// === a JWKS file, with paused time ===

fn file_source(path: &std::path::Path) -> KeySource {
    KeySource::File {
        path: path.to_owned(),
        refresh: RefreshPolicy {
            interval: Duration::from_secs(60),
            min_refetch_interval: Duration::from_secs(10),
            max_stale: Duration::from_secs(300),
            fetch_timeout: Duration::from_secs(5),
        },
    }
}

/// Lets a background refresh (a spawned task around a blocking read) finish.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[tokio::test(start_paused = true)]
async fn a_jwks_file_is_reread_on_refresh_and_kept_stale_for_a_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, JWKS).unwrap();
    let layer = JwtLayer::new(config(file_source(&path))).unwrap();
    assert_accepted(&send(&layer, &tok("valid_rs256")).await, "first load");

    // Rotated on disk: the new kid is unknown, and a reload is rate-limited (10 s).
    std::fs::write(&path, JWKS_ROTATED).unwrap();
    assert_refused(
        &send(&layer, &tok("rotated_rs256")).await,
        "no key matches the token's key id",
        "new kid within the rate limit",
    );
    // After the rate limit, the unknown kid makes the request wait for a reload.
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_accepted(
        &send(&layer, &tok("rotated_rs256")).await,
        "new kid after refetch",
    );
    assert_refused(
        &send(&layer, &tok("valid_rs256")).await,
        "no key matches the token's key id",
        "the rotated-out key",
    );

    // The file disappears: after `interval` the refresh fails, the last good set is still used.
    std::fs::remove_file(&path).unwrap();
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_accepted(
        &send(&layer, &tok("rotated_rs256")).await,
        "stale, refreshing",
    );
    settle().await;
    tokio::time::advance(Duration::from_secs(298)).await;
    assert_accepted(
        &send(&layer, &tok("rotated_rs256")).await,
        "stale, near the end",
    );
    settle().await;
    // interval + max_stale after the last good load: refused.
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_refused(
        &send(&layer, &tok("rotated_rs256")).await,
        "verification keys unavailable",
        "beyond the stale period",
    );

    // The file comes back: the next request (after the rate limit) loads it.
    std::fs::write(&path, JWKS).unwrap();
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_accepted(&send(&layer, &tok("valid_es256")).await, "recovered");
}

#[tokio::test(start_paused = true)]
async fn a_jwks_file_is_refreshed_in_the_background_after_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, JWKS).unwrap();
    let layer = JwtLayer::new(config(file_source(&path))).unwrap();
    layer.refresh_keys().await.unwrap();
    std::fs::write(&path, JWKS_ROTATED).unwrap();
    tokio::time::advance(Duration::from_secs(61)).await;
    // This request is served with the old set, and starts the refresh.
    assert_accepted(
        &send(&layer, &tok("valid_rs256")).await,
        "old set, refresh due",
    );
    settle().await;
    // The refresh replaced the set: rsa-1 is gone, and no reload for it is allowed yet.
    assert_refused(
        &send(&layer, &tok("valid_rs256")).await,
        "no key matches the token's key id",
        "after the background refresh",
    );
    assert_accepted(&send(&layer, &tok("rotated_rs256")).await, "rotated");
}

#[tokio::test]
async fn refresh_keys_reports_what_went_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let layer = JwtLayer::new(config(KeySource::file(&path))).unwrap();
    let err = layer.refresh_keys().await.unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("JWKS file {}", path.display())),
        "{err}"
    );
    std::fs::write(&path, r#"{"keys": []}"#).unwrap();
    let err = layer.refresh_keys().await.unwrap_err().to_string();
    assert!(
        err.ends_with("no usable signature key (of 0 keys)"),
        "{err}"
    );
    // Without a usable set, requests are refused.
    assert_refused(
        &send(&layer, &tok("valid_rs256")).await,
        "verification keys unavailable",
        "no keys",
    );
}

// === a JWKS over HTTP, from a server on 127.0.0.1 ===

/// A JWKS server whose answer the test changes as it goes.
struct JwksServer {
    addr: SocketAddr,
    answer: Arc<Mutex<(StatusCode, String)>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
    /// With TLS: the CA that signed the server's certificate, in PEM.
    ca_pem: Option<Vec<u8>>,
}

/// A CA and a server certificate for `names` signed by it.
fn tls_server(alpn: &[&[u8]], names: &[&str]) -> (Vec<u8>, Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    (ca.pem().into_bytes(), Arc::new(config))
}

impl JwksServer {
    async fn start(jwks: &str) -> Self {
        Self::start_with(jwks, None).await
    }

    /// Over TLS, offering `alpn`, with a certificate for `localhost` and 127.0.0.1.
    async fn start_tls(jwks: &str, alpn: &[&[u8]]) -> Self {
        Self::start_tls_for(jwks, alpn, &["localhost", "127.0.0.1"]).await
    }

    async fn start_tls_for(jwks: &str, alpn: &[&[u8]], names: &[&str]) -> Self {
        let (ca_pem, config) = tls_server(alpn, names);
        let mut server = Self::start_with(jwks, Some(config)).await;
        server.ca_pem = Some(ca_pem);
        server
    }

    async fn start_with(jwks: &str, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(Mutex::new((StatusCode::OK, jwks.to_owned())));
        let hits = Arc::new(AtomicUsize::new(0));
        let (a, h) = (Arc::clone(&answer), Arc::clone(&hits));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (a, h) = (Arc::clone(&a), Arc::clone(&h));
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<_>| {
                        let (a, h) = (Arc::clone(&a), Arc::clone(&h));
                        async move {
                            assert_eq!(req.uri().path(), "/.well-known/jwks.json");
                            h.fetch_add(1, Ordering::SeqCst);
                            let (status, body) = a.lock().unwrap().clone();
                            let mut response = Response::new(Full::new(Bytes::from(body)));
                            *response.status_mut() = status;
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let http1 = hyper::server::conn::http1::Builder::new();
                    let _ = match acceptor {
                        None => http1.serve_connection(TokioIo::new(stream), service).await,
                        // A failed handshake is the client's refusal: nothing is served.
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(tls) => http1.serve_connection(TokioIo::new(tls), service).await,
                            Err(_) => return,
                        },
                    };
                });
            }
        });
        JwksServer {
            addr,
            answer,
            hits,
            task,
            ca_pem: None,
        }
    }

    fn serve(&self, status: StatusCode, body: &str) {
        *self.answer.lock().unwrap() = (status, body.to_owned());
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn url(&self) -> http::Uri {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}/.well-known/jwks.json", self.addr)
            .parse()
            .unwrap()
    }

    /// The key source for this server, trusting its CA when it has one.
    fn source(&self, refresh: RefreshPolicy) -> KeySource {
        KeySource::Url {
            url: self.url(),
            refresh,
            tls: self
                .ca_pem
                .as_ref()
                .map(|pem| novaedge_filters::jwt::tls_client_config(pem).unwrap()),
        }
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn policy(interval_ms: u64, min_refetch_ms: u64, max_stale_ms: u64) -> RefreshPolicy {
    RefreshPolicy {
        interval: Duration::from_millis(interval_ms),
        min_refetch_interval: Duration::from_millis(min_refetch_ms),
        max_stale: Duration::from_millis(max_stale_ms),
        fetch_timeout: Duration::from_secs(5),
    }
}

/// Waits (bounded) until the server has answered `n` fetches.
async fn wait_for_hits(server: &JwksServer, n: usize) {
    for _ in 0..500 {
        if server.hits() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the JWKS server saw {} fetches, not {n}", server.hits());
}

#[tokio::test]
async fn jwks_url_is_fetched_once_and_cached() {
    let server = JwksServer::start(JWKS).await;
    let layer = JwtLayer::new(config(server.source(policy(600_000, 0, 0)))).unwrap();
    // Concurrent first requests share one fetch.
    let token = tok("valid_ps512");
    let requests = (0..8).map(|_| send(&layer, &token));
    for outcome in futures_util::future::join_all(requests).await {
        assert_accepted(&outcome, "concurrent first requests");
    }
    for name in ["valid_es256", "valid_eddsa", "valid_hs512"] {
        assert_accepted(&send(&layer, &tok(name)).await, name);
    }
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn rotation_an_unknown_kid_triggers_a_refetch() {
    let server = JwksServer::start(JWKS).await;
    let layer = JwtLayer::new(config(server.source(policy(600_000, 0, 600_000)))).unwrap();
    assert_accepted(&send(&layer, &tok("valid_rs256")).await, "old key");
    assert_eq!(server.hits(), 1);

    server.serve(StatusCode::OK, JWKS_ROTATED);
    assert_accepted(
        &send(&layer, &tok("rotated_rs256")).await,
        "new kid, refetched",
    );
    assert_eq!(server.hits(), 2);
    // The old kid is now unknown: one more refetch, which does not bring it back.
    assert_refused(
        &send(&layer, &tok("valid_rs256")).await,
        "no key matches the token's key id",
        "rotated-out kid",
    );
    assert_eq!(server.hits(), 3);
    // Known kids need no fetch.
    assert_accepted(
        &send(&layer, &tok("rotated_rs256")).await,
        "new kid, cached",
    );
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn unknown_kid_refetches_are_rate_limited() {
    let server = JwksServer::start(JWKS).await;
    let layer = JwtLayer::new(config(server.source(policy(600_000, 3_600_000, 0)))).unwrap();
    assert_accepted(&send(&layer, &tok("valid_rs256")).await, "first load");
    server.serve(StatusCode::OK, JWKS_ROTATED);
    for _ in 0..5 {
        assert_refused(
            &send(&layer, &tok("unknown_kid")).await,
            "no key matches the token's key id",
            "unknown kid, rate-limited",
        );
    }
    assert_eq!(server.hits(), 1, "no refetch within min_refetch_interval");
}

#[tokio::test]
async fn rotation_is_picked_up_by_the_interval_refresh() {
    let server = JwksServer::start(JWKS).await;
    // Unknown kids may not trigger fetches here (1 h): only the 200 ms refresh can.
    let layer = JwtLayer::new(config(server.source(policy(200, 3_600_000, 600_000)))).unwrap();
    layer.refresh_keys().await.unwrap();
    server.serve(StatusCode::OK, JWKS_ROTATED);
    tokio::time::sleep(Duration::from_millis(250)).await;
    // Served from the old set; starts the background refresh.
    assert_accepted(&send(&layer, &tok("valid_es256")).await, "kid in both sets");
    wait_for_hits(&server, 2).await;
    // Wait until the new set is in place (the fetch was answered; parsing follows).
    let mut outcome = send(&layer, &tok("rotated_rs256")).await;
    for _ in 0..200 {
        if outcome.status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        outcome = send(&layer, &tok("rotated_rs256")).await;
    }
    assert_accepted(&outcome, "new kid after the refresh");
    assert_refused(
        &send(&layer, &tok("valid_rs256")).await,
        "no key matches the token's key id",
        "rotated-out kid after the refresh",
    );
}

#[tokio::test]
async fn server_down_last_good_keys_until_the_stale_period_ends() {
    let server = JwksServer::start(JWKS).await;
    // Fresh for 300 ms, then stale for at most 1.7 s more: refused from 2 s after the load.
    let layer = JwtLayer::new(config(server.source(policy(300, 50, 1700)))).unwrap();
    layer.refresh_keys().await.unwrap();
    // Taken after the load, so the filter's idea of the set's age is at least ours.
    let loaded = tokio::time::Instant::now();
    server.serve(StatusCode::SERVICE_UNAVAILABLE, "down");

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_accepted(&send(&layer, &tok("valid_rs256")).await, "stale");
    wait_for_hits(&server, 2).await; // the refresh was tried, and failed
    let outcome = send(&layer, &tok("valid_rs256")).await;
    // Only meaningful while still inside the stale period, which a slow machine may miss.
    if loaded.elapsed() < Duration::from_millis(1900) {
        assert_accepted(&outcome, "still stale after a failed refresh");
    }

    tokio::time::sleep_until(loaded + Duration::from_millis(2100)).await;
    assert_refused(
        &send(&layer, &tok("valid_rs256")).await,
        "verification keys unavailable",
        "beyond the stale period",
    );

    // Back up: the next request after the rate limit loads the set again.
    server.serve(StatusCode::OK, JWKS);
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_accepted(&send(&layer, &tok("valid_rs256")).await, "recovered");
}

#[tokio::test]
async fn nothing_listening_refuses_requests_without_hammering() {
    // A port that was free a moment ago: connections are refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("http://{addr}/jwks.json").parse().unwrap();
    let layer = JwtLayer::new(config(KeySource::Url {
        url,
        refresh: policy(600_000, 3_600_000, 600_000),
        tls: None,
    }))
    .unwrap();
    for _ in 0..3 {
        assert_refused(
            &send(&layer, &tok("valid_rs256")).await,
            "verification keys unavailable",
            "no server",
        );
    }
    let err = layer.refresh_keys().await.unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("JWKS URL http://{addr}/jwks.json: ")),
        "{err}"
    );
}

#[tokio::test]
async fn a_bad_status_or_document_is_a_failed_load() {
    let server = JwksServer::start("not json").await;
    let layer = JwtLayer::new(config(server.source(policy(600_000, 0, 0)))).unwrap();
    let err = layer.refresh_keys().await.unwrap_err().to_string();
    assert!(err.contains("not valid JSON"), "{err}");
    server.serve(StatusCode::NOT_FOUND, "");
    let err = layer.refresh_keys().await.unwrap_err().to_string();
    assert!(err.ends_with("status 404 Not Found"), "{err}");
    server.serve(StatusCode::OK, JWKS);
    layer.refresh_keys().await.unwrap();
    assert_accepted(
        &send(&layer, &tok("valid_rs256")).await,
        "after a good load",
    );
}

#[tokio::test]
async fn jwks_over_https_with_the_issuers_ca() {
    // The server prefers h2 when offered: the fetch must still speak HTTP/1.1.
    let server = JwksServer::start_tls(JWKS, &[b"h2", b"http/1.1"]).await;
    let layer = JwtLayer::new(config(server.source(policy(600_000, 0, 0)))).unwrap();
    assert_accepted(&send(&layer, &tok("valid_rs256")).await, "https JWKS");
    assert_eq!(server.hits(), 1);

    // A rotation over https is picked up like over http.
    server.serve(StatusCode::OK, JWKS_ROTATED);
    assert_accepted(&send(&layer, &tok("rotated_rs256")).await, "rotated");
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn jwks_over_https_refuses_a_server_it_cannot_verify() {
    let server = JwksServer::start_tls(JWKS, &[b"http/1.1"]).await;
    // The public roots do not know the test CA.
    let web_pki = JwtLayer::new(config(KeySource::Url {
        url: server.url(),
        refresh: policy(600_000, 0, 0),
        tls: None,
    }))
    .unwrap();
    let err = web_pki.refresh_keys().await.unwrap_err().to_string();
    assert!(
        err.contains("TLS handshake") && err.contains("UnknownIssuer"),
        "{err}"
    );
    assert_refused(
        &send(&web_pki, &tok("valid_rs256")).await,
        "verification keys unavailable",
        "unverified server",
    );

    // Another CA is no better.
    let (other_ca, _) = tls_server(&[], &["127.0.0.1"]);
    let other = JwtLayer::new(config(KeySource::Url {
        url: server.url(),
        refresh: policy(600_000, 0, 0),
        tls: Some(novaedge_filters::jwt::tls_client_config(&other_ca).unwrap()),
    }))
    .unwrap();
    let err = other.refresh_keys().await.unwrap_err().to_string();
    // Both CAs have rcgen's default name: the signature is what gives the impostor away.
    assert!(
        err.contains("invalid peer certificate: BadSignature"),
        "{err}"
    );

    // The right CA, but a certificate for another name than the URL's.
    let misnamed = JwksServer::start_tls_for(JWKS, &[b"http/1.1"], &["jwks.example"]).await;
    let layer = JwtLayer::new(config(misnamed.source(policy(600_000, 0, 0)))).unwrap();
    let err = layer.refresh_keys().await.unwrap_err().to_string();
    assert!(err.contains("certificate not valid for name"), "{err}");
    assert_eq!(misnamed.hits(), 0);
    assert_eq!(
        server.hits(),
        0,
        "no fetch got through without verification"
    );
}
