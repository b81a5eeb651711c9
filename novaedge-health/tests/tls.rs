//! HTTP and gRPC probes over TLS, against real TLS servers on 127.0.0.1 (tokio-rustls + hyper,
//! tonic-health for gRPC) with certificates made by rcgen in each test: status and serving
//! status followed as in cleartext, the server verified by CA and name (or IP address), the
//! ALPN each probe offers, and mTLS.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use novaedge_health::{
    ActiveChecker, ActiveConfig, GrpcProbe, Health, HealthEvent, HttpProbe, Probe, ProbeError,
    ProbeTls, active,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{CertificateError, ClientConfig, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tonic::codegen::Service;
use tonic_health::ServingStatus;

const TIMEOUT: Duration = Duration::from_secs(5);

// === certificates ===

struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A certificate signed by a [`Ca`], with its key.
struct Leaf {
    der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer =
            rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        Ca { issuer }
    }

    /// A certificate for `names` (DNS names or IP addresses).
    fn leaf(&self, names: &[&str]) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        Leaf {
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        roots
    }
}

impl Leaf {
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key_der.clone().into())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client configuration trusting `ca`, presenting `client_cert` if given. It offers both
/// `h2` and `http/1.1`, as a proxy's would: the probes must narrow it.
fn client_config(ca: &Ca, client_cert: Option<&Leaf>) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots());
    let mut config = match client_cert {
        None => builder.with_no_client_auth(),
        Some(leaf) => builder
            .with_client_auth_cert(vec![leaf.der.clone()], leaf.key())
            .unwrap(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

fn tls(ca: &Ca, name: &str) -> ProbeTls {
    ProbeTls::new(
        client_config(ca, None),
        Some(ServerName::try_from(name.to_owned()).unwrap()),
    )
}

// === TLS servers ===

/// A server's certificate and, for mTLS, the CA client certificates must chain to.
fn server_config(cert: &Leaf, client_ca: Option<&Ca>) -> ServerConfig {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(ca.roots()),
                provider(),
            )
            .build()
            .unwrap(),
        ),
    };
    let mut config = builder
        .with_single_cert(vec![cert.der.clone()], cert.key())
        .unwrap();
    // The server would take either; what is negotiated is what the probe offered.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// One request as the server saw it, with its connection's TLS details.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    sni: Option<String>,
    alpn: Option<String>,
    client_cert: bool,
    host: String,
}

/// What a server records: requests seen, and handshakes it failed with rustls' reason.
#[derive(Default)]
struct Log {
    seen: Mutex<Vec<Seen>>,
    failed: Mutex<Vec<String>>,
}

/// Accepts TLS connections with `config` and serves each with `serve`.
async fn tls_server<F, Fut>(config: ServerConfig, log: Arc<Log>, serve: F) -> SocketAddr
where
    F: Fn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, Arc<Log>) -> Fut
        + Send
        + Sync
        + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = Arc::new(serve);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, log, serve) = (acceptor.clone(), Arc::clone(&log), Arc::clone(&serve));
            tokio::spawn(async move {
                match acceptor.accept(stream).await {
                    Ok(tls) => serve(tls, log).await,
                    Err(e) => log.failed.lock().unwrap().push(e.to_string()),
                }
            });
        }
    });
    addr
}

fn seen(tls: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>, host: Option<&str>) -> Seen {
    let connection = tls.get_ref().1;
    Seen {
        sni: connection.server_name().map(str::to_owned),
        alpn: connection
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        client_cert: connection.peer_certificates().is_some(),
        host: host.unwrap_or_default().to_owned(),
    }
}

