//! NovaEdge's own kinds in the translation: a ProxyGateway is served as the Gateway it converts
//! to, a ProxyRoute as the HTTPRoute it converts to (attaching to ProxyGateways only), and a
//! ProxyBackend, referred to by group `novaedge.io` kind `ProxyBackend`, is the snapshot backend
//! it describes (see [`crate::crd`]). Field paths stay those of the NovaEdge objects.

use std::collections::HashSet;

use gateway_api::gateways::Gateway;
use gateway_api::httproutes::HttpRoute;

use super::*;
use crate::crd::backend::{BackendInputs, to_backend};

/// A ProxyGateway or ProxyRoute converted to its Gateway API form, owned by `translate` for
/// the translator to borrow.
pub(super) struct Converted<'o, T> {
    key: Key,
    value: T,
    file: Option<&'o PathBuf>,
}

pub(super) fn convert_gateways(objects: &[Sourced]) -> Vec<Converted<'_, Gateway>> {
    let mut seen = HashSet::new();
    objects
        .iter()
        .filter_map(|sourced| match &sourced.object {
            Object::ProxyGateway(g) => Some((g, sourced.file.as_ref())),
            _ => None,
        })
        .filter(|(g, _)| seen.insert(key_of(&g.metadata)))
        .map(|(g, file)| Converted {
            key: key_of(&g.metadata),
            value: crate::crd::gateway::to_gateway(g),
            file,
        })
        .collect()
}

pub(super) fn convert_routes(objects: &[Sourced]) -> Vec<Converted<'_, HttpRoute>> {
    let mut seen = HashSet::new();
    objects
        .iter()
        .filter_map(|sourced| match &sourced.object {
            Object::ProxyRoute(r) => Some((r, sourced.file.as_ref())),
            _ => None,
        })
        .filter(|(r, _)| seen.insert(key_of(&r.metadata)))
        .map(|(r, file)| Converted {
            key: key_of(&r.metadata),
            value: crate::crd::route::to_http_route(r),
            file,
        })
        .collect()
}

impl<'a> Translator<'a> {
    /// Adds the converted ProxyGateways and ProxyRoutes. A ProxyGateway may not share its
    /// namespace and name with a Gateway: routes name their parent by name alone.
    pub(super) fn index_proxy(
        &mut self,
        gateways: &'a [Converted<'a, Gateway>],
        routes: &'a [Converted<'a, HttpRoute>],
    ) {
        for g in gateways {
            if self.gateways.contains_key(&g.key) {
                self.error(
                    g.file,
                    format!("ProxyGateway {}/{}", g.key.0, g.key.1),
                    "metadata.name".into(),
                    format!(
                        "a Gateway {}/{} exists too; give one of them another name",
                        g.key.0, g.key.1
                    ),
                );
                continue;
            }
            self.gateways.insert(g.key.clone(), (&g.value, g.file));
            self.proxy_gateway_keys.insert(g.key.clone());
        }
        for r in routes {
            self.proxy_routes.insert(r.key.clone(), (&r.value, r.file));
        }
    }

    /// `Gateway ns/name` or `ProxyGateway ns/name`, as messages name the object.
    pub(super) fn gateway_object(&self, key: &Key) -> String {
        let kind = if self.proxy_gateway_keys.contains(key) {
            "ProxyGateway"
        } else {
            "Gateway"
        };
        format!("{kind} {}/{}", key.0, key.1)
    }

    /// The backend a `novaedge.io/ProxyBackend` reference names, built on first use; otherwise
    /// why not, reported under `field` as `service_port` does.
    pub(super) fn proxy_backend(
        &mut self,
        r: &ServiceRef<'_>,
        namespace: &str,
        field: &str,
        object: &str,
        file: Option<&PathBuf>,
        consequence: &str,
    ) -> Result<String, RefError> {
        if r.port.is_some() {
            self.error(
                file,
                object.into(),
                format!("{field}.port"),
                "a ProxyBackend names its own port; leave port out".into(),
            );
            return Err(RefError::Invalid);
        }
        let site = RefSite {
            file,
            object,
            field,
            consequence,
        };
        let unresolved = |t: &mut Self, sub: &str, reason: &'static str, message: String| {
            Err(t.unresolved_ref(&site, sub, reason, message))
        };
        if r.namespace.is_some_and(|ns| ns != namespace) {
            return unresolved(
                self,
                "namespace",
                reasons::REF_NOT_PERMITTED,
                "a ProxyBackend is referred to from its own namespace only".into(),
            );
        }
        let key: Key = (namespace.to_owned(), r.name.to_owned());
        let name = format!("{}/{}", key.0, key.1);
        if self.backends.contains_key(&name) {
            return Ok(name);
        }
        let Some(&(backend, backend_file)) = self.proxy_backends.get(&key) else {
            return unresolved(
                self,
                "name",
                reasons::BACKEND_NOT_FOUND,
                format!("ProxyBackend {name} not found"),
            );
        };
        if self.invalid_proxy_backends.contains(&key) {
            return unresolved(
                self,
                "name",
                reasons::BACKEND_NOT_FOUND,
                format!("ProxyBackend {name} is not valid (see its errors)"),
            );
        }
        let service = backend.spec.service_ref.as_ref().map(|s| s.name.clone());
        let service_key = service.map(|s| (key.0.clone(), s));
        let slices: Vec<&EndpointSlice> = service_key
            .as_ref()
            .and_then(|k| self.slices.get(k))
            .map(|list| list.iter().map(|(s, _)| *s).collect())
            .unwrap_or_default();
        let config_maps: Vec<&ConfigMap> = self
            .config_maps
            .iter()
            .filter(|((ns, _), _)| *ns == key.0)
            .map(|(_, c)| *c)
            .collect();
        let secrets: Vec<&Secret> = self
            .secrets
            .iter()
            .filter(|((ns, _), _)| *ns == key.0)
            .map(|(_, s)| *s)
            .collect();
        let inputs = BackendInputs {
            service: service_key
                .as_ref()
                .and_then(|k| self.services.get(k))
                .map(|(s, _)| *s),
            endpoint_slices: &slices,
            config_maps: &config_maps,
            secrets: &secrets,
        };
        match to_backend(backend, &inputs) {
            Ok((built, warnings)) => {
                self.diagnostics.extend(
                    warnings
                        .into_iter()
                        .map(|d| d.in_file(backend_file.cloned())),
                );
                self.backends.insert(name.clone(), built);
                Ok(name)
            }
            Err(problems) => {
                self.diagnostics.extend(
                    problems
                        .into_iter()
                        .map(|d| d.in_file(backend_file.cloned())),
                );
                self.invalid_proxy_backends.insert(key);
                unresolved(
                    self,
                    "name",
                    reasons::BACKEND_NOT_FOUND,
                    format!("ProxyBackend {name} is not valid (see its errors)"),
                )
            }
        }
    }
}
