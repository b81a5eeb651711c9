//! The correlation id: `x-request-id`, kept from the client when it is a sane value, otherwise
//! made up, so that one id ties the client's request, the upstream's log, our access log line and
//! our trace together.

use http::HeaderMap;
use http::header::{Entry, HeaderName, HeaderValue};

/// The header that carries the request id, to the upstream and back to the client.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client id kept. UUIDs (36), W3C trace ids (32) and the ids of common proxies and
/// frameworks fit well; longer values are more likely junk or an attempt to bloat logs.
pub(crate) const MAX_LEN: usize = 128;

/// Whether a client-supplied id is kept: 1 to [`MAX_LEN`] bytes, all visible ASCII but `"` and
/// `\` (no spaces, no control characters: nothing a log line would have to escape).
fn is_sane(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_LEN
        && bytes
            .iter()
            .all(|&b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
}

/// A request's id: a sane client value or a made-up one, so that logs write it as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestId(HeaderValue);

impl RequestId {
    /// `value`, if it is a sane id.
    #[cfg(test)]
    pub(crate) fn sane(value: HeaderValue) -> Option<Self> {
        is_sane(&value).then_some(Self(value))
    }

    /// Visible ASCII but `"` and `\`.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    pub(crate) fn header(&self) -> &HeaderValue {
        &self.0
    }

    pub(crate) fn into_header(self) -> HeaderValue {
        self.0
    }
}

/// The request's id: the client's single sane `x-request-id`, or a new one, which then replaces
/// whatever the client sent (several values, or an invalid one). One lookup either way.
///
/// The id is marked sensitive: HTTP/2 sends it as a literal never indexed (RFC 7541 section
/// 6.2.3), to the client and to an HTTP/2 upstream. A value that differs for every request
/// would only evict useful entries from HPACK's dynamic table, and the encoder would compare
/// each new id with every id already there, for nothing.
pub(crate) fn ensure(headers: &mut HeaderMap) -> RequestId {
    match headers.entry(REQUEST_ID_HEADER) {
        Entry::Occupied(mut entry) => {
            let mut values = entry.iter();
            let kept = matches!(
                (values.next(), values.next()),
                (Some(value), None) if is_sane(value)
            );
            if kept {
                let value = entry.get_mut();
                value.set_sensitive(true);
                return RequestId(value.clone());
            }
            let id = generate();
            entry.insert(id.clone());
            RequestId(id)
        }
        Entry::Vacant(entry) => RequestId(entry.insert(generate()).clone()),
    }
}

/// A random version 4 UUID (122 random bits) in its usual 36-character form: the form most log
/// tools and upstream frameworks already recognise.
///
/// The 32 digits are written two at a time from a table, the dashes put between the groups at
/// their fixed places: no shifts of the `u128`, no test per byte for a dash. The value owns its
/// bytes (`Bytes::from_owner`), so that the clones that go to the upstream and back to the
/// client share them instead of each promoting a copied buffer to a shared one.
#[allow(
    clippy::expect_used,
    reason = "hex digits and dashes are always a valid header value"
)]
pub(crate) fn generate() -> HeaderValue {
    let mut bits: u128 = rand::random();
    // Version 4, variant 10 (RFC 9562 section 5.4).
    bits = (bits & !(0xf << 76)) | (0x4 << 76);
    bits = (bits & !(0x3 << 62)) | (0x2 << 62);
    let mut id = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(uuid_text(bits)))
        .expect("hex digits and dashes are a valid header value");
    id.set_sensitive(true);
    id
}

/// `bits` as a UUID's 8-4-4-4-12 lowercase hex digits.
fn uuid_text(bits: u128) -> [u8; 36] {
    let mut digits = [0u8; 32];
    for (pair, byte) in digits.chunks_exact_mut(2).zip(bits.to_be_bytes()) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
    }
    let mut out = [b'-'; 36];
    out[..8].copy_from_slice(&digits[..8]);
    out[9..13].copy_from_slice(&digits[8..12]);
    out[14..18].copy_from_slice(&digits[12..16]);
    out[19..23].copy_from_slice(&digits[16..20]);
    out[24..].copy_from_slice(&digits[20..]);
    out
}

/// Every byte's two lowercase hex digits.
const HEX_PAIRS: [[u8; 2]; 256] = {
    let mut table = [[0; 2]; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = [HEX[b >> 4], HEX[b & 0xf]];
        b += 1;
    }
    table
};

pub(crate) const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_uuid_v4_and_differ() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        let s = a.to_str().unwrap();
        assert_eq!(s.len(), 36);
        let groups: Vec<&str> = s.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(groups[2].starts_with('4'), "{s}");
        assert!(matches!(&groups[3][..1], "8" | "9" | "a" | "b"), "{s}");
        assert!(is_sane(&a));
    }

    #[test]
    fn uuid_text_is_the_bits_in_order() {
        for bits in [0, u128::MAX, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210] {
            let text = uuid_text(bits);
            let hex = format!("{bits:032x}");
            let want = format!(
                "{}-{}-{}-{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            );
            assert_eq!(std::str::from_utf8(&text).unwrap(), want);
        }
    }

    #[test]
    fn keeps_a_sane_id_and_replaces_others() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID_HEADER, HeaderValue::from_static("abc-123"));
        let id = ensure(&mut headers);
        assert_eq!(id.as_bytes(), b"abc-123");
        // Never indexed by HPACK, whether kept or made up.
        assert!(id.header().is_sensitive());
        assert!(headers[REQUEST_ID_HEADER].is_sensitive());
        assert!(ensure(&mut HeaderMap::new()).header().is_sensitive());

        for bad in ["", "has space", "tab\there", "quo\"te", "back\\slash"] {
            let mut headers = HeaderMap::new();
            headers.insert(REQUEST_ID_HEADER, HeaderValue::from_str(bad).unwrap());
            let id = ensure(&mut headers);
            assert_ne!(id.as_bytes(), bad.as_bytes());
            assert_eq!(headers.get(REQUEST_ID_HEADER).unwrap(), id.header());
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            REQUEST_ID_HEADER,
            HeaderValue::from_str(&"x".repeat(MAX_LEN + 1)).unwrap(),
        );
        assert_eq!(ensure(&mut headers).as_bytes().len(), 36);
        let mut headers = HeaderMap::new();
        headers.insert(
            REQUEST_ID_HEADER,
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert_eq!(ensure(&mut headers).as_bytes().len(), 36);

        // Two ids: which one would the upstream use? Neither.
        let mut headers = HeaderMap::new();
        headers.append(REQUEST_ID_HEADER, HeaderValue::from_static("one"));
        headers.append(REQUEST_ID_HEADER, HeaderValue::from_static("two"));
        let id = ensure(&mut headers);
        assert_eq!(headers.get_all(REQUEST_ID_HEADER).iter().count(), 1);
        assert_eq!(headers.get(REQUEST_ID_HEADER).unwrap(), id.header());

        let mut headers = HeaderMap::new();
        let id = ensure(&mut headers);
        assert_eq!(headers.get(REQUEST_ID_HEADER).unwrap(), id.header());
    }
}
