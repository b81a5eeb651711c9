//! Where a token is looked for, and how it is taken out of the forwarded request.
//!
//! Locations are tried in the configured order; the first one that holds a token wins, and only
//! that one is verified (Envoy's `from_headers` / `from_params` / `from_cookies`).

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Uri};
use percent_encoding::percent_decode_str;

/// A place in the request where a token may be found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenLocation {
    /// `Authorization: Bearer <token>` (RFC 6750 §2.1); the scheme is matched without regard to
    /// case. An `Authorization` header with another scheme holds no token.
    AuthorizationBearer,
    /// A header of its own, e.g. `x-jwt-assertion: <token>`. With a `prefix`, only a value that
    /// starts with it (ASCII case-insensitively) holds a token, which is what follows the prefix,
    /// with surrounding whitespace trimmed.
    Header {
        /// The header's name.
        name: HeaderName,
        /// A prefix the value must start with (e.g. `"Token "`), if any.
        prefix: Option<String>,
    },
    /// A cookie of that name (RFC 6265), e.g. `Cookie: session=<token>`.
    Cookie(String),
    /// A query parameter of that name (percent-decoded), e.g. `?access_token=<token>`
    /// (RFC 6750 §2.3).
    Query(String),
}

/// A token and the location it was found in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) token: String,
    /// Index into the configured locations.
    pub(crate) location: usize,
}

/// Looks for a token in the locations, in order; the first location that holds one wins.
pub(crate) fn find<B>(req: &Request<B>, locations: &[TokenLocation]) -> Option<Found> {
    locations.iter().enumerate().find_map(|(location, loc)| {
        let token = match loc {
            TokenLocation::AuthorizationBearer => from_authorization(req.headers()),
            TokenLocation::Header { name, prefix } => {
                from_header(req.headers(), name, prefix.as_deref())
            }
            TokenLocation::Cookie(name) => from_cookie(req.headers(), name),
            TokenLocation::Query(name) => from_query(req.uri(), name),
        }?;
        Some(Found { token, location })
    })
}

fn from_authorization(headers: &HeaderMap) -> Option<String> {
    headers.get_all(AUTHORIZATION).iter().find_map(|value| {
        let value = value.to_str().ok()?.trim();
        let (scheme, rest) = value.split_once([' ', '\t'])?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        non_empty(rest)
    })
}

fn from_header(headers: &HeaderMap, name: &HeaderName, prefix: Option<&str>) -> Option<String> {
    headers.get_all(name).iter().find_map(|value| {
        let value = value.to_str().ok()?.trim();
        match prefix {
            None => non_empty(value),
            Some(prefix) => {
                let head = value.get(..prefix.len())?;
                if !head.eq_ignore_ascii_case(prefix) {
                    return None;
                }
                non_empty(&value[prefix.len()..])
            }
        }
    })
}

fn from_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (n, v) = pair.trim().split_once('=')?;
            if n.trim() != name {
                return None;
            }
            let v = v.trim();
            // RFC 6265 §4.1.1: a cookie-value may be wrapped in double quotes.
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            non_empty(v)
        })
}

fn from_query(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode_str(n).decode_utf8().ok()? != name {
            return None;
        }
        let v = percent_decode_str(v).decode_utf8().ok()?;
        non_empty(&v)
    })
}

fn non_empty(token: &str) -> Option<String> {
    let token = token.trim();
    (!token.is_empty()).then(|| token.to_owned())
}

/// Takes the token out of the request, from the location it was found in.
pub(crate) fn remove<B>(req: &mut Request<B>, location: &TokenLocation) {
    match location {
        TokenLocation::AuthorizationBearer => {
            req.headers_mut().remove(AUTHORIZATION);
        }
        TokenLocation::Header { name, .. } => {
            req.headers_mut().remove(name);
        }
        TokenLocation::Cookie(name) => remove_cookie(req.headers_mut(), name),
        TokenLocation::Query(name) => remove_query(req.uri_mut(), name),
    }
}

fn remove_cookie(headers: &mut HeaderMap, name: &str) {
    let kept: Vec<HeaderValue> = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| {
            // A Cookie header that is not text cannot hold the token: keep it as it is.
            let Ok(text) = value.to_str() else {
                return Some(value.clone());
            };
            let pairs: Vec<&str> = text
                .split(';')
                .map(str::trim)
                .filter(|pair| {
                    !pair.is_empty() && pair.split_once('=').map(|(n, _)| n.trim()) != Some(name)
                })
                .collect();
            if pairs.is_empty() {
                return None;
            }
            HeaderValue::from_str(&pairs.join("; ")).ok()
        })
        .collect();
    headers.remove(COOKIE);
    for value in kept {
        headers.append(COOKIE, value);
    }
}

