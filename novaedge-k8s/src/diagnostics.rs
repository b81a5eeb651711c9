//! Messages for the user: what is wrong, in which file, object and field.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The configuration cannot be served as written.
    Error,
    /// Served, but something was ignored or defaulted that the user should know about.
    Warning,
}

/// One finding about the input. Displayed as
/// `file: Kind namespace/name: field: message` (parts that are unknown are left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The file the object came from, if it came from a file.
    pub file: Option<PathBuf>,
    /// `Kind namespace/name`, or a description of the document when the object has no name.
    pub object: String,
    /// Field path inside the object, e.g. `spec.rules[0].backendRefs[1].port`; empty for the
    /// object as a whole.
    pub field: String,
    pub message: String,
}

impl Diagnostic {
    pub(crate) fn error(
        object: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Error,
            file: None,
            object: object.into(),
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn warning(
        object: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(object, field, message)
        }
    }

    pub(crate) fn in_file(mut self, file: Option<PathBuf>) -> Self {
        self.file = file;
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.severity {
            Severity::Error => "error: ",
            Severity::Warning => "warning: ",
        })?;
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        write!(f, "{}: ", self.object)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}
