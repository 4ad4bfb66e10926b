//! Diagnostics: every error and warning carries file:line:col and, when known, the source text
//! so miette can show the offending line.

use miette::{Diagnostic, LabeledSpan, SourceCode, SourceSpan};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A loaded source file (kept for diagnostics).
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    /// Name shown in messages (the path as the user gave it, relative where possible).
    pub name: String,
    pub text: Arc<str>,
    /// byte offset of the start of every line, computed on first use (line_col is then a binary
    /// search: a file with 200 000 locals must not cost a scan from the start per location)
    line_starts: std::sync::OnceLock<Vec<usize>>,
}

impl SourceFile {
    pub fn new(path: &Path, name: String, text: String) -> Arc<SourceFile> {
        Arc::new(SourceFile {
            path: path.to_path_buf(),
            name,
            text: Arc::from(text),
            line_starts: std::sync::OnceLock::new(),
        })
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let starts = self.line_starts.get_or_init(|| {
            std::iter::once(0)
                .chain(self.text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        });
        // index of the last line start <= offset
        let idx = starts.partition_point(|&s| s <= offset) - 1;
        let col = self.text[starts[idx]..offset].chars().count() + 1;
        (idx + 1, col)
    }
}

/// `file:line:col`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One error or warning.
#[derive(Clone)]
pub struct Diag {
    pub severity: Severity,
    pub message: String,
    pub help: Option<String>,
    pub location: Option<Location>,
    source: Option<Arc<SourceFile>>,
    span: Option<Range<usize>>,
    label: Option<String>,
}

/// Non-fatal diagnostics are the same type.
pub type Warning = Diag;

impl Diag {
    pub fn error(message: impl Into<String>) -> Diag {
        Diag {
            severity: Severity::Error,
            message: message.into(),
            help: None,
            location: None,
            source: None,
            span: None,
            label: None,
        }
    }

    pub fn warning(message: impl Into<String>) -> Diag {
        Diag {
            severity: Severity::Warning,
            ..Diag::error(message)
        }
    }

    /// Attach a position in a file.
    pub fn at(mut self, file: &Arc<SourceFile>, span: Option<Range<usize>>) -> Diag {
        let start = span.as_ref().map(|r| r.start).unwrap_or(0);
        let (line, column) = file.line_col(start);
        self.location = Some(Location {
            file: PathBuf::from(&file.name),
            line,
            column,
        });
        self.source = Some(file.clone());
        self.span = span;
        self
    }

    /// Attach a position when only a file is known (line/col computed from a byte offset).
    pub fn at_file(mut self, file: &Arc<SourceFile>) -> Diag {
        self.location = Some(Location {
            file: PathBuf::from(&file.name),
            line: 1,
            column: 1,
        });
        self.source = Some(file.clone());
        self
    }

    /// Attach a bare location (no source text).
    pub fn at_location(mut self, loc: Location) -> Diag {
        self.location = Some(loc);
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diag {
        self.help = Some(help.into());
        self
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Diag {
        self.label = Some(label.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// One line: `file:line:col: error: message` (used in tests and plain output).
    pub fn one_line(&self) -> String {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match &self.location {
            Some(l) => format!("{l}: {sev}: {}", self.message),
            None => format!("{sev}: {}", self.message),
        }
    }
}

impl fmt::Debug for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.one_line())
    }
}

impl fmt::Display for Diag {
    /// The message, prefixed with `file:line:col` unless a source snippet (which shows the
    /// position in its header) is attached.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(l) if self.span.is_none() || self.source.is_none() => {
                write!(f, "{l}: {}", self.message)
            }
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Diag {}

impl Diagnostic for Diag {
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.span.as_ref()?;
        self.source.as_ref().map(|s| s as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.span.clone()?;
        let len = span.end.saturating_sub(span.start);
        let label =
            LabeledSpan::new_with_span(self.label.clone(), SourceSpan::from((span.start, len)));
        Some(Box::new(std::iter::once(label)))
    }
}

impl SourceCode for SourceFile {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        let inner =
            self.text
                .as_ref()
                .read_span(span, context_lines_before, context_lines_after)?;
        Ok(Box::new(miette::MietteSpanContents::new_named(
            self.name.clone(),
            inner.data(),
            *inner.span(),
            inner.line(),
            inner.column(),
            inner.line_count(),
        )))
    }
}

/// Loading failed: every error found (and the warnings seen on the way).
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub errors: Vec<Diag>,
    pub warnings: Vec<Diag>,
}

impl ConfigError {
    pub fn single(d: Diag) -> ConfigError {
        ConfigError {
            errors: vec![d],
            warnings: Vec::new(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        if n == 1 {
            write!(f, "the template is invalid: 1 error")
        } else {
            write!(f, "the template is invalid: {n} errors")
        }
    }
}

impl std::error::Error for ConfigError {}

impl Diagnostic for ConfigError {
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        Some(Box::new(self.errors.iter().map(|d| d as &dyn Diagnostic)))
    }
}
