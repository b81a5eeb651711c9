//! The standalone source: Kubernetes YAML from files and directories, translated with the same
//! code the controller uses, and watched for changes.
//!
//! Files that Secrets refer to (`novaedge.io/cert-file` and friends, see [`crate::tls`]) are
//! watched too, through their directories: replacing a certificate's PEM files reloads, which
//! rotates the certificate. The set of such files is learnt on every load, so a Secret that
//! starts referring to a new directory is watched from then on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use novaedge_snapshot::ConfigSnapshot;
use tokio::sync::mpsc;

use crate::diagnostics::Diagnostic;
use crate::nodes::NodeScope;
use crate::objects::{Object, Sourced, load_paths};
use crate::status::Statuses;
use crate::translate::{TranslateOptions, translate};

/// A snapshot built from files, with the warnings met on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub snapshot: ConfigSnapshot,
    pub warnings: Vec<Diagnostic>,
    /// Which nodes serve which Gateways (see [`NodeScope::snapshot_for`]).
    pub nodes: NodeScope,
    /// The labels of the Node objects in the files, by node name.
    pub node_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// The checked ProxyVIPs, for placement on nodes.
    pub vips: Vec<crate::placement::ScopedVip>,
}

/// Reads and translates a set of paths; stamps each load with a new, higher version.
#[derive(Debug)]
pub struct FileSource {
    paths: Vec<PathBuf>,
    version: u64,
    /// Files read because a Secret names them, as of the last load.
    referenced: BTreeSet<PathBuf>,
    /// The watcher of the live [`Changes`], if any, to add directories to.
    watching: Weak<Mutex<Watching>>,
    /// Translation settings; `version` is replaced on every load.
    options: TranslateOptions,
}

/// A watcher and the directories it watches (`true`: recursively).
#[derive(Debug)]
struct Watching {
    watcher: notify::RecommendedWatcher,
    dirs: Vec<(PathBuf, bool)>,
}

impl Watching {
    /// Watches `dir` unless a watched directory already covers it.
    fn add(&mut self, dir: &Path, recursive: bool) -> notify::Result<()> {
        let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
        let covered = self.dirs.iter().any(|(have, have_recursive)| {
            *have == canonical || (*have_recursive && canonical.starts_with(have))
        });
        if covered {
            return Ok(());
        }
        let mode = if recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        self.watcher.watch(dir, mode)?;
        self.dirs.push((canonical, recursive));
        Ok(())
    }
}

/// The directory a file is watched through.
fn parent_dir(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), PathBuf::from)
}

/// The files Secrets among `objects` were read from.
fn referenced_files(objects: &[Sourced]) -> BTreeSet<PathBuf> {
    objects
        .iter()
        .filter_map(|o| match &o.object {
            Object::Secret(s) => Some(s.files.iter().cloned()),
            _ => None,
        })
        .flatten()
        .collect()
}

impl FileSource {
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self {
            paths,
            version: 0,
            referenced: BTreeSet::new(),
            watching: Weak::new(),
            options: TranslateOptions::default(),
        }
    }

    /// Translates with `options` (the Ingress ports, for instance); their `version` is ignored.
    pub fn with_options(mut self, options: TranslateOptions) -> Self {
        self.options = options;
        self
    }

    /// The files Secrets referred to in the last load (certificates, keys, CA bundles).
    pub fn referenced_files(&self) -> &BTreeSet<PathBuf> {
        &self.referenced
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Every diagnostic for the paths, translated with `options`, errors first; nothing is
    /// kept.
    pub fn check(paths: &[PathBuf], options: &TranslateOptions) -> Vec<Diagnostic> {
        Self::check_with_status(paths, options).0
    }

    /// As [`check`](Self::check), with the status the translation computed for the objects.
    pub fn check_with_status(
        paths: &[PathBuf],
        options: &TranslateOptions,
    ) -> (Vec<Diagnostic>, Statuses) {
        let (objects, mut diagnostics) = load_paths(paths);
        let translation = translate(&objects, options);
        diagnostics.extend(translation.diagnostics);
        diagnostics.sort_by_key(|d| d.severity);
        (diagnostics, translation.status)
    }

    /// Reads and translates the paths. On any error, returns every diagnostic, errors first:
    /// the caller keeps serving what it has.
    pub fn load(&mut self) -> Result<Loaded, Vec<Diagnostic>> {
        let (objects, mut diagnostics) = load_paths(&self.paths);
        self.referenced = referenced_files(&objects);
        if let Some(watching) = self.watching.upgrade() {
            let mut watching = watching.lock().unwrap_or_else(|e| e.into_inner());
            for file in &self.referenced {
                if let Err(e) = watching.add(&parent_dir(file), false) {
                    tracing::warn!(file = %file.display(), error = %e, "cannot watch");
                }
            }
        }
        self.version += 1;
        let translation = translate(
            &objects,
            &TranslateOptions {
                version: self.version,
                ..self.options.clone()
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
            nodes: translation.nodes,
            node_labels: translation.node_labels,
            vips: translation.vips,
        })
    }

    /// Starts watching the paths and the files Secrets referred to in the last load.
    /// Directories are watched recursively; a file is watched through its directory, so that
    /// editors that replace the file (write + rename) are seen. Later loads add the
    /// directories of newly referenced files.
    pub fn watch(&mut self) -> notify::Result<Changes> {
        let (tx, rx) = mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let relevant = match &event {
                Ok(e) => !matches!(e.kind, notify::EventKind::Access(_)),
                Err(_) => true,
            };
            if relevant {
                let _ = tx.send(());
            }
        })?;
        let mut watching = Watching {
            watcher,
            dirs: Vec::new(),
        };
        for path in &self.paths {
            if path.is_dir() {
                watching.add(path, true)?;
            } else {
                watching.add(&parent_dir(path), false)?;
            }
        }
        for file in &self.referenced {
            // A missing directory is not fatal: the Secret's error already says what is wrong.
            if let Err(e) = watching.add(&parent_dir(file), false) {
                tracing::warn!(file = %file.display(), error = %e, "cannot watch");
            }
        }
        let watching = Arc::new(Mutex::new(watching));
        self.watching = Arc::downgrade(&watching);
        Ok(Changes {
            _watching: watching,
            rx,
        })
    }
}

/// File-system changes under watched paths, debounced.
#[derive(Debug)]
pub struct Changes {
    _watching: Arc<Mutex<Watching>>,
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
