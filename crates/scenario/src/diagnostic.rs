//! Problems found in a scenario file, each pinned to a file, line, column and field path, in the
//! `path:line:col: field: message (rule)` form editors and CI logs understand.

use std::fmt;
use std::path::{Path, PathBuf};

/// Whether a problem makes the file unusable (`Error`) or is only suspicious (`Warning`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One step of a field path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// Where a field sits in a scenario file, shown as `hints[2].when` or
/// `faults[0].patch.release.version`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(pub Vec<Segment>);

impl FieldPath {
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    pub fn key(&self, key: impl Into<String>) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Key(key.into()));
        next
    }

    pub fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Index(index));
        next
    }

    /// This path followed by a dotted path inside a config document (`db.pool_size`).
    pub fn join_dotted(&self, dotted: &str) -> Self {
        let mut next = self.clone();
        next.0.extend(dotted.split('.').filter(|s| !s.is_empty()).map(|s| Segment::Key(s.to_owned())));
        next
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(file)");
        }
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// One problem in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based; 1 when the problem concerns the whole file.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// Dotted field path, e.g. `hints[2].when`; `(file)` for the file as a whole.
    pub field: String,
    /// The rule broken, e.g. `unknown_field`, `known_sli`, `maximum`.
    pub rule: String,
    pub message: String,
    pub severity: Severity,
}

impl Diagnostic {
    /// A problem with the file itself (unreadable, not found), not with a field in it.
    pub fn file_error(file: &Path, rule: &str, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_owned(),
            line: 1,
            column: 1,
            field: FieldPath::root().to_string(),
            rule: rule.to_owned(),
            message: message.into(),
            severity: Severity::Error,
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}: ", self.file.display(), self.line, self.column, self.field)?;
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        write!(f, "{} ({})", self.message, self.rule)
    }
}

/// 1-based line and column (in characters) of a byte offset into `source`.
pub(crate) fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_print_in_the_dotted_form() {
        let path = FieldPath::root().key("hints").index(2).key("when");
        assert_eq!(path.to_string(), "hints[2].when");
        assert_eq!(FieldPath::root().key("a").index(0).index(1).join_dotted("b.c").to_string(), "a[0][1].b.c");
        assert_eq!(FieldPath::root().to_string(), "(file)");
    }

    #[test]
    fn line_col_counts_lines_and_characters() {
        let src = "a = 1\nbé = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, 10), (2, 4));
        assert_eq!(line_col(src, 999), (3, 1));
    }

    #[test]
    fn warnings_say_so_and_every_line_names_the_rule() {
        let mut d = Diagnostic::file_error(Path::new("s/x.toml"), "io", "cannot read");
        assert_eq!(d.to_string(), "s/x.toml:1:1: (file): cannot read (io)");
        d.severity = Severity::Warning;
        assert_eq!(d.to_string(), "s/x.toml:1:1: (file): warning: cannot read (io)");
    }
}
