//! Token verification: the JOSE header (RFC 7515 §4), the signature with the keys chosen for
//! it, then the registered claims (RFC 7519 §4.1): `exp`, `nbf`, `iss`, `aud`, and the claims
//! the configuration requires. And what is done with the claims once they are trusted: headers
//! for the upstream.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::jwks::{KeySet, NoKey, b64url_decode};

/// Why a request was refused. The descriptions go to the client in `error_description` and to
/// the logs; none of them carries anything taken from the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    Missing,
    Malformed,
    AlgNone,
    UnsupportedAlg,
    AlgNotAllowed,
    UnknownKid,
    KeyDoesNotFit,
    NoKeyFits,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    MissingClaim,
    KeysUnavailable,
}

impl Rejection {
    /// The `error_description` (RFC 6750 §3): printable ASCII without `"` or `\`.
    pub(crate) fn description(self) -> &'static str {
        match self {
            Rejection::Missing => "token missing",
            Rejection::Malformed => "malformed token",
            Rejection::AlgNone => "unsigned tokens (alg none) are not accepted",
            Rejection::UnsupportedAlg => "unsupported algorithm",
            Rejection::AlgNotAllowed => "algorithm not allowed",
            Rejection::UnknownKid => "no key matches the token's key id",
            Rejection::KeyDoesNotFit => "the key named by the token does not fit its algorithm",
            Rejection::NoKeyFits => "no key fits the token's algorithm",
            Rejection::BadSignature => "signature verification failed",
            Rejection::Expired => "token expired",
            Rejection::NotYetValid => "token not yet valid",
            Rejection::WrongIssuer => "issuer not allowed",
            Rejection::WrongAudience => "audience not allowed",
            Rejection::MissingClaim => "required claim missing",
            Rejection::KeysUnavailable => "verification keys unavailable",
        }
    }
}

impl From<NoKey> for Rejection {
    fn from(no: NoKey) -> Self {
        match no {
            NoKey::UnknownKid => Rejection::UnknownKid,
            NoKey::KidDoesNotFit => Rejection::KeyDoesNotFit,
            NoKey::NoneFits => Rejection::NoKeyFits,
        }
    }
}

/// What the JOSE header says, read before any key is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenHeader {
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<String>,
}

/// Reads the header of a compact JWS. JWE (five parts), `alg: none`, unknown algorithms and
/// `crit` extensions (none of which this verifier understands, RFC 7515 §4.1.11) are refused.
pub(crate) fn parse_header(token: &str) -> Result<TokenHeader, Rejection> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Rejection::Malformed);
    };
    if header.is_empty() || payload.is_empty() {
        return Err(Rejection::Malformed);
    }
    let json = b64url_decode(header).ok_or(Rejection::Malformed)?;
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&json) else {
        return Err(Rejection::Malformed);
    };
    let alg = match fields.get("alg") {
        Some(Value::String(alg)) if alg.eq_ignore_ascii_case("none") => {
            return Err(Rejection::AlgNone);
        }
        Some(Value::String(alg)) => alg
            .parse::<Algorithm>()
            .map_err(|_| Rejection::UnsupportedAlg)?,
        _ => return Err(Rejection::Malformed),
    };
    if fields.contains_key("crit") {
        return Err(Rejection::Malformed);
    }
    let kid = match fields.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(Rejection::Malformed),
    };
    Ok(TokenHeader { alg, kid })
}

/// Checks the signature with the candidate keys, in order; the first key that verifies wins.
pub(crate) fn verify_signature(
    token: &str,
    header: &TokenHeader,
    keys: &KeySet,
    max_kidless: usize,
) -> Result<Map<String, Value>, Rejection> {
    let candidates = keys.candidates(header.alg, header.kid.as_deref(), max_kidless)?;
    // Only the signature is checked here: the claims are checked by `check_claims`, with the
    // configured skew and without jsonwebtoken's own defaults (which require `exp`).
    let mut validation = Validation::new(header.alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    for key in candidates {
        match jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation) {
            Ok(data) => return Ok(data.claims),
            Err(err) => match err.kind() {
                ErrorKind::InvalidToken
                | ErrorKind::Base64(_)
                | ErrorKind::Json(_)
                | ErrorKind::Utf8(_)
                | ErrorKind::InvalidClaimFormat(_) => return Err(Rejection::Malformed),
                // A wrong key, or a key the crypto backend refuses: try the next one.
                _ => continue,
            },
        }
    }
    Err(Rejection::BadSignature)
}

