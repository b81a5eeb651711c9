//! Cross-reference and uniqueness checks over a whole snapshot.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use crate::error::{FieldError, ValidationErrors};
use crate::model::{ConfigSnapshot, HashOn, LbPolicy, LoadBalancing, MatchType, PathMatch, Route};

/// The largest weight a backend reference or endpoint may carry (Gateway API's bound).
pub(crate) const MAX_WEIGHT: u32 = 1_000_000;

impl ConfigSnapshot {
    /// Checks everything the types cannot express: names unique and non-empty, every route's
    /// listener and backends exist, hostnames and paths well formed, weights in range.
    /// Returns every problem found, not only the first.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = Vec::new();

        let mut listeners = HashSet::new();
        let mut sockets = HashMap::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let object = format!("listener {:?}", l.name);
            if l.name.is_empty() {
                errors.push(FieldError::new(
                    format!("listeners[{i}]"),
                    "name",
                    "must not be empty",
                ));
            } else if !listeners.insert(l.name.as_str()) {
                errors.push(FieldError::new(&object, "name", "duplicate listener name"));
            }
            crate::tls::validate_listener(l, &object, &mut errors);
            if l.port != 0
                && let Some(other) = sockets.insert((l.bind, l.port), l.name.as_str())
            {
                errors.push(FieldError::new(
                    &object,
                    "port",
                    format!("port {} is already used by listener {other:?}", l.port),
                ));
            }
        }

        let backends: HashSet<&str> = self.backends.iter().map(|b| b.name.as_str()).collect();
        let mut route_names = HashSet::with_capacity(self.routes.len());
        for (i, r) in self.routes.iter().enumerate() {
            let name = || {
                if r.name.is_empty() {
                    format!("routes[{i}]")
                } else {
                    format!("route {:?} on listener {:?}", r.name, r.listener)
                }
            };
            named(&mut errors, name, |errors| {
                if r.name.is_empty() {
                    errors.push(FieldError::new("", "name", "must not be empty"));
                } else if !route_names.insert((r.listener.as_str(), r.name.as_str())) {
                    errors.push(FieldError::new(
                        "",
                        "name",
                        "duplicate route on this listener",
                    ));
                }
                if !listeners.contains(r.listener.as_str()) {
                    errors.push(FieldError::new(
                        "",
                        "listener",
                        format!("no listener named {:?}", r.listener),
                    ));
                }
                validate_route(r, "", &backends, errors);
            });
        }

        let mut names = HashSet::with_capacity(self.backends.len());
        for (i, b) in self.backends.iter().enumerate() {
            if b.name.is_empty() {
                errors.push(FieldError::new(
                    format!("backends[{i}]"),
                    "name",
                    "must not be empty",
                ));
            }
            named(
                &mut errors,
                || format!("backend {:?}", b.name),
                |errors| {
                    if !b.name.is_empty() && !names.insert(b.name.as_str()) {
                        errors.push(FieldError::new("", "name", "duplicate backend name"));
                    }
                    validate_load_balancing(&b.load_balancing, "", errors);
                    crate::health::validate(&b.health, "", errors);
                    if let Some(tls) = &b.tls {
                        crate::tls::validate_upstream(tls, "", errors);
                    }
                    let mut addresses = HashSet::with_capacity(b.endpoints.len());
                    for (j, e) in b.endpoints.iter().enumerate() {
                        let field = || format!("endpoints[{j}]");
                        if e.address.port() == 0 {
                            errors.push(FieldError::new("", field(), "port must not be 0"));
                        }
                        if !addresses.insert(e.address) {
                            errors.push(FieldError::new(
                                "",
                                field(),
                                format!("duplicate endpoint {}", e.address),
                            ));
                        }
                        if e.weight == 0 || e.weight > MAX_WEIGHT {
                            errors.push(FieldError::new(
                                "",
                                format!("{}.weight", field()),
                                format!("must be between 1 and {MAX_WEIGHT}, got {}", e.weight),
                            ));
                        }
                    }
                },
            );
        }

        crate::vip::validate_vips(&self.vips, &mut errors);
        ValidationErrors::check(errors)
    }
}

/// Runs `check`, which reports errors with an empty object, then sets their object to `name()`.
/// A snapshot of thousands of objects is validated at translation, decoding and apply; this way
/// only the names of objects with errors are ever formatted.
fn named(
    errors: &mut Vec<FieldError>,
    name: impl FnOnce() -> String,
    check: impl FnOnce(&mut Vec<FieldError>),
) {
    let start = errors.len();
    check(errors);
    if let Some((last, rest)) = errors[start..].split_last_mut() {
        let name = name();
        for e in rest {
            e.object.clone_from(&name);
        }
        last.object = name;
    }
}

