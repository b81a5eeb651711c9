//! `allowedRoutes.namespaces` of a Gateway listener: the namespaces whose routes may attach to
//! it. `Same` (the default) is the Gateway's own namespace, `All` every namespace, and
//! `Selector` the namespaces whose labels a label selector picks
//! (<https://gateway-api.sigs.k8s.io/reference/spec/#routenamespaces>).
//!
//! A selector is read as Kubernetes reads a `metav1.LabelSelector`: `matchLabels` and
//! `matchExpressions` (operators `In`, `NotIn`, `Exists`, `DoesNotExist`) are ANDed, and an
//! empty selector selects every namespace. A namespace's labels come from its `Namespace`
//! object when the manifests hold one. The API server gives every namespace the label
//! `kubernetes.io/metadata.name: <name>`, so that label is always there, also for namespaces the
//! manifests do not list (standalone configurations rarely list them).

use std::collections::{BTreeMap, HashMap};

use gateway_api::gateways::{
    GatewayListenersAllowedRoutesNamespaces as Namespaces,
    GatewayListenersAllowedRoutesNamespacesFrom as From,
    GatewayListenersAllowedRoutesNamespacesSelector as Selector,
};

/// The label the API server puts on every namespace, with the namespace's name as value.
pub(crate) const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The labels of the namespaces the manifests hold, by name.
#[derive(Debug, Default)]
pub(crate) struct NamespaceLabels<'a> {
    labels: HashMap<&'a str, &'a BTreeMap<String, String>>,
}

impl<'a> NamespaceLabels<'a> {
    pub(crate) fn insert(&mut self, namespace: &'a str, labels: &'a BTreeMap<String, String>) {
        self.labels.insert(namespace, labels);
    }

    /// The value of label `key` of `namespace`.
    fn get(&self, namespace: &'a str, key: &str) -> Option<&'a str> {
        if key == NAME_LABEL {
            return Some(namespace);
        }
        self.labels
            .get(namespace)
            .and_then(|labels| labels.get(key))
            .map(String::as_str)
    }
}

/// Which namespaces' routes a listener accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AllowedNamespaces {
    Same,
    All,
    /// Namespaces meeting every requirement.
    Selector(Vec<Requirement>),
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// Why `allowedRoutes.namespaces` cannot be used: the field under `namespaces` and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InvalidNamespaces {
    pub(crate) field: String,
    pub(crate) message: String,
}

impl AllowedNamespaces {
    /// Reads a listener's `allowedRoutes.namespaces` (absent: `Same`).
    pub(crate) fn parse(namespaces: Option<&Namespaces>) -> Result<Self, InvalidNamespaces> {
        match namespaces
            .and_then(|n| n.from.clone())
            .unwrap_or(From::Same)
        {
            From::Same => Ok(AllowedNamespaces::Same),
            From::All => Ok(AllowedNamespaces::All),
            From::Selector => match namespaces.and_then(|n| n.selector.as_ref()) {
                Some(selector) => requirements(selector).map(AllowedNamespaces::Selector),
                None => Err(InvalidNamespaces {
                    field: "selector".into(),
                    message: "required when from is Selector".into(),
                }),
            },
        }
    }

    /// Whether a route in `route_namespace` may attach to a listener of a Gateway in
    /// `gateway_namespace`.
    pub(crate) fn allows<'a>(
        &self,
        gateway_namespace: &str,
        route_namespace: &'a str,
        labels: &NamespaceLabels<'a>,
    ) -> bool {
        match self {
            AllowedNamespaces::Same => gateway_namespace == route_namespace,
            AllowedNamespaces::All => true,
            AllowedNamespaces::Selector(requirements) => requirements
                .iter()
                .all(|r| r.matches(labels.get(route_namespace, &r.key))),
        }
    }
}