/// An HTTP/1.1 server over TLS answering every request with `status`.
async fn http_server(config: ServerConfig, status: Arc<AtomicU16>, log: Arc<Log>) -> SocketAddr {
    tls_server(config, log, move |tls, log| {
        let status = Arc::clone(&status);
        async move {
            let connection = seen(&tls, None);
            let service = hyper::service::service_fn(move |req: http::Request<_>| {
                let host = req
                    .headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok());
                log.seen.lock().unwrap().push(Seen {
                    host: host.unwrap_or_default().to_owned(),
                    ..connection.clone()
                });
                let response = http::Response::builder()
                    .status(status.load(Ordering::SeqCst))
                    .body(Empty::<Bytes>::new());
                async move { Ok::<_, Infallible>(response.unwrap()) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        }
    })
    .await
}

/// A `grpc.health.v1` server (tonic-health) over TLS, HTTP/2.
async fn grpc_server(
    config: ServerConfig,
    log: Arc<Log>,
) -> (SocketAddr, tonic_health::server::HealthReporter) {
    let (reporter, health) = tonic_health::server::health_reporter();
    let addr = tls_server(config, log, move |tls, log| {
        let health = health.clone();
        async move {
            let connection = seen(&tls, None);
            let service = hyper::service::service_fn(move |req: http::Request<_>| {
                let authority = req.uri().authority().map(|a| a.to_string());
                log.seen.lock().unwrap().push(Seen {
                    host: authority.unwrap_or_default(),
                    ..connection.clone()
                });
                let mut health = health.clone();
                async move { health.call(req).await }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        }
    })
    .await;
    (addr, reporter)
}

// === checkers ===

type Events = UnboundedReceiver<HealthEvent<&'static str>>;

fn fast(probe: Probe) -> ActiveConfig {
    ActiveConfig {
        interval: Duration::from_millis(10),
        jitter: Duration::from_millis(5),
        timeout: TIMEOUT,
        ..ActiveConfig::new(probe)
    }
}

async fn next_event(rx: &mut Events) -> (&'static str, Health) {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("no health event within 20 s")
        .expect("sink alive")
        .into_parts()
}

#[track_caller]
fn assert_tls_error(result: Result<(), ProbeError>, expected: rustls::Error, message: &str) {
    match result {
        Err(e @ ProbeError::Tls { .. }) => {
            assert_eq!(e.to_string(), message);
            let ProbeError::Tls { source, .. } = e else {
                unreachable!()
            };
            assert_eq!(source, expected);
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

// === tests ===

#[tokio::test]
async fn http_probe_over_tls_follows_the_status_and_offers_only_http11() {
    let ca = Ca::new("test CA");
    let status = Arc::new(AtomicU16::new(200));
    let log = Arc::new(Log::default());
    let config = server_config(&ca.leaf(&["health.test"]), None);
    let addr = http_server(config, Arc::clone(&status), Arc::clone(&log)).await;
    let probe = Probe::Http(HttpProbe::new("/healthz").with_tls(tls(&ca, "health.test")));

    let (tx, mut rx) = unbounded_channel();
    let checker = ActiveChecker::new(fast(probe.clone()), tx);
    checker.add("a", addr);
    assert_eq!(next_event(&mut rx).await, ("a", Health::Healthy));
    status.store(503, Ordering::SeqCst);
    assert_eq!(next_event(&mut rx).await, ("a", Health::Unhealthy));
    match active::probe(&probe, addr, TIMEOUT).await {
        Err(ProbeError::Status { status: 503, .. }) => {}
        other => panic!("expected a status error, got {other:?}"),
    }
    status.store(200, Ordering::SeqCst);
    assert_eq!(next_event(&mut rx).await, ("a", Health::Healthy));
    drop(checker);

    let seen = log.seen.lock().unwrap().clone();
    assert!(seen.len() >= 4, "{seen:?}");
    let expected = Seen {
        sni: Some("health.test".into()),
        alpn: Some("http/1.1".into()),
        client_cert: false,
        // The server name is the default `Host`.
        host: "health.test".into(),
    };
    assert!(seen.iter().all(|s| *s == expected), "{seen:?}");
    assert!(log.failed.lock().unwrap().is_empty());
}

#[tokio::test]
async fn grpc_probe_over_tls_follows_the_serving_status() {
    let ca = Ca::new("test CA");
    let log = Arc::new(Log::default());
    let config = server_config(&ca.leaf(&["grpc.test"]), None);
    let (addr, reporter) = grpc_server(config, Arc::clone(&log)).await;
    reporter
        .set_service_status("novaedge.Echo", ServingStatus::Serving)
        .await;
    let probe = Probe::Grpc(GrpcProbe::new("novaedge.Echo").with_tls(tls(&ca, "grpc.test")));

    let (tx, mut rx) = unbounded_channel();
    let checker = ActiveChecker::new(fast(probe.clone()), tx);
    checker.add("grpc", addr);
    assert_eq!(next_event(&mut rx).await, ("grpc", Health::Healthy));
    reporter
        .set_service_status("novaedge.Echo", ServingStatus::NotServing)
        .await;
    assert_eq!(next_event(&mut rx).await, ("grpc", Health::Unhealthy));
    match active::probe(&probe, addr, TIMEOUT).await {
        Err(ProbeError::NotServing { status, .. }) => assert_eq!(status, "NOT_SERVING"),
        other => panic!("expected NOT_SERVING, got {other:?}"),
    }
    reporter
        .set_service_status("novaedge.Echo", ServingStatus::Serving)
        .await;
    assert_eq!(next_event(&mut rx).await, ("grpc", Health::Healthy));
    drop(checker);

    match active::probe(
        &Probe::Grpc(GrpcProbe::new("no.Such").with_tls(tls(&ca, "grpc.test"))),
        addr,
        TIMEOUT,
    )
    .await
    {
        Err(ProbeError::GrpcCall { source, .. }) => {
            assert_eq!(source.code(), tonic::Code::NotFound)
        }
        other => panic!("expected NOT_FOUND, got {other:?}"),
    }
    let seen = log.seen.lock().unwrap().clone();
    let expected = Seen {
        sni: Some("grpc.test".into()),
        alpn: Some("h2".into()),
        client_cert: false,
        host: "grpc.test".into(),
    };
    assert!(seen.len() >= 4, "{seen:?}");
    assert!(seen.iter().all(|s| *s == expected), "{seen:?}");
}

#[tokio::test]
async fn without_a_server_name_the_certificate_must_name_the_ip_address() {
    let ca = Ca::new("test CA");
    let log = Arc::new(Log::default());
    let status = Arc::new(AtomicU16::new(204));
    let by_ip = server_config(&ca.leaf(&["127.0.0.1"]), None);
    let by_ip = http_server(by_ip, Arc::clone(&status), Arc::clone(&log)).await;
    let by_name = server_config(&ca.leaf(&["health.test"]), None);
    let by_name = http_server(by_name, status, Arc::clone(&log)).await;
    let probe =
        Probe::Http(HttpProbe::new("/").with_tls(ProbeTls::new(client_config(&ca, None), None)));

    active::probe(&probe, by_ip, TIMEOUT).await.unwrap();
    assert_tls_error(
        active::probe(&probe, by_name, TIMEOUT).await,
        rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            expected: ServerName::IpAddress(by_name.ip().into()),
            presented: vec!["DnsName(\"health.test\")".into()],
        }),
        &format!(
            "TLS with {by_name} failed: invalid peer certificate: certificate not valid for \
             name \"127.0.0.1\"; certificate is only valid for DnsName(\"health.test\")"
        ),
    );
    let seen = log.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].sni, None, "no SNI for an IP address");
    assert_eq!(seen[0].host, by_ip.to_string());
}

#[tokio::test]
async fn a_server_certificate_of_an_unknown_ca_fails_the_probe_naming_the_problem() {
    let ca = Ca::new("test CA");
    let impostor = Ca::new("impostor CA");
    let log = Arc::new(Log::default());
    let config = || server_config(&impostor.leaf(&["health.test"]), None);
    let http = http_server(config(), Arc::new(AtomicU16::new(200)), Arc::clone(&log)).await;
    let (grpc, reporter) = grpc_server(config(), Arc::clone(&log)).await;
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let unknown_issuer = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);

    let probe = Probe::Http(HttpProbe::new("/").with_tls(tls(&ca, "health.test")));
    assert_tls_error(
        active::probe(&probe, http, TIMEOUT).await,
        unknown_issuer.clone(),
        &format!("TLS with {http} failed: invalid peer certificate: UnknownIssuer"),
    );
    let probe = Probe::Grpc(GrpcProbe::new("").with_tls(tls(&ca, "health.test")));
    assert_tls_error(
        active::probe(&probe, grpc, TIMEOUT).await,
        unknown_issuer,
        &format!("TLS with {grpc} failed: invalid peer certificate: UnknownIssuer"),
    );
    // The same servers pass with the right CA: it was the certificate.
    let trusting = |addr| {
        let name = ServerName::try_from("health.test").unwrap();
        let tls = ProbeTls::new(client_config(&impostor, None), Some(name));
        match addr == http {
            true => Probe::Http(HttpProbe::new("/").with_tls(tls)),
            false => Probe::Grpc(GrpcProbe::new("").with_tls(tls)),
        }
    };
    active::probe(&trusting(http), http, TIMEOUT).await.unwrap();
    active::probe(&trusting(grpc), grpc, TIMEOUT).await.unwrap();

    // A checker takes the endpoint out.
    let (tx, mut rx) = unbounded_channel();
    let checker = ActiveChecker::new(
        fast(Probe::Http(
            HttpProbe::new("/").with_tls(tls(&ca, "health.test")),
        )),
        tx,
    );
    checker.add("impostor", http);
    assert_eq!(next_event(&mut rx).await, ("impostor", Health::Unhealthy));
}

#[tokio::test]
async fn mtls_server_requiring_a_client_certificate_passes_with_one() {
    let ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let client_cert = client_ca.leaf(&["proxy.test"]);
    let log = Arc::new(Log::default());
    let config = || server_config(&ca.leaf(&["secure.test"]), Some(&client_ca));
    let http = http_server(config(), Arc::new(AtomicU16::new(200)), Arc::clone(&log)).await;
    let (grpc, reporter) = grpc_server(config(), Arc::clone(&log)).await;
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let name = || Some(ServerName::try_from("secure.test").unwrap());
    let with_cert = ProbeTls::new(client_config(&ca, Some(&client_cert)), name());

    let probe = Probe::Http(HttpProbe::new("/").with_tls(with_cert.clone()));
    active::probe(&probe, http, TIMEOUT).await.unwrap();
    let probe = Probe::Grpc(GrpcProbe::new("").with_tls(with_cert));
    active::probe(&probe, grpc, TIMEOUT).await.unwrap();
    let seen = log.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.client_cert), "{seen:?}");

    // Without one, the server refuses. TLS 1.3: the client's handshake completes first, and the
    // refusal is an alert that arrives with the answer; it is still reported as TLS' failure.
    let without = ProbeTls::new(client_config(&ca, None), name());
    let probe = Probe::Http(HttpProbe::new("/").with_tls(without.clone()));
    assert_tls_error(
        active::probe(&probe, http, TIMEOUT).await,
        rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
        &format!("TLS with {http} failed: received fatal alert: CertificateRequired"),
    );
    let probe = Probe::Grpc(GrpcProbe::new("").with_tls(without));
    match active::probe(&probe, grpc, TIMEOUT).await {
        Err(ProbeError::Tls { source, .. }) => assert_eq!(
            source,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired)
        ),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    assert_eq!(log.seen.lock().unwrap().len(), 2, "no request got through");
    let failed = log.failed.lock().unwrap().clone();
    assert!(
        failed
            .iter()
            .all(|f| f.contains("peer sent no certificates")),
        "{failed:?}"
    );
}

