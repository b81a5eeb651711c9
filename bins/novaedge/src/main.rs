//! `novaedge`: the standalone proxy (`run`), the manifest checker (`check`), the routing
//! explainer (`explain`), the snapshot differ (`snapshot diff`), the echo backend (`echo`) and
//! the CRD printer (`crdgen`). Each command is assembled from the library crates in `cmd/`.

#![deny(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use novaedge_k8s::TranslateOptions;

mod alloc;
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

/// Mutual TLS between the controller and the agents (see `novaedge certs`).
#[derive(Debug, Clone, Args)]
struct ControlTls {
    /// This side's certificate (PEM).
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// This side's private key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// The CA the other side's certificate must chain to (PEM).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Plaintext, unauthenticated gRPC: anyone who reaches the port gets any node's snapshot.
    /// For experiments only.
    #[arg(long, conflicts_with = "tls_cert")]
    insecure: bool,
}

impl ControlTls {
    fn files(self) -> Result<Option<cmd::control_tls::TlsFiles>, cmd::Error> {
        match (self.tls_cert, self.tls_key, self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => {
                Ok(Some(cmd::control_tls::TlsFiles { cert, key, ca }))
            }
            _ if self.insecure => Ok(None),
            _ => Err(
                "give --tls-cert, --tls-key and --tls-ca (see `novaedge certs`), \
                      or --insecure to run without TLS"
                    .into(),
            ),
        }
    }
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

/// Request observability: access logs and OpenTelemetry spans.
#[derive(Debug, Clone, Args)]
struct ObserveArgs {
    /// One line per request on stdout: `json` or `common` (Apache combined, with the request
    /// id, upstream and timings added). Off unless given.
    #[arg(long, value_name = "FORMAT")]
    access_log: Option<novaedge_core::AccessLogFormat>,
    /// Export a span per request (and per upstream attempt) over OTLP/gRPC to this collector,
    /// e.g. `http://127.0.0.1:4317`. Off unless given; `traceparent` is passed through either way.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// The spans' `service.name`.
    #[arg(long, default_value = "novaedge")]
    otlp_service_name: String,
}

impl ObserveArgs {
    fn options(self) -> cmd::observe::ObserveOptions {
        cmd::observe::ObserveOptions {
            otlp_endpoint: self.otlp_endpoint,
            service_name: Some(self.otlp_service_name),
            access_log: self.access_log,
        }
    }
}

/// The proxy's process settings: the threads serving requests, and client and upstream limits.
/// The defaults are [`novaedge_core::EngineConfig::default`]'s, where each says where it comes
/// from.
#[derive(Debug, Clone, Args)]
struct EngineArgs {
    /// Threads serving connections [default: one per CPU the process may run on].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: Option<u16>,
    /// Close a client connection with no request in flight for this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Park an HTTP/1.1 client connection with no request in flight for this long: its HTTP
    /// state and buffers (about 17 KB) are dropped until the client sends again. At most
    /// `--idle-timeout`.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    park_after: Duration,
    /// A parked cleartext connection still quiet this much longer leaves its task for the
    /// listener's parking lot (about 90 bytes instead of 2 KB; waking from there costs a few
    /// system calls more). `0s`: at once.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    lot_after: Duration,
    /// How long a client has to send an HTTP/1.1 request head (slow clients are cut off).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    header_read_timeout: Duration,
    /// How long an upstream has to answer with a response head, for rules without timeouts of
    /// their own; later answers are `504`. `0s`: as long as the client waits.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    upstream_response_timeout: Duration,
    /// Largest request body, in bytes or with a `k`, `m` or `g` suffix (binary, as nginx's
    /// `client_max_body_size`); larger ones are answered `413`. Rules may set their own.
    /// `0`: no limit.
    #[arg(long, default_value = "0", value_name = "SIZE", value_parser = parse_size)]
    max_request_body: u64,
    /// Open client connections per listener; more are closed as soon as they are accepted.
    /// `0`: no limit.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    max_connections_per_listener: usize,
}

impl EngineArgs {
    /// The engine's settings, checked; `default_bind` and `observe` are the command's to set.
    fn config(&self) -> Result<novaedge_core::EngineConfig, cmd::Error> {
        for (flag, value) in [
            ("--idle-timeout", self.idle_timeout),
            ("--park-after", self.park_after),
            ("--header-read-timeout", self.header_read_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("{flag} 0s: must be longer than 0").into());
            }
        }
        if self.park_after > self.idle_timeout {
            return Err(format!(
                "--park-after {}: must not be longer than --idle-timeout {}",
                humantime::format_duration(self.park_after),
                humantime::format_duration(self.idle_timeout)
            )
            .into());
        }
        Ok(novaedge_core::EngineConfig {
            idle_timeout: self.idle_timeout,
            park_after: self.park_after,
            lot_after: self.lot_after,
            header_read_timeout: self.header_read_timeout,
            upstream_response_timeout: Some(self.upstream_response_timeout)
                .filter(|t| !t.is_zero()),
            max_request_body_bytes: Some(self.max_request_body).filter(|&b| b > 0),
            max_connections_per_listener: Some(self.max_connections_per_listener)
                .filter(|&n| n > 0),
            ..novaedge_core::EngineConfig::default()
        })
    }
}

