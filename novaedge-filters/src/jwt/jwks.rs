//! JSON Web Key Sets (RFC 7517) turned into verification keys, and the choice of keys for a
//! token.
//!
//! Each key remembers its family (RSA, EC, Ed, HMAC), its curve and its `alg` if the JWK names
//! one, and is only ever used for an algorithm of that family: an RSA or EC public key is never
//! an HMAC secret (the "algorithm confusion" attack). Keys this verifier cannot use (encryption
//! keys, unknown types, P-521, Ed448) are skipped, not fatal: a provider's set may hold them.

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde_json::Value;

/// A JWKS that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// Not JSON.
    #[error("not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// JSON, but no `keys` array.
    #[error("no \"keys\" array")]
    NoKeys,
    /// No key in the set can verify a signature.
    #[error("no usable signature key (of {total} keys)")]
    NoUsableKey {
        /// How many keys the set held.
        total: usize,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
    Ed25519,
}

/// One verification key.
#[derive(Clone, Debug)]
pub(crate) struct Key {
    kid: Option<String>,
    family: AlgorithmFamily,
    /// The JWK's `alg`, if it names one: then only that algorithm.
    alg: Option<Algorithm>,
    curve: Option<Curve>,
    pub(crate) decoding: DecodingKey,
}

impl Key {
    pub(crate) fn hmac_secret(secret: &[u8]) -> Self {
        Key {
            kid: None,
            family: AlgorithmFamily::Hmac,
            alg: None,
            curve: None,
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// Whether this key may verify a signature made with `alg`. The key type must be of the
    /// algorithm's family, which is what stops algorithm confusion.
    fn fits(&self, alg: Algorithm) -> bool {
        if alg.family() != self.family || self.alg.is_some_and(|a| a != alg) {
            return false;
        }
        match alg {
            Algorithm::ES256 => self.curve == Some(Curve::P256),
            Algorithm::ES384 => self.curve == Some(Curve::P384),
            Algorithm::EdDSA => self.curve == Some(Curve::Ed25519),
            _ => true,
        }
    }
}

/// A set of verification keys.
#[derive(Clone, Debug, Default)]
pub(crate) struct KeySet {
    keys: Vec<Key>,
}

/// Why no key could be chosen for a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoKey {
    /// The token names a `kid` that is not in the set (and no key without `kid` fits).
    UnknownKid,
    /// Keys of that `kid` exist, but none fits the token's algorithm.
    KidDoesNotFit,
    /// The token names no `kid`, and no key fits its algorithm.
    NoneFits,
}

impl KeySet {
    pub(crate) fn new(keys: Vec<Key>) -> Self {
        KeySet { keys }
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Parses a JWKS document, skipping (and logging) keys that cannot verify signatures.
    pub(crate) fn parse(json: &[u8]) -> Result<Self, JwksError> {
        let doc: Value = serde_json::from_slice(json).map_err(JwksError::Json)?;
        let entries = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwksError::NoKeys)?;
        let mut keys = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            match parse_key(entry) {
                Ok(key) => keys.push(key),
                Err(reason) => {
                    tracing::debug!(index, reason, "JWKS: key skipped");
                }
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey {
                total: entries.len(),
            });
        }
        Ok(KeySet { keys })
    }

    /// The keys to try for a token, in order. Keys without a `kid` are candidates for any
    /// token; keys with one only for a token naming it. At most `max_kidless` keys without a
    /// `kid` are tried, so that a token cannot make us try a whole large set.
    pub(crate) fn candidates(
        &self,
        alg: Algorithm,
        kid: Option<&str>,
        max_kidless: usize,
    ) -> Result<Vec<&Key>, NoKey> {
        let mut named = 0usize;
        let mut out = Vec::new();
        if let Some(kid) = kid {
            for key in self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid)) {
                named += 1;
                if key.fits(alg) {
                    out.push(key);
                }
            }
        }
        let kidless = self
            .keys
            .iter()
            .filter(|k| (kid.is_none() || k.kid.is_none()) && k.fits(alg))
            .take(max_kidless);
        out.extend(kidless);
        if !out.is_empty() {
            return Ok(out);
        }
        Err(match (kid, named) {
            (Some(_), 0) => NoKey::UnknownKid,
            (Some(_), _) => NoKey::KidDoesNotFit,
            (None, _) => NoKey::NoneFits,
        })
    }
}

