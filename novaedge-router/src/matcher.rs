//! One route, compiled: its validated conditions, the test of a request
//! against them, and its place in the precedence order.
//!
//! Both the indexed [`Router`](crate::Router) and the linear
//! [`reference`](crate::reference) matcher are built from these, so they
//! agree on what a single route matches; they differ only in how they find
//! the best one.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, Method};
use percent_encoding::percent_decode_str;
use regex_automata::util::syntax;
use regex_automata::{MatchKind, meta};

use crate::error::{Field, RouterError};
use crate::explain::PrecedenceStep;
use crate::host::{Hostname, parse_hostname};
use crate::path::{EncodedSlashes, PathError, normalize_path};
use crate::route::{
    Dialect, GrpcMethodMatch, HeaderMatch, MatchType, PathMatch, QueryParamMatch, Route,
};

/// The most memory one compiled regular expression may take, in bytes, and
/// the most its lazy DFA cache may grow to. Patterns whose compiled form is
/// larger (`(a{100}){100}`) are refused with [`RouterError::InvalidRegex`],
/// so one route cannot make a compile slow or a lookup expensive. Matching is
/// linear in the input whatever the pattern: the `regex` crate has no
/// backtracking.
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// The parts of a request that routes match on.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// The `Host` header or URI authority: any case, may carry a port.
    pub host: &'a str,
    /// The path, without the query, as [`normalize_path`] returned it. The
    /// router matches it as given.
    pub path: &'a str,
    /// The query without the leading `?`; empty when there is none.
    pub query: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
}

// === impl CompiledRoute ===

#[derive(Debug, Clone)]
pub(crate) struct CompiledRoute<T> {
    /// Deduplicated; empty means any host. Shared by the entries of one
    /// route (see [`HostnameCache`]).
    pub(crate) hostnames: Arc<[Hostname]>,
    pub(crate) dialect: Dialect,
    pub(crate) path: CompiledPath,
    method: Option<Method>,
    /// Deduplicated by name, first entry wins.
    headers: Box<[CompiledHeader]>,
    /// Deduplicated by name, first entry wins.
    query: Box<[CompiledQuery]>,
    pub(crate) precedence: Precedence,
    pub(crate) target: T,
}

