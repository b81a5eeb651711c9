//! The addresses clients reach the proxies on (`novaedge controller --publish-address`): the
//! VIPs, or the name of a load balancer in front of the nodes. The leader writes them to the
//! status of what NovaEdge serves: `status.loadBalancer.ingress` of each Ingress and
//! `status.addresses` of each accepted Gateway (see [`super`]).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::crd::is_dns_label;

/// An IP address or a DNS name that clients reach the proxies on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PublishAddress {
    Ip(IpAddr),
    /// A lowercase RFC 1123 DNS name, e.g. a cloud load balancer's.
    Hostname(String),
}

/// Why a `--publish-address` value is not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("publish address {value:?}: {why}")]
pub struct InvalidPublishAddress {
    value: String,
    why: &'static str,
}

impl FromStr for PublishAddress {
    type Err = InvalidPublishAddress;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |why| InvalidPublishAddress {
            value: s.to_owned(),
            why,
        };
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        if s.is_empty() {
            return Err(invalid("empty"));
        }
        // What Gateway API's `Hostname` address and a DNS name allow, without wildcards: a
        // load balancer's name is a name of one host.
        if s.starts_with("*.") {
            return Err(invalid("a wildcard names no single host"));
        }
        if s.len() > 253 || !s.split('.').all(is_dns_label) {
            return Err(invalid(
                "neither an IP address nor a DNS name (lowercase labels of letters, digits \
                 and '-', at most 63 characters each and 253 in all)",
            ));
        }
        Ok(Self::Hostname(s.to_owned()))
    }
}

impl fmt::Display for PublishAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(ip) => ip.fmt(f),
            Self::Hostname(name) => f.write_str(name),
        }
    }
}

impl PublishAddress {
    /// Gateway API's `GatewayStatusAddress.type`.
    pub(super) fn gateway_type(&self) -> &'static str {
        match self {
            Self::Ip(_) => "IPAddress",
            Self::Hostname(_) => "Hostname",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_as_ips_or_names() {
        assert_eq!(
            "192.0.2.10".parse(),
            Ok(PublishAddress::Ip([192, 0, 2, 10].into()))
        );
        let v6: PublishAddress = "2001:db8::1".parse().unwrap();
        assert_eq!(v6.to_string(), "2001:db8::1");
        assert_eq!(v6.gateway_type(), "IPAddress");
        let name: PublishAddress = "lb-1.eu-west.example.com".parse().unwrap();
        assert_eq!(
            name,
            PublishAddress::Hostname("lb-1.eu-west.example.com".into())
        );
        assert_eq!(name.gateway_type(), "Hostname");
        for bad in [
            "",
            "*.example.com",
            "LB.example.com",
            "lb..example.com",
            "-lb.example.com",
            "lb.example.com.",
            "192.0.2.10:80",
            "[2001:db8::1]",
        ] {
            let e = bad.parse::<PublishAddress>().unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
        let long = format!("{}.example", "a".repeat(64));
        assert!(long.parse::<PublishAddress>().is_err());
    }
}