fn parse_key(jwk: &Value) -> Result<Key, &'static str> {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    let kid = match jwk.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err("kid is not a string"),
    };
    match field("use") {
        None | Some("sig") => {}
        Some(_) => return Err("use is not sig"),
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verifies {
            return Err("key_ops does not include verify");
        }
    }
    let alg = match jwk.get("alg") {
        None | Some(Value::Null) => None,
        Some(Value::String(alg)) => Some(
            alg.parse::<Algorithm>()
                .map_err(|_| "alg is not a supported signature algorithm")?,
        ),
        Some(_) => return Err("alg is not a string"),
    };
    let b64 = |name: &'static str| -> Result<Vec<u8>, &'static str> {
        let text = field(name).ok_or("a key parameter is missing")?;
        b64url_decode(text).ok_or("a key parameter is not base64url")
    };
    let (family, curve, decoding) = match field("kty") {
        Some("RSA") => {
            let n = b64("n")?;
            let e = b64("e")?;
            // 2048 bits is the floor of RFC 7518 §3.3 for RS*/PS*.
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < 2048 {
                return Err("RSA modulus shorter than 2048 bits");
            }
            let key = DecodingKey::from_rsa_raw_components(&n, &e);
            (AlgorithmFamily::Rsa, None, key)
        }
        Some("EC") => {
            let (curve, len) = match field("crv") {
                Some("P-256") => (Curve::P256, 32),
                Some("P-384") => (Curve::P384, 48),
                _ => return Err("unsupported EC curve"),
            };
            let (x, y) = (b64("x")?, b64("y")?);
            if x.len() != len || y.len() != len {
                return Err("EC coordinates of the wrong length");
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let key = DecodingKey::from_ec_der(&point);
            (AlgorithmFamily::Ec, Some(curve), key)
        }
        Some("OKP") => {
            if field("crv") != Some("Ed25519") {
                return Err("unsupported OKP curve");
            }
            let x = b64("x")?;
            if x.len() != 32 {
                return Err("Ed25519 key of the wrong length");
            }
            (
                AlgorithmFamily::Ed,
                Some(Curve::Ed25519),
                DecodingKey::from_ed_der(&x),
            )
        }
        Some("oct") => {
            let k = b64("k")?;
            if k.is_empty() {
                return Err("empty HMAC key");
            }
            (AlgorithmFamily::Hmac, None, DecodingKey::from_secret(&k))
        }
        _ => return Err("unsupported kty"),
    };
    if alg.is_some_and(|alg| alg.family() != family) {
        return Err("alg does not fit kty");
    }
    Ok(Key {
        kid,
        family,
        alg,
        curve,
        decoding,
    })
}

