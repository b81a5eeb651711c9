//! The standalone source: Kubernetes YAML from files and directories, translated with the same
//! code the controller uses, and watched for changes.

use std::path::PathBuf;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use novaedge_snapshot::ConfigSnapshot;
use tokio::sync::mpsc;

use crate::diagnostics::Diagnostic;
use crate::objects::load_paths;
use crate::translate::{TranslateOptions, translate};

/// A snapshot built from files, with the warnings met on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub snapshot: ConfigSnapshot,
    pub warnings: Vec<Diagnostic>,
}

/// Reads and translates a set of paths; stamps each load with a new, higher version.
#[derive(Debug)]
pub struct FileSource {
    paths: Vec<PathBuf>,
    version: u64,
}

impl FileSource {
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self { paths, version: 0 }
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Every diagnostic for the paths, errors first; nothing is kept.
    pub fn check(paths: &[PathBuf]) -> Vec<Diagnostic> {
        let (objects, mut diagnostics) = load_paths(paths);
        diagnostics.extend(translate(&objects, &TranslateOptions::default()).diagnostics);
        diagnostics.sort_by_key(|d| d.severity);
        diagnostics
    }

    /// Reads and translates the paths. On any error, returns every diagnostic, errors first:
    /// the caller keeps serving what it has.
    pub fn load(&mut self) -> Result<Loaded, Vec<Diagnostic>> {
        let (objects, mut diagnostics) = load_paths(&self.paths);
        self.version += 1;
        let translation = translate(
            &objects,
            &TranslateOptions {
                version: self.version,
            },
        );
        diagnostics.extend(translation.diagnostics);
        if diagnostics.iter().any(Diagnostic::is_error) {
            diagnostics.sort_by_key(|d| d.severity);
            return Err(diagnostics);
        }
        Ok(Loaded {
            snapshot: translation.snapshot,
            warnings: diagnostics,
        })
    }

    /// Starts watching the paths. Directories are watched recursively; a file is watched
    /// through its directory, so that editors that replace the file (write + rename) are seen.
    pub fn watch(&self) -> notify::Result<Changes> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let relevant = match &event {
                    Ok(e) => !matches!(e.kind, notify::EventKind::Access(_)),
                    Err(_) => true,
                };
                if relevant {
                    let _ = tx.send(());
                }
            })?;
        for path in &self.paths {
            if path.is_dir() {
                watcher.watch(path, RecursiveMode::Recursive)?;
            } else {
                let dir = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map_or_else(|| PathBuf::from("."), PathBuf::from);
                watcher.watch(&dir, RecursiveMode::NonRecursive)?;
            }
        }
        Ok(Changes {
            _watcher: watcher,
            rx,
        })
    }
}

/// File-system changes under watched paths, debounced.
#[derive(Debug)]
pub struct Changes {
    _watcher: notify::RecommendedWatcher,
    rx: mpsc::UnboundedReceiver<()>,
}

impl Changes {
    /// Waits for a change, then for `quiet` without further changes (an editor's save is often
    /// several events). Returns `false` if the watcher stopped.
    pub async fn next(&mut self, quiet: Duration) -> bool {
        if self.rx.recv().await.is_none() {
            return false;
        }
        loop {
            match tokio::time::timeout(quiet, self.rx.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return false,
                Err(_) => return true,
            }
        }
    }
}
