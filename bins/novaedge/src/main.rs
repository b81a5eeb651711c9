//! `novaedge`: the standalone proxy (`run`), the manifest checker (`check`), the echo
//! backend (`echo`) and the CRD printer (`crdgen`). Each command is assembled from the library crates in `cmd/`.

#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use novaedge_k8s::TranslateOptions;

mod cmd;

#[derive(Debug, Parser)]
#[command(
    name = "novaedge",
    version,
    about = "Kubernetes-native L7 load balancer"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Where Ingresses are served: an Ingress names no port of its own.
#[derive(Debug, Clone, Copy, Args)]
struct IngressPorts {
    /// Port every Ingress is served on (HTTP).
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u16).range(1..))]
    ingress_http_port: u16,
    /// Port Ingresses with `spec.tls` are also served on (HTTPS).
    #[arg(long, default_value_t = 443, value_parser = clap::value_parser!(u16).range(1..))]
    ingress_https_port: u16,
}

impl IngressPorts {
    fn options(self) -> TranslateOptions {
        TranslateOptions {
            ingress_http_port: self.ingress_http_port,
            ingress_https_port: self.ingress_https_port,
            ..TranslateOptions::default()
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the Kubernetes objects in PATH... (files or directories of YAML); reload on change.
    Run {
        /// Manifests: Gateway, HTTPRoute, Ingress, Service, EndpointSlice, ...
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        ingress: IngressPorts,
        /// Address that listeners bind to.
        #[arg(long, default_value = "0.0.0.0")]
        bind: IpAddr,
        /// Start an echo server on every loopback endpoint of the configuration.
        #[arg(long)]
        demo_backends: bool,
        /// How long SIGTERM waits for connections to finish.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        drain_timeout: Duration,
    },
    /// Check manifests: print every error (file, object, field); exit non-zero on any.
    Check {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        ingress: IngressPorts,
    },
    /// Print the CustomResourceDefinitions of NovaEdge's kinds (novaedge.io/v1alpha1) as YAML.
    Crdgen,
    /// Run an echo backend (HTTP/1.1, h2c, WebSocket, gRPC) that answers with what it received.
    Echo {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        #[arg(long, default_value = "echo")]
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run {
                paths,
                ingress,
                bind,
                demo_backends,
                drain_timeout,
            } => {
                cmd::run::run(cmd::run::Options {
                    paths,
                    translate: ingress.options(),
                    bind,
                    demo_backends,
                    drain_timeout,
                })
                .await
            }
            Command::Check { paths, ingress } => cmd::check::check(&paths, &ingress.options()),
            Command::Echo { listen, name } => cmd::echo::echo(listen, name).await,
            Command::Crdgen => cmd::crdgen::crdgen(),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