#[derive(Debug, Clone)]
pub(crate) enum CompiledPath {
    /// Normalised.
    Exact(Box<str>),
    /// Normalised, without trailing slashes, so `Prefix("/")` is stored as
    /// the empty string and matches everything.
    Prefix(Box<str>),
    Regex {
        regex: Arc<WholeRegex>,
        /// A string every matching path starts with (possibly empty), used
        /// by the index to skip the regex cheaply.
        literal_prefix: Box<str>,
    },
    Grpc(CompiledGrpc),
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledGrpc {
    pub(crate) service: Option<ValueMatcher>,
    pub(crate) method: Option<ValueMatcher>,
}

#[derive(Debug, Clone)]
pub(crate) enum ValueMatcher {
    Exact(Box<[u8]>),
    Regex(Arc<WholeRegex>),
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledHeader {
    pub(crate) name: HeaderName,
    pub(crate) value: ValueMatcher,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledQuery {
    pub(crate) name: Box<str>,
    pub(crate) value: ValueMatcher,
}

/// The parsed hostnames of the last route compiled, by the list they were
/// parsed from. A proxy hands a router one route per match of a rule, each
/// with the hostnames of the rule's route: consecutive routes with the same
/// list share one parsed copy, parsed once.
#[derive(Debug, Default)]
pub(crate) struct HostnameCache {
    last: Option<(Vec<String>, Arc<[Hostname]>)>,
}

impl HostnameCache {
    /// `raw`, validated, lowercased and deduplicated.
    fn parse(&mut self, index: usize, raw: Vec<String>) -> Result<Arc<[Hostname]>, RouterError> {
        if let Some((last_raw, parsed)) = &self.last
            && *last_raw == raw
        {
            return Ok(parsed.clone());
        }
        let mut hostnames = Vec::with_capacity(raw.len());
        for (i, name) in raw.iter().enumerate() {
            let hostname = parse_hostname(name).map_err(|reason| RouterError::InvalidHostname {
                route: index,
                field: Field::Hostname(i),
                hostname: name.clone(),
                reason,
            })?;
            // Listing a host twice (perhaps in different case) must not put
            // the route into a bucket twice.
            if !hostnames.contains(&hostname) {
                hostnames.push(hostname);
            }
        }
        let parsed: Arc<[Hostname]> = hostnames.into();
        self.last = Some((raw, parsed.clone()));
        Ok(parsed)
    }
}

impl<T> CompiledRoute<T> {
    pub(crate) fn compile(
        index: usize,
        route: Route<T>,
        hostname_cache: &mut HostnameCache,
        regexes: &mut RegexBuild<'_>,
    ) -> Result<Self, RouterError> {
        let Route {
            hostnames: raw_hostnames,
            route_match,
            rank,
            target,
            dialect,
        } = route;

        let hostnames = hostname_cache.parse(index, raw_hostnames)?;

        let (path, shape) = compile_path(index, route_match.path, regexes)?;

        // Gateway API: "If multiple entries specify equivalent header names,
        // only the first entry with an equivalent name MUST be considered".
        // Deduplicating here also keeps the count used for precedence
        // honest. The same holds for query parameters.
        let mut headers: Vec<CompiledHeader> = Vec::with_capacity(route_match.headers.len());
        for (i, HeaderMatch { name, value, kind }) in route_match.headers.into_iter().enumerate() {
            if headers.iter().any(|h| h.name == name) {
                continue;
            }
            let value = ValueMatcher::compile(kind, value, regexes, |pattern, source| {
                RouterError::InvalidRegex {
                    route: index,
                    field: Field::Header(i),
                    pattern,
                    source,
                }
            })?;
            headers.push(CompiledHeader { name, value });
        }
        let mut query: Vec<CompiledQuery> = Vec::with_capacity(route_match.query_params.len());
        for (i, QueryParamMatch { name, value, kind }) in
            route_match.query_params.into_iter().enumerate()
        {
            if name.is_empty() {
                return Err(RouterError::InvalidValue {
                    route: index,
                    field: Field::QueryParam(i),
                    value: name,
                    reason: "a query parameter name must not be empty",
                });
            }
            if query.iter().any(|q| *q.name == *name) {
                continue;
            }
            let value = ValueMatcher::compile(kind, value, regexes, |pattern, source| {
                RouterError::InvalidRegex {
                    route: index,
                    field: Field::QueryParam(i),
                    pattern,
                    source,
                }
            })?;
            query.push(CompiledQuery {
                name: name.into(),
                value,
            });
        }

        let family = match (dialect, &path) {
            (Dialect::Ingress, _) => Family::Ingress,
            (Dialect::GatewayApi, CompiledPath::Grpc(_)) => Family::Grpc,
            (Dialect::GatewayApi, _) => Family::Http,
        };
        let precedence = Precedence {
            family,
            criteria: Criteria {
                path_class: shape.class,
                primary_len: Reverse(shape.primary_len),
                primary_regex: shape.primary_regex,
                secondary_len: Reverse(shape.secondary_len),
                secondary_regex: shape.secondary_regex,
                any_method: route_match.method.is_none(),
                header_count: Reverse(headers.len()),
                query_count: Reverse(query.len()),
            },
            rank,
            index,
        };
        Ok(Self {
            hostnames,
            dialect,
            path,
            method: route_match.method,
            headers: headers.into_boxed_slice(),
            query: query.into_boxed_slice(),
            precedence,
            target,
        })
    }

    /// Whether the request meets every condition of the route other than
    /// its hostnames.
    ///
    /// [`explain`](crate::Router::explain) tests the same conditions one by
    /// one, with the same functions.
    pub(crate) fn matches(&self, request: &RequestParts<'_>) -> bool {
        self.path.matches(request.path)
            && self.method_matches(request.method)
            && self.headers.iter().all(|h| h.matches(request.headers))
            && self.query.iter().all(|q| q.matches(request.query))
    }

    #[inline]
    pub(crate) fn method_matches(&self, method: &Method) -> bool {
        self.method.as_ref().is_none_or(|m| m == method)
    }

    pub(crate) fn method(&self) -> Option<&Method> {
        self.method.as_ref()
    }

    pub(crate) fn headers(&self) -> &[CompiledHeader] {
        &self.headers
    }

    pub(crate) fn query(&self) -> &[CompiledQuery] {
        &self.query
    }
}

impl CompiledHeader {
    /// Whether any of the request's values of the header matches.
    #[inline]
    pub(crate) fn matches(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(&self.name)
            .iter()
            .any(|v| self.value.matches(v.as_bytes()))
    }
}

impl CompiledQuery {
    /// Whether the first occurrence of the parameter matches.
    #[inline]
    pub(crate) fn matches(&self, query: &str) -> bool {
        first_query_value(query, &self.name).is_some_and(|raw| {
            self.value
                .matches(&Cow::<[u8]>::from(percent_decode_str(raw)))
        })
    }
}

/// What precedence needs to know about a path match.
#[derive(Default)]
struct PathShape {
    class: u8,
    primary_len: usize,
    primary_regex: bool,
    secondary_len: usize,
    secondary_regex: bool,
}

fn compile_path(
    index: usize,
    path: PathMatch,
    regexes: &mut RegexBuild<'_>,
) -> Result<(CompiledPath, PathShape), RouterError> {
    let invalid_path = |path: String, source| RouterError::InvalidPath {
        route: index,
        field: Field::Path,
        path,
        source,
    };
    // Route paths are normalised like request paths, so that a route can
    // only be written in a form a request can reach. Encoded slashes in a
    // route are data (`Keep`), whatever the request policy.
    let normalise = |raw: String| -> Result<String, RouterError> {
        if !raw.starts_with('/') {
            return Err(invalid_path(raw, PathError::NotAbsolute));
        }
        match normalize_path(&raw, EncodedSlashes::Keep) {
            Ok(Cow::Borrowed(_)) => Ok(raw),
            Ok(Cow::Owned(normalised)) => Ok(normalised),
            Err(source) => Err(invalid_path(raw, source)),
        }
    };
    Ok(match path {
        PathMatch::Exact(raw) => {
            let path = normalise(raw)?;
            let shape = PathShape {
                class: PATH_EXACT,
                primary_len: path.len(),
                ..PathShape::default()
            };
            (CompiledPath::Exact(path.into()), shape)
        }
        PathMatch::Prefix(raw) => {
            let path = normalise(raw)?;
            let trimmed = path.trim_end_matches('/');
            let shape = PathShape {
                class: PATH_PREFIX,
                primary_len: trimmed.len(),
                ..PathShape::default()
            };
            (CompiledPath::Prefix(trimmed.into()), shape)
        }
        PathMatch::RegularExpression(pattern) => {
            let regex = regexes
                .get(&pattern)
                .map_err(|source| RouterError::InvalidRegex {
                    route: index,
                    field: Field::Path,
                    pattern: pattern.clone(),
                    source,
                })?;
            let shape = PathShape {
                class: PATH_REGEX,
                primary_len: pattern.chars().count(),
                ..PathShape::default()
            };
            let literal_prefix = literal_prefix(&pattern).into();
            (
                CompiledPath::Regex {
                    regex,
                    literal_prefix,
                },
                shape,
            )
        }
        PathMatch::Grpc(grpc) => compile_grpc(index, grpc, regexes)?,
    })
}

fn compile_grpc(
    index: usize,
    grpc: GrpcMethodMatch,
    regexes: &mut RegexBuild<'_>,
) -> Result<(CompiledPath, PathShape), RouterError> {
    let GrpcMethodMatch {
        kind,
        service,
        method,
    } = grpc;
    let regex = kind == MatchType::RegularExpression;
    let mut compile_part =
        |value: Option<String>, field: Field, valid: fn(&str) -> bool, reason| {
            let Some(value) = value else {
                return Ok((None, 0));
            };
            let chars = value.chars().count();
            if value.is_empty() || (!regex && !valid(&value)) {
                return Err(RouterError::InvalidValue {
                    route: index,
                    field,
                    value,
                    reason,
                });
            }
            let matcher = ValueMatcher::compile(kind, value, regexes, |pattern, source| {
                RouterError::InvalidRegex {
                    route: index,
                    field,
                    pattern,
                    source,
                }
            })?;
            Ok((Some(matcher), chars))
        };
    let (service, service_len) = compile_part(
        service,
        Field::GrpcService,
        valid_grpc_service,
        "a gRPC service is a dot-separated name of letters, digits and \"_\" (\"pkg.Service\")",
    )?;
    let (method, method_len) = compile_part(
        method,
        Field::GrpcMethod,
        valid_grpc_method,
        "a gRPC method is a name of letters, digits and \"_\"",
    )?;
    let shape = PathShape {
        class: PATH_EXACT,
        primary_len: service_len,
        primary_regex: regex && service.is_some(),
        secondary_len: method_len,
        secondary_regex: regex && method.is_some(),
    };
    Ok((CompiledPath::Grpc(CompiledGrpc { service, method }), shape))
}

/// GRPCMethodMatch's validation of an exact service:
/// `^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$`.
fn valid_grpc_service(service: &str) -> bool {
    let service = service.strip_prefix('.').unwrap_or(service);
    service.split('.').all(valid_grpc_method)
}

/// GRPCMethodMatch's validation of an exact method: `^[A-Za-z_][A-Za-z_0-9]*$`.
fn valid_grpc_method(method: &str) -> bool {
    let mut bytes = method.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl CompiledPath {
    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(exact) => path == &**exact,
            Self::Prefix(prefix) => prefix_matches(prefix, path),
            Self::Regex { regex, .. } => regex.is_match(path.as_bytes()),
            Self::Grpc(grpc) => grpc.matches(path),
        }
    }
}

/// Segment-wise prefix: the prefix must end at the end of the path or right
/// before a `/`. An empty prefix (from "/") matches everything.
pub(crate) fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix.is_empty()
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl CompiledGrpc {
    pub(crate) fn matches(&self, path: &str) -> bool {
        if self.service.is_none() && self.method.is_none() {
            return true;
        }
        let Some((service, method)) = grpc_parts(path) else {
            return false;
        };
        self.service
            .as_ref()
            .is_none_or(|s| s.matches(service.as_bytes()))
            && self
                .method
                .as_ref()
                .is_none_or(|m| m.matches(method.as_bytes()))
    }
}

/// Splits a gRPC path, `/{service}/{method}`, into its two non-empty parts.
pub(crate) fn grpc_parts(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

impl ValueMatcher {
    fn compile(
        kind: MatchType,
        value: String,
        regexes: &mut RegexBuild<'_>,
        error: impl FnOnce(String, regex::Error) -> RouterError,
    ) -> Result<Self, RouterError> {
        Ok(match kind {
            MatchType::Exact => Self::Exact(value.into_bytes().into_boxed_slice()),
            MatchType::RegularExpression => match regexes.get(&value) {
                Ok(regex) => Self::Regex(regex),
                Err(source) => return Err(error(value, source)),
            },
        })
    }

    pub(crate) fn matches(&self, value: &[u8]) -> bool {
        match self {
            Self::Exact(exact) => value == &**exact,
            Self::Regex(regex) => regex.is_match(value),
        }
    }
}

// === impl WholeRegex ===

/// A regular expression that matches whole values, and the pattern it was
/// written as.
///
/// It is the engine under `regex::bytes::Regex`, configured as
/// `RegexBuilder::new(p).size_limit(REGEX_SIZE_LIMIT).dfa_size_limit(REGEX_SIZE_LIMIT)`
/// configures it, less the full DFA: the `regex` crate builds one for small
/// patterns whenever another crate of the build turns on `regex-automata`'s
/// `dfa-build` (tracing-subscriber's env filter does), which this workspace
/// does not ask for (`regex` without `perf-dfa-full`). Building it costs a
/// fraction of a millisecond per pattern, which a table of thousands of
/// routes pays on every reload; the lazy DFA matches in linear time as well.
#[derive(Debug, Clone)]
pub(crate) struct WholeRegex {
    regex: meta::Regex,
    pattern: Box<str>,
}

impl WholeRegex {
    pub(crate) fn is_match(&self, value: &[u8]) -> bool {
        self.regex.is_match(value)
    }

    /// The pattern as the route wrote it.
    pub(crate) fn pattern(&self) -> &str {
        &self.pattern
    }
}

/// Compiled regular expressions by pattern, kept from one router build for
/// the next.
///
/// A reload of thousands of routes would otherwise compile every pattern
/// again, and hold both copies while the old table drains.
/// [`Router::with_regexes`](crate::Router::with_regexes) takes the
/// expressions of an earlier build from here and puts every one its router
/// uses into a new set, so a set never outgrows the tables it was made for.
/// Routes with the same pattern share one compiled expression (its lazy DFA
/// caches are per thread, as the `regex` crate's are).
#[derive(Debug, Clone, Default)]
pub struct Regexes {
    pub(crate) by_pattern: HashMap<Box<str>, Arc<WholeRegex>>,
}

impl Regexes {
    /// How many distinct patterns the set holds.
    pub fn len(&self) -> usize {
        self.by_pattern.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_pattern.is_empty()
    }
}

/// The regular expressions of one build: those of an earlier one, and the
/// set this one fills.
pub(crate) struct RegexBuild<'a> {
    previous: &'a Regexes,
    next: &'a mut Regexes,
}

impl<'a> RegexBuild<'a> {
    pub(crate) fn new(previous: &'a Regexes, next: &'a mut Regexes) -> Self {
        Self { previous, next }
    }

