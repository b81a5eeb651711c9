//! `novaedge check`: every problem in a set of manifests, one per line.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use novaedge_k8s::TranslateOptions;
use novaedge_k8s::file_source::FileSource;

pub(crate) fn check(
    paths: &[PathBuf],
    options: &TranslateOptions,
) -> Result<ExitCode, super::Error> {
    let diagnostics = FileSource::check(paths, options);
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let mut out = std::io::stdout().lock();
    for d in &diagnostics {
        writeln!(out, "{d}")?;
    }
    if errors > 0 {
        writeln!(out, "{errors} error(s)")?;
        Ok(ExitCode::FAILURE)
    } else {
        writeln!(out, "ok ({} warning(s))", diagnostics.len())?;
        Ok(ExitCode::SUCCESS)
    }
}