impl Requirement {
    fn matches(&self, value: Option<&str>) -> bool {
        let listed = || value.is_some_and(|v| self.values.iter().any(|w| w == v));
        match self.operator {
            Operator::In => listed(),
            Operator::NotIn => !listed(),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// The requirements of a selector, checked as the API server checks a `LabelSelector`.
fn requirements(selector: &Selector) -> Result<Vec<Requirement>, InvalidNamespaces> {
    let mut out: Vec<Requirement> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(key, value)| Requirement {
            key: key.clone(),
            operator: Operator::In,
            values: vec![value.clone()],
        })
        .collect();
    for (i, e) in selector.match_expressions.iter().flatten().enumerate() {
        let field = |sub: &str| format!("selector.matchExpressions[{i}].{sub}");
        let invalid = |sub: &str, message: String| InvalidNamespaces {
            field: field(sub),
            message,
        };
        if e.key.is_empty() {
            return Err(invalid("key", "required".into()));
        }
        let operator = match e.operator.as_str() {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            other => {
                return Err(invalid(
                    "operator",
                    format!("{other:?} is not In, NotIn, Exists or DoesNotExist"),
                ));
            }
        };
        let values = e.values.clone().unwrap_or_default();
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err(invalid(
                    "values",
                    format!("required (not empty) with operator {}", e.operator),
                ));
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return Err(invalid(
                    "values",
                    format!("must be empty with operator {}", e.operator),
                ));
            }
            _ => {}
        }
        out.push(Requirement {
            key: e.key.clone(),
            operator,
            values,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use gateway_api::gateways::GatewayListenersAllowedRoutesNamespacesSelectorMatchExpressions as Expression;

    use super::*;

    fn selector(labels: &[(&str, &str)], expressions: &[(&str, &str, &[&str])]) -> Namespaces {
        Namespaces {
            from: Some(From::Selector),
            selector: Some(Selector {
                match_labels: (!labels.is_empty()).then(|| {
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect()
                }),
                match_expressions: (!expressions.is_empty()).then(|| {
                    expressions
                        .iter()
                        .map(|(key, operator, values)| Expression {
                            key: (*key).to_owned(),
                            operator: (*operator).to_owned(),
                            values: (!values.is_empty())
                                .then(|| values.iter().map(|v| (*v).to_owned()).collect()),
                        })
                        .collect()
                }),
            }),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn same_and_all() {
        let none = NamespaceLabels::default();
        let same = AllowedNamespaces::parse(None).unwrap();
        assert_eq!(same, AllowedNamespaces::Same);
        assert!(same.allows("infra", "infra", &none));
        assert!(!same.allows("infra", "shop", &none));
        let all = AllowedNamespaces::parse(Some(&Namespaces {
            from: Some(From::All),
            selector: None,
        }))
        .unwrap();
        assert!(all.allows("infra", "shop", &none));
    }

    #[test]
    fn selector_requirements_are_anded() {
        let backend = labels(&[("tier", "backend"), ("env", "prod")]);
        let staging = labels(&[("tier", "backend"), ("env", "staging"), ("legacy", "")]);
        let mut known = NamespaceLabels::default();
        known.insert("web", &backend);
        known.insert("old", &staging);
        let allowed = AllowedNamespaces::parse(Some(&selector(
            &[("tier", "backend")],
            &[
                ("env", "NotIn", &["staging"]),
                ("legacy", "DoesNotExist", &[]),
            ],
        )))
        .unwrap();
        assert!(allowed.allows("infra", "web", &known));
        assert!(!allowed.allows("infra", "old", &known));
        // A namespace the manifests do not hold has only its name label.
        assert!(!allowed.allows("infra", "elsewhere", &known));

        let exists = AllowedNamespaces::parse(Some(&selector(
            &[],
            &[("env", "Exists", &[]), ("env", "In", &["prod", "dev"])],
        )))
        .unwrap();
        assert!(exists.allows("infra", "web", &known));
        assert!(!exists.allows("infra", "old", &known));
    }

    #[test]
    fn every_namespace_has_its_name_label() {
        let known = NamespaceLabels::default();
        let by_name =
            AllowedNamespaces::parse(Some(&selector(&[(NAME_LABEL, "shop")], &[]))).unwrap();
        assert!(by_name.allows("infra", "shop", &known));
        assert!(!by_name.allows("infra", "infra", &known));
        // An empty selector selects every namespace.
        let empty = AllowedNamespaces::parse(Some(&selector(&[], &[]))).unwrap();
        assert!(empty.allows("infra", "anything", &known));
    }

    #[test]
    fn invalid_selectors_name_the_field() {
        let missing = AllowedNamespaces::parse(Some(&Namespaces {
            from: Some(From::Selector),
            selector: None,
        }))
        .unwrap_err();
        assert_eq!(missing.field, "selector");
        let operator =
            AllowedNamespaces::parse(Some(&selector(&[], &[("a", "Equals", &["b"])]))).unwrap_err();
        assert_eq!(operator.field, "selector.matchExpressions[0].operator");
        assert!(
            operator.message.contains("\"Equals\""),
            "{}",
            operator.message
        );
        let values = AllowedNamespaces::parse(Some(&selector(
            &[],
            &[("a", "Exists", &[]), ("b", "In", &[])],
        )))
        .unwrap_err();
        assert_eq!(values.field, "selector.matchExpressions[1].values");
        let values =
            AllowedNamespaces::parse(Some(&selector(&[], &[("a", "Exists", &["x"])]))).unwrap_err();
        assert_eq!(values.message, "must be empty with operator Exists");
        let key =
            AllowedNamespaces::parse(Some(&selector(&[], &[("", "Exists", &[])]))).unwrap_err();
        assert_eq!(key.field, "selector.matchExpressions[0].key");
    }
}