    /// `pattern` compiled to match whole values, compiled only if neither
    /// set has it.
    fn get(&mut self, pattern: &str) -> Result<Arc<WholeRegex>, regex::Error> {
        if let Some(regex) = self.next.by_pattern.get(pattern) {
            return Ok(regex.clone());
        }
        let regex = match self.previous.by_pattern.get(pattern) {
            Some(regex) => regex.clone(),
            None => Arc::new(compile_regex(pattern)?),
        };
        self.next.by_pattern.insert(pattern.into(), regex.clone());
        Ok(regex)
    }
}

/// Compiles `pattern` to match whole values only.
fn compile_regex(pattern: &str) -> Result<WholeRegex, regex::Error> {
    // The pattern must be valid on its own, or wrapping it could change its
    // meaning: `a)|(b` is invalid alone but valid inside `(?:...)`. Parsing
    // it says so; no engine is built for it. Its size needs no check of its
    // own: the wrapped pattern's NFAs hold the pattern's and a few states
    // more, so a pattern over the limit alone is over it wrapped, with the
    // same error.
    syntax::parse_with(pattern, &syntax_config())
        .map_err(|e| regex::Error::Syntax(e.to_string()))?;
    let regex = build_regex(&format!(r"\A(?:{pattern})\z"), regex_config())?;
    Ok(WholeRegex {
        regex,
        pattern: pattern.into(),
    })
}

/// `regex::bytes::RegexBuilder`'s configuration with both limits at
/// [`REGEX_SIZE_LIMIT`], without the full DFA (see [`WholeRegex`]).
fn regex_config() -> meta::Config {
    meta::Config::new()
        .match_kind(MatchKind::LeftmostFirst)
        .utf8_empty(false)
        .nfa_size_limit(Some(REGEX_SIZE_LIMIT))
        .hybrid_cache_capacity(REGEX_SIZE_LIMIT)
        .dfa(false)
}

/// Builds `pattern` in bytes mode, with the error `regex::bytes::RegexBuilder`
/// gives for it. The engines left out never refuse a pattern, so what it
/// accepts and refuses is exactly what the `regex` crate does.
fn build_regex(pattern: &str, config: meta::Config) -> Result<meta::Regex, regex::Error> {
    meta::Builder::new()
        .configure(config)
        .syntax(syntax_config())
        .build(pattern)
        // As the `regex` crate turns its builder's errors into its own.
        .map_err(|e| {
            if let Some(limit) = e.size_limit() {
                regex::Error::CompiledTooBig(limit)
            } else if let Some(syntax) = e.syntax_error() {
                regex::Error::Syntax(syntax.to_string())
            } else {
                regex::Error::Syntax(e.to_string())
            }
        })
}

/// `regex::bytes::RegexBuilder`'s syntax: bytes, not only UTF-8, may match.
fn syntax_config() -> syntax::Config {
    syntax::Config::new().utf8(false)
}

/// A string that every value the whole-value `pattern` matches starts with:
/// the literal characters before the first metacharacter, less the last one
/// if any quantifier follows it (even `+`: `/+{0,1}` matches the empty
/// string). Empty when unsure (any alternation).
pub(crate) fn literal_prefix(pattern: &str) -> &str {
    if pattern.contains('|') {
        return "";
    }
    // A leading `^` is the start of the text: no flag can precede it.
    let pattern = pattern.strip_prefix('^').unwrap_or(pattern);
    let end = pattern
        .find(|c| r"\.+*?()|[]{}^$".contains(c))
        .unwrap_or(pattern.len());
    let literal = &pattern[..end];
    if pattern[end..].starts_with(['?', '*', '+', '{']) {
        match literal.char_indices().next_back() {
            Some((last, _)) => &literal[..last],
            None => literal,
        }
    } else {
        literal
    }
}

/// The raw value of the first `name=value` pair in `query` whose
/// percent-decoded name equals `name`. A pair without `=` has an empty value.
fn first_query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        percent_decode_str(raw_name)
            .eq(name.bytes())
            .then_some(raw_value)
    })
}

