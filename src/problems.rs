//! Problem lists: what configuration checks report, by key path and, when
//! known, by file position.
//!
//! A leaf: every concern's `config.rs` validates its own section into a
//! [`Problems`], and `config/` composes those sections, so the type lives
//! here rather than in `config/` (which imports every concern).

use std::fmt;

/// One problem in a configuration file, located by key path and, when
/// known, by line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The file the problem is in (`<default>` for the embedded config).
    pub source: String,
    /// 1-based line and column, when the parser knows them.
    pub position: Option<(usize, usize)>,
    /// The key path, such as `routes[2].service`; empty for syntax errors.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl ConfigProblem {
    /// A problem at `key`, not yet located in a file.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { source: String::new(), position: None, key: key.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        f.write_str(": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Collects problems during validation so that every one is reported at once.
#[derive(Debug, Default)]
pub struct Problems(Vec<ConfigProblem>);

impl Problems {
    /// Records a problem at `key`.
    pub fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem::new(key, message));
    }

    /// The first problem recorded, if any.
    pub fn first(&self) -> Option<&ConfigProblem> {
        self.0.first()
    }

    /// Whether no problem was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every problem recorded.
    pub fn iter(&self) -> impl Iterator<Item = &ConfigProblem> {
        self.0.iter()
    }
}

impl Extend<ConfigProblem> for Problems {
    fn extend<T: IntoIterator<Item = ConfigProblem>>(&mut self, problems: T) {
        self.0.extend(problems);
    }
}

impl IntoIterator for Problems {
    type Item = ConfigProblem;
    type IntoIter = std::vec::IntoIter<ConfigProblem>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Converts a byte offset into a 1-based line and column.
pub fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.len(), |newline| before.len() - newline - 1) + 1;
    (line, column)
}