/// A size in bytes: digits, then optionally `k`, `m` or `g` (either case) for KiB, MiB, GiB.
fn parse_size(text: &str) -> Result<u64, String> {
    let (digits, shift) = match text.as_bytes().last().map(u8::to_ascii_lowercase) {
        Some(b'k') => (&text[..text.len() - 1], 10),
        Some(b'm') => (&text[..text.len() - 1], 20),
        Some(b'g') => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    let wrong = || format!("{text:?} is not a size (bytes, or a number with k, m or g)");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(wrong());
    }
    let number: u64 = digits.parse().map_err(|_| wrong())?;
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is larger than {} bytes", u64::MAX))
}

/// How VIPs (ProxyVIPs) are held on this machine.
#[derive(Debug, Clone, Args)]
struct VipArgs {
    /// Valid lifetime of the addresses of L2 VIPs, refreshed while held: if the process is
    /// killed, the kernel drops them after this long. Whole seconds (the kernel's unit).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    l2_lease: Duration,
    /// BGP identifier for ProxyVIPs that give none [default: this node's IPv4 address
    /// towards each peer].
    #[arg(long)]
    router_id: Option<std::net::Ipv4Addr>,
    /// Set `arp_ignore=1` and `arp_announce=2` on the interfaces of L2 VIPs (otherwise they
    /// are only checked, and weaker values logged).
    #[arg(long)]
    set_arp_sysctls: bool,
}

