//! Times each stage of the apply path on one configuration, and the memory it holds after each:
//! reading and parsing the YAML, translating it, validating the snapshot, the protobuf encoding
//! and decoding of controller -> agent, and the engine's apply (first, then a reload of the same
//! routes under a new version, which keeps every backend's balancer).
//!
//!     cargo run --release -p novaedge --example scale_stages -- DIR [DIR...] [--repeat K]
//!
//! `bench/gen_routes.py` writes such a directory; `bench/scale.sh` runs this for 1,000 and
//! 10,000 routes. Each stage runs `--repeat` times (default 3) and the fastest run is printed:
//! the stages are deterministic, so the minimum is the run least disturbed by the machine.
//! The listeners are bound to 127.0.0.1 port 0, whatever port the files name.
//!
//! RSS is the process's resident memory after the stage (VmRSS) and its peak so far (VmHWM), as
//! `/proc/self/status` says; the objects and snapshots of earlier stages are still held, as they
//! are in `novaedge run` until the engine has applied the snapshot.
//!
//! The `agent` rows are a node agent's part alone, in a child process that holds nothing else
//! (`--agent FILE` runs it on an encoded snapshot): decode the snapshot as it arrives from the
//! controller, validate it, apply it, then apply it again under a new version. Their memory is
//! what an agent's DaemonSet pod needs for the configuration.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a measuring tool: it prints its figures and stops on a broken input"
)]

// The binary's allocator: the memory figures are those of `novaedge run` and `novaedge agent`.
#[path = "../src/alloc.rs"]
mod alloc;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use novaedge_core::{Engine, EngineConfig};
use novaedge_k8s::TranslateOptions;
use novaedge_k8s::objects::load_paths;
use novaedge_snapshot::ConfigSnapshot;

/// `(VmRSS, VmHWM)` in MiB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Runs `f` `repeat` times; the fastest time and the last result.
fn timed<T>(repeat: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..repeat {
        // The previous result is dropped before the next run, outside the timing.
        drop(out.take());
        let start = Instant::now();
        let value = f();
        best = best.min(start.elapsed());
        out = Some(value);
    }
    (best, out.expect("repeat is at least 1"))
}

fn report(dir: &str, stage: &str, time: Duration) {
    let (rss, hwm) = memory();
    println!(
        "{dir:<14} {stage:<22} {:>10.1} ms {rss:>9.1} MiB {hwm:>9.1} MiB",
        time.as_secs_f64() * 1e3
    );
}

/// An engine as both parts run it: listeners on 127.0.0.1.
fn engine_config() -> EngineConfig {
    EngineConfig {
        default_bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        ..EngineConfig::default()
    }
}

/// The fastest of `repeat` reloads of `snapshot` under a new version each time.
fn reload(engine: &Engine, snapshot: &mut ConfigSnapshot, repeat: usize) -> Duration {
    timed(repeat, || {
        snapshot.version += 1;
        engine.apply(snapshot).expect("the snapshot applies");
    })
    .0
}

/// A node agent's part, on the encoded snapshot in `file`: see the module docs.
fn agent(file: &str, label: &str, repeat: usize) {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let _guard = runtime.enter();
    let bytes = std::fs::read(file).expect("the encoded snapshot can be read");
    let start = Instant::now();
    let mut snapshot = ConfigSnapshot::decode(&bytes).expect("the encoded snapshot decodes");
    let decoded = start.elapsed();
    // An agent lets the message go once it is decoded.
    drop(bytes);
    report(label, "agent: decode", decoded);
    let start = Instant::now();
    snapshot.validate().expect("the snapshot is valid");
    report(label, "agent: validate", start.elapsed());
    let start = Instant::now();
    let engine = Engine::new(engine_config());
    engine.apply(&snapshot).expect("the snapshot applies");
    report(label, "agent: apply (first)", start.elapsed());
    let t = reload(&engine, &mut snapshot, repeat);
    report(label, "agent: apply (reload)", t);
    runtime.block_on(engine.shutdown(Duration::ZERO));
}

