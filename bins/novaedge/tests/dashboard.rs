//! The Grafana dashboard in `config/grafana/` reads only metrics NovaEdge registers: every
//! `novaedge_*` family its queries name is registered somewhere in the workspace's code (as a
//! string literal passed to a prometheus-client registry or encoder).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `.rs` file under `dir`, skipping build output.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && name != ".git" && name != "fuzz" {
                sources(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The metric family a sample name belongs to, as registered.
fn family(sample: &str) -> &str {
    ["_total", "_bucket", "_count", "_sum"]
        .iter()
        .find_map(|suffix| sample.strip_suffix(suffix))
        .unwrap_or(sample)
}

#[test]
fn the_dashboard_queries_only_registered_metrics() {
    let text = std::fs::read_to_string(workspace().join("config/grafana/novaedge.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() > 10, "{exprs:?}");
    let used: BTreeSet<String> = exprs
        .iter()
        .flat_map(|e| {
            e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("novaedge_"))
                .map(|w| family(w).to_owned())
                .collect::<Vec<_>>()
        })
        .collect();

    let mut files = Vec::new();
    sources(&workspace(), &mut files);
    let code: String = files
        .iter()
        .filter(|p| !p.ends_with("dashboard.rs"))
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    let missing: Vec<&String> = used
        .iter()
        .filter(|name| !code.contains(&format!("\"{name}\"")))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics nothing registers: {missing:?}"
    );
}
