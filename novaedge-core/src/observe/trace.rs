//! W3C trace context and request spans exported over OTLP/gRPC.
//!
//! # Propagation
//!
//! `traceparent` is parsed as [W3C Trace Context] level 1 says: version `00` exactly 55
//! characters, later versions at least that with a `-` after the flags, lowercase hex, trace and
//! parent ids not all zero, version `ff` invalid. `tracestate` is kept as it came, and dropped
//! together with an invalid `traceparent` (the spec forbids using one without the other).
//!
//! - **Tracing off** (no [`OtlpTracer`]): both headers pass to the upstream untouched, like any
//!   other header. Envoy does the same without a tracer; a proxy that is not a tracing
//!   participant must not break the trace of services that are. The trace id of a valid
//!   incoming `traceparent` still goes into the access log.
//! - **Tracing on**: a valid `traceparent` is the parent of our request span (a remote parent,
//!   so its sampled flag decides, through a parent-based sampler); otherwise a new trace starts,
//!   sampled at [`OtlpConfig::sample_ratio`]. The upstream gets a `traceparent` naming the same
//!   trace and our upstream span as parent, with our sampling decision in its flags; an
//!   unsampled request still gets fresh ids so that downstream services stay consistent.
//!
//! # Spans
//!
//! Per request: a **server** span from the request's arrival to the end of its response body,
//! named `{METHOD} {route}` (`{METHOD}` when nothing matched), with the request id, listener,
//! route, backend, status and response flags as attributes; matching the route is an event on it
//! (routing takes microseconds and never waits, a span would only add export volume). A
//! **`filters`** child span covers the route's request filters, from their start until the
//! request is handed to forwarding (or a filter answered), for rules that have filters. Each
//! try to an endpoint is a **client** child span named `upstream {backend}`, from picking the
//! endpoint to the response head (or the failure); a connect failure retried on another
//! endpoint gives one span per endpoint tried. Mirrored copies are not traced.
//!
//! Spans go through the SDK's batch processor (its own thread, a bounded queue that drops
//! when full) to an OTLP/gRPC collector, over the tonic already in the tree.
//!
//! [W3C Trace Context]: https://www.w3.org/TR/trace-context/

use std::str::FromStr;
use std::time::Duration;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};

use super::request_id::HEX;

pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub(crate) const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

// === traceparent ===

/// A parsed `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceParent {
    pub(crate) trace_id: u128,
    pub(crate) parent_id: u64,
    pub(crate) flags: u8,
}

impl TraceParent {
    pub(crate) fn parse(s: &[u8]) -> Option<Self> {
        if s.len() < 55 {
            return None;
        }
        let version = hex(&s[0..2])? as u8;
        match version {
            0xff => return None,
            0 if s.len() != 55 => return None,
            // A later version may append fields; what we understand must still be there.
            _ if s.len() > 55 && s[55] != b'-' => return None,
            _ => {}
        }
        if s[2] != b'-' || s[35] != b'-' || s[52] != b'-' {
            return None;
        }
        let trace_id = hex(&s[3..35])?;
        let parent_id = hex(&s[36..52])? as u64;
        let flags = hex(&s[53..55])? as u8;
        if trace_id == 0 || parent_id == 0 {
            return None;
        }
        Some(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// `00-{trace id}-{parent id}-{flags}`.
    #[allow(
        clippy::expect_used,
        reason = "hex digits and dashes are always a valid header value"
    )]
    pub(crate) fn to_header(self) -> HeaderValue {
        let mut out = [0u8; 55];
        out[..3].copy_from_slice(b"00-");
        write_hex(&mut out[3..35], self.trace_id);
        out[35] = b'-';
        write_hex(&mut out[36..52], u128::from(self.parent_id));
        out[52] = b'-';
        write_hex(&mut out[53..55], u128::from(self.flags));
        HeaderValue::from_bytes(&out).expect("hex digits and dashes are a valid header value")
    }

    /// The remote span context this names, with the request's `tracestate`.
    pub(crate) fn span_context(self, headers: &HeaderMap) -> SpanContext {
        let state = headers
            .get(&TRACESTATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| TraceState::from_str(v).ok())
            .unwrap_or_default();
        SpanContext::new(
            TraceId::from(self.trace_id),
            SpanId::from(self.parent_id),
            TraceFlags::new(self.flags),
            true,
            state,
        )
    }
}

/// Lowercase hex only: W3C forbids uppercase.
fn hex(s: &[u8]) -> Option<u128> {
    let mut v: u128 = 0;
    for &b in s {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | u128::from(d);
    }
    Some(v)
}

/// Writes the low `out.len()` nibbles of `v`, most significant first.
pub(crate) fn write_hex(out: &mut [u8], v: u128) {
    let n = out.len();
    for (i, o) in out.iter_mut().enumerate() {
        *o = HEX[((v >> (4 * (n - 1 - i))) & 0xf) as usize];
    }
}

// === exporter ===

