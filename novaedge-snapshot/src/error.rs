//! Validation errors that say which object and which field were wrong.

use std::fmt;

/// One problem in a snapshot: the object it is in, the field path inside that object, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The object, e.g. `route "default/web" on listener "http"`.
    pub object: String,
    /// The field path inside the object, e.g. `rules[0].backends[1].backend`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(
        object: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            object: object.into(),
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: field {}: {}", self.object, self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// Every problem found in a snapshot; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(Vec<FieldError>);

impl ValidationErrors {
    /// A single error.
    pub(crate) fn one(error: FieldError) -> Self {
        Self(vec![error])
    }

    /// Wraps a non-empty list; returns `Ok(())` for an empty one.
    pub(crate) fn check(errors: Vec<FieldError>) -> Result<(), Self> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Self(errors))
        }
    }

    /// The individual errors, in the order they were found.
    pub fn errors(&self) -> &[FieldError] {
        &self.0
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid snapshot ({} error", self.0.len())?;
        if self.0.len() != 1 {
            f.write_str("s")?;
        }
        f.write_str(")")?;
        for e in &self.0 {
            write!(f, "; {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}
