//! Golden tests of the translation: Kubernetes manifests in, snapshot and diagnostics out.
//!
//! Each directory under `tests/golden/` is one case (see `tests/golden/README.md`):
//! `input.yaml` holds the manifests, read with [`load_paths`] as `novaedge run` reads them and
//! translated with the default [`TranslateOptions`]; `expected.yaml` holds what comes out: the
//! diagnostics as printed (file paths relative to the case directory), the status conditions, and
//! the snapshot in the
//! view of [`novaedge_snapshot::dump`], secrets redacted. The comment block at the top of
//! `input.yaml` says what the case shows and is copied to the top of `expected.yaml`.
//!
//! Every case is checked before the test fails, so one broken case does not hide the others;
//! each mismatch is shown as a line diff. After a deliberate change to the translation,
//! regenerate the expected files and review their diff:
//!
//! ```text
//! NOVAEDGE_BLESS=1 cargo test -p novaedge-k8s --test golden
//! ```

// A bless run says which expected files it rewrote (visible with --nocapture).
#![allow(clippy::print_stderr)]

use std::fmt::Write as _;
use std::fs;
use std::path::{MAIN_SEPARATOR, Path, PathBuf};

use novaedge_k8s::objects::load_paths;
use novaedge_k8s::{TranslateOptions, translate};
use novaedge_snapshot::ConfigSnapshot;
use serde::Serialize;

const BLESS_VARIABLE: &str = "NOVAEDGE_BLESS";
const BLESS_COMMAND: &str = "NOVAEDGE_BLESS=1 cargo test -p novaedge-k8s --test golden";

/// Lines of unchanged text shown around each change in a diff.
const CONTEXT: usize = 3;

#[derive(Serialize)]
struct Golden<'a> {
    /// Every diagnostic of loading and translating, as `novaedge check` prints it.
    diagnostics: Vec<String>,
    /// The status conditions of the Gateway API objects, as `novaedge check --status` prints
    /// them.
    status: Vec<String>,
    snapshot: &'a ConfigSnapshot,
}

/// The case directories, sorted by name.
fn cases(root: &Path) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = fs::read_dir(root)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", root.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_dir())
        .collect();
    cases.sort();
    cases
}

/// What `expected.yaml` of the case in `dir` should hold.
fn render(dir: &Path) -> String {
    let input = dir.join("input.yaml");
    let text = fs::read_to_string(&input)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", input.display()));
    let (objects, mut diagnostics) = load_paths(std::slice::from_ref(&input));
    let translation = translate(&objects, &TranslateOptions::default());
    diagnostics.extend(translation.diagnostics);
    // Paths as seen from the case directory, so the output does not depend on the checkout.
    let prefix = format!("{}{MAIN_SEPARATOR}", dir.display());
    let golden = Golden {
        diagnostics: diagnostics
            .iter()
            .map(|d| d.to_string().replace(&prefix, ""))
            .collect(),
        status: translation
            .status
            .render()
            .lines()
            .map(str::to_owned)
            .collect(),
        snapshot: &translation.snapshot,
    };
    let body = serde_norway::to_string(&golden).expect("the golden view serializes");

    let mut out = String::new();
    let description: Vec<&str> = text
        .lines()
        .take_while(|line| line.starts_with('#'))
        .collect();
    for line in &description {
        out.push_str(line);
        out.push('\n');
    }
    if !description.is_empty() {
        out.push_str("#\n");
    }
    let _ = writeln!(
        out,
        "# What the translation makes of input.yaml. Generated; after a deliberate change, run\n\
         #   {BLESS_COMMAND}\n\
         # and review the diff."
    );
    out.push_str(&body);
    out
}

/// A line diff of `expected` against `actual`: `-` lines only in `expected`, `+` lines only in
/// `actual`, with [`CONTEXT`] lines around each change, and `@@` headers giving line numbers.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    // lcs[i][j]: the length of the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // (tag, line, line number in expected, line number in actual), 1-based.
    let mut ops: Vec<(char, &str, usize, usize)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i], i + 1, j + 1));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            // Removals before additions, as unified diffs show them.
            ops.push(('-', a[i], i + 1, j + 1));
            i += 1;
        } else {
            ops.push(('+', b[j], i + 1, j + 1));
            j += 1;
        }
    }
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != ' ').collect();
    if changed.is_empty() {
        return "(the files differ only in line endings or the final newline)\n".into();
    }
    let shown = |k: usize| {
        changed
            .iter()
            .any(|&c| k + CONTEXT >= c && k <= c + CONTEXT)
    };
    let mut out = String::from("--- expected.yaml\n+++ actual\n");
    let mut in_hunk = false;
    for (k, (tag, line, at_a, at_b)) in ops.iter().enumerate() {
        if !shown(k) {
            in_hunk = false;
            continue;
        }
        if !in_hunk {
            let _ = writeln!(out, "@@ expected line {at_a}, actual line {at_b} @@");
            in_hunk = true;
        }
        let _ = writeln!(out, "{tag}{line}");
    }
    out
}

#[test]
fn translation_matches_the_golden_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bless = std::env::var_os(BLESS_VARIABLE).is_some_and(|v| !v.is_empty() && v != "0");
    let cases = cases(&root);
    assert!(!cases.is_empty(), "no cases under {}", root.display());

    let mut failures = Vec::new();
    let mut blessed = Vec::new();
    for dir in &cases {
        let name = dir.file_name().expect("a name").to_string_lossy();
        if !dir.join("input.yaml").is_file() {
            failures.push(format!("{name}: no input.yaml"));
            continue;
        }
        let actual = render(dir);
        // The key material of the test certificates in the inputs must never come out.
        if actual.contains("PRIVATE KEY") {
            failures.push(format!("{name}: a private key appears in the output"));
            continue;
        }
        let expected_path = dir.join("expected.yaml");
        let expected = fs::read_to_string(&expected_path);
        if expected.as_deref().ok() == Some(actual.as_str()) {
            continue;
        }
        if bless {
            fs::write(&expected_path, &actual)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", expected_path.display()));
            blessed.push(name.into_owned());
            continue;
        }
        match expected {
            Ok(expected) => failures.push(format!(
                "{name}: the translation differs from expected.yaml\n{}",
                diff(&expected, &actual)
            )),
            Err(e) => failures.push(format!("{name}: cannot read expected.yaml: {e}")),
        }
    }
    if !blessed.is_empty() {
        eprintln!("rewrote expected.yaml of: {}", blessed.join(", "));
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden cases failed:\n\n{}\n\nIf the change is deliberate, regenerate the \
         expected files with\n    {BLESS_COMMAND}\nand review their diff.",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn the_diff_shows_changes_with_context() {
    let expected = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n";
    let actual = "a\nb\nc\nd\nE\nf\ng\nh\ni\nj\nk\n";
    assert_eq!(
        diff(expected, actual),
        "--- expected.yaml\n+++ actual\n\
         @@ expected line 2, actual line 2 @@\n b\n c\n d\n-e\n+E\n f\n g\n h\n i\n j\n+k\n"
    );
    assert_eq!(
        diff("a\n", "a"),
        "(the files differ only in line endings or the final newline)\n"
    );
}