/// The largest Maglev table the balancer builds (`novaedge-lb`'s bound).
const MAX_MAGLEV_TABLE_SIZE: u32 = 5_000_011;

fn validate_load_balancing(lb: &LoadBalancing, object: &str, errors: &mut Vec<FieldError>) {
    let mut error = |field: &str, message: String| {
        errors.push(FieldError::new(
            object,
            format!("load_balancing.{field}"),
            message,
        ))
    };
    match lb.policy {
        LbPolicy::LeastRequest { choices: 0 } => {
            error("least_request.choices", "must be at least 1".into())
        }
        LbPolicy::PeakEwma { decay, .. } if decay.is_zero() => {
            error("peak_ewma.decay", "must be above 0".into())
        }
        LbPolicy::RingHash {
            points_per_weight: 0,
            ..
        } => error("ring_hash.points_per_weight", "must be at least 1".into()),
        LbPolicy::RingHash {
            max_ring_size: 0, ..
        } => error("ring_hash.max_ring_size", "must be at least 1".into()),
        LbPolicy::Maglev { table_size }
            if table_size > MAX_MAGLEV_TABLE_SIZE || !is_prime(table_size) =>
        {
            error(
                "maglev.table_size",
                format!("must be a prime no larger than {MAX_MAGLEV_TABLE_SIZE}, got {table_size}"),
            )
        }
        _ => {}
    }
    match (&lb.hash_on, lb.policy.uses_hash()) {
        (None, true) => error(
            "hash_on",
            "required by hashing policies (ring hash, Maglev): say what requests are hashed on"
                .into(),
        ),
        (Some(_), false) => error(
            "hash_on",
            "only ring hash and Maglev hash requests; remove it or change the policy".into(),
        ),
        (Some(HashOn::Cookie(name) | HashOn::QueryParam(name)), true) if name.is_empty() => error(
            "hash_on",
            "the cookie or query parameter name must not be empty".into(),
        ),
        _ => {}
    }
    if lb.panic_threshold_percent > 100 {
        error(
            "panic_threshold_percent",
            format!("must be at most 100, got {}", lb.panic_threshold_percent),
        );
    }
}

fn is_prime(n: u32) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

fn validate_route(r: &Route, object: &str, backends: &HashSet<&str>, errors: &mut Vec<FieldError>) {
    for (i, h) in r.hostnames.iter().enumerate() {
        if let Err(why) = check_hostname(h) {
            errors.push(FieldError::new(
                object,
                format!("hostnames[{i}]"),
                format!("{h:?}: {why}"),
            ));
        }
    }
    for (i, rule) in r.rules.iter().enumerate() {
        for (j, m) in rule.matches.iter().enumerate() {
            let field = || format!("rules[{i}].matches[{j}]");
            if let Err(why) = check_path(&m.path) {
                errors.push(FieldError::new(
                    object,
                    format!("{}.path.value", field()),
                    format!("{:?}: {why}", m.path.value()),
                ));
            }
            for (k, h) in m.headers.iter().enumerate() {
                if h.kind == MatchType::RegularExpression
                    && let Err(why) = check_regex(&h.value)
                {
                    let field = format!("{}.headers[{k}].value", field());
                    errors.push(FieldError::new(object, field, why));
                }
            }
            for (k, q) in m.query_params.iter().enumerate() {
                if q.kind == MatchType::RegularExpression
                    && let Err(why) = check_regex(&q.value)
                {
                    let field = format!("{}.query_params[{k}].value", field());
                    errors.push(FieldError::new(object, field, why));
                }
            }
            for (k, q) in m.query_params.iter().enumerate() {
                if q.name.is_empty() {
                    errors.push(FieldError::new(
                        object,
                        format!("{}.query_params[{k}].name", field()),
                        "must not be empty",
                    ));
                }
            }
        }
        let prefix_matches = rule
            .matches
            .iter()
            .all(|m| matches!(m.path, PathMatch::Prefix(_)));
        crate::filters::validate(
            &rule.filters,
            object,
            &format!("rules[{i}]"),
            prefix_matches,
            backends,
            errors,
        );
        for (j, b) in rule.backends.iter().enumerate() {
            if !backends.contains(b.backend.as_str()) {
                errors.push(FieldError::new(
                    object,
                    format!("rules[{i}].backends[{j}].backend"),
                    format!("no backend named {:?}", b.backend),
                ));
            }
            if b.weight > MAX_WEIGHT {
                errors.push(FieldError::new(
                    object,
                    format!("rules[{i}].backends[{j}].weight"),
                    format!("must be at most {MAX_WEIGHT}, got {}", b.weight),
                ));
            }
        }
    }
}

