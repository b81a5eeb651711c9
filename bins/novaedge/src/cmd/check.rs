//! `novaedge check`: every problem in a set of manifests, one per line, then the status
//! conditions that are not as they should be (a route that would not be accepted, a listener in
//! conflict, a reference that does not resolve), each naming the object and the part.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use novaedge_k8s::TranslateOptions;
use novaedge_k8s::file_source::FileSource;

pub(crate) fn check(
    paths: &[PathBuf],
    options: &TranslateOptions,
    all_status: bool,
) -> Result<ExitCode, super::Error> {
    let (diagnostics, status) = FileSource::check_with_status(paths, options);
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let mut out = std::io::stdout().lock();
    for d in &diagnostics {
        writeln!(out, "{d}")?;
    }
    if all_status {
        writeln!(out, "status:")?;
        write!(out, "{}", status.render())?;
    } else {
        for problem in status.problems() {
            writeln!(out, "status: {problem}")?;
        }
    }
    if errors > 0 {
        writeln!(out, "{errors} error(s)")?;
        Ok(ExitCode::FAILURE)
    } else {
        writeln!(out, "ok ({} warning(s))", diagnostics.len())?;
        Ok(ExitCode::SUCCESS)
    }
}