/// The claim checks, configured.
#[derive(Debug, Clone)]
pub(crate) struct ClaimRules {
    pub(crate) issuers: Vec<String>,
    pub(crate) audiences: Vec<String>,
    pub(crate) required: Vec<String>,
    pub(crate) clock_skew: Duration,
}

/// Checks the claims of a token whose signature has been verified, at `now`.
pub(crate) fn check_claims(
    claims: &Map<String, Value>,
    rules: &ClaimRules,
    now: SystemTime,
) -> Result<(), Rejection> {
    let now = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let skew = rules.clock_skew.as_secs_f64();
    let numeric = |name: &str| -> Result<Option<f64>, Rejection> {
        match claims.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value.as_f64().map(Some).ok_or(Rejection::Malformed),
        }
    };
    for name in &rules.required {
        if claims.get(name).is_none_or(Value::is_null) {
            return Err(Rejection::MissingClaim);
        }
    }
    // RFC 7519 §4.1.4: the token must not be accepted on or after `exp`.
    if numeric("exp")?.is_some_and(|exp| now >= exp + skew) {
        return Err(Rejection::Expired);
    }
    if numeric("nbf")?.is_some_and(|nbf| now + skew < nbf) {
        return Err(Rejection::NotYetValid);
    }
    if !rules.issuers.is_empty() {
        let ok =
            matches!(claims.get("iss"), Some(Value::String(iss)) if rules.issuers.contains(iss));
        if !ok {
            return Err(Rejection::WrongIssuer);
        }
    }
    if !rules.audiences.is_empty() {
        let allowed = |aud: &Value| {
            aud.as_str()
                .is_some_and(|aud| rules.audiences.iter().any(|a| a == aud))
        };
        let ok = match claims.get("aud") {
            Some(aud @ Value::String(_)) => allowed(aud),
            Some(Value::Array(auds)) => auds.iter().any(allowed),
            _ => false,
        };
        if !ok {
            return Err(Rejection::WrongAudience);
        }
    }
    Ok(())
}