/// A lowercase RFC 1123 DNS name, optionally with a leading `*.` wildcard label (the Gateway API
/// hostname syntax).
pub fn check_hostname(host: &str) -> Result<(), &'static str> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.is_empty() {
        return Err("empty hostname");
    }
    if name.len() > 253 {
        return Err("longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > 63 {
            return Err("label longer than 63 characters");
        }
        if label == "*" {
            return Err("a wildcard may only be the whole first label");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("labels may hold only lowercase letters, digits and '-'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("labels may not start or end with '-'");
        }
    }
    Ok(())
}

/// The compiled-size budget of one regular expression in a route (the `regex` crate's
/// `size_limit`): generous for real patterns, small enough that a hostile or mistaken pattern
/// cannot make the data plane allocate without bound.
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// Checks that `pattern` is a valid RE2-syntax regular expression within [`REGEX_SIZE_LIMIT`]:
/// exactly what `regex::RegexBuilder::new(pattern).size_limit(REGEX_SIZE_LIMIT).build()` checks,
/// with the same messages.
///
/// It builds what that builds (the syntax tree, the forward and reverse NFAs within the size
/// limit) but none of the engines that only make matching faster and never refuse a pattern.
/// The full DFA among them costs a fraction of a millisecond per pattern (the `regex` crate builds
/// one for small patterns whenever another crate of the build turns on `regex-automata`'s
/// `dfa-build`, as tracing-subscriber's env filter does), and a snapshot's patterns are checked
/// several times on their way to the data plane: translation, validation, decoding, apply.
pub fn check_regex(pattern: &str) -> Result<(), String> {
    if let Some(verdict) = verdicts().by_pattern.get(pattern) {
        return verdict.clone();
    }
    let verdict = check_regex_uncached(pattern);
    let size = pattern.len() + verdict.as_ref().err().map_or(0, String::len);
    let mut remembered = verdicts();
    if remembered.bytes + size > REMEMBERED_BYTES {
        remembered.by_pattern = HashMap::new();
        remembered.bytes = 0;
    }
    if size <= REMEMBERED_BYTES {
        remembered.bytes += size;
        remembered
            .by_pattern
            .insert(pattern.into(), verdict.clone());
    }
    verdict
}

/// How much text of patterns and error messages [`check_regex`] keeps: every pattern of a large
/// configuration, and a bound on the memory a stream of new patterns can take (all are
/// forgotten at once when it is reached).
const REMEMBERED_BYTES: usize = 2 << 20;

/// The verdicts of the patterns [`check_regex`] checked last. A verdict depends on nothing but
/// the pattern, and one snapshot's patterns are checked on each of its ways: translation,
/// validation, decoding by the agent, apply.
fn verdicts() -> MutexGuard<'static, Verdicts> {
    static VERDICTS: OnceLock<Mutex<Verdicts>> = OnceLock::new();
    VERDICTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// [`check_regex`]'s verdicts by pattern, and the bytes of text they hold.
#[derive(Default)]
struct Verdicts {
    by_pattern: HashMap<Box<str>, Result<(), String>>,
    bytes: usize,
}

fn check_regex_uncached(pattern: &str) -> Result<(), String> {
    use regex_automata::{MatchKind, meta, util::syntax};
    // `regex::RegexBuilder`'s defaults for a `Regex` (not `bytes::Regex`): UTF-8 mode.
    let config = meta::Config::new()
        .match_kind(MatchKind::LeftmostFirst)
        .utf8_empty(true)
        .nfa_size_limit(Some(REGEX_SIZE_LIMIT))
        .hybrid_cache_capacity(2 * (1 << 20))
        .dfa(false)
        .onepass(false);
    meta::Builder::new()
        .configure(config)
        .syntax(syntax::Config::new().utf8(true))
        .build(pattern)
        .map(drop)
        .map_err(|e| {
            format!(
                "invalid regular expression {pattern:?}: {}",
                regex_error(&e)
            )
        })
}

/// The `regex` crate's error for a pattern its builder refuses with `e` (as its own
/// `Error::from_meta_build_error` says it).
fn regex_error(e: &regex_automata::meta::BuildError) -> regex::Error {
    if let Some(limit) = e.size_limit() {
        regex::Error::CompiledTooBig(limit)
    } else if let Some(syntax) = e.syntax_error() {
        regex::Error::Syntax(syntax.to_string())
    } else {
        regex::Error::Syntax(e.to_string())
    }
}

