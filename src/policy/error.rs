//! Located policy errors: `file:line:column: field.path: message`.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a policy file, located precisely enough for an editor jump.
///
/// `line` and `column` are 1-based; `line == 0` means the problem concerns the
/// whole file (unreadable, too large) and the position is left out when
/// displayed. An empty `path` means the problem is not about one field (a YAML
/// syntax error, an empty file) and the path is left out too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// File the problem is in.
    pub file: PathBuf,
    /// 1-based line, or 0 for the whole file.
    pub line: usize,
    /// 1-based column (characters), or 0 for the whole file.
    pub column: usize,
    /// Field path such as `analysis.metrics[1].errors`; empty for the document.
    pub path: String,
    /// What is wrong, naming what was expected and what was found.
    pub message: String,
}

impl PolicyError {
    /// A problem with a whole file or directory (line 0: no position shown).
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        PolicyError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            path: String::new(),
            message: message.into(),
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for PolicyError {}

/// Every problem found while loading policies, in file and position order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl PolicyErrors {
    /// Number of problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no problems.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates over the problems.
    pub fn iter(&self) -> std::slice::Iter<'_, PolicyError> {
        self.0.iter()
    }
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

impl From<PolicyError> for PolicyErrors {
    fn from(e: PolicyError) -> Self {
        PolicyErrors(vec![e])
    }
}

impl IntoIterator for PolicyErrors {
    type Item = PolicyError;
    type IntoIter = std::vec::IntoIter<PolicyError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a PolicyErrors {
    type Item = &'a PolicyError;
    type IntoIter = std::slice::Iter<'a, PolicyError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
