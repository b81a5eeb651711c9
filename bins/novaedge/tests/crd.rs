//! NovaEdge's CRDs through the binary: `novaedge crdgen` prints what `config/crd/` holds, and
//! `novaedge check` reads the kinds, accepting the samples and naming the object and field of a
//! mistake.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::BIN;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn crdgen_prints_the_committed_crds() {
    let out = Command::new(BIN).arg("crdgen").output().unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let committed = std::fs::read_to_string(repo().join("config/crd/novaedge.io.yaml")).unwrap();
    assert!(
        printed == committed,
        "config/crd/novaedge.io.yaml differs from `novaedge crdgen`; regenerate it with \
         `cargo run -p novaedge -- crdgen > config/crd/novaedge.io.yaml`"
    );
    let names: Vec<String> = printed
        .lines()
        .filter_map(|l| l.strip_prefix("  name: "))
        .filter(|n| n.ends_with(".novaedge.io"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        names,
        [
            "proxygateways.novaedge.io",
            "proxyroutes.novaedge.io",
            "proxybackends.novaedge.io",
            "proxypolicies.novaedge.io",
            "proxyvips.novaedge.io",
        ]
    );
}

#[test]
fn check_accepts_the_samples() {
    let out = Command::new(BIN)
        .arg("check")
        .arg(repo().join("config/samples"))
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains("error"), "{stdout}");
}

#[test]
fn check_names_the_object_and_field_of_a_crd_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("crd.yaml");
    std::fs::write(
        &file,
        "apiVersion: novaedge.io/v1alpha1
kind: ProxyRoute
metadata: {name: shop, namespace: t}
spec:
  parentRefs: [{name: edge}]
  rules:
    - backendRefs: [{name: api, port: 80, weight: heavy}]
---
apiVersion: novaedge.io/v1alpha1
kind: ProxyVIP
metadata: {name: vip, namespace: t}
spec:
  addresses: [192.0.2.10]
  mode: BGP
",
    )
    .unwrap();
    let out = Command::new(BIN).arg("check").arg(&file).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!out.status.success(), "{stdout}");
    let f = file.display();
    for expected in [
        format!(
            "error: {f}: ProxyRoute t/shop: spec.rules[0].backendRefs[0].weight: invalid type: \
             string \"heavy\", expected u32"
        ),
        format!(
            "error: {f}: ProxyVIP t/vip: spec.bgp: bgp is required for mode BGP, and only for it"
        ),
    ] {
        assert!(
            stdout.lines().any(|l| l == expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(stdout.contains("2 error(s)"), "{stdout}");
}