impl VipArgs {
    fn options(self) -> Result<cmd::agent::VipOptions, cmd::Error> {
        if self.l2_lease.subsec_nanos() != 0 || self.l2_lease.is_zero() {
            return Err(format!(
                "--l2-lease {:?}: must be a whole number of seconds, at least 1",
                self.l2_lease
            )
            .into());
        }
        Ok(cmd::agent::VipOptions {
            l2_lease: self.l2_lease,
            router_id: self.router_id,
            set_arp_sysctls: self.set_arp_sysctls,
        })
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the Kubernetes objects in PATH... (files or directories of YAML); reload on change.
    Run {
        /// Manifests: Gateway, HTTPRoute, GRPCRoute, Ingress, Service, EndpointSlice, ...
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
        #[command(flatten)]
        vip: VipArgs,
        /// The admin listener: `/live`, `/ready`, `/metrics`, `/config_dump`, `/endpoints`,
        /// `/vips` [default: 127.0.0.1:9901, skipped with a warning if taken].
        #[arg(long)]
        admin_addr: Option<SocketAddr>,
        #[command(flatten)]
        observe: ObserveArgs,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Check manifests: print every error (file, object, field) and every status condition that
    /// is not as it should be (e.g. a route that would not be Accepted, and why); exit non-zero
    /// on any error.
    Check {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        ingress: IngressPorts,
        /// Print the status of every Gateway, listener and route, not only the problems.
        #[arg(long)]
        status: bool,
    },
    /// Explain what the proxy would do with one request: the listener, the route, rule and
    /// match and why, its backends and filters, and why every other route does not match.
    /// Exit 0: a route matches; 1: none does (404), or no listener takes the request; 2: usage
    /// or configuration errors.
    Explain {
        /// Manifests, as for `check`.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// `METHOD URL`, e.g. `GET http://shop.example.com:8080/api?x=1` (the method defaults
        /// to GET). The port picks the listener (default 80, or 443 for https).
        #[arg(long)]
        request: String,
        /// A request header, `name: value`; repeatable. `Host` here overrides the URL's host
        /// for routing (not for SNI), as it does for curl.
        #[arg(short = 'H', long = "header", value_name = "HEADER")]
        headers: Vec<String>,
        #[command(flatten)]
        ingress: IngressPorts,
        #[arg(long, value_enum, default_value_t = cmd::explain::OutputFormat::Text)]
        output: cmd::explain::OutputFormat,
    },
    /// Work with snapshots.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// The controller: translate the configuration and stream each node agent its snapshot.
    Controller {
        /// Where objects come from: `kubernetes` (the API server: in-cluster, or the
        /// kubeconfig) or `files:PATH[,PATH...]` (watched).
        #[arg(long)]
        source: cmd::controller::Source,
        /// The Lease the replicas elect their leader on (`--source kubernetes`); only the
        /// leader serves the agents' snapshots and writes status and Events.
        #[arg(long, default_value = "novaedge-controller")]
        lease_name: String,
        /// The Lease's namespace [default: the Pod's namespace, or the kubeconfig's].
        #[arg(long, env = "POD_NAMESPACE")]
        lease_namespace: Option<String>,
        /// This replica's name in the election [default: the host name, which is the Pod's].
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// Address the snapshot service listens on.
        #[arg(long, default_value = "0.0.0.0:9400")]
        listen: SocketAddr,
        #[command(flatten)]
        tls: ControlTls,
        /// How often agents send heartbeats (each is answered).
        #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
        heartbeat: Duration,
        /// How long a node must be silent before its L2 VIPs are given to another node. Must
        /// exceed the agents' L2 address lease (`--l2-lease`, 1 s by default) plus one
        /// heartbeat: a killed agent's addresses expire within the lease. Larger clusters may
        /// prefer `--heartbeat 1s --fencing-delay 5s --l2-lease 3s` on the agents.
        #[arg(long, default_value = "1500ms", value_parser = humantime::parse_duration)]
        fencing_delay: Duration,
        #[command(flatten)]
        ingress: IngressPorts,
        /// An address clients reach the proxies on: an IP address (a VIP) or a DNS name (a
        /// cloud load balancer's). Repeatable. The leader writes them, in this order, to
        /// `status.loadBalancer.ingress` of every Ingress and `status.addresses` of every
        /// accepted Gateway NovaEdge serves (`--source kubernetes`); without any, the
        /// addresses written before are removed.
        #[arg(long = "publish-address", value_name = "ADDR")]
        publish_addresses: Vec<novaedge_k8s::controller::PublishAddress>,
        /// The admin listener: `/live`, `/ready` (a snapshot to serve), `/metrics` (snapshot
        /// pushes acked and refused, agents connected, reconciliations), `/config_dump` (the
        /// published snapshot, redacted) and `/agents` (what each agent said).
        /// Off unless given, e.g. `127.0.0.1:9902`.
        #[arg(long)]
        admin_addr: Option<SocketAddr>,
    },
    /// The node agent: receive this node's snapshot from the controller and serve it.
    Agent {
        /// The controller's snapshot service, e.g. `https://novaedge-controller:9400`.
        #[arg(long)]
        controller: String,
        /// The node this agent runs on; its client certificate must name it.
        #[arg(long, env = "NODE_NAME")]
        node: String,
        #[command(flatten)]
        tls: ControlTls,
        /// The name the controller's certificate must carry.
        #[arg(long, default_value = cmd::control_tls::DEFAULT_CONTROLLER_NAME)]
        controller_name: String,
        /// Where the last applied snapshot is kept, to serve it at once after a restart.
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Address that listeners bind to.
        #[arg(long, default_value = "0.0.0.0")]
        bind: IpAddr,
        /// How long SIGTERM waits for connections to finish.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        drain_timeout: Duration,
        #[command(flatten)]
        vip: VipArgs,
        /// The admin listener: `/live`, `/ready`, `/metrics`, `/config_dump`, `/endpoints`,
        /// `/vips` [default: 127.0.0.1:9901, skipped with a warning if taken].
        #[arg(long)]
        admin_addr: Option<SocketAddr>,
        #[command(flatten)]
        observe: ObserveArgs,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Write a development CA and certificates for the controller and the agents of NODE...
    Certs {
        /// Directory to write `ca.crt`, `controller.crt/.key`, `agent-NODE.crt/.key` into.
        #[arg(long)]
        out: PathBuf,
        /// Extra DNS names for the controller's certificate.
        #[arg(long = "controller-name")]
        controller_names: Vec<String>,
        #[arg(required = true)]
        nodes: Vec<String>,
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

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// Compare two configurations object by object (listeners, routes, backends, VIPs), secrets
    /// redacted. Each of A and B is an agent's snapshot cache (`novaedge agent --cache`) or
    /// manifests (a directory or YAML file). Exit 0: equal (versions are not compared);
    /// 1: different; 2: errors.
    Diff {
        a: PathBuf,
        b: PathBuf,
        #[command(flatten)]
        ingress: IngressPorts,
        #[arg(long, value_enum, default_value_t = cmd::explain::OutputFormat::Text)]
        output: cmd::explain::OutputFormat,
    },
}

impl Command {
    /// The proxy's process settings, for the commands that serve traffic.
    fn engine(&self) -> Option<&EngineArgs> {
        match self {
            Command::Run { engine, .. } | Command::Agent { engine, .. } => Some(engine),
            _ => None,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = cli.command.engine().and_then(|e| e.worker_threads) {
        runtime.worker_threads(threads.into());
    }
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if cli.command.engine().is_some() {
        let workers = runtime.metrics().num_workers();
        tracing::info!(workers, "serving with {workers} worker threads");
    }
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run {
                paths,
                ingress,
                bind,
                demo_backends,
                drain_timeout,
                vip,
                admin_addr,
                observe,
                engine,
            } => {
                cmd::run::run(cmd::run::Options {
                    paths,
                    translate: ingress.options(),
                    bind,
                    demo_backends,
                    drain_timeout,
                    vip: vip.options()?,
                    admin_addr,
                    observe: observe.options(),
                    engine: engine.config()?,
                })
                .await
            }
            Command::Check {
                paths,
                ingress,
                status,
            } => cmd::check::check(&paths, &ingress.options(), status),
            Command::Explain {
                paths,
                request,
                headers,
                ingress,
                output,
            } => cmd::explain::explain(cmd::explain::Options {
                paths,
                translate: ingress.options(),
                request,
                headers,
                output,
            }),
            Command::Snapshot {
                command:
                    SnapshotCommand::Diff {
                        a,
                        b,
                        ingress,
                        output,
                    },
            } => cmd::diff::diff(cmd::diff::Options {
                a,
                b,
                translate: ingress.options(),
                output,
            }),
            Command::Controller {
                source,
                lease_name,
                lease_namespace,
                identity,
                listen,
                tls,
                heartbeat,
                fencing_delay,
                ingress,
                publish_addresses,
                admin_addr,
            } => {
                cmd::controller::controller(cmd::controller::Options {
                    admin_addr,
                    source,
                    listen,
                    tls: tls.files()?,
                    heartbeat,
                    fencing_delay,
                    translate: ingress.options(),
                    publish_addresses,
                    lease: cmd::controller::LeaseOptions {
                        name: lease_name,
                        namespace: lease_namespace,
                        identity,
                    },
                })
                .await
            }
            Command::Agent {
                controller,
                node,
                tls,
                controller_name,
                cache,
                bind,
                drain_timeout,
                vip,
                admin_addr,
                observe,
                engine,
            } => {
                cmd::agent::agent(cmd::agent::Options {
                    controller,
                    node,
                    tls: tls.files()?,
                    controller_name,
                    cache,
                    bind,
                    drain_timeout,
                    vip: vip.options()?,
                    admin_addr,
                    observe: observe.options(),
                    engine: engine.config()?,
                })
                .await
            }
            Command::Certs {
                out,
                controller_names,
                nodes,
            } => cmd::control_tls::write_dev_certs(&out, &nodes, &controller_names)
                .map(|()| ExitCode::SUCCESS),
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

#[cfg(test)]
mod tests {
    use super::*;
    use novaedge_core::EngineConfig;

    fn engine_args(args: &[&str]) -> Result<EngineArgs, clap::Error> {
        let cli = Cli::try_parse_from(["novaedge", "run", "x.yaml"].iter().chain(args))?;
        Ok(cli
            .command
            .engine()
            .cloned()
            .expect("run has engine settings"))
    }

    #[test]
    fn engine_flags_default_to_the_engine_defaults() {
        let config = engine_args(&[]).unwrap().config().unwrap();
        let default = EngineConfig::default();
        assert_eq!(config.idle_timeout, default.idle_timeout);
        assert_eq!(config.park_after, default.park_after);
        assert_eq!(config.lot_after, default.lot_after);
        assert_eq!(config.header_read_timeout, default.header_read_timeout);
        assert_eq!(
            config.upstream_response_timeout,
            default.upstream_response_timeout
        );
        assert_eq!(
            config.max_request_body_bytes,
            default.max_request_body_bytes
        );
        assert_eq!(
            config.max_connections_per_listener,
            default.max_connections_per_listener
        );
        assert_eq!(engine_args(&[]).unwrap().worker_threads, None);
    }

    #[test]
    fn engine_flags_set_the_engine_and_refuse_what_cannot_work() {
        let args = engine_args(&[
            "--worker-threads",
            "3",
            "--idle-timeout",
            "5s",
            "--park-after",
            "5s",
            "--lot-after",
            "0s",
            "--header-read-timeout",
            "2s",
            "--upstream-response-timeout",
            "0s",
            "--max-request-body",
            "10m",
            "--max-connections-per-listener",
            "0",
        ])
        .unwrap();
        assert_eq!(args.worker_threads, Some(3));
        let config = args.config().unwrap();
        assert_eq!(config.idle_timeout, Duration::from_secs(5));
        assert_eq!(config.park_after, Duration::from_secs(5));
        assert_eq!(config.lot_after, Duration::ZERO);
        assert_eq!(config.header_read_timeout, Duration::from_secs(2));
        assert_eq!(config.upstream_response_timeout, None);
        assert_eq!(config.max_request_body_bytes, Some(10 << 20));
        assert_eq!(config.max_connections_per_listener, None);

        let error = |args: &[&str]| engine_args(args).unwrap().config().unwrap_err().to_string();
        assert_eq!(
            error(&["--idle-timeout", "1s", "--park-after", "2s"]),
            "--park-after 2s: must not be longer than --idle-timeout 1s"
        );
        assert_eq!(
            error(&["--header-read-timeout", "0s"]),
            "--header-read-timeout 0s: must be longer than 0"
        );
        assert!(engine_args(&["--worker-threads", "0"]).is_err());
        assert!(engine_args(&["--idle-timeout", "soon"]).is_err());
        assert!(engine_args(&["--max-request-body", "10x"]).is_err());
    }

    #[test]
    fn sizes_are_bytes_or_binary_multiples() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1500"), Ok(1500));
        assert_eq!(parse_size("8k"), Ok(8192));
        assert_eq!(parse_size("8K"), Ok(8192));
        assert_eq!(parse_size("2m"), Ok(2 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        for wrong in ["", "k", "-1", "1.5m", "1 m", "1mb", "m1"] {
            assert!(parse_size(wrong).is_err(), "{wrong:?}");
        }
        assert!(parse_size("17179869184g").is_err(), "overflow");
        assert!(parse_size("99999999999999999999").is_err(), "overflow");
    }
}
