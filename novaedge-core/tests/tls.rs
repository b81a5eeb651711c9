//! HTTPS listeners with a real rustls client: certificates chosen by SNI, ALPN, client
//! certificates, rotation under load, refused material, and redirects to HTTPS. Every
//! certificate is made here, by rcgen, under a test CA.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode, Version, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use novaedge_core::Engine;
use novaedge_snapshot::{
    ClientAuth, ConfigSnapshot, Listener, ListenerProtocol, ListenerTls, TlsCertificate,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

// === certificates ===

/// A test CA that signs server and client certificates.
struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        Self {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names` (and its key), PEM.
    fn leaf(&self, names: &[&str], common_name: &str, uri: Option<&str>) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        if let Some(uri) = uri {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI(uri.try_into().unwrap()));
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A listener certificate entry for `names`.
    fn server(&self, names: &[&str], server_names: &[&str]) -> TlsCertificate {
        let (cert, key) = self.leaf(names, names.first().copied().unwrap_or("x"), None);
        TlsCertificate {
            source: format!("test {}", names.join(",")),
            server_names: server_names.iter().map(|n| n.to_string()).collect(),
            cert_chain_pem: cert,
            private_key_pem: key,
        }
    }
}

fn der_of(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

// === the engine ===

fn https_listener(tls: ListenerTls) -> Listener {
    Listener {
        name: "web".into(),
        bind: Some(LOCALHOST),
        port: 0,
        protocol: ListenerProtocol::Https,
        tls: Some(tls),
        https_redirect_port: None,
    }
}

fn tls(certificates: Vec<TlsCertificate>, default_certificate: Option<usize>) -> ListenerTls {
    ListenerTls {
        certificates,
        default_certificate,
        client_auth: None,
    }
}

/// An HTTPS listener `web` sending everything to one echo backend.
fn https_snapshot(
    version: u64,
    tls: ListenerTls,
    backend: &novaedge_echo::EchoServer,
) -> ConfigSnapshot {
    snapshot(
        version,
        vec![https_listener(tls)],
        vec![route("default/r", "web", &[], vec![to("echo")])],
        vec![common::backend(
            "echo",
            novaedge_snapshot::UpstreamProtocol::Http1,
            &[backend],
        )],
    )
}

async fn serve(tls: ListenerTls) -> (Engine, SocketAddr, novaedge_echo::EchoServer) {
    let backend = echo("echo").await;
    let engine = engine();
    engine.apply(&https_snapshot(1, tls, &backend)).unwrap();
    let addr = engine.local_addr("web").unwrap();
    (engine, addr, backend)
}

// === the client ===

struct ClientOptions<'a> {
    ca_pem: &'a str,
    alpn: &'a [&'a [u8]],
    /// A client certificate and key, PEM.
    identity: Option<(String, String)>,
    tls12_only: bool,
}

impl<'a> ClientOptions<'a> {
    fn trusting(ca_pem: &'a str) -> Self {
        Self {
            ca_pem,
            alpn: &[b"h2", b"http/1.1"],
            identity: None,
            tls12_only: false,
        }
    }

    fn config(&self) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider);
        let builder = if self.tls12_only {
            builder.with_protocol_versions(&[&rustls::version::TLS12])
        } else {
            builder.with_safe_default_protocol_versions()
        }
        .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).unwrap())
            .unwrap();
        let builder = builder.with_root_certificates(roots);
        let mut config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(cert.as_bytes())
                        .collect::<Result<Vec<_>, _>>()
                        .unwrap(),
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
        };
        config.alpn_protocols = self.alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// A TLS connection to the proxy, asking for `sni` (none when it is an IP address).
async fn connect(
    addr: SocketAddr,
    sni: &str,
    options: &ClientOptions<'_>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    tokio_rustls::TlsConnector::from(options.config())
        .connect(name, tcp)
        .await
}

/// The leaf certificate the server presented.
fn server_leaf(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// An HTTP connection over TLS, speaking what ALPN agreed on.
enum Conn {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Conn {
    async fn over(stream: TlsStream<TcpStream>) -> Self {
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(stream);
        if h2 {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await.unwrap();
            tokio::spawn(conn);
            Conn::H2(sender)
        } else {
            let (sender, conn) = http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Conn::H1(sender)
        }
    }

    async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Response<Bytes>, hyper::Error> {
        let response = match self {
            Conn::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Conn::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        let (parts, body) = response.into_parts();
        Ok(Response::from_parts(
            parts,
            body.collect().await?.to_bytes(),
        ))
    }

    async fn get(&mut self, host: &str, path: &str) -> Result<Response<Bytes>, hyper::Error> {
        let req = match self {
            Conn::H1(_) => Request::get(path).header(header::HOST, host),
            Conn::H2(_) => Request::get(format!("https://{host}{path}")),
        };
        self.send(req.body(Full::default()).unwrap()).await
    }
}

// === tests ===

#[tokio::test]
async fn sni_picks_the_certificate_for_two_names_and_a_wildcard() {
    let ca = Ca::new("test CA");
    let a = ca.server(&["a.shop.test"], &[]);
    let b = ca.server(&["b.shop.test"], &[]);
    let wild = ca.server(&["*.eu.shop.test"], &[]);
    let ders: Vec<Vec<u8>> = [&a, &b, &wild]
        .iter()
        .map(|c| der_of(&c.cert_chain_pem))
        .collect();
    let (_engine, addr, _backend) = serve(tls(vec![a, b, wild], None)).await;
    let ca_pem = ca.pem();
    let options = ClientOptions::trusting(&ca_pem);
    for (sni, want) in [
        ("a.shop.test", 0),
        ("b.shop.test", 1),
        ("x.eu.shop.test", 2),
        ("y.eu.shop.test", 2),
    ] {
        let stream = connect(addr, sni, &options)
            .await
            .unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert_eq!(server_leaf(&stream), ders[want], "{sni}");
        let mut conn = Conn::over(stream).await;
        let response = conn.get(sni, "/x").await.unwrap();
        assert_eq!(info(&response).path, "/x", "{sni}");
    }

    // No default: a name nothing serves, or no name at all, fails the handshake.
    for sni in ["c.shop.test", "eu.shop.test", "127.0.0.1"] {
        let err = connect(addr, sni, &options).await.err();
        assert!(err.is_some(), "{sni}: the handshake must fail");
    }
}

#[tokio::test]
async fn the_default_certificate_serves_unknown_names_and_clients_without_sni() {
    let ca = Ca::new("test CA");
    let named = ca.server(&["a.shop.test"], &[]);
    let fallback = ca.server(&["fallback.shop.test", "127.0.0.1"], &[]);
    let fallback_der = der_of(&fallback.cert_chain_pem);
    let (_engine, addr, _backend) = serve(tls(vec![named, fallback], Some(1))).await;
    let ca_pem = ca.pem();
    let options = ClientOptions::trusting(&ca_pem);
    // An IP address is never sent as SNI.
    let stream = connect(addr, "127.0.0.1", &options).await.unwrap();
    assert_eq!(server_leaf(&stream), fallback_der);
    // A name nothing serves gets the default, which the client then refuses: its name is not
    // on it. That is the client's call; the server answered.
    let err = connect(addr, "zzz.shop.test", &options).await.unwrap_err();
    assert!(err.to_string().contains("not valid for name"), "{err}");
}

#[tokio::test]
async fn alpn_h2_and_http11_with_tls12_and_tls13() {
    let ca = Ca::new("test CA");
    let (_engine, addr, _backend) = serve(tls(vec![ca.server(&["shop.test"], &[])], None)).await;
    let ca_pem = ca.pem();
    // (client ALPN, TLS 1.2 only, agreed protocol, HTTP version)
    type Case = (
        &'static [&'static [u8]],
        bool,
        Option<&'static [u8]>,
        Version,
    );
    let cases: [Case; 5] = [
        (&[b"h2", b"http/1.1"], false, Some(b"h2"), Version::HTTP_2),
        (&[b"http/1.1"], false, Some(b"http/1.1"), Version::HTTP_11),
        (&[], false, None, Version::HTTP_11),
        (&[b"h2"], true, Some(b"h2"), Version::HTTP_2),
        (&[b"http/1.1"], true, Some(b"http/1.1"), Version::HTTP_11),
    ];
    for (alpn, tls12_only, agreed, version) in cases {
        let options = ClientOptions {
            alpn,
            tls12_only,
            ..ClientOptions::trusting(&ca_pem)
        };
        let stream = connect(addr, "shop.test", &options).await.unwrap();
        let (_, session) = stream.get_ref();
        assert_eq!(session.alpn_protocol(), agreed, "{alpn:?}");
        let protocol = session.protocol_version().unwrap();
        assert_eq!(
            protocol == rustls::ProtocolVersion::TLSv1_2,
            tls12_only,
            "{protocol:?}"
        );
        let mut conn = Conn::over(stream).await;
        for _ in 0..3 {
            let response = conn.get("shop.test", "/v").await.unwrap();
            assert_eq!(response.version(), version, "{alpn:?}");
            let seen = info(&response);
            assert_eq!(seen.headers["x-forwarded-proto"], ["https"]);
        }
    }
}

#[tokio::test]
async fn client_certificates_required_or_optional() {
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let impostors = Ca::new("impostor CA");
    let server = ca.server(&["shop.test"], &[]);
    let good = clients.leaf(
        &["alice.clients.test"],
        "alice",
        Some("spiffe://shop.test/ns/web/sa/alice"),
    );
    let forged = impostors.leaf(&["alice.clients.test"], "alice", None);
    let mut settings = tls(vec![server], None);
    settings.client_auth = Some(ClientAuth {
        ca_pem: clients.pem(),
        optional: false,
    });
    let backend = echo("echo").await;
    let engine = engine();
    engine
        .apply(&https_snapshot(1, settings.clone(), &backend))
        .unwrap();
    let addr = engine.local_addr("web").unwrap();
    let ca_pem = ca.pem();

    // Required: a verified certificate gets through, and the upstream learns who it is (a
    // forged header from the client is replaced).
    let options = ClientOptions {
        identity: Some(good.clone()),
        ..ClientOptions::trusting(&ca_pem)
    };
    let mut conn = Conn::over(connect(addr, "shop.test", &options).await.unwrap()).await;
    let req = Request::get("https://shop.test/who")
        .header("x-forwarded-client-cert", "Subject=\"CN=admin\"")
        .body(Full::default())
        .unwrap();
    let seen = info(&conn.send(req).await.unwrap());
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der_of(&good.0));
    let hash: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        seen.headers["x-forwarded-client-cert"],
        [format!(
            "Hash={hash};Subject=\"CN=alice\";URI=spiffe://shop.test/ns/web/sa/alice;DNS=alice.clients.test"
        )]
    );

    // Without a certificate, or with one from another CA: refused. With TLS 1.3 the client
    // learns it when it first reads, so try a request.
    for identity in [None, Some(forged.clone())] {
        let label = if identity.is_some() { "forged" } else { "none" };
        let options = ClientOptions {
            identity,
            ..ClientOptions::trusting(&ca_pem)
        };
        let refused = match connect(addr, "shop.test", &options).await {
            Err(_) => true,
            Ok(stream) => {
                let io = TokioIo::new(stream);
                match http1::handshake::<_, Full<Bytes>>(io).await {
                    Err(_) => true,
                    Ok((mut sender, conn)) => {
                        tokio::spawn(conn);
                        let req = Request::get("/").header(header::HOST, "shop.test");
                        sender
                            .send_request(req.body(Full::default()).unwrap())
                            .await
                            .is_err()
                    }
                }
            }
        };
        assert!(refused, "{label}: the connection must be refused");
    }

    // Optional: no certificate passes without an identity (and without the forged header); a
    // bad certificate is still refused.
    settings.client_auth.as_mut().unwrap().optional = true;
    engine
        .apply(&https_snapshot(2, settings, &backend))
        .unwrap();
    let mut conn = Conn::over(
        connect(addr, "shop.test", &ClientOptions::trusting(&ca_pem))
            .await
            .unwrap(),
    )
    .await;
    let req = Request::get("https://shop.test/who")
        .header("x-forwarded-client-cert", "Subject=\"CN=admin\"")
        .body(Full::default())
        .unwrap();
    let seen = info(&conn.send(req).await.unwrap());
    assert!(
        !seen.headers.contains_key("x-forwarded-client-cert"),
        "{seen:?}"
    );
    let options = ClientOptions {
        identity: Some(forged),
        ..ClientOptions::trusting(&ca_pem)
    };
    let refused = match connect(addr, "shop.test", &options).await {
        Err(_) => true,
        Ok(stream) => match Conn::over_checked(stream).await {
            None => true,
            Some(mut conn) => conn.get("shop.test", "/").await.is_err(),
        },
    };
    assert!(
        refused,
        "a certificate from another CA is refused even when optional"
    );
}

impl Conn {
    /// Like [`Conn::over`], but `None` when the server has already closed the connection.
    async fn over_checked(stream: TlsStream<TcpStream>) -> Option<Self> {
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(stream);
        if h2 {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await.ok()?;
            tokio::spawn(conn);
            Some(Conn::H2(sender))
        } else {
            let (sender, conn) = http1::handshake(io).await.ok()?;
            tokio::spawn(conn);
            Some(Conn::H1(sender))
        }
    }
}

/// Rotation under continuous load: clients keep opening connections (a handshake each) and
/// sending requests on them, and a long-lived connection keeps sending, while the certificate
/// is replaced, then a broken replacement is refused. No request may fail; every handshake
/// that starts after a rotation returns gets the new certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(
    clippy::print_stderr,
    reason = "the figures of the run, for the record"
)]
async fn rotation_under_load_loses_nothing_and_a_bad_certificate_keeps_the_old() {
    let ca = Ca::new("test CA");
    let old = ca.server(&["shop.test"], &[]);
    let new = ca.server(&["shop.test"], &[]);
    let (old_der, new_der) = (der_of(&old.cert_chain_pem), der_of(&new.cert_chain_pem));
    let backend = echo("echo").await;
    let engine = engine();
    engine
        .apply(&https_snapshot(1, tls(vec![old], None), &backend))
        .unwrap();
    let addr = engine.local_addr("web").unwrap();
    let ca_pem = Arc::new(ca.pem());

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    // When the rotation returned; handshakes that start later must see the new certificate.
    let rotated_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (stop, ok, ca_pem, rotated_at) =
            (stop.clone(), ok.clone(), ca_pem.clone(), rotated_at.clone());
        let (old_der, new_der) = (old_der.clone(), new_der.clone());
        workers.push(tokio::spawn(async move {
            let options = ClientOptions::trusting(&ca_pem);
            let mut seen = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let stream = connect(addr, "shop.test", &options)
                    .await
                    .expect("handshake during rotation");
                let leaf = server_leaf(&stream);
                if leaf == old_der {
                    seen.0 += 1;
                    let rotated = *rotated_at.lock().unwrap();
                    assert!(
                        rotated.is_none_or(|at| started < at),
                        "a handshake started after the rotation got the old certificate"
                    );
                } else {
                    assert_eq!(leaf, new_der);
                    seen.1 += 1;
                }
                let mut conn = Conn::over(stream).await;
                for _ in 0..5 {
                    let response = conn.get("shop.test", "/load").await.expect("request");
                    assert_eq!(response.status(), StatusCode::OK);
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
            seen
        }));
    }
    // A connection made before the rotation, used throughout.
    let mut long_lived = Conn::over(
        connect(addr, "shop.test", &ClientOptions::trusting(&ca_pem))
            .await
            .unwrap(),
    )
    .await;

    let mut long_lived_requests = 0;
    for phase in 0..3 {
        let until = Instant::now() + Duration::from_millis(400);
        while Instant::now() < until {
            let response = long_lived.get("shop.test", "/long").await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            long_lived_requests += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        match phase {
            0 => {
                engine
                    .apply(&https_snapshot(2, tls(vec![new.clone()], None), &backend))
                    .unwrap();
                *rotated_at.lock().unwrap() = Some(Instant::now());
            }
            1 => {
                let mut broken = ca.server(&["shop.test"], &[]);
                broken.private_key_pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
                broken.source = "Secret shop/web-tls".into();
                let err = engine
                    .apply(&https_snapshot(3, tls(vec![broken], None), &backend))
                    .unwrap_err()
                    .to_string();
                assert_eq!(
                    err,
                    "snapshot does not compile: listener \"web\": tls.certificates[0].private_key_pem \
                     (Secret shop/web-tls): the private key does not match the certificate"
                );
                assert_eq!(engine.version(), Some(2));
            }
            _ => {}
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut handshakes = (0, 0);
    for w in workers {
        let (o, n) = w.await.expect("no worker failed");
        handshakes.0 += o;
        handshakes.1 += n;
    }
    assert!(handshakes.0 > 0 && handshakes.1 > 0, "{handshakes:?}");
    assert!(long_lived_requests > 10);
    eprintln!(
        "{} requests on {} handshakes with the old and {} with the new certificate, \
         {long_lived_requests} on one connection across the rotation: none failed",
        ok.load(Ordering::Relaxed),
        handshakes.0,
        handshakes.1
    );
}

#[tokio::test]
async fn an_http_listener_redirects_to_https() {
    let engine = engine();
    let redirect = |port: u16| Listener {
        name: format!("http-{port}"),
        bind: Some(LOCALHOST),
        port: 0,
        protocol: ListenerProtocol::Http,
        tls: None,
        https_redirect_port: Some(port),
    };
    engine
        .apply(&snapshot(
            1,
            vec![redirect(443), redirect(8443)],
            vec![],
            vec![],
        ))
        .unwrap();
    for (port, want) in [
        (443, "https://shop.test/a/b?q=1"),
        (8443, "https://shop.test:8443/a/b?q=1"),
    ] {
        let addr = engine.local_addr(&format!("http-{port}")).unwrap();
        for proto in BOTH {
            let mut client = Client::connect(proto, addr).await;
            let response = client.get("shop.test:80", "/a/b?q=1").await;
            assert_eq!(
                response.status(),
                StatusCode::MOVED_PERMANENTLY,
                "{proto:?}"
            );
            assert_eq!(response.headers()[header::LOCATION], want, "{proto:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_https_connections_serve_their_next_requests() {
    let ca = Ca::new("test CA");
    let backend = echo("echo").await;
    let engine = Engine::new(novaedge_core::EngineConfig {
        default_bind: std::net::IpAddr::from([127, 0, 0, 1]),
        park_after: Duration::from_millis(50),
        ..novaedge_core::EngineConfig::default()
    });
    let listener_tls = tls(vec![ca.server(&["shop.test"], &[])], None);
    engine
        .apply(&https_snapshot(1, listener_tls, &backend))
        .unwrap();
    let addr = engine.local_addr("web").unwrap();
    let ca_pem = ca.pem();
    let options = ClientOptions {
        alpn: &[b"http/1.1"],
        ..ClientOptions::trusting(&ca_pem)
    };
    let stream = connect(addr, "shop.test", &options).await.unwrap();
    let mut conn = Conn::over(stream).await;
    // Pauses that park the connection between requests, on the same TLS session.
    for round in 0..4 {
        let response = conn.get("shop.test", &format!("/r{round}")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "round {round}");
        assert_eq!(response.version(), Version::HTTP_11);
        assert_eq!(info(&response).path, format!("/r{round}"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(backend.requests(), 4);
}