#[test]
fn each_probe_offers_its_own_alpn_set_once() {
    let ca = Ca::new("test CA");
    let given = tls(&ca, "health.test");
    let alpn = |tls: &Option<ProbeTls>| tls.as_ref().unwrap().config().alpn_protocols.clone();

    let http = HttpProbe::new("/").with_tls(given.clone());
    assert_eq!(alpn(&http.tls), [b"http/1.1".to_vec()]);
    let grpc = GrpcProbe::new("").with_tls(given.clone());
    assert_eq!(alpn(&grpc.tls), [b"h2".to_vec()]);
    assert_eq!(
        given.config().alpn_protocols.len(),
        2,
        "the caller's configuration is not changed"
    );
    // A configuration that already offers the right list is shared, not copied.
    let again = HttpProbe::new("/").with_tls(http.tls.clone().unwrap());
    assert_eq!(again.tls, http.tls);

    // Set directly, the field is narrowed once, when a checker takes the probe.
    let direct = Probe::Grpc(GrpcProbe {
        tls: Some(given),
        ..GrpcProbe::new("")
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let checker = ActiveChecker::<&str>::new(fast(direct), |_: HealthEvent<&str>| {});
    match &checker.config().probe {
        Probe::Grpc(grpc) => assert_eq!(alpn(&grpc.tls), [b"h2".to_vec()]),
        other => panic!("{other:?}"),
    }
}