/// Decodes base64url without padding (RFC 7515 §2). Padding is tolerated at the end, since
/// some JWKS publishers add it; anything else outside the alphabet is refused.
pub(crate) fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for byte in text.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Encodes base64url without padding; the tests need it to make tokens and keys.
#[cfg(test)]
pub(crate) fn b64url_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(keys: Value) -> Result<KeySet, JwksError> {
        KeySet::parse(json!({ "keys": keys }).to_string().as_bytes())
    }

    fn b64(bytes: &[u8]) -> String {
        b64url_encode(bytes)
    }

    fn rsa(kid: &str) -> Value {
        json!({"kty": "RSA", "kid": kid, "n": b64(&[0xC1; 256]), "e": "AQAB"})
    }

    #[test]
    fn base64url_round_trips_and_refuses_other_alphabets() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(b64url_decode(&b64(&data)).unwrap(), data);
        }
        assert_eq!(b64url_decode("AQAB==").unwrap(), [1, 0, 1]);
        assert!(b64url_decode("a+b/").is_none());
        assert!(b64url_decode("abcde").is_none());
    }

    #[test]
    fn unusable_keys_are_skipped_and_an_empty_result_is_an_error() {
        let keys = set(json!([
            {"kty": "RSA", "use": "enc", "n": b64(&[0xC1; 256]), "e": "AQAB"},
            {"kty": "RSA", "n": b64(&[0xC1; 128]), "e": "AQAB"},
            {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
            {"kty": "OKP", "crv": "Ed448", "x": "AA"},
            {"kty": "oct", "k": ""},
            {"kty": "RSA", "alg": "RSA-OAEP", "n": b64(&[0xC1; 256]), "e": "AQAB"},
            {"kty": "RSA", "alg": "ES256", "n": b64(&[0xC1; 256]), "e": "AQAB"},
            {"kty": "RSA", "key_ops": ["encrypt"], "n": b64(&[0xC1; 256]), "e": "AQAB"},
            {"kty": "XYZ"},
        ]));
        assert!(matches!(keys, Err(JwksError::NoUsableKey { total: 9 })));
        let keys = set(json!([{"kty": "XYZ"}, rsa("a")])).unwrap();
        assert_eq!(keys.len(), 1);
        assert!(matches!(
            KeySet::parse(b"{\"kid\": 1}"),
            Err(JwksError::NoKeys)
        ));
        assert!(matches!(KeySet::parse(b"{"), Err(JwksError::Json(_))));
    }

    #[test]
    fn a_key_is_only_a_candidate_for_its_own_family() {
        let keys = set(json!([
            rsa("r"),
            {"kty": "EC", "kid": "e", "crv": "P-256", "x": b64(&[1; 32]), "y": b64(&[2; 32])},
            {"kty": "oct", "kid": "h", "k": b64(b"secret")},
        ]))
        .unwrap();
        // The RSA key's kid with an HMAC algorithm: confusion, no candidate.
        assert_eq!(
            keys.candidates(Algorithm::HS256, Some("r"), 4).unwrap_err(),
            NoKey::KidDoesNotFit
        );
        // A P-256 key is no ES384 key.
        assert_eq!(
            keys.candidates(Algorithm::ES384, Some("e"), 4).unwrap_err(),
            NoKey::KidDoesNotFit
        );
        assert_eq!(
            keys.candidates(Algorithm::RS256, Some("zz"), 4)
                .unwrap_err(),
            NoKey::UnknownKid
        );
        assert_eq!(
            keys.candidates(Algorithm::EdDSA, None, 4).unwrap_err(),
            NoKey::NoneFits
        );
        assert_eq!(
            keys.candidates(Algorithm::PS512, Some("r"), 4)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(keys.candidates(Algorithm::HS384, None, 4).unwrap().len(), 1);
    }

    #[test]
    fn kid_less_candidates_are_bounded() {
        let many: Vec<Value> = (0..10)
            .map(|_| json!({"kty": "RSA", "n": b64(&[0xC1; 256]), "e": "AQAB"}))
            .collect();
        let keys = set(Value::Array(many)).unwrap();
        assert_eq!(keys.candidates(Algorithm::RS256, None, 3).unwrap().len(), 3);
        // Keys without kid are candidates for a token that names one.
        assert_eq!(
            keys.candidates(Algorithm::RS256, Some("x"), 2)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn a_jwk_alg_restricts_the_key_to_that_algorithm() {
        let mut key = rsa("r");
        key["alg"] = json!("RS256");
        let keys = set(json!([key])).unwrap();
        assert!(keys.candidates(Algorithm::RS256, Some("r"), 4).is_ok());
        assert_eq!(
            keys.candidates(Algorithm::PS256, Some("r"), 4).unwrap_err(),
            NoKey::KidDoesNotFit
        );
    }
}
