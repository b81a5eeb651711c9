//! Cross-reference and uniqueness checks over a whole snapshot.

use std::collections::{HashMap, HashSet};

use crate::error::{FieldError, ValidationErrors};
use crate::model::{ConfigSnapshot, PathMatch, Route};

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
        let mut route_names = HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            let object = if r.name.is_empty() {
                format!("routes[{i}]")
            } else {
                format!("route {:?} on listener {:?}", r.name, r.listener)
            };
            if r.name.is_empty() {
                errors.push(FieldError::new(&object, "name", "must not be empty"));
            } else if !route_names.insert((r.listener.as_str(), r.name.as_str())) {
                errors.push(FieldError::new(
                    &object,
                    "name",
                    "duplicate route on this listener",
                ));
            }
            if !listeners.contains(r.listener.as_str()) {
                errors.push(FieldError::new(
                    &object,
                    "listener",
                    format!("no listener named {:?}", r.listener),
                ));
            }
            validate_route(r, &object, &backends, &mut errors);
        }

        let mut names = HashSet::new();
        for (i, b) in self.backends.iter().enumerate() {
            let object = format!("backend {:?}", b.name);
            if b.name.is_empty() {
                errors.push(FieldError::new(
                    format!("backends[{i}]"),
                    "name",
                    "must not be empty",
                ));
            } else if !names.insert(b.name.as_str()) {
                errors.push(FieldError::new(&object, "name", "duplicate backend name"));
            }
            let mut addresses = HashSet::new();
            for (j, e) in b.endpoints.iter().enumerate() {
                let field = format!("endpoints[{j}]");
                if e.address.port() == 0 {
                    errors.push(FieldError::new(&object, &field, "port must not be 0"));
                }
                if !addresses.insert(e.address) {
                    errors.push(FieldError::new(
                        &object,
                        &field,
                        format!("duplicate endpoint {}", e.address),
                    ));
                }
                if e.weight == 0 || e.weight > MAX_WEIGHT {
                    errors.push(FieldError::new(
                        &object,
                        format!("{field}.weight"),
                        format!("must be between 1 and {MAX_WEIGHT}, got {}", e.weight),
                    ));
                }
            }
        }

        ValidationErrors::check(errors)
    }
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
            if let Err(why) = check_path(&m.path) {
                errors.push(FieldError::new(
                    object,
                    format!("rules[{i}].matches[{j}].path.value"),
                    format!("{:?}: {why}", m.path.value()),
                ));
            }
        }
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

fn check_path(path: &PathMatch) -> Result<(), &'static str> {
    let value = path.value();
    if !value.starts_with('/') {
        return Err("must start with '/'");
    }
    if value.contains(['?', '#']) {
        return Err("must not contain '?' or '#'");
    }
    if value.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err("must not contain spaces or control characters");
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
                }],
                creation_timestamp: 0,
            }],
            backends: vec![Backend {
                name: "ns/b:80".into(),
                protocol: UpstreamProtocol::Http1,
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
                "backend \"ns/b:80\" | endpoints[0]",
                "backend \"ns/b:80\" | endpoints[1]",
                "backend \"ns/b:80\" | endpoints[1]",
                "backend \"ns/b:80\" | endpoints[1].weight",
            ]
        );
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
}