fn main() {
    let mut dirs = Vec::new();
    let mut repeat = 3;
    let mut agent_file = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--agent" {
            agent_file = Some(args.next().expect("--agent takes a file"));
        } else if arg == "--repeat" {
            repeat = args
                .next()
                .and_then(|k| k.parse().ok())
                .filter(|k| *k > 0)
                .expect("--repeat takes a positive number");
        } else {
            dirs.push(arg);
        }
    }
    if let Some(file) = agent_file {
        let label = dirs.first().map_or("agent", String::as_str);
        agent(&file, label, repeat);
        return;
    }
    if dirs.is_empty() {
        eprintln!("usage: scale_stages DIR [DIR...] [--repeat K]");
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let _guard = runtime.enter();
    println!(
        "{:<14} {:<22} {:>13} {:>13} {:>13}",
        "config", "stage", "time", "VmRSS", "VmHWM"
    );
    for dir in dirs {
        let paths = [PathBuf::from(&dir)];
        let (t, (objects, diagnostics)) = timed(repeat, || load_paths(&paths));
        assert!(diagnostics.is_empty(), "{dir}: {diagnostics:?}");
        report(&dir, "read + parse YAML", t);

        let options = TranslateOptions {
            version: 1,
            ..TranslateOptions::default()
        };
        let (t, translation) = timed(repeat, || novaedge_k8s::translate(&objects, &options));
        assert!(
            !translation.has_errors(),
            "{dir}: {:?}",
            translation.diagnostics
        );
        report(&dir, "translate", t);
        let mut snapshot = translation.snapshot;
        for l in &mut snapshot.listeners {
            l.port = 0;
        }

        let (t, valid) = timed(repeat, || snapshot.validate());
        valid.expect("the translated snapshot is valid");
        report(&dir, "validate", t);

        let (t, bytes) = timed(repeat, || snapshot.encode_to_vec());
        report(&dir, "protobuf encode", t);
        let (t, decoded) = timed(repeat, || ConfigSnapshot::decode(&bytes));
        let decoded = decoded.expect("the encoded snapshot decodes");
        assert!(
            decoded == snapshot,
            "{dir}: the snapshot changed on the wire"
        );
        report(&dir, "protobuf decode", t);
        drop(decoded);

        // Each run a new engine: the first apply of a process. The previous one is shut down
        // first, outside the timing, so that one engine's memory is counted.
        let mut best = Duration::MAX;
        let mut engine: Option<Engine> = None;
        for _ in 0..repeat {
            if let Some(e) = engine.take() {
                runtime.block_on(e.shutdown(Duration::ZERO));
            }
            let start = Instant::now();
            let e = Engine::new(engine_config());
            e.apply(&snapshot).expect("the snapshot applies");
            best = best.min(start.elapsed());
            engine = Some(e);
        }
        report(&dir, "engine apply (first)", best);
        let engine = engine.expect("repeat is at least 1");
        let t = reload(&engine, &mut snapshot, repeat);
        report(&dir, "engine apply (reload)", t);
        runtime.block_on(engine.shutdown(Duration::ZERO));

        let file = std::env::temp_dir().join(format!("scale_stages-{}.pb", std::process::id()));
        std::fs::write(&file, &bytes).expect("the encoded snapshot can be written");
        let status = std::process::Command::new(std::env::current_exe().expect("this program"))
            .arg("--agent")
            .arg(&file)
            .args(["--repeat", &repeat.to_string(), &dir])
            .status()
            .expect("the agent process starts");
        let _ = std::fs::remove_file(&file);
        assert!(status.success(), "{dir}: the agent process failed");
        println!(
            "{dir:<14} {:<22} {} routes, {} backends, {} KiB protobuf",
            "(size)",
            snapshot.routes.len(),
            snapshot.backends.len(),
            bytes.len() / 1024
        );
    }
}
