//! `novaedge explain`: what the proxy would do with one request, and why. The listener is
//! picked by the URL's port and scheme, the routes of that listener are compiled into the
//! router the data plane uses, and [`Router::explain`] gives the verdict on each of their
//! conditions: the selected route, rule and match, its backends and filters, and for every other
//! route why it is not the one (a hostname, path, method, header or query parameter that does
//! not match, or a match of lower precedence).
//!
//! The request is taken as an HTTP/1.1 client sends it: the path in origin form and the host
//! in the `Host` header, which is the URL's authority unless `-H 'Host: ...'` gives another
//! (the proxy routes by the URI authority when there is one, HTTP/2's `:authority`, and by
//! `Host` otherwise; clients set either from the same value). Over HTTPS the SNI is the URL's
//! host.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use novaedge_k8s::TranslateOptions;
use novaedge_k8s::file_source::FileSource;
use novaedge_router::{
    self as router, Condition, Explanation, HostnameVerdict, Outcome, RouteExplanation, Router,
};
use novaedge_snapshot::{self as snapshot, ConfigSnapshot, ListenerProtocol};
use serde_json::{Value, json};

/// Exit status for usage and configuration errors.
pub(crate) const EXIT_ERROR: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug)]
pub(crate) struct Options {
    pub(crate) paths: Vec<PathBuf>,
    pub(crate) translate: TranslateOptions,
    /// `METHOD URL`, or only `URL` (GET).
    pub(crate) request: String,
    /// `name: value`.
    pub(crate) headers: Vec<String>,
    pub(crate) output: OutputFormat,
}

/// Prints `error: MESSAGE` on stderr and gives the exit status of usage and configuration
/// errors.
pub(crate) fn fail(message: impl std::fmt::Display) -> Result<ExitCode, super::Error> {
    writeln!(std::io::stderr().lock(), "error: {message}")?;
    Ok(ExitCode::from(EXIT_ERROR))
}

/// Translates manifests as `novaedge check` does. On errors, prints every diagnostic the way
/// `check` prints them and returns `None`; warnings go to stderr, to keep stdout for the answer.
pub(crate) fn load_manifests(
    paths: &[PathBuf],
    options: &TranslateOptions,
) -> Result<Option<ConfigSnapshot>, super::Error> {
    match FileSource::new(paths.to_vec())
        .with_options(options.clone())
        .load()
    {
        Ok(loaded) => {
            let mut err = std::io::stderr().lock();
            for warning in &loaded.warnings {
                writeln!(err, "{warning}")?;
            }
            let mut snapshot = loaded.snapshot;
            // `run` holds every ProxyVIP of the files itself; so does this view.
            snapshot.vips = loaded.vips.into_iter().map(|v| v.vip).collect();
            Ok(Some(snapshot))
        }
        Err(diagnostics) => {
            let mut out = std::io::stdout().lock();
            for d in &diagnostics {
                writeln!(out, "{d}")?;
            }
            let errors = diagnostics.iter().filter(|d| d.is_error()).count();
            writeln!(out, "{errors} error(s)")?;
            Ok(None)
        }
    }
}

/// The request as given on the command line.
#[derive(Debug)]
struct Asked {
    method: Method,
    url: Uri,
    https: bool,
    port: u16,
    /// What is routed on: origin-form URI, `Host` header.
    request: Request<()>,
    /// Where the host came from: `url` or `host_header`.
    host_source: &'static str,
}