fn check_path(path: &PathMatch) -> Result<(), String> {
    if let PathMatch::RegularExpression(pattern) = path {
        return check_regex(pattern);
    }
    let value = path.value();
    if !value.starts_with('/') {
        return Err("must start with '/'".into());
    }
    if value.contains(['?', '#']) {
        return Err("must not contain '?' or '#'".into());
    }
    if value.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err("must not contain spaces or control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn listener(name: &str, port: u16) -> Listener {
        Listener {
            name: name.into(),
            bind: None,
            port,
            protocol: ListenerProtocol::Http,
            tls: None,
            https_redirect_port: None,
        }
    }

    #[test]
    fn hostnames() {
        for ok in ["a.com", "*.a.com", "x-1.y", "localhost"] {
            assert_eq!(check_hostname(ok), Ok(()), "{ok}");
        }
        for bad in [
            "", "*", "*.", "A.com", "a..com", "a.*.com", "-a.com", "a_b.com",
        ] {
            assert!(check_hostname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reports_every_problem_with_its_place() {
        let s = ConfigSnapshot {
            version: 1,
            listeners: vec![listener("a", 80), listener("b", 80), listener("a", 81)],
            routes: vec![Route {
                name: "ns/r".into(),
                listener: "nope".into(),
                hostnames: vec!["Bad.Host".into()],
                rules: vec![RouteRule {
                    matches: vec![RouteMatch {
                        path: PathMatch::Prefix("v1".into()),
                        ..RouteMatch::default()
                    }],
                    backends: vec![BackendRef {
                        backend: "ns/missing:80".into(),
                        weight: 1,
                    }],
                    invalid_backend_weight: 0,
                    filters: Default::default(),
                }],
                creation_timestamp: 0,
                dialect: Default::default(),
            }],
            backends: vec![Backend {
                tls: None,
                name: "ns/b:80".into(),
                protocol: UpstreamProtocol::Http1,
                load_balancing: LoadBalancing {
                    policy: LbPolicy::Maglev { table_size: 65_536 },
                    hash_on: None,
                    panic_threshold_percent: 50,
                },
                health: crate::HealthPolicy {
                    active: Some(crate::ActiveHealthCheck {
                        unhealthy_threshold: 0,
                        ..crate::ActiveHealthCheck::new(crate::HealthProbe::Http {
                            path: "healthz".into(),
                            host: None,
                            expected_statuses: vec![std::ops::RangeInclusive::new(200, 99)],
                        })
                    }),
                    ..Default::default()
                },
                endpoints: vec![
                    Endpoint {
                        address: "127.0.0.1:0".parse().unwrap(),
                        ready: true,
                        weight: 1,
                    },
                    Endpoint {
                        address: "127.0.0.1:0".parse().unwrap(),
                        ready: true,
                        weight: 0,
                    },
                ],
            }],
            vips: Vec::new(),
        };
        let err = s.validate().unwrap_err();
        let got: Vec<String> = err
            .errors()
            .iter()
            .map(|e| format!("{} | {}", e.object, e.field))
            .collect();
        assert_eq!(
            got,
            [
                "listener \"b\" | port",
                "listener \"a\" | name",
                "route \"ns/r\" on listener \"nope\" | listener",
                "route \"ns/r\" on listener \"nope\" | hostnames[0]",
                "route \"ns/r\" on listener \"nope\" | rules[0].matches[0].path.value",
                "route \"ns/r\" on listener \"nope\" | rules[0].backends[0].backend",
                "backend \"ns/b:80\" | load_balancing.maglev.table_size",
                "backend \"ns/b:80\" | load_balancing.hash_on",
                "backend \"ns/b:80\" | health.active.unhealthy_threshold",
                "backend \"ns/b:80\" | health.active.http.path",
                "backend \"ns/b:80\" | health.active.http.expected_statuses[0]",
                "backend \"ns/b:80\" | endpoints[0]",
                "backend \"ns/b:80\" | endpoints[1]",
                "backend \"ns/b:80\" | endpoints[1]",
                "backend \"ns/b:80\" | endpoints[1].weight",
            ]
        );
    }

    #[test]
    fn regular_expressions_are_compiled_and_bounded() {
        let route = |m: RouteMatch| ConfigSnapshot {
            version: 1,
            listeners: vec![listener("l", 80)],
            routes: vec![Route {
                name: "ns/r".into(),
                listener: "l".into(),
                hostnames: vec![],
                rules: vec![RouteRule {
                    matches: vec![m],
                    backends: vec![],
                    invalid_backend_weight: 0,
                    filters: Default::default(),
                }],
                creation_timestamp: 0,
                dialect: Default::default(),
            }],
            backends: vec![],
            vips: Vec::new(),
        };
        let ok = route(RouteMatch {
            path: PathMatch::RegularExpression("/v[0-9]+/.*".into()),
            headers: vec![HeaderMatch {
                name: http::HeaderName::from_static("x-a"),
                value: "a|b".into(),
                kind: MatchType::RegularExpression,
            }],
            ..RouteMatch::default()
        });
        assert_eq!(ok.validate(), Ok(()));

        let bad = route(RouteMatch {
            path: PathMatch::RegularExpression("/(unclosed".into()),
            query_params: vec![
                QueryParamMatch {
                    name: "q".into(),
                    // Compiles to far more than the size limit.
                    value: "(\\w{100}){100}".into(),
                    kind: MatchType::RegularExpression,
                },
                QueryParamMatch {
                    name: String::new(),
                    value: "x".into(),
                    kind: MatchType::Exact,
                },
            ],
            ..RouteMatch::default()
        });
        let err = bad.validate().unwrap_err();
        let fields: Vec<_> = err.errors().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "rules[0].matches[0].path.value",
                "rules[0].matches[0].query_params[0].value",
                "rules[0].matches[0].query_params[1].name",
            ]
        );
        assert!(err.errors()[1].message.contains("size limit"), "{err}");
    }

    #[test]
    fn a_good_snapshot_passes() {
        let s = ConfigSnapshot {
            version: 1,
            listeners: vec![listener("a", 80), listener("t0", 0), listener("t1", 0)],
            ..ConfigSnapshot::default()
        };
        assert_eq!(s.validate(), Ok(()));
    }

    /// What the `regex` crate says of `pattern`, as `check_regex` must say it.
    fn regex_crate(pattern: &str) -> Result<(), String> {
        regex::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(drop)
            .map_err(|e| format!("invalid regular expression {pattern:?}: {e}"))
    }

    #[test]
    fn check_regex_agrees_with_the_regex_crate() {
        let patterns = [
            "/users/[0-9]+",
            "",
            "^/api/v[23]/.*$",
            r"(?i)stra\x{DF}e",
            r"\p{Greek}+\b",
            r"(?P<id>[a-f0-9]{8})-(?P<id2>x)",
            // Invalid alone (valid inside a group).
            "a)|(b",
            "/users/(unclosed",
            "v[",
            "*",
            r"\Q",
            "(?P<n>x)(?P<n>y)",
            "x{2,1}",
            // Not UTF-8 mode: refused by a string regex.
            r"(?-u:\xFF)",
            // Past the size limit.
            r"\w{1000}",
            "[a-z]{100000}",
            "(a{1000}){1000}",
        ];
        for pattern in patterns {
            assert_eq!(check_regex(pattern), regex_crate(pattern), "{pattern:?}");
        }
        let outcomes: Vec<Result<(), String>> = patterns.iter().map(|p| check_regex(p)).collect();
        assert!(outcomes.iter().any(Result::is_ok));
        assert!(
            outcomes
                .iter()
                .any(|o| o.as_ref().is_err_and(|e| e.contains("size limit")))
        );
        assert!(
            outcomes
                .iter()
                .any(|o| o.as_ref().is_err_and(|e| e.contains("error:")))
        );
    }

    #[test]
    fn remembered_verdicts_stay_within_their_budget() {
        // Invalid at their last character, so that each is read whole and refused quickly.
        let long = "a".repeat(REMEMBERED_BYTES / 8);
        for i in 0..6 {
            let pattern = format!("{long}{i})");
            assert_eq!(check_regex(&pattern), regex_crate(&pattern));
            assert!(verdicts().bytes <= REMEMBERED_BYTES);
        }
        let huge = format!("{})", "b".repeat(REMEMBERED_BYTES));
        assert_eq!(check_regex(&huge), regex_crate(&huge));
        assert!(!verdicts().by_pattern.contains_key(huge.as_str()));
    }

    proptest::proptest! {
        #[test]
        fn check_regex_agrees_with_the_regex_crate_on_any_pattern(
            pattern in r"[a-z0-9/()\[\]{}|*+?.^$\\,:<>=!PpwdsbBuxQE-]{0,24}"
        ) {
            let want = regex_crate(&pattern);
            proptest::prop_assert_eq!(check_regex(&pattern), want.clone());
            // Checked again: the remembered verdict.
            proptest::prop_assert_eq!(check_regex(&pattern), want);
        }
    }
}