fn remove_query(uri: &mut Uri, name: &str) {
    let Some(query) = uri.query() else {
        return;
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let n = pair.split_once('=').map_or(*pair, |(n, _)| n);
            percent_decode_str(n).decode_utf8().ok().as_deref() != Some(name)
        })
        .collect();
    let path_and_query = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    // The old path with part of the old query stays valid; should it somehow not, the URI is
    // left as it was rather than replaced by something else.
    let Ok(path_and_query) = path_and_query.parse() else {
        return;
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query);
    if let Ok(new) = Uri::from_parts(parts) {
        *uri = new;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    fn header(name: &str, prefix: Option<&str>) -> TokenLocation {
        TokenLocation::Header {
            name: HeaderName::from_bytes(name.as_bytes()).unwrap(),
            prefix: prefix.map(str::to_owned),
        }
    }

    fn token_of(req: &Request<()>, locations: &[TokenLocation]) -> Option<(String, usize)> {
        find(req, locations).map(|f| (f.token, f.location))
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_trimmed() {
        let locs = [TokenLocation::AuthorizationBearer];
        for value in [
            "Bearer a.b.c",
            "bearer a.b.c",
            "BEARER   a.b.c  ",
            "Bearer\ta.b.c",
        ] {
            let r = req("/", &[("authorization", value)]);
            assert_eq!(token_of(&r, &locs), Some(("a.b.c".into(), 0)), "{value}");
        }
    }

    #[test]
    fn other_schemes_and_empty_bearer_hold_no_token() {
        let locs = [TokenLocation::AuthorizationBearer];
        for value in [
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer    ",
            "Bearera.b.c",
            "a.b.c",
        ] {
            let r = req("/", &[("authorization", value)]);
            assert_eq!(token_of(&r, &locs), None, "{value}");
        }
        assert_eq!(token_of(&req("/", &[]), &locs), None);
    }

    #[test]
    fn custom_header_with_and_without_prefix() {
        let r = req("/", &[("x-token", "Token a.b.c")]);
        assert_eq!(
            token_of(&r, &[header("x-token", Some("token "))]),
            Some(("a.b.c".into(), 0))
        );
        assert_eq!(token_of(&r, &[header("x-token", Some("JWT "))]), None);
        assert_eq!(
            token_of(&r, &[header("x-token", None)]),
            Some(("Token a.b.c".into(), 0))
        );
        let r = req("/", &[("x-token", "Tok")]);
        assert_eq!(token_of(&r, &[header("x-token", Some("Token "))]), None);
    }

    #[test]
    fn cookie_is_found_among_others_and_unquoted() {
        let locs = [TokenLocation::Cookie("jwt".into())];
        let r = req("/", &[("cookie", "a=1; jwt=a.b.c; b=2")]);
        assert_eq!(token_of(&r, &locs), Some(("a.b.c".into(), 0)));
        let r = req("/", &[("cookie", "a=1"), ("cookie", "jwt=\"a.b.c\"")]);
        assert_eq!(token_of(&r, &locs), Some(("a.b.c".into(), 0)));
        let r = req("/", &[("cookie", "xjwt=a.b.c; jwtx=d")]);
        assert_eq!(token_of(&r, &locs), None);
    }

    #[test]
    fn query_parameter_is_percent_decoded() {
        let locs = [TokenLocation::Query("access_token".into())];
        let r = req("/p?x=1&access%5Ftoken=a.b%2Ec&y=2", &[]);
        assert_eq!(token_of(&r, &locs), Some(("a.b.c".into(), 0)));
        let r = req("/p?access_token=&x=1", &[]);
        assert_eq!(token_of(&r, &locs), None);
        let r = req("/p", &[]);
        assert_eq!(token_of(&r, &locs), None);
    }

    #[test]
    fn first_present_location_wins() {
        let locs = [
            TokenLocation::AuthorizationBearer,
            header("x-token", None),
            TokenLocation::Cookie("jwt".into()),
            TokenLocation::Query("t".into()),
        ];
        let r = req("/?t=from.query.x", &[("cookie", "jwt=from.cookie.x")]);
        assert_eq!(token_of(&r, &locs), Some(("from.cookie.x".into(), 2)));
        let r = req(
            "/?t=q.q.q",
            &[("x-token", "h.h.h"), ("authorization", "Basic abc")],
        );
        assert_eq!(token_of(&r, &locs), Some(("h.h.h".into(), 1)));
        let r = req(
            "/?t=q.q.q",
            &[("x-token", "h.h.h"), ("authorization", "Bearer b.b.b")],
        );
        assert_eq!(token_of(&r, &locs), Some(("b.b.b".into(), 0)));
    }

    #[test]
    fn removal_takes_out_only_the_token() {
        let mut r = req("/", &[("authorization", "Bearer a.b.c"), ("x-other", "1")]);
        remove(&mut r, &TokenLocation::AuthorizationBearer);
        assert!(r.headers().get(AUTHORIZATION).is_none());
        assert!(r.headers().get("x-other").is_some());

        let mut r = req("/", &[("x-token", "a.b.c")]);
        remove(&mut r, &header("x-token", None));
        assert!(r.headers().get("x-token").is_none());

        let mut r = req(
            "/",
            &[("cookie", "a=1; jwt=a.b.c; b=2"), ("cookie", "jwt=x.y.z")],
        );
        remove(&mut r, &TokenLocation::Cookie("jwt".into()));
        let cookies: Vec<_> = r.headers().get_all(COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1; b=2"]);

        let mut r = req("http://h:8080/p/q?x=1&access_token=a.b.c&y=2", &[]);
        remove(&mut r, &TokenLocation::Query("access_token".into()));
        assert_eq!(r.uri().to_string(), "http://h:8080/p/q?x=1&y=2");

        let mut r = req("/p?access_token=a.b.c", &[]);
        remove(&mut r, &TokenLocation::Query("access_token".into()));
        assert_eq!(r.uri().to_string(), "/p");
    }
}
