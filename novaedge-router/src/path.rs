//! Request path normalisation: the one canonical form that routes are matched
//! against and that should be forwarded upstream.
//!
//! A proxy that routes on one reading of a path while the backend acts on
//! another lets a request slip past a route (and the policy attached to it):
//! `/public/%2e%2e/admin` matches `PathPrefix /public` if compared raw, but a
//! backend that decodes and resolves it serves `/admin`. So every path is
//! brought into one canonical form first, following RFC 3986 section 6.2.2
//! (syntax-based normalisation) and section 5.2.4 (dot segments), and the
//! request is matched *and forwarded* in that form.
//!
//! The policy is documented on [`normalize_path`].

use std::borrow::Cow;

/// What to do with `%2F`, `%5C` and `\` in a request path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum EncodedSlashes {
    /// Reject the request ([`PathError::EncodedSlash`]). The safe default: a
    /// backend that decodes `%2F` after routing would otherwise see segments
    /// the router never saw.
    #[default]
    Reject,
    /// Keep them as data inside a segment, never as separators: `%2F` and
    /// `%5C` stay encoded and a raw `\` becomes `%5C`. For APIs that carry
    /// slashes in identifiers (`/projects/group%2Fname`), with backends that
    /// do not decode them into separators.
    Keep,
    /// Decode them to `/` before segments are resolved (Envoy's
    /// `UNESCAPE_AND_FORWARD`), so they do separate segments, and dot
    /// segments around them are resolved.
    Decode,
}

/// Why a request path was rejected. Each is a client error (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum PathError {
    #[error("the path must start with \"/\"")]
    NotAbsolute,
    #[error("\"%\" must be followed by two hexadecimal digits")]
    BadPercentEncoding,
    #[error("a NUL byte (raw or \"%00\") is not allowed")]
    EncodedNul,
    #[error("an encoded slash (\"%2F\", \"%5C\") or a backslash is not allowed")]
    EncodedSlash,
    #[error("a \".\" or \"..\" segment with parameters (\"..;x\") is not allowed")]
    DotSegmentWithParameters,
    #[error("\"..\" would leave the root")]
    EscapesRoot,
}

/// Brings a request path (without the query) into canonical form, or
/// rejects it.
///
/// # Policy
///
/// [`normalize_path`] applies, in this order:
///
/// 1. The path must start with `/` (origin form). The empty path becomes
///    `/`; anything else (`*`, `a/b`) is rejected.
/// 2. Percent-encoding is made canonical: an escape of an *unreserved*
///    character (`A-Z a-z 0-9 - . _ ~`) is decoded (`%7Euser` becomes `~user`,
///    `%2e` becomes `.`); every other escape is kept, with uppercase hex digits
///    (`%3a` becomes `%3A`). A `%` not followed by two hex digits is
///    rejected. Characters that may not appear raw in a path (space, `"`,
///    `<`, `{`, non-ASCII, control characters, ...) are percent-encoded.
/// 3. NUL, encoded (`%00`) or raw, is rejected: backends written in C
///    truncate at it.
/// 4. Encoded slashes (`%2F`), encoded backslashes (`%5C`) and raw backslashes
///    follow [`EncodedSlashes`]; by default the request is rejected, because
///    backends disagree on whether they separate segments.
/// 5. Empty segments are dropped (`//` becomes `/`), *before* dot segments are
///    resolved, as nginx and POSIX file systems read them (`/a//../b` is
///    `/b`).
/// 6. `.` segments are dropped and `..` segments remove the segment before
///    them. A `..` with nothing left to remove would leave the root; unlike
///    RFC 3986, which clamps it, the request is rejected. Because step 2
///    decodes first, `%2e%2e` counts as `..`.
/// 7. A segment that is `.` or `..` followed by `;parameters` (`..;x`) is
///    rejected: some servlet containers strip the parameters and then treat
///    it as a dot segment.
/// 8. A trailing slash is kept, and added where the path ended in a dot
///    segment (`/a/b/..` becomes `/a/`).
///
/// Every rejection is a [`PathError`]; a proxy answers it with 400 Bad
/// Request. The result is idempotent: normalising a normalised path returns
/// it unchanged, and borrowed, so the common case does not allocate.
///
/// ```
/// use novaedge_router::{EncodedSlashes, PathError, normalize_path};
///
/// let norm = |p| normalize_path(p, EncodedSlashes::Reject);
/// assert_eq!(norm("/a/b").unwrap(), "/a/b");
/// assert_eq!(norm("/a//b/./c/../%7Ed").unwrap(), "/a/b/~d");
/// assert_eq!(norm("/a/%2e%2e/b").unwrap(), "/b");
/// assert_eq!(norm("/a/%2E%2E/%2e%2e/etc/passwd"), Err(PathError::EscapesRoot));
/// assert_eq!(norm("/a%2Fb"), Err(PathError::EncodedSlash));
/// assert_eq!(normalize_path("/a%2fb", EncodedSlashes::Keep).unwrap(), "/a%2Fb");
/// ```
pub fn normalize_path(
    path: &str,
    encoded_slashes: EncodedSlashes,
) -> Result<Cow<'_, str>, PathError> {
    if path.is_empty() {
        return Ok(Cow::Borrowed("/"));
    }
    if is_canonical(path.as_bytes(), encoded_slashes) {
        return Ok(Cow::Borrowed(path));
    }
    normalize_slow(path.as_bytes(), encoded_slashes).map(Cow::Owned)
}

