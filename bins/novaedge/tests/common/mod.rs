//! Helpers shared by the end-to-end tests of the `novaedge` binary.
#![allow(dead_code, reason = "each test binary uses a different subset")]

pub(crate) mod netns;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_novaedge");

/// A running `novaedge` process; killed on drop if still alive.
pub(crate) struct Proxy {
    pub(crate) child: Child,
    pub(crate) log: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    pub(crate) fn start(args: &[&str]) -> Proxy {
        Self::start_with_env(args, &[])
    }

    /// As [`start`](Self::start), with these environment variables set.
    pub(crate) fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Proxy {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied());
        Self::spawn(command)
    }

    /// As [`start`](Self::start), in network namespace `netns` (`ip netns exec` replaces
    /// itself with novaedge, so the child's PID is novaedge's).
    pub(crate) fn start_in_netns(netns: &str, args: &[&str]) -> Proxy {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", netns, BIN])
            .args(args)
            .env("RUST_LOG", "info");
        Self::spawn(command)
    }

    fn spawn(mut command: Command) -> Proxy {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start novaedge");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Proxy { child, log }
    }

    /// Waits until a log line contains `needle` after the first `skip` lines; returns its index.
    pub(crate) fn wait_log(&self, needle: &str, skip: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            {
                let log = self.log.lock().unwrap();
                if let Some(i) = log.iter().skip(skip).position(|l| l.contains(needle)) {
                    return skip + i;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?}; log:\n{}",
                self.log.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn log_len(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    pub(crate) fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    pub(crate) fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "novaedge did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A port that was free a moment ago (the proxy binds the ports its manifests name).
// Not every test binary that includes `common` uses it.
#[allow(unused_imports)]
pub(crate) use novaedge_echo::free_port;

/// One HTTP/1.1 GET on a fresh connection: (status, body).
pub(crate) async fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> std::io::Result<(u16, String)> {
    let (status, _, body) = get_with_headers(addr, host, path, &[]).await?;
    Ok((status, body))
}

/// One HTTP/1.1 GET with extra request headers on a fresh connection: (status, response
/// headers, body).
pub(crate) async fn get_with_headers(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, http::HeaderMap, String)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    let mut req = http::Request::get(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    for (name, value) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(value).unwrap(),
        );
    }
    let response = sender
        .send_request(req)
        .await
        .map_err(std::io::Error::other)?;
    let status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok((
        status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

// === certificates and command-line clients (openssl, curl) ===

/// Runs a command to completion; panics (with its output) if it cannot start.
pub(crate) fn run(program: &str, args: &[&str], dir: &Path) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program} is needed by this test (Debian: curl, openssl): {e}"))
}

#[track_caller]
pub(crate) fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A CA (`ca.crt`, `ca.key`) in `dir`.
pub(crate) fn make_ca(dir: &Path) {
    ok(run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=novaedge test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
        dir,
    ));
}

/// `NAME.crt` and `NAME.key` for `san` (e.g. `DNS:shop.test`), signed by the CA, written
/// under temporary names then renamed, the way a certificate manager replaces them.
pub(crate) fn make_cert(dir: &Path, name: &str, san: &str) {
    let tmp = format!("{name}.new");
    ok(run(
        "openssl",
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{tmp}.key"),
            "-out",
            &format!("{tmp}.csr"),
        ],
        dir,
    ));
    std::fs::write(
        dir.join(format!("{tmp}.ext")),
        format!("subjectAltName={san}\n"),
    )
    .unwrap();
    ok(run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &format!("{tmp}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{tmp}.ext"),
            "-out",
            &format!("{tmp}.crt"),
        ],
        dir,
    ));
    for ext in ["key", "crt"] {
        std::fs::rename(
            dir.join(format!("{tmp}.{ext}")),
            dir.join(format!("{name}.{ext}")),
        )
        .unwrap();
    }
}

/// `curl` through the proxy for `https://HOST:PORT/PATH`, resolved to 127.0.0.1: the HTTP
/// version and status it reports, and the body.
pub(crate) fn curl(dir: &Path, host: &str, port: u16, path: &str, http: &str) -> (String, String) {
    let out = ok(run(
        "curl",
        &[
            "-sS",
            http,
            "--cacert",
            "ca.crt",
            "--resolve",
            &format!("{host}:{port}:127.0.0.1"),
            "-w",
            "\n%{http_version} %{http_code}",
            &format!("https://{host}:{port}{path}"),
        ],
        dir,
    ));
    let (body, status) = out.rsplit_once('\n').unwrap();
    (status.to_owned(), body.to_owned())
}

/// Service `NAME` in namespace `t` (port 80, named `http`) with one EndpointSlice whose
/// endpoint is 127.0.0.1:`port`.
pub(crate) fn service(name: &str, port: u16) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: t}}
spec:
  ports: [{{name: http, port: 80}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: t
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: [127.0.0.1]}}]
"
    )
}

/// `promtool check metrics` (Debian `prometheus`) finds nothing wrong with `metrics`.
pub(crate) fn promtool_accepts(metrics: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; see scripts/test-packages.txt)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
