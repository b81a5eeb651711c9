//! Request observability of `novaedge run` and `novaedge agent`: access logs on stdout and
//! OpenTelemetry spans over OTLP (see `novaedge_core::ObserveConfig`).

use novaedge_core::{AccessLog, AccessLogFormat, ObserveConfig, OtlpConfig, OtlpTracer};

/// What the command line asks for.
#[derive(Debug, Clone, Default)]
pub(crate) struct ObserveOptions {
    /// OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`; `None`: no spans.
    pub(crate) otlp_endpoint: Option<String>,
    /// `service.name` of the spans.
    pub(crate) service_name: Option<String>,
    /// One line per request on stdout, in this format; `None`: no access log.
    pub(crate) access_log: Option<AccessLogFormat>,
}

/// The running access log and tracer, to flush at exit.
#[derive(Debug)]
pub(crate) struct Observability {
    pub(crate) config: ObserveConfig,
}

impl ObserveOptions {
    /// Starts the access log writer and the span exporter. Call inside the runtime.
    pub(crate) fn start(&self) -> Result<Observability, super::Error> {
        let tracer = match &self.otlp_endpoint {
            Some(url) => {
                let mut config = OtlpConfig::new(url.clone());
                if let Some(name) = &self.service_name {
                    config.service_name.clone_from(name);
                }
                let tracer = OtlpTracer::start(&config)
                    .map_err(|e| format!("--otlp-endpoint {url}: {e}"))?;
                tracing::info!(endpoint = url, "exporting request spans over OTLP");
                Some(tracer)
            }
            None => None,
        };
        let access_log = self
            .access_log
            .map(|format| AccessLog::new(format, std::io::stdout(), AccessLog::DEFAULT_QUEUE))
            .transpose()
            .map_err(|e| format!("--access-log: cannot start the writer thread: {e}"))?;
        Ok(Observability {
            config: ObserveConfig {
                access_log,
                tracer,
                ..ObserveConfig::default()
            },
        })
    }
}

impl Observability {
    /// Writes out the access log lines and spans still queued.
    pub(crate) async fn finish(&self) {
        if let Some(log) = &self.config.access_log {
            log.flush().await;
        }
        if let Some(tracer) = &self.config.tracer
            && let Err(e) = tracer.shutdown().await
        {
            tracing::warn!(error = %e, "the last request spans could not be exported");
        }
    }
}