/// Byte classes of a path.
const OTHER: u8 = 0;
/// Unreserved, sub-delims, `:` and `@`: may appear raw in a segment.
const PLAIN: u8 = 1;
const SLASH: u8 = 2;
const PERCENT: u8 = 3;
const BACKSLASH: u8 = 4;

static CLASS: [u8; 256] = {
    let mut table = [OTHER; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = if is_unreserved(c) {
            PLAIN
        } else {
            match c {
                b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
                | b':' | b'@' => PLAIN,
                b'/' => SLASH,
                b'%' => PERCENT,
                b'\\' => BACKSLASH,
                _ => OTHER,
            }
        };
        b += 1;
    }
    table
};

const fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Whether `value` is kept percent-encoded in canonical form.
fn keeps_escape(value: u8, encoded_slashes: EncodedSlashes) -> bool {
    match value {
        0 => false,
        b'/' | b'\\' => encoded_slashes == EncodedSlashes::Keep,
        v => !is_unreserved(v),
    }
}

/// True when `path` is already the output of [`normalize_slow`]: the fast
/// path, one pass, no allocation. Anything doubtful goes the slow way, which
/// alone decides about errors.
fn is_canonical(path: &[u8], encoded_slashes: EncodedSlashes) -> bool {
    if path.first() != Some(&b'/') {
        return false;
    }
    let mut segment_start = 1;
    let mut i = 1;
    while i <= path.len() {
        if i == path.len() || path[i] == b'/' {
            let segment = &path[segment_start..i];
            if segment.is_empty() {
                // Only the empty segment after a trailing slash is canonical.
                if i != path.len() {
                    return false;
                }
            } else if is_dot_like(segment) {
                return false;
            }
            segment_start = i + 1;
            i += 1;
            continue;
        }
        match CLASS[path[i] as usize] {
            PLAIN => i += 1,
            PERCENT => {
                let canonical_digit = |c: Option<&u8>| {
                    c.is_some_and(|&c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
                };
                if !canonical_digit(path.get(i + 1)) || !canonical_digit(path.get(i + 2)) {
                    return false;
                }
                let value = (hex_value(path[i + 1]).unwrap_or(0) << 4)
                    | hex_value(path[i + 2]).unwrap_or(0);
                if !keeps_escape(value, encoded_slashes) {
                    return false;
                }
                i += 3;
            }
            _ => return false,
        }
    }
    true
}

/// `.`, `..`, or either followed by `;parameters`.
fn is_dot_like(segment: &[u8]) -> bool {
    let name = segment.split(|&b| b == b';').next().unwrap_or_default();
    name == b"." || name == b".."
}

fn normalize_slow(path: &[u8], encoded_slashes: EncodedSlashes) -> Result<String, PathError> {
    if path.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }

    // Pass 1: canonical percent-encoding. Afterwards `/` in `decoded` is
    // always a separator and every other byte is final.
    let mut decoded = Vec::with_capacity(path.len() + 8);
    let push_escape = |out: &mut Vec<u8>, value: u8| {
        out.extend_from_slice(&[
            b'%',
            HEX_UPPER[usize::from(value >> 4)],
            HEX_UPPER[usize::from(value & 0xf)],
        ]);
    };
    let mut i = 0;
    while i < path.len() {
        let byte = path[i];
        match CLASS[byte as usize] {
            PLAIN | SLASH => decoded.push(byte),
            PERCENT => {
                let value = match (
                    path.get(i + 1).copied().and_then(hex_value),
                    path.get(i + 2).copied().and_then(hex_value),
                ) {
                    (Some(high), Some(low)) => (high << 4) | low,
                    _ => return Err(PathError::BadPercentEncoding),
                };
                i += 2;
                match value {
                    0 => return Err(PathError::EncodedNul),
                    b'/' | b'\\' => match encoded_slashes {
                        EncodedSlashes::Reject => return Err(PathError::EncodedSlash),
                        EncodedSlashes::Keep => push_escape(&mut decoded, value),
                        EncodedSlashes::Decode => decoded.push(b'/'),
                    },
                    v if is_unreserved(v) => decoded.push(v),
                    v => push_escape(&mut decoded, v),
                }
            }
            BACKSLASH => match encoded_slashes {
                EncodedSlashes::Reject => return Err(PathError::EncodedSlash),
                EncodedSlashes::Keep => push_escape(&mut decoded, byte),
                EncodedSlashes::Decode => decoded.push(b'/'),
            },
            // A raw NUL would become `%00`, which is refused: refuse it too.
            _ if byte == 0 => return Err(PathError::EncodedNul),
            _ => push_escape(&mut decoded, byte),
        }
        i += 1;
    }

    // Pass 2: segments. `starts` remembers where each kept segment begins in
    // `out` (at its leading slash), so `..` can cut it off again.
    let trailing_slash = decoded.last() == Some(&b'/');
    let mut out: Vec<u8> = Vec::with_capacity(decoded.len());
    let mut starts: Vec<usize> = Vec::new();
    let mut ended_in_dot_segment = false;
    for segment in decoded[1..].split(|&b| b == b'/') {
        if segment.is_empty() {
            continue;
        }
        match segment {
            b"." => ended_in_dot_segment = true,
            b".." => {
                let start = starts.pop().ok_or(PathError::EscapesRoot)?;
                out.truncate(start);
                ended_in_dot_segment = true;
            }
            _ if is_dot_like(segment) => return Err(PathError::DotSegmentWithParameters),
            _ => {
                starts.push(out.len());
                out.push(b'/');
                out.extend_from_slice(segment);
                ended_in_dot_segment = false;
            }
        }
    }
    if out.is_empty() || trailing_slash || ended_in_dot_segment {
        out.push(b'/');
    }
    // Every byte pushed above is ASCII, so this never fails.
    String::from_utf8(out).map_err(|_| PathError::BadPercentEncoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(path: &str) -> Result<String, PathError> {
        normalize_path(path, EncodedSlashes::Reject).map(Cow::into_owned)
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        for path in [
            "/",
            "/a",
            "/a/",
            "/a/b.c/d",
            "/~user/a-b_c",
            "/a;b=c/d",
            "/a:b@c/!$&'()*+,=",
            "/%3A/%20x",
            "/...",
            "/.a/..b/a./a..",
        ] {
            let result = normalize_path(path, EncodedSlashes::Reject).expect(path);
            assert!(
                matches!(result, Cow::Borrowed(_)),
                "{path:?} should be borrowed"
            );
            assert_eq!(result, path);
        }
        assert!(matches!(
            normalize_path("/a%2Fb", EncodedSlashes::Keep),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn normalisation_table() {
        let cases: &[(&str, Result<&str, PathError>)] = &[
            ("", Ok("/")),
            // Duplicate slashes.
            ("//", Ok("/")),
            ("/a//b", Ok("/a/b")),
            ("/a///b//", Ok("/a/b/")),
            ("//a", Ok("/a")),
            // Dot segments.
            ("/.", Ok("/")),
            ("/./", Ok("/")),
            ("/a/.", Ok("/a/")),
            ("/a/./b", Ok("/a/b")),
            ("/a/b/..", Ok("/a/")),
            ("/a/b/../", Ok("/a/")),
            ("/a/b/../c", Ok("/a/c")),
            ("/a/../..", Err(PathError::EscapesRoot)),
            ("/..", Err(PathError::EscapesRoot)),
            ("/../a", Err(PathError::EscapesRoot)),
            ("/a/b/../../..", Err(PathError::EscapesRoot)),
            ("/a/b/../../", Ok("/")),
            // Empty segments go before dot segments are resolved.
            ("/a//../b", Ok("/b")),
            // Percent-encoding: unreserved decoded, the rest uppercased.
            ("/%7Euser", Ok("/~user")),
            ("/%41%62%2D%5f%2e", Ok("/Ab-_.")),
            ("/a%3ab", Ok("/a%3Ab")),
            ("/%e2%82%ac", Ok("/%E2%82%AC")),
            ("/%2e%2e/x", Err(PathError::EscapesRoot)),
            ("/a/%2e%2E/b", Ok("/b")),
            ("/a/%2e/b", Ok("/a/b")),
            ("/a/.%2e/b", Ok("/b")),
            ("/%", Err(PathError::BadPercentEncoding)),
            ("/%4", Err(PathError::BadPercentEncoding)),
            ("/%zz", Err(PathError::BadPercentEncoding)),
            ("/a%00b", Err(PathError::EncodedNul)),
            ("/z/\0", Err(PathError::EncodedNul)),
            ("/a\u{1}b", Ok("/a%01b")),
            // Encoded slashes and backslashes, by default.
            ("/a%2Fb", Err(PathError::EncodedSlash)),
            ("/a%2fb", Err(PathError::EncodedSlash)),
            ("/a%5Cb", Err(PathError::EncodedSlash)),
            ("/a\\b", Err(PathError::EncodedSlash)),
            // Characters that must be encoded.
            ("/a b", Ok("/a%20b")),
            ("/caf\u{e9}", Ok("/caf%C3%A9")),
            ("/a\"<>`{|}^", Ok("/a%22%3C%3E%60%7B%7C%7D%5E")),
            ("/a?b#c", Ok("/a%3Fb%23c")),
            // Servlet path parameters on dot segments.
            (
                "/public/..;/admin",
                Err(PathError::DotSegmentWithParameters),
            ),
            ("/a/.;x/b", Err(PathError::DotSegmentWithParameters)),
            ("/a/%2e%2e;x", Err(PathError::DotSegmentWithParameters)),
            ("/a;x/b;y", Ok("/a;x/b;y")),
            ("/...;x", Ok("/...;x")),
            // Not origin form.
            ("*", Err(PathError::NotAbsolute)),
            ("a/b", Err(PathError::NotAbsolute)),
            ("%2Fa", Err(PathError::NotAbsolute)),
        ];
        for (input, want) in cases {
            assert_eq!(
                norm(input).as_deref().map_err(|e| *e),
                *want,
                "normalize_path({input:?})"
            );
        }
    }

    #[test]
    fn encoded_slash_policies() {
        let cases: &[(&str, EncodedSlashes, Result<&str, PathError>)] = &[
            ("/a%2Fb", EncodedSlashes::Keep, Ok("/a%2Fb")),
            ("/a%2fb", EncodedSlashes::Keep, Ok("/a%2Fb")),
            ("/a%5cb", EncodedSlashes::Keep, Ok("/a%5Cb")),
            ("/a\\b", EncodedSlashes::Keep, Ok("/a%5Cb")),
            // Kept slashes are data: no dot resolution across them.
            ("/a%2F..%2Fb", EncodedSlashes::Keep, Ok("/a%2F..%2Fb")),
            ("/a%2Fb", EncodedSlashes::Decode, Ok("/a/b")),
            ("/a%5Cb", EncodedSlashes::Decode, Ok("/a/b")),
            ("/a\\b", EncodedSlashes::Decode, Ok("/a/b")),
            ("/a%2F..%2Fb", EncodedSlashes::Decode, Ok("/b")),
            (
                "/a%2F%2E%2E%2F..%2Fb",
                EncodedSlashes::Decode,
                Err(PathError::EscapesRoot),
            ),
            ("/a%2F%2Fb", EncodedSlashes::Decode, Ok("/a/b")),
        ];
        for (input, policy, want) in cases {
            assert_eq!(
                normalize_path(input, *policy).as_deref().map_err(|e| *e),
                *want,
                "normalize_path({input:?}, {policy:?})"
            );
        }
    }

    #[test]
    fn normalised_paths_are_fixed_points() {
        for policy in [
            EncodedSlashes::Reject,
            EncodedSlashes::Keep,
            EncodedSlashes::Decode,
        ] {
            for input in [
                "/a/b/../c/",
                "/%7e%2f%41/./x",
                "/a b/%zz",
                "/x\\y/..",
                "//a//",
            ] {
                if let Ok(once) = normalize_path(input, policy) {
                    let twice = normalize_path(&once, policy).expect("a normalised path is valid");
                    assert!(matches!(twice, Cow::Borrowed(_)), "{input:?} -> {once:?}");
                    assert_eq!(twice, once);
                }
            }
        }
    }
}