// === Precedence ===

const PATH_EXACT: u8 = 0;
const PATH_REGEX: u8 = 1;
const PATH_PREFIX: u8 = 2;

/// Which ordering a route follows; families never interleave. One router is
/// meant to hold one API's routes, so the order between families only
/// matters for hosts claimed by more than one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Family {
    /// GRPCRoute: hostname first, then service, method, headers.
    Grpc,
    /// HTTPRoute: path, method, headers, query parameters, then hostname.
    Http,
    /// Ingress: hostname first, then path.
    Ingress,
}

impl Family {
    fn host_first(self) -> bool {
        !matches!(self, Self::Http)
    }
}

/// How specific a route's conditions are, other than its host; smaller sorts
/// first and wins. The derived `Ord` compares fields top to bottom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Criteria {
    /// Exact path, then regular expression, then prefix (gRPC: always 0).
    path_class: u8,
    /// Longer first: path characters (prefixes without trailing slashes,
    /// regular expressions by pattern), or the gRPC service's.
    primary_len: Reverse<usize>,
    /// gRPC: an exact service before a pattern of the same length.
    primary_regex: bool,
    /// gRPC: the method's characters, longer first.
    secondary_len: Reverse<usize>,
    secondary_regex: bool,
    /// `false` (has a method) before `true`.
    any_method: bool,
    /// More header conditions first.
    header_count: Reverse<usize>,
    /// More query parameter conditions first.
    query_count: Reverse<usize>,
}

