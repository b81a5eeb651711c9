//! Unit tests of the service: responses and their `WWW-Authenticate`, claim forwarding and
//! header anti-spoofing, token removal, clock skew, configuration errors. Tokens here are made
//! with jsonwebtoken (HMAC, claims relative to now); the fixtures made by PyJWT are used in
//! `tests/jwt.rs`.

use std::convert::Infallible;
use std::time::UNIX_EPOCH;

use http::header::{AUTHORIZATION, COOKIE};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;
use tower::{ServiceExt, service_fn};

use super::*;

const SECRET: &[u8] = b"unit-test-secret-unit-test-secret";

fn jwks() -> String {
    json!({"keys": [{"kty": "oct", "kid": "k1", "k": jwks::b64url_encode(SECRET)}]}).to_string()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn token_with(alg: Algorithm, kid: Option<&str>, claims: Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, &claims, &EncodingKey::from_secret(SECRET)).unwrap()
}

fn token(claims: Value) -> String {
    token_with(Algorithm::HS256, Some("k1"), claims)
}

fn good_claims() -> Value {
    json!({
        "iss": "https://issuer", "aud": "api", "sub": "alice", "exp": now() + 3600,
        "level": 3, "admin": true, "groups": ["dev", "ops"], "org": {"id": 7}, "ratio": 0.5,
    })
}

fn config() -> JwtConfig {
    let mut config = JwtConfig::new(KeySource::Jwks(jwks()));
    config.issuers = vec!["https://issuer".into()];
    config.audiences = vec!["api".into()];
    config
}

/// What the upstream saw.
#[derive(Debug, Default)]
struct Seen {
    headers: http::HeaderMap,
    uri: String,
    claims: Option<VerifiedClaims>,
}

