//! The command loop of the lab binaries (`novaedge-vip-bgp`, `novaedge-vip-ospf`,
//! `novaedge-vip-l2`): one driver,
//! driven from stdin, for the namespace tests and `examples/vip-*/lab.sh`.
//!
//! Commands, one per line: `assign IP`, `unassign IP`, `status`, `shutdown`. Each is answered
//! on stdout: `ok`, `error: ...`, or the status lines ending with `end`. SIGTERM and SIGINT
//! shut down like `shutdown`; the exit status says whether the shutdown was clean.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool talks on stdout"
)]

use std::net::IpAddr;
use std::process::ExitCode;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::signal::unix::{SignalKind, signal};

use crate::VipDriver;

/// Sets up logging to stderr (`RUST_LOG`, `info` by default).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
}

/// A lab binary's `main`: sets up logging, reads the arguments with `parse` (a mistake exits
/// with status 2), starts the driver with `start` and [`run`]s it.
pub async fn main<C, D, E, Fut>(
    name: &str,
    parse: impl FnOnce(&[String]) -> Result<(C, Vec<IpAddr>), String>,
    start: impl FnOnce(C) -> Fut,
    print_status: impl Fn(&D),
) -> ExitCode
where
    D: VipDriver,
    E: std::fmt::Display,
    Fut: std::future::Future<Output = Result<D, E>>,
{
    init_logging();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (config, vips) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    match start(config).await {
        Ok(driver) => run(name, driver, vips, print_status).await,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Assigns `vips`, then serves commands until `shutdown`, SIGTERM or SIGINT, and shuts the
/// driver down. `name` prefixes error messages; `print_status` answers `status`.
pub async fn run<D: VipDriver>(
    name: &str,
    driver: D,
    vips: Vec<IpAddr>,
    print_status: impl Fn(&D),
) -> ExitCode {
    for vip in vips {
        if let Err(e) = driver.assign(vip).await {
            eprintln!("{name}: assign {vip}: {e}");
        }
    }
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("{name}: cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            line = lines.next_line(), if stdin_open => {
                let line = match line {
                    Ok(Some(l)) => l,
                    _ => { stdin_open = false; continue; }
                };
                let mut words = line.split_whitespace();
                let reply = match (words.next(), words.next().map(str::parse::<IpAddr>)) {
                    (Some("assign"), Some(Ok(ip))) => driver.assign(ip).await.map_err(|e| e.to_string()),
                    (Some("unassign"), Some(Ok(ip))) => driver.unassign(ip).await.map_err(|e| e.to_string()),
                    (Some("status"), None) => { print_status(&driver); continue; }
                    (Some("shutdown"), None) => break,
                    (None, _) => continue,
                    _ => Err(format!("unknown command {line:?}")),
                };
                match reply {
                    Ok(()) => println!("ok"),
                    Err(e) => println!("error: {e}"),
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let result = driver.shutdown().await;
    println!("shut down");
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}