fn parse_request(request: &str, headers: &[String]) -> Result<Asked, String> {
    let mut words = request.split_whitespace();
    let (method, url) = match (words.next(), words.next(), words.next()) {
        (Some(url), None, None) => ("GET", url),
        (Some(method), Some(url), None) => (method, url),
        _ => return Err(format!("--request {request:?}: expected 'METHOD URL'")),
    };
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|e| format!("--request {request:?}: method {method:?}: {e}"))?;
    let url: Uri = url
        .parse()
        .map_err(|e| format!("--request {request:?}: URL {url:?}: {e}"))?;
    let https = match url.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            return Err(format!(
                "--request {request:?}: the URL must be absolute, http:// or https://"
            ));
        }
    };
    let Some(authority) = url.authority() else {
        return Err(format!("--request {request:?}: the URL has no host"));
    };
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let mut map = HeaderMap::new();
    for header in headers {
        let Some((name, value)) = header.split_once(':') else {
            return Err(format!("-H {header:?}: expected 'name: value'"));
        };
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|e| format!("-H {header:?}: header name: {e}"))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|e| format!("-H {header:?}: header value: {e}"))?;
        map.append(name, value);
    }
    let host_source = if map.contains_key(http::header::HOST) {
        "host_header"
    } else {
        map.insert(
            http::header::HOST,
            HeaderValue::from_str(authority.as_str())
                .map_err(|e| format!("--request {request:?}: host: {e}"))?,
        );
        "url"
    };
    let origin = url.path_and_query().map_or("/", |pq| pq.as_str());
    let mut req = Request::builder()
        .method(method.clone())
        .uri(origin)
        .body(())
        .map_err(|e| format!("--request {request:?}: {e}"))?;
    *req.headers_mut() = map;
    Ok(Asked {
        method,
        url,
        https,
        port,
        request: req,
        host_source,
    })
}

/// What a router entry stands for: one match of one rule of one snapshot route.
type MatchRef = novaedge_core::routing::EntryRef;

/// The router the data plane builds for `listener`: the same entries, ranks and order
/// (`novaedge_core::routing`).
fn listener_router(
    snapshot: &ConfigSnapshot,
    listener: &str,
) -> Result<Router<MatchRef>, router::RouterError> {
    let entries = novaedge_core::routing::route_entries(snapshot)
        .remove(listener)
        .unwrap_or_default();
    Router::new(entries)
}