/// Sends the request through the filter; returns the status, the `WWW-Authenticate` value and
/// what the upstream saw (if it was called).
async fn send(config: JwtConfig, req: Request<()>) -> (StatusCode, Option<String>, Option<Seen>) {
    let seen = Arc::new(std::sync::Mutex::new(None));
    let record = Arc::clone(&seen);
    let upstream = service_fn(move |req: Request<()>| {
        let record = Arc::clone(&record);
        async move {
            *record.lock().unwrap() = Some(Seen {
                headers: req.headers().clone(),
                uri: req.uri().to_string(),
                claims: req.extensions().get::<VerifiedClaims>().cloned(),
            });
            Ok::<_, Infallible>(Response::new(String::new()))
        }
    });
    let service = JwtLayer::new(config).unwrap().layer(upstream);
    let response = service.oneshot(req).await.unwrap();
    assert!(response.body().is_empty());
    let challenge = response
        .headers()
        .get(WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    let seen = seen.lock().unwrap().take();
    (response.status(), challenge, seen)
}

fn bearer(token: &str) -> Request<()> {
    Request::get("/")
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .body(())
        .unwrap()
}

async fn refused_with(config: JwtConfig, token: &str) -> String {
    let (status, challenge, seen) = send(config, bearer(token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(seen.is_none(), "the upstream must not be called");
    let challenge = challenge.expect("a WWW-Authenticate header");
    let prefix = r#"Bearer realm="novaedge", error="invalid_token", error_description=""#;
    challenge
        .strip_prefix(prefix)
        .and_then(|d| d.strip_suffix('"'))
        .unwrap_or_else(|| panic!("unexpected challenge {challenge}"))
        .to_owned()
}

#[tokio::test]
async fn missing_token_gets_a_challenge_without_error() {
    let (status, challenge, seen) = send(config(), Request::new(())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge.as_deref(), Some(r#"Bearer realm="novaedge""#));
    assert!(seen.is_none());

    let mut config = config();
    config.realm = "api.example.com".into();
    let basic = Request::get("/")
        .header(AUTHORIZATION, "Basic dXNlcjpwYXNz")
        .body(())
        .unwrap();
    let (status, challenge, _) = send(config, basic).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge.as_deref(),
        Some(r#"Bearer realm="api.example.com""#)
    );
}

#[tokio::test]
async fn invalid_tokens_get_invalid_token_with_a_description() {
    let cases = [
        (token(json!({"exp": now() - 3600})), "token expired"),
        (token(json!({"nbf": now() + 3600})), "token not yet valid"),
        (
            token(json!({"iss": "https://other", "aud": "api"})),
            "issuer not allowed",
        ),
        (
            token(json!({"iss": "https://issuer", "aud": "web"})),
            "audience not allowed",
        ),
        ("not-a-token".to_owned(), "malformed token"),
        (
            token_with(Algorithm::HS256, Some("nope"), good_claims()),
            "no key matches the token's key id",
        ),
    ];
    for (token, description) in cases {
        assert_eq!(refused_with(config(), &token).await, description);
    }
    // A character in the middle of the signature (the last one carries only some bits).
    let mut tampered = token(good_claims());
    let mid = tampered.len() - 10;
    let c = tampered.as_bytes()[mid];
    tampered.replace_range(mid..=mid, if c == b'x' { "y" } else { "x" });
    assert_eq!(
        refused_with(config(), &tampered).await,
        "signature verification failed"
    );
}

#[tokio::test]
async fn a_valid_token_forwards_claims_and_replaces_client_sent_headers() {
    let mut config = config();
    config.forward_claims = [
        ("sub", "x-user"),
        ("level", "x-level"),
        ("admin", "x-admin"),
        ("groups", "x-groups"),
        ("org", "x-org"),
        ("org.id", "x-org-id"),
        ("ratio", "x-ratio"),
        ("absent", "x-absent"),
    ]
    .into_iter()
    .map(|(c, h)| ClaimToHeader::new(c, HeaderName::from_static(h)))
    .collect();
    let mut req = bearer(&token(good_claims()));
    for (name, value) in [
        ("x-user", "mallory"),
        ("x-user", "root"),
        ("x-admin", "true"),
        ("x-absent", "spoofed"),
        ("x-unrelated", "kept"),
    ] {
        req.headers_mut()
            .append(name, HeaderValue::from_static(value));
    }
    let (status, challenge, seen) = send(config, req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(challenge.is_none());
    let seen = seen.unwrap();
    let all = |name: &str| -> Vec<String> {
        seen.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(all("x-user"), ["alice"]);
    assert_eq!(all("x-level"), ["3"]);
    assert_eq!(all("x-admin"), ["true"]);
    assert_eq!(all("x-groups"), [r#"["dev","ops"]"#]);
    assert_eq!(all("x-org"), [r#"{"id":7}"#]);
    assert_eq!(all("x-org-id"), ["7"]);
    assert_eq!(all("x-ratio"), ["0.5"]);
    assert!(all("x-absent").is_empty());
    assert_eq!(all("x-unrelated"), ["kept"]);
    // The token stays by default.
    assert!(seen.headers.get(AUTHORIZATION).is_some());
    let claims = seen.claims.expect("VerifiedClaims extension");
    assert_eq!(claims.get("sub"), Some(&json!("alice")));
    assert_eq!(claims.get("org.id"), Some(&json!(7)));
}

#[tokio::test]
async fn allow_missing_passes_without_claims_and_still_strips_forwarded_headers() {
    let mut config = config();
    config.allow_missing = true;
    config.forward_claims = vec![ClaimToHeader::new("sub", HeaderName::from_static("x-user"))];
    let mut req = Request::get("/")
        .header("x-user", "mallory")
        .body(())
        .unwrap();
    // Even a claims extension put there by something before this filter is not trusted.
    req.extensions_mut()
        .insert(VerifiedClaims(Map::from_iter([("sub".into(), json!("x"))])));
    let (status, _, seen) = send(config.clone(), req).await;
    assert_eq!(status, StatusCode::OK);
    let seen = seen.unwrap();
    assert!(seen.headers.get("x-user").is_none());
    assert!(seen.claims.is_none());

    // A token that is there must be valid, even so.
    let expired = token(json!({"exp": now() - 3600}));
    assert_eq!(refused_with(config, &expired).await, "token expired");
}

#[tokio::test]
async fn remove_token_takes_it_out_of_its_location_only() {
    let good = token(good_claims());
    let cases: Vec<(TokenLocation, Request<()>)> = vec![
        (TokenLocation::AuthorizationBearer, bearer(&good)),
        (
            TokenLocation::Header {
                name: HeaderName::from_static("x-jwt"),
                prefix: Some("JWT ".into()),
            },
            Request::get("/")
                .header("x-jwt", format!("JWT {good}"))
                .header(AUTHORIZATION, "Basic abc")
                .body(())
                .unwrap(),
        ),
        (
            TokenLocation::Cookie("session".into()),
            Request::get("/")
                .header(COOKIE, format!("a=1; session={good}; b=2"))
                .body(())
                .unwrap(),
        ),
        (
            TokenLocation::Query("access_token".into()),
            Request::get(format!("/p?x=1&access_token={good}"))
                .body(())
                .unwrap(),
        ),
    ];
    for (location, req) in cases {
        let mut config = config();
        config.locations = vec![location.clone()];
        config.remove_token = true;
        let (status, _, seen) = send(config, req).await;
        assert_eq!(status, StatusCode::OK, "{location:?}");
        let seen = seen.unwrap();
        let everything = format!("{:?} {}", seen.headers, seen.uri);
        assert!(!everything.contains(&good), "{location:?}: {everything}");
        match location {
            TokenLocation::Header { .. } => {
                assert_eq!(seen.headers[AUTHORIZATION], "Basic abc");
            }
            TokenLocation::Cookie(_) => assert_eq!(seen.headers[COOKIE], "a=1; b=2"),
            TokenLocation::Query(_) => assert_eq!(seen.uri, "/p?x=1"),
            TokenLocation::AuthorizationBearer => {}
        }
    }
}

#[tokio::test]
async fn clock_skew_is_configurable() {
    let just_expired = token(json!({"iss": "https://issuer", "aud": "api", "exp": now() - 20}));
    let (status, _, _) = send(config(), bearer(&just_expired)).await;
    assert_eq!(status, StatusCode::OK, "within the default 60 s");
    let mut strict = config();
    strict.clock_skew = Duration::from_secs(5);
    assert_eq!(refused_with(strict, &just_expired).await, "token expired");

    let almost_valid = token(json!({"iss": "https://issuer", "aud": "api", "nbf": now() + 20}));
    let (status, _, _) = send(config(), bearer(&almost_valid)).await;
    assert_eq!(status, StatusCode::OK);
    let mut strict = config();
    strict.clock_skew = Duration::ZERO;
    assert_eq!(
        refused_with(strict, &almost_valid).await,
        "token not yet valid"
    );
}

#[tokio::test]
async fn required_claims_and_allowed_algorithms() {
    let mut config_exp = config();
    config_exp.required_claims = vec!["exp".into(), "sub".into()];
    let no_exp = token(json!({"iss": "https://issuer", "aud": "api", "sub": "a"}));
    assert_eq!(send(config(), bearer(&no_exp)).await.0, StatusCode::OK);
    assert_eq!(
        refused_with(config_exp.clone(), &no_exp).await,
        "required claim missing"
    );
    assert_eq!(
        send(config_exp, bearer(&token(good_claims()))).await.0,
        StatusCode::OK
    );

    let mut only_hs512 = config();
    only_hs512.algorithms = vec![Algorithm::HS512];
    assert_eq!(
        refused_with(only_hs512.clone(), &token(good_claims())).await,
        "algorithm not allowed"
    );
    let hs512 = token_with(Algorithm::HS512, Some("k1"), good_claims());
    assert_eq!(send(only_hs512, bearer(&hs512)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_configured_hmac_secret_verifies_tokens_with_or_without_kid() {
    let mut config = config();
    config.keys = KeySource::HmacSecret(SECRET.to_vec());
    for kid in [None, Some("any")] {
        let t = token_with(Algorithm::HS384, kid, good_claims());
        assert_eq!(send(config.clone(), bearer(&t)).await.0, StatusCode::OK);
    }
    // An HMAC secret is no key for an RSA algorithm: the header's alg does not pick the key type.
    let rs_header = format!(
        "{}.{}.{}",
        jwks::b64url_encode(br#"{"alg":"RS256"}"#),
        jwks::b64url_encode(good_claims().to_string().as_bytes()),
        jwks::b64url_encode(&[0; 256]),
    );
    assert_eq!(
        refused_with(config, &rs_header).await,
        "no key fits the token's algorithm"
    );
}

#[tokio::test]
async fn the_inner_error_passes_through_unchanged() {
    let upstream =
        service_fn(|_req: Request<()>| async { Err::<Response<()>, _>("upstream down") });
    let service = JwtLayer::new(config()).unwrap().layer(upstream);
    let err = service
        .oneshot(bearer(&token(good_claims())))
        .await
        .unwrap_err();
    assert_eq!(err, "upstream down");
}

/// A self-signed CA certificate in PEM, made by rcgen.
fn test_ca() -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem().into_bytes()
}

#[test]
fn tls_roots_come_from_pem() {
    assert!(
        super::tls_client_config(b"").unwrap_err().to_string()
            == "keys.url.ca: no CERTIFICATE block in the PEM"
    );
    let err = super::tls_client_config(
        b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("keys.url.ca: "), "{err}");
    let mut two = test_ca();
    two.extend(test_ca());
    assert_eq!(
        super::tls_client_config(&two).unwrap().alpn_protocols,
        [b"http/1.1"]
    );
}

#[test]
fn configuration_errors_name_the_field() {
    let error = |change: &dyn Fn(&mut JwtConfig)| {
        let mut config = config();
        change(&mut config);
        JwtLayer::new(config).unwrap_err().to_string()
    };
    type Change = Box<dyn Fn(&mut JwtConfig)>;
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(|c| {
                c.keys = KeySource::Url {
                    url: "http://idp/jwks".parse().unwrap(),
                    refresh: RefreshPolicy::default(),
                    tls: Some(super::tls_client_config(&test_ca()).unwrap()),
                }
            }),
            "keys.url: http://idp/jwks: a TLS configuration is given for an http:// URL",
        ),
        (
            Box::new(|c| c.keys = KeySource::url("ftp://idp/jwks".parse().unwrap())),
            "keys.url: ftp://idp/jwks: must be an http:// or https:// URL",
        ),
        (
            Box::new(|c| c.keys = KeySource::url("http://u:p@idp/jwks".parse().unwrap())),
            "keys.url: credentials in the URL are not supported",
        ),
        (
            Box::new(|c| c.keys = KeySource::url("/jwks".parse().unwrap())),
            "keys.url: /jwks: must be an http:// or https:// URL",
        ),
        (
            Box::new(|c| {
                c.keys = KeySource::Url {
                    url: "http://idp/jwks".parse().unwrap(),
                    refresh: RefreshPolicy {
                        interval: Duration::ZERO,
                        ..RefreshPolicy::default()
                    },
                    tls: None,
                }
            }),
            "keys.url.refresh.interval: must be greater than zero",
        ),
        (
            Box::new(|c| c.keys = KeySource::file("")),
            "keys.file.path: empty",
        ),
        (
            Box::new(|c| c.keys = KeySource::HmacSecret(Vec::new())),
            "keys.hmac_secret: empty",
        ),
        (
            Box::new(|c| c.keys = KeySource::Jwks("{".into())),
            "keys.jwks: not valid JSON",
        ),
        (
            Box::new(|c| c.keys = KeySource::Jwks(r#"{"keys":[{"kty":"EC"}]}"#.into())),
            "keys.jwks: no usable signature key (of 1 keys)",
        ),
        (Box::new(|c| c.algorithms.clear()), "algorithms: empty"),
        (
            Box::new(|c| c.issuers.push(String::new())),
            "issuers[1]: empty",
        ),
        (Box::new(|c| c.locations.clear()), "locations: empty"),
        (
            Box::new(|c| c.locations.push(TokenLocation::Cookie(String::new()))),
            "locations[1]: empty name",
        ),
        (
            Box::new(|c| {
                c.forward_claims = vec![ClaimToHeader::new("", HeaderName::from_static("x-a"))]
            }),
            "forward_claims[0].claim: empty claim name",
        ),
        (
            Box::new(|c| c.realm = "a\"b".into()),
            "realm: must be printable ASCII",
        ),
        (
            Box::new(|c| c.max_keys_without_kid = 0),
            "max_keys_without_kid: must be at least 1",
        ),
    ];
    for (change, want) in cases {
        let got = error(&*change);
        assert!(
            got.starts_with(want),
            "{got:?} does not start with {want:?}"
        );
    }
}

#[test]
fn debug_output_shows_no_secret() {
    let secret = KeySource::HmacSecret(b"hunter2-hunter2".to_vec());
    assert!(!format!("{secret:?}").contains("hunter2"));
    let inline = KeySource::Jwks(jwks());
    assert!(!format!("{inline:?}").contains(&jwks::b64url_encode(SECRET)));
    let layer = JwtLayer::new(config()).unwrap();
    let debug = format!("{layer:?}");
    assert!(!debug.contains(&jwks::b64url_encode(SECRET)));
    assert!(!debug.contains("unit-test-secret"));
}