/// A route's place in the order, apart from the host it matched by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Precedence {
    pub(crate) family: Family,
    criteria: Criteria,
    rank: u64,
    /// The input position: decides only between routes that agree on
    /// everything else, rank included.
    pub(crate) index: usize,
}

/// How specifically a route hostname matched the request's host; smaller
/// wins. Gateway API: "the largest number of characters in a matching
/// non-wildcard hostname", then "characters in a matching hostname": an exact
/// host, then longer wildcards, then routes for any host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum HostRank {
    Exact,
    /// The wildcard's suffix length (`*.example.com`: `example.com`).
    Wildcard(Reverse<usize>),
    Any,
}

/// The complete order between two (route, matched host) candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    family: Family,
    host_first: Option<HostRank>,
    criteria: Criteria,
    host_last: Option<HostRank>,
    rank: u64,
    index: usize,
}

impl Key {
    pub(crate) fn new(precedence: &Precedence, host: HostRank) -> Self {
        let host_first = precedence.family.host_first();
        Self {
            family: precedence.family,
            host_first: host_first.then_some(host),
            criteria: precedence.criteria,
            host_last: (!host_first).then_some(host),
            rank: precedence.rank,
            index: precedence.index,
        }
    }

    /// The first criterion on which `self` comes before `other`, or `None`
    /// when it does not (`self >= other`).
    pub(crate) fn decided_by(&self, other: &Key) -> Option<PrecedenceStep> {
        if self >= other {
            return None;
        }
        let (a, b) = (&self.criteria, &other.criteria);
        let step = if self.family != other.family {
            PrecedenceStep::Family
        } else if self.host_first != other.host_first {
            PrecedenceStep::Hostname
        } else if a.path_class != b.path_class {
            PrecedenceStep::PathKind
        } else if a.primary_len != b.primary_len {
            PrecedenceStep::PathLength
        } else if a.primary_regex != b.primary_regex {
            PrecedenceStep::PathKind
        } else if (a.secondary_len, a.secondary_regex) != (b.secondary_len, b.secondary_regex) {
            PrecedenceStep::GrpcMethod
        } else if a.any_method != b.any_method {
            PrecedenceStep::Method
        } else if a.header_count != b.header_count {
            PrecedenceStep::HeaderCount
        } else if a.query_count != b.query_count {
            PrecedenceStep::QueryParamCount
        } else if self.host_last != other.host_last {
            PrecedenceStep::Hostname
        } else if self.rank != other.rank {
            PrecedenceStep::Rank
        } else {
            PrecedenceStep::Order
        };
        Some(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `regex::bytes::RegexBuilder` says of `pattern`, as
    /// `compile_regex` must say it: `Ok` with whether it matches each of
    /// `values` whole.
    fn regex_crate(pattern: &str, values: &[&[u8]]) -> Result<Vec<bool>, String> {
        let whole = |p: &str| {
            regex::bytes::RegexBuilder::new(p)
                .size_limit(REGEX_SIZE_LIMIT)
                .dfa_size_limit(REGEX_SIZE_LIMIT)
                .build()
        };
        whole(pattern).map_err(|e| e.to_string())?;
        let regex = whole(&format!(r"\A(?:{pattern})\z")).map_err(|e| e.to_string())?;
        Ok(values.iter().map(|v| regex.is_match(v)).collect())
    }

    fn ours(pattern: &str, values: &[&[u8]]) -> Result<Vec<bool>, String> {
        let regex = compile_regex(pattern).map_err(|e| e.to_string())?;
        assert_eq!(regex.pattern(), pattern);
        Ok(values.iter().map(|v| regex.is_match(v)).collect())
    }

    #[test]
    fn compile_regex_agrees_with_the_regex_crate() {
        let values: [&[u8]; 6] = [b"", b"/users/42", b"abc", b"b", b"\xFF", b"Strasse"];
        let patterns = [
            "/users/[0-9]+",
            "",
            "(?i)stra(ss|\u{DF})e",
            // Valid for bytes, unlike for a string regex.
            r"(?-u:\xFF)",
            "a|b",
            // Valid inside a group, not alone.
            "a)|(b",
            "v[",
            "*",
            "(?P<n>x)(?P<n>y)",
            r"\w{1000}",
            "[a-z]{100000}",
        ];
        let mut outcomes = Vec::new();
        for pattern in patterns {
            let ours = ours(pattern, &values);
            assert_eq!(ours, regex_crate(pattern, &values), "{pattern:?}");
            outcomes.push(ours);
        }
        assert_eq!(
            outcomes[3],
            Ok(vec![false, false, false, false, true, false])
        );
        assert!(matches!(&outcomes[5], Err(e) if e.contains("error:")));
        assert!(matches!(&outcomes[10], Err(e) if e.contains("size limit")));
    }

    proptest::proptest! {
        #[test]
        fn compile_regex_agrees_with_the_regex_crate_on_any_pattern(
            pattern in r"[a-c/()\[\]{}|*+?.^$\\,:<>=!PpwdsbBuxQE0-9-]{0,16}",
            values in proptest::collection::vec("[a-c/0-9]{0,6}", 4),
        ) {
            let values: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
            proptest::prop_assert_eq!(ours(&pattern, &values), regex_crate(&pattern, &values));
        }
    }

    #[test]
    fn literal_prefixes_are_sound() {
        let cases = [
            ("/api/v[0-9]+", "/api/v"),
            ("^/api/.*", "/api/"),
            ("/abc?", "/ab"),
            ("/abc*", "/ab"),
            ("/abc+", "/ab"),
            ("/+{0,1}", ""),
            ("/a+?", "/"),
            ("/abc{0,2}", "/ab"),
            ("/a|/b", ""),
            ("(?i)/api", ""),
            ("/é*", "/"),
            ("/a\\.b", "/a"),
            ("", ""),
            (".*", ""),
        ];
        for (pattern, want) in cases {
            assert_eq!(literal_prefix(pattern), want, "{pattern:?}");
        }
    }

    #[test]
    fn regexes_match_whole_values() {
        let re = compile_regex("/v[0-9]+").expect("valid");
        assert!(re.is_match(b"/v12"));
        assert!(!re.is_match(b"/v12/x"));
        assert!(!re.is_match(b"x/v12"));
        // A pattern that is only valid once wrapped is refused.
        assert!(compile_regex("a)|(b").is_err());
        // A pattern whose compiled form is too large is refused.
        assert!(compile_regex("(a{100}){100}").is_err());
        assert!(compile_regex(r"\w+/[0-9a-f]{32}").is_ok());
    }

    #[test]
    fn query_values() {
        let cases = [
            ("a=1&b=2", "b", Some("2")),
            ("a=1&a=2", "a", Some("1")),
            ("a", "a", Some("")),
            ("a=", "a", Some("")),
            ("x=1&%61=2", "a", Some("2")),
            ("A=1", "a", None),
            ("", "a", None),
            ("ab=1", "a", None),
            ("a=1=2", "a", Some("1=2")),
        ];
        for (query, name, want) in cases {
            assert_eq!(first_query_value(query, name), want, "{query:?} {name:?}");
        }
    }

    #[test]
    fn grpc_paths() {
        assert_eq!(grpc_parts("/pkg.Svc/Get"), Some(("pkg.Svc", "Get")));
        assert_eq!(grpc_parts("/pkg.Svc/"), None);
        assert_eq!(grpc_parts("//Get"), None);
        assert_eq!(grpc_parts("/pkg.Svc/Get/x"), None);
        assert_eq!(grpc_parts("/pkg.Svc"), None);
        assert_eq!(grpc_parts("pkg.Svc/Get"), None);
        assert!(valid_grpc_service("helloworld.Greeter"));
        assert!(valid_grpc_service(".a._b.c1"));
        assert!(!valid_grpc_service("a..b"));
        assert!(!valid_grpc_service("1a"));
        assert!(!valid_grpc_service("a/b"));
        assert!(valid_grpc_method("SayHello_2"));
        assert!(!valid_grpc_method("Say.Hello"));
        assert!(!valid_grpc_method(""));
    }
}