/// Where and how request spans are exported.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// The collector's OTLP/gRPC endpoint, `http://host:4317`.
    pub endpoint: String,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// Share of new traces (requests without a valid `traceparent`) that are sampled, 0 to 1.
    /// Requests with a `traceparent` follow its sampled flag.
    pub sample_ratio: f64,
    /// Spans waiting for export; more are dropped (and the SDK logs it).
    pub max_queue: usize,
    /// How often a partial batch is sent.
    pub export_interval: Duration,
    /// How long one export may take.
    pub export_timeout: Duration,
}

impl OtlpConfig {
    /// Every request traced, to `endpoint`, as service `novaedge`.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            service_name: "novaedge".to_owned(),
            sample_ratio: 1.0,
            max_queue: 8192,
            export_interval: Duration::from_secs(2),
            export_timeout: Duration::from_secs(10),
        }
    }
}

/// Why tracing could not be set up, or flushed.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("OTLP endpoint {endpoint:?}: {message}")]
    Endpoint { endpoint: String, message: String },
    #[error("sample ratio {0} is not between 0 and 1")]
    SampleRatio(f64),
    #[error("exporting spans: {0}")]
    Export(String),
}

/// A tracer whose spans go to an OTLP/gRPC collector. Give it to the engine in
/// [`ObserveConfig::tracer`](crate::ObserveConfig::tracer); cheap to clone, clones share the
/// exporter. Call [`shutdown`](Self::shutdown) before the process exits, or the last batch
/// is lost.
#[derive(Debug, Clone)]
pub struct OtlpTracer {
    provider: SdkTracerProvider,
    pub(crate) tracer: SdkTracer,
}

impl OtlpTracer {
    /// Builds the exporter and its batch processor. Must be called within a tokio runtime
    /// (the gRPC channel lives on it); connects lazily, so an absent collector is not an error
    /// here (exports fail and are logged).
    pub fn start(config: &OtlpConfig) -> Result<Self, TraceError> {
        if !(0.0..=1.0).contains(&config.sample_ratio) {
            return Err(TraceError::SampleRatio(config.sample_ratio));
        }
        let endpoint_error = |message: String| TraceError::Endpoint {
            endpoint: config.endpoint.clone(),
            message,
        };
        let uri = config
            .endpoint
            .parse::<http::Uri>()
            .map_err(|e| endpoint_error(e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            // No TLS to the collector in this build: say so rather than fail every export.
            Some(other) => return Err(endpoint_error(format!("scheme {other:?} is not http"))),
            None => return Err(endpoint_error("no scheme (want http://host:port)".into())),
        }
        let exporter = SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.endpoint.clone())
            .with_timeout(config.export_timeout)
            .build()
            .map_err(|e| endpoint_error(e.to_string()))?;
        let batch = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(config.max_queue)
                    .with_scheduled_delay(config.export_interval)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batch)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio,
            ))))
            .with_resource(
                Resource::builder_empty()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        use opentelemetry::trace::TracerProvider as _;
        let tracer = provider.tracer("novaedge");
        Ok(Self { provider, tracer })
    }

    /// Exports the spans that have ended and waits for the collector to take them.
    pub async fn flush(&self) -> Result<(), TraceError> {
        let provider = self.provider.clone();
        // The SDK blocks until its exporter thread is done, and that thread needs the tokio
        // runtime to send: never block a runtime thread on it.
        tokio::task::spawn_blocking(move || provider.force_flush())
            .await
            .map_err(|e| TraceError::Export(e.to_string()))?
            .map_err(|e| TraceError::Export(e.to_string()))
    }

    /// Exports what is left and stops the exporter; spans started afterwards are dropped.
    pub async fn shutdown(&self) -> Result<(), TraceError> {
        let provider = self.provider.clone();
        tokio::task::spawn_blocking(move || provider.shutdown())
            .await
            .map_err(|e| TraceError::Export(e.to_string()))?
            .map_err(|e| TraceError::Export(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_formats_version_00() {
        let tp = TraceParent::parse(VALID.as_bytes()).unwrap();
        assert_eq!(tp.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(tp.parent_id, 0x00f067aa0ba902b7);
        assert_eq!(tp.flags, 1);
        assert_eq!(tp.to_header(), VALID);
    }

    #[test]
    fn rejects_what_the_spec_rejects() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ];
        for b in bad {
            assert_eq!(TraceParent::parse(b.as_bytes()), None, "{b:?}");
        }
    }

    #[test]
    fn accepts_later_versions_with_more_fields() {
        let tp = TraceParent::parse(
            b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds",
        )
        .unwrap();
        assert_eq!(tp.parent_id, 0x00f067aa0ba902b7);
        assert!(
            TraceParent::parse(b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .is_some()
        );
    }

    #[test]
    fn sample_ratio_out_of_range_is_refused() {
        let mut config = OtlpConfig::new("http://127.0.0.1:4317");
        config.sample_ratio = 1.5;
        assert!(matches!(
            OtlpTracer::start(&config),
            Err(TraceError::SampleRatio(_))
        ));
        let config = OtlpConfig::new("https://127.0.0.1:4317");
        assert!(matches!(
            OtlpTracer::start(&config),
            Err(TraceError::Endpoint { .. })
        ));
    }
}
