//! Errors of the data readers. Every variant names the file and where in it the problem
//! is (a line, a CSV record, or a JSON path into a SQuAD file) and which field or column.
use std::fmt;

/// One input record that could not be used: the file, the 1-based line (for JSONL; for a
/// SQuAD JSON file, the 1-based number of the paragraph in file order, since a JSON value
/// carries no line numbers once parsed) and a message that names the field.
///
/// Displays as `FILE:LINE: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// The input's name: its path as given, or `<stdin>`.
    pub file: String,
    /// 1-based line (JSONL) or paragraph number (SQuAD JSON).
    pub line: usize,
    /// What is wrong, starting with the field it concerns (e.g. "field `text`: empty").
    pub message: String,
}

impl fmt::Display for BadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

impl std::error::Error for BadRecord {}

/// Why a data file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{file}: {source}")]
    Io {
        /// The input's name.
        file: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A record is invalid and the reader was strict (ingest with `strict`, or any
    /// evaluation reader, which never skips records).
    #[error("{0}")]
    Record(BadRecord),
    /// A whole-file JSON input (SQuAD) is not valid JSON.
    #[error("{file}:{line}:{column}: invalid JSON: {message}")]
    Json {
        /// The input's name.
        file: String,
        /// 1-based line of the syntax error.
        line: usize,
        /// 1-based column of the syntax error.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// A SQuAD file is valid JSON but a value is missing or has the wrong shape. `path`
    /// locates the record (`data[3].paragraphs[1].qas[0]`), `field` is the key inside it.
    #[error("{file}: {path}: field `{field}`: {message}")]
    Squad {
        /// The input's name.
        file: String,
        /// JSON path of the enclosing record (`data[i].paragraphs[j]...`).
        path: String,
        /// The key inside that record.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A CSV record is invalid.
    #[error("{file}:{line}: record {record}{}: {message}", column_suffix(.column))]
    Csv {
        /// The input's name.
        file: String,
        /// 1-based line where the record starts (line 1 is the header).
        line: u64,
        /// 1-based number of the data record (0 for the header).
        record: u64,
        /// The column concerned, when the problem is one column's.
        column: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// The input's format could not be recognised or does not fit the reader.
    #[error("{file}: {message}")]
    Format {
        /// The input's name.
        file: String,
        /// What was expected and found.
        message: String,
    },
}

fn column_suffix(column: &Option<String>) -> String {
    match column {
        Some(c) => format!(", column `{c}`"),
        None => String::new(),
    }
}

impl DataError {
    pub(crate) fn io(file: &str, source: std::io::Error) -> Self {
        DataError::Io {
            file: file.to_string(),
            source,
        }
    }

    pub(crate) fn format(file: &str, message: impl Into<String>) -> Self {
        DataError::Format {
            file: file.to_string(),
            message: message.into(),
        }
    }
}

/// Result of the data readers.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
