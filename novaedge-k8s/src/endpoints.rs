//! Service ports as backends: their endpoints from EndpointSlices and their protocol, read the
//! same way for Service backends and ProxyBackends with a `serviceRef`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use novaedge_snapshot::{Endpoint, UpstreamProtocol};

use crate::diagnostics::Diagnostic;

/// The endpoints of the Service port named `port_name` (empty for an unnamed port) in the
/// Service's `slices` (each with the file it came from), in namespace `namespace`.
///
/// IPv4 and IPv6 slices are read; others are reported and skipped. The same address in several
/// slices (as during a slice migration) is one endpoint, ready if any slice says so; an unknown
/// ready condition counts as ready, as Kubernetes says. A terminating endpoint is not ready: it
/// gets no new requests while it drains. As kube-proxy does, when no endpoint is ready the
/// terminating ones that still serve are used rather than failing every request.
pub(crate) fn slice_endpoints<'s>(
    namespace: &str,
    slices: impl IntoIterator<Item = (&'s EndpointSlice, Option<&'s PathBuf>)>,
    port_name: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Endpoint> {
    // (ready, serving)
    let mut by_addr: BTreeMap<SocketAddr, (bool, bool)> = BTreeMap::new();
    let mut slices: Vec<_> = slices.into_iter().collect();
    slices.sort_by_key(|(s, _)| s.metadata.name.clone());
    for (slice, file) in slices {
        let object = format!(
            "EndpointSlice {namespace}/{}",
            slice.metadata.name.as_deref().unwrap_or_default()
        );
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            diagnostics.push(
                Diagnostic::warning(
                    &object,
                    "addressType",
                    format!("{} slices are not supported; ignored", slice.address_type),
                )
                .in_file(file.cloned()),
            );
            continue;
        }
        let port = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == port_name)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok().filter(|p| *p != 0));
        let Some(port) = port else {
            continue; // this slice does not carry the Service port
        };
        for (i, e) in slice.endpoints.iter().enumerate() {
            // An unknown serving condition is read as the ready one.
            let conditions = e.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
            for (j, address) in e.addresses.iter().enumerate() {
                match address.parse::<IpAddr>() {
                    Ok(ip) => {
                        let entry = by_addr.entry(SocketAddr::new(ip, port)).or_default();
                        entry.0 |= ready;
                        entry.1 |= serving;
                    }
                    Err(_) => diagnostics.push(
                        Diagnostic::error(
                            &object,
                            format!("endpoints[{i}].addresses[{j}]"),
                            format!("{address:?} is not an IP address"),
                        )
                        .in_file(file.cloned()),
                    ),
                }
            }
        }
    }
    let any_ready = by_addr.values().any(|(ready, _)| *ready);
    by_addr
        .into_iter()
        .map(|(address, (ready, serving))| Endpoint {
            address,
            ready: ready || (!any_ready && serving),
            weight: 1,
        })
        .collect()
}

/// The protocol a Service port's `appProtocol` names: `None` for a value NovaEdge does not know
/// (callers warn and speak HTTP/1.1). No `appProtocol` is HTTP/1.1.
pub(crate) fn upstream_protocol(app_protocol: Option<&str>) -> Option<UpstreamProtocol> {
    match app_protocol {
        Some("kubernetes.io/h2c" | "h2c" | "grpc" | "kubernetes.io/grpc") => {
            Some(UpstreamProtocol::H2c)
        }
        None | Some("http" | "kubernetes.io/http" | "kubernetes.io/ws" | "ws") => {
            Some(UpstreamProtocol::Http1)
        }
        Some(_) => None,
    }
}