/// Finds a claim by name, or else, for a name with dots, by path into nested objects
/// (`"org.id"`), like Envoy's `claim_to_headers`.
pub(crate) fn lookup<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut parts = name.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// The header value a claim is forwarded as: strings as they are, numbers and booleans as
/// text, anything else as compact JSON. `None` for a value no header can carry (control
/// characters), and for `null`.
pub(crate) fn header_value(value: &Value) -> Option<HeaderValue> {
    let text = match value {
        Value::Null => return None,
        Value::String(s) => return HeaderValue::from_bytes(s.as_bytes()).ok(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(_) | Value::Object(_) => value.to_string(),
    };
    HeaderValue::from_bytes(text.as_bytes()).ok()
}

/// Removes every client-sent copy of the forwarded headers, so that only values this filter
/// derived from a verified token reach the upstream.
pub(crate) fn strip_forwarded(headers: &mut HeaderMap, forward: &[(String, HeaderName)]) {
    for (_, header) in forward {
        headers.remove(header);
    }
}

/// Adds the forwarded claims as headers (after `strip_forwarded`).
pub(crate) fn forward_claims(
    headers: &mut HeaderMap,
    claims: &Map<String, Value>,
    forward: &[(String, HeaderName)],
) {
    for (claim, header) in forward {
        match lookup(claims, claim).map(header_value) {
            Some(Some(value)) => {
                headers.append(header.clone(), value);
            }
            Some(None) => {
                tracing::debug!(claim = %claim, "claim not forwarded: no header can carry its value");
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn b64(text: &str) -> String {
        crate::jwt::jwks::b64url_encode(text.as_bytes())
    }

    fn token_with_header(header: &str) -> String {
        format!("{}.{}.sig", b64(header), b64("{}"))
    }

    #[test]
    fn header_parsing_refuses_what_it_must() {
        let ok = parse_header(&token_with_header(r#"{"alg":"ES256","kid":"k1"}"#)).unwrap();
        assert_eq!(ok.alg, Algorithm::ES256);
        assert_eq!(ok.kid.as_deref(), Some("k1"));
        let cases = [
            (r#"{"alg":"none"}"#, Rejection::AlgNone),
            (r#"{"alg":"NoNe"}"#, Rejection::AlgNone),
            (r#"{"alg":"HS999"}"#, Rejection::UnsupportedAlg),
            (r#"{"alg":"RSA-OAEP"}"#, Rejection::UnsupportedAlg),
            (r#"{"kid":"k"}"#, Rejection::Malformed),
            (r#"{"alg":256}"#, Rejection::Malformed),
            (r#"{"alg":"RS256","kid":7}"#, Rejection::Malformed),
            (r#"{"alg":"RS256","crit":["exp"]}"#, Rejection::Malformed),
            (r#"["alg"]"#, Rejection::Malformed),
            ("not json", Rejection::Malformed),
        ];
        for (header, want) in cases {
            assert_eq!(
                parse_header(&token_with_header(header)),
                Err(want),
                "{header}"
            );
        }
        for token in ["", "abc", "a.b", "a.b.c.d.e", ".b.c", "a..c", "!!!.b.c"] {
            assert_eq!(parse_header(token), Err(Rejection::Malformed), "{token}");
        }
    }

    fn rules() -> ClaimRules {
        ClaimRules {
            issuers: vec!["https://a".into(), "https://b".into()],
            audiences: vec!["api".into(), "web".into()],
            required: vec![],
            clock_skew: Duration::from_secs(60),
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn exp_and_nbf_with_clock_skew() {
        let c = obj(json!({"iss": "https://a", "aud": "api", "exp": 1000, "nbf": 500}));
        let r = rules();
        assert_eq!(check_claims(&c, &r, at(1059)), Ok(()));
        assert_eq!(check_claims(&c, &r, at(1060)), Err(Rejection::Expired));
        assert_eq!(check_claims(&c, &r, at(440)), Ok(()));
        assert_eq!(check_claims(&c, &r, at(439)), Err(Rejection::NotYetValid));
        let strict = ClaimRules {
            clock_skew: Duration::ZERO,
            ..rules()
        };
        assert_eq!(check_claims(&c, &strict, at(1000)), Err(Rejection::Expired));
        assert_eq!(
            check_claims(&c, &strict, at(499)),
            Err(Rejection::NotYetValid)
        );
        let bad = obj(json!({"iss": "https://a", "aud": "api", "exp": "soon"}));
        assert_eq!(check_claims(&bad, &r, at(0)), Err(Rejection::Malformed));
    }

    #[test]
    fn issuer_and_audience_lists() {
        let r = rules();
        let check = |v: Value| check_claims(&obj(v), &r, at(0));
        assert_eq!(check(json!({"iss": "https://b", "aud": "web"})), Ok(()));
        assert_eq!(
            check(json!({"iss": "https://b", "aud": ["x", "api"]})),
            Ok(())
        );
        assert_eq!(
            check(json!({"iss": "https://c", "aud": "api"})),
            Err(Rejection::WrongIssuer)
        );
        assert_eq!(check(json!({"aud": "api"})), Err(Rejection::WrongIssuer));
        assert_eq!(
            check(json!({"iss": "https://a", "aud": ["x", "y"]})),
            Err(Rejection::WrongAudience)
        );
        assert_eq!(
            check(json!({"iss": "https://a"})),
            Err(Rejection::WrongAudience)
        );
        let open = ClaimRules {
            issuers: vec![],
            audiences: vec![],
            ..rules()
        };
        assert_eq!(check_claims(&obj(json!({})), &open, at(0)), Ok(()));
    }

    #[test]
    fn required_claims_must_be_present_and_not_null() {
        let r = ClaimRules {
            issuers: vec![],
            audiences: vec![],
            required: vec!["exp".into(), "tenant".into()],
            ..rules()
        };
        let check = |v: Value| check_claims(&obj(v), &r, at(0));
        assert_eq!(check(json!({"exp": 10, "tenant": "t"})), Ok(()));
        assert_eq!(check(json!({"tenant": "t"})), Err(Rejection::MissingClaim));
        assert_eq!(
            check(json!({"exp": 10, "tenant": null})),
            Err(Rejection::MissingClaim)
        );
    }

    #[test]
    fn claim_values_as_header_values() {
        let hv = |v: Value| header_value(&v).map(|h| h.as_bytes().to_vec());
        assert_eq!(hv(json!("alice")), Some(b"alice".to_vec()));
        assert_eq!(hv(json!("é")), Some("é".as_bytes().to_vec()));
        assert_eq!(hv(json!(42)), Some(b"42".to_vec()));
        assert_eq!(hv(json!(1.5)), Some(b"1.5".to_vec()));
        assert_eq!(hv(json!(true)), Some(b"true".to_vec()));
        assert_eq!(hv(json!(["a", "b"])), Some(br#"["a","b"]"#.to_vec()));
        assert_eq!(hv(json!({"id": 7})), Some(br#"{"id":7}"#.to_vec()));
        assert_eq!(hv(json!(null)), None);
        assert_eq!(hv(json!("a\r\nx-admin: 1")), None);
    }

    #[test]
    fn forwarding_replaces_client_sent_headers() {
        let claims = obj(json!({
            "sub": "alice", "org": {"id": 7}, "a.b": "flat", "bad": "x\ny"
        }));
        let forward: Vec<(String, HeaderName)> = [
            ("sub", "x-user"),
            ("org.id", "x-org"),
            ("a.b", "x-ab"),
            ("absent", "x-absent"),
            ("bad", "x-bad"),
        ]
        .into_iter()
        .map(|(c, h)| (c.to_owned(), HeaderName::from_static(h)))
        .collect();
        let mut headers = HeaderMap::new();
        headers.append("x-user", HeaderValue::from_static("mallory"));
        headers.append("x-user", HeaderValue::from_static("root"));
        headers.append("x-absent", HeaderValue::from_static("spoof"));
        headers.append("x-bad", HeaderValue::from_static("spoof"));
        headers.append("x-other", HeaderValue::from_static("kept"));
        strip_forwarded(&mut headers, &forward);
        forward_claims(&mut headers, &claims, &forward);
        let all = |name: &str| -> Vec<&str> {
            headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect()
        };
        assert_eq!(all("x-user"), ["alice"]);
        assert_eq!(all("x-org"), ["7"]);
        assert_eq!(all("x-ab"), ["flat"]);
        assert!(all("x-absent").is_empty());
        assert!(all("x-bad").is_empty());
        assert_eq!(all("x-other"), ["kept"]);
    }

    #[test]
    fn descriptions_are_quoted_string_safe() {
        use Rejection::*;
        for r in [
            Missing,
            Malformed,
            AlgNone,
            UnsupportedAlg,
            AlgNotAllowed,
            UnknownKid,
            KeyDoesNotFit,
            NoKeyFits,
            BadSignature,
            Expired,
            NotYetValid,
            WrongIssuer,
            WrongAudience,
            MissingClaim,
            KeysUnavailable,
        ] {
            let d = r.description();
            // RFC 6750 §3: %x20-21 / %x23-5B / %x5D-7E.
            assert!(
                d.bytes()
                    .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\'),
                "{d}"
            );
        }
    }
}