pub(crate) fn explain(options: Options) -> Result<ExitCode, super::Error> {
    let asked = match parse_request(&options.request, &options.headers) {
        Ok(asked) => asked,
        Err(e) => return fail(e),
    };
    let Some(snapshot) = load_manifests(&options.paths, &options.translate)? else {
        return Ok(ExitCode::from(EXIT_ERROR));
    };
    let report = match build_report(&snapshot, &asked) {
        Ok(report) => report,
        Err(e) => return fail(e),
    };
    let mut out = std::io::stdout().lock();
    match options.output {
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report.json)?)?,
        OutputFormat::Text => write!(out, "{}", report.text)?,
    }
    Ok(if report.answered {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The answer, in both forms.
struct Report {
    /// A route matched (or the listener answers every request with a redirect).
    answered: bool,
    text: String,
    json: Value,
}

fn build_report(snapshot: &ConfigSnapshot, asked: &Asked) -> Result<Report, super::Error> {
    use std::fmt::Write as _;
    let host_header = asked
        .request
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let sni = asked
        .https
        .then(|| asked.url.host().unwrap_or("").to_owned());
    let mut text = String::new();
    writeln!(text, "request: {} {}", asked.method, asked.url)?;
    let source = match asked.host_source {
        "url" => "from the URL",
        _ => "from -H Host",
    };
    writeln!(text, "host: {host_header} ({source})")?;
    let mut json = json!({
        "request": {
            "method": asked.method.as_str(),
            "url": asked.url.to_string(),
            "scheme": if asked.https { "https" } else { "http" },
            "port": asked.port,
            "host": host_header,
            "host_source": asked.host_source,
            "sni": sni,
        },
    });

    let ports: Vec<Value> = snapshot
        .listeners
        .iter()
        .map(|l| json!({"name": l.name, "port": l.port, "protocol": protocol(l.protocol)}))
        .collect();
    let on_port: Vec<&snapshot::Listener> = snapshot
        .listeners
        .iter()
        .filter(|l| l.port == asked.port)
        .collect();
    let wanted = if asked.https {
        ListenerProtocol::Https
    } else {
        ListenerProtocol::Http
    };
    let Some(listener) = on_port.iter().find(|l| l.protocol == wanted).copied() else {
        let (result, reason) = match on_port.first() {
            Some(other) => (
                "protocol_mismatch",
                format!(
                    "listener {} on port {} is {}, the request is {}",
                    other.name,
                    asked.port,
                    protocol(other.protocol).to_uppercase(),
                    if asked.https { "HTTPS" } else { "HTTP" }
                ),
            ),
            None => ("no_listener", format!("no listener on port {}", asked.port)),
        };
        writeln!(text, "{reason}")?;
        let mut list: Vec<String> = snapshot
            .listeners
            .iter()
            .map(|l| format!("{} {} ({})", l.port, protocol(l.protocol), l.name))
            .collect();
        list.sort();
        if list.is_empty() {
            writeln!(text, "the configuration has no listeners")?;
        } else {
            writeln!(text, "listeners:")?;
            for l in list {
                writeln!(text, "  {l}")?;
            }
        }
        json["result"] = result.into();
        json["reason"] = reason.into();
        json["listeners"] = ports.into();
        return Ok(Report {
            answered: false,
            text,
            json,
        });
    };

    writeln!(
        text,
        "listener: {} (port {}, {})",
        listener.name,
        listener.port,
        protocol(listener.protocol)
    )?;
    let mut listener_json = json!({
        "name": listener.name,
        "port": listener.port,
        "protocol": protocol(listener.protocol),
    });
    if let (Some(tls), Some(sni)) = (&listener.tls, &sni) {
        let chosen = certificate_for(tls, sni);
        match &chosen {
            Some((i, names, by)) => writeln!(
                text,
                "tls: SNI {sni} -> certificates[{i}] {} [{}] (by {})",
                tls.certificates[*i].source,
                names.join(", "),
                by.replace('_', " ")
            )?,
            None => writeln!(
                text,
                "tls: SNI {sni}: no certificate serves it and there is no default; \
                 the handshake fails"
            )?,
        }
        if let Some(auth) = &tls.client_auth {
            writeln!(
                text,
                "tls: client certificate {}",
                if auth.optional {
                    "requested"
                } else {
                    "required"
                }
            )?;
        }
        listener_json["tls"] = json!({
            "sni": sni,
            "certificate": chosen.as_ref().map(|(i, names, by)| json!({
                "index": i,
                "chosen_by": by,
                "source": tls.certificates[*i].source,
                "server_names": names,
            })),
            "client_certificate": tls.client_auth.as_ref().map(|a| if a.optional { "optional" } else { "required" }),
        });
        if chosen.is_none() {
            json["listener"] = listener_json;
            json["result"] = "tls_handshake_fails".into();
            json["reason"] = format!("no certificate for SNI {sni}").into();
            return Ok(Report {
                answered: false,
                text,
                json,
            });
        }
    }
    json["listener"] = listener_json;

    if let Some(port) = listener.https_redirect_port {
        let reason = format!(
            "the listener answers every request with 301 to https on port {port}; no route is \
             consulted"
        );
        writeln!(text, "{reason}")?;
        json["result"] = "https_redirect".into();
        json["reason"] = reason.into();
        return Ok(Report {
            answered: true,
            text,
            json,
        });
    }

    let router = listener_router(snapshot, &listener.name)
        .map_err(|e| format!("listener {:?}: {e}", listener.name))?;
    let explanation = match router.explain_request(&asked.request) {
        Ok(explanation) => explanation,
        Err(e) => {
            let reason = format!("the path is rejected (400 Bad Request): {e}");
            writeln!(text, "{reason}")?;
            json["result"] = "bad_path".into();
            json["reason"] = reason.into();
            return Ok(Report {
                answered: false,
                text,
                json,
            });
        }
    };
    writeln!(
        text,
        "routed on: host {:?}, path {}{}",
        explanation.host,
        explanation.path,
        asked
            .request
            .uri()
            .query()
            .map(|q| format!(", query {q}"))
            .unwrap_or_default()
    )?;
    json["request"]["routed_host"] = explanation.host.clone().into();
    json["request"]["routed_path"] = explanation.path.clone().into();

    let describe = |r: &RouteExplanation<'_, MatchRef>| -> String {
        let route = &snapshot.routes[r.target.route];
        match r.target.matched {
            Some(m) => format!("{} rules[{}].matches[{m}]", route.name, r.target.rule),
            None => format!(
                "{} rules[{}] (no matches: every request)",
                route.name, r.target.rule
            ),
        }
    };

    let answered = match explanation.selected() {
        Some(selected) => {
            let route = &snapshot.routes[selected.target.route];
            let rule = &route.rules[selected.target.rule];
            writeln!(text, "route: {}", describe(selected))?;
            writeln!(text, "  {}: matched", selected.hostname)?;
            for c in &selected.conditions {
                writeln!(text, "  {}: matched", c.condition)?;
            }
            let filters = filter_names(&rule.filters);
            if rule.backends.is_empty() && rule.invalid_backend_weight == 0 {
                writeln!(text, "backends: none")?;
            } else {
                writeln!(text, "backends:")?;
                for b in &rule.backends {
                    writeln!(text, "  {} weight {}", b.backend, b.weight)?;
                }
                if rule.invalid_backend_weight > 0 {
                    writeln!(
                        text,
                        "  (unresolved references) weight {}: answered 500",
                        rule.invalid_backend_weight
                    )?;
                }
            }
            if !rule.backends.iter().any(|b| b.weight > 0) && rule.filters.redirect.is_none() {
                writeln!(text, "  no backend has a weight above 0: answered 500")?;
            }
            if filters.is_empty() {
                writeln!(text, "filters: none")?;
            } else {
                writeln!(text, "filters: {}", filters.join(", "))?;
            }
            json["result"] = "routed".into();
            json["selected"] = json!({
                "route": route.name,
                "rule": selected.target.rule,
                "match": selected.target.matched,
                "hostname": hostname_json(&selected.hostname),
                "conditions": conditions_json(selected),
                "backends": rule.backends.iter().map(|b| json!({"name": b.backend, "weight": b.weight})).collect::<Vec<_>>(),
                "unresolved_backend_weight": rule.invalid_backend_weight,
                "filters": filters,
            });
            true
        }
        None => {
            let reason = "no route matches: 404 Not Found".to_owned();
            writeln!(text, "{reason}")?;
            json["result"] = "not_found".into();
            json["reason"] = reason.into();
            json["selected"] = Value::Null;
            false
        }
    };

    let others: Vec<&RouteExplanation<'_, MatchRef>> = explanation
        .routes
        .iter()
        .filter(|r| r.outcome != Outcome::Selected)
        .collect();
    if others.is_empty() {
        if explanation.routes.is_empty() {
            writeln!(text, "the listener has no routes")?;
        }
    } else {
        writeln!(
            text,
            "{}:",
            if answered { "other routes" } else { "routes" }
        )?;
        for r in &others {
            let reasons = reasons(r, &explanation, &asked.request);
            writeln!(text, "  {}: {}", describe(r), reasons.join("; "))?;
        }
    }
    json["routes"] = explanation
        .routes
        .iter()
        .map(|r| {
            let (outcome, by) = match r.outcome {
                Outcome::Selected => ("selected", None),
                Outcome::LowerPrecedence { by } => ("lower_precedence", Some(by.as_str())),
                Outcome::NotMatched => ("not_matched", None),
            };
            json!({
                "route": snapshot.routes[r.target.route].name,
                "rule": r.target.rule,
                "match": r.target.matched,
                "outcome": outcome,
                "precedence": by,
                "hostname": hostname_json(&r.hostname),
                "conditions": conditions_json(r),
                "reasons": if r.outcome == Outcome::Selected { Vec::new() } else { reasons(r, &explanation, &asked.request) },
            })
        })
        .collect::<Vec<_>>()
        .into();
    Ok(Report {
        answered,
        text,
        json,
    })
}

/// Why a route that is not selected is not: every condition it fails, or that it matches with
/// lower precedence.
fn reasons(
    r: &RouteExplanation<'_, MatchRef>,
    explanation: &Explanation<'_, MatchRef>,
    request: &Request<()>,
) -> Vec<String> {
    if let Outcome::LowerPrecedence { by } = r.outcome {
        return vec![format!("matches, but has lower precedence: {by}")];
    }
    let mut reasons = Vec::new();
    if let HostnameVerdict::NotMatched(hostnames) = &r.hostname {
        reasons.push(format!(
            "hostname mismatch: {:?} is none of [{}]",
            explanation.host,
            hostnames.join(", ")
        ));
    }
    for c in r.failed() {
        let got = match &c.condition {
            Condition::PathExact(_)
            | Condition::PathPrefix(_)
            | Condition::PathRegularExpression(_)
            | Condition::Grpc { .. } => format!("path {}", explanation.path),
            Condition::Method(_) => format!("method {}", request.method()),
            Condition::Header { name, .. } => {
                let values: Vec<String> = request
                    .headers()
                    .get_all(name)
                    .iter()
                    .map(|v| format!("{:?}", String::from_utf8_lossy(v.as_bytes())))
                    .collect();
                if values.is_empty() {
                    format!("no {name} header")
                } else {
                    format!("{name}: {}", values.join(", "))
                }
            }
            Condition::QueryParam { .. } => {
                format!("query {:?}", request.uri().query().unwrap_or_default())
            }
        };
        reasons.push(format!("{} does not match ({got})", c.condition));
    }
    reasons
}

fn hostname_json(verdict: &HostnameVerdict) -> Value {
    match verdict {
        HostnameVerdict::Any => json!({"verdict": "any"}),
        HostnameVerdict::Matched(h) => json!({"verdict": "matched", "hostname": h}),
        HostnameVerdict::NotMatched(hs) => json!({"verdict": "not_matched", "hostnames": hs}),
    }
}

fn conditions_json(r: &RouteExplanation<'_, MatchRef>) -> Vec<Value> {
    r.conditions
        .iter()
        .map(|c| json!({"condition": c.condition.to_string(), "matched": c.matched}))
        .collect()
}

/// The filters a rule runs, by their names in the snapshot dump, in the order the data plane
/// runs them (`novaedge-filters`).
fn filter_names(filters: &snapshot::RouteFilters) -> Vec<&'static str> {
    let snapshot::RouteFilters {
        request_headers,
        response_headers,
        url_rewrite,
        redirect,
        mirrors,
        cors,
        ip_filter,
        jwt,
        rate_limit,
        timeouts,
        retry,
        max_request_body_bytes,
    } = filters;
    [
        (ip_filter.is_some(), "ip_filter"),
        (cors.is_some(), "cors"),
        (jwt.is_some(), "jwt"),
        (rate_limit.is_some(), "rate_limit"),
        (redirect.is_some(), "request_redirect"),
        (request_headers.is_some(), "request_header_modifier"),
        (url_rewrite.is_some(), "url_rewrite"),
        (!mirrors.is_empty(), "request_mirror"),
        (response_headers.is_some(), "response_header_modifier"),
        (*timeouts != snapshot::Timeouts::default(), "timeouts"),
        (retry.is_some(), "retry"),
        (max_request_body_bytes.is_some(), "max_request_body_bytes"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect()
}

fn protocol(p: ListenerProtocol) -> &'static str {
    match p {
        ListenerProtocol::Http => "http",
        ListenerProtocol::Https => "https",
    }
}

/// The certificate a handshake with SNI `sni` gets, as the data plane picks it: an exact name,
/// then the longest wildcard suffix, then the default. Names are the certificate's
/// `server_names`, or else its own DNS names. Returns its index, its names and how it was
/// chosen (`name`, `wildcard`, `default`).
fn certificate_for(
    tls: &snapshot::ListenerTls,
    sni: &str,
) -> Option<(usize, Vec<String>, &'static str)> {
    let sni = sni.trim_end_matches('.').to_ascii_lowercase();
    let names: Vec<Vec<String>> = tls
        .certificates
        .iter()
        .map(|c| {
            if c.server_names.is_empty() {
                certificate_dns_names(&c.cert_chain_pem)
            } else {
                c.server_names.clone()
            }
        })
        .collect();
    let mut exact = None;
    let mut wildcards: HashMap<usize, (usize, usize)> = HashMap::new();
    for (i, list) in names.iter().enumerate() {
        for name in list {
            let name = name.to_ascii_lowercase();
            match name.strip_prefix('*') {
                Some(suffix) if sni.len() > suffix.len() && sni.ends_with(suffix) => {
                    wildcards.entry(suffix.len()).or_insert((i, suffix.len()));
                }
                Some(_) => {}
                None if name == sni && exact.is_none() => exact = Some(i),
                None => {}
            }
        }
    }
    let (index, by) = exact
        .map(|i| (i, "name"))
        .or_else(|| {
            wildcards
                .values()
                .max_by_key(|(_, len)| *len)
                .map(|(i, _)| (*i, "wildcard"))
        })
        .or(tls.default_certificate.map(|i| (i, "default")))?;
    Some((index, names[index].clone(), by))
}

/// The DNS names of the first certificate of a PEM chain.
fn certificate_dns_names(pem: &str) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(pem.as_bytes()) else {
        return Vec::new();
    };
    let Ok(cert) = pem.parse_x509() else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(name) => Some((*name).to_owned()),
            _ => None,
        })
        .collect()
}
