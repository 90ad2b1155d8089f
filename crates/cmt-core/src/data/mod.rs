//! Documents and question sets: the readers behind `cmt ingest` and the evaluation
//! protocol (DESIGN §1 step 9, §4 "Datasets").
//!
//! - Ingest: [`read_documents`] reads JSONL documents (`{"id","text"}` plus optional
//!   `title`, `timestamp`, `source`) or a SQuAD v1.1 JSON file, sniffed from the content.
//!   Bad JSONL lines are reported as [`BadRecord`]s and skipped, or end reading when
//!   `strict`.
//! - Evaluation: [`read_dataset`] (SQuAD v1.1 JSON), [`read_jsonl_dataset`] (documents
//!   JSONL + questions JSONL), [`read_csv_dataset`] (StreamingQA- and ArchivalQA-style
//!   CSV) and [`read_dataset_auto`], which picks one from the file. These never skip a
//!   record: the first bad one is an error.
//!
//! Every error names the file, the line (or CSV record, or JSON path) and the field.
//! Nothing here panics on user data.
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashSet;

mod csv_qa;
mod error;
mod jsonl;
mod read;
mod squad;
mod timestamp;

pub use csv_qa::{read_csv_dataset, read_csv_dataset_from, CsvLayout, CsvOptions};
pub use error::{BadRecord, DataError, Result};
pub use read::{
    read_dataset, read_dataset_auto, read_dataset_from, read_documents, read_documents_from,
    read_jsonl_dataset,
};
pub use timestamp::parse_timestamp;

/// One document to compress into memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    /// Unique within its input (and, for a bank, within the bank).
    pub id: String,
    /// The text, as given (not trimmed).
    pub text: String,
    /// Optional title (SQuAD: the article title, underscores kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Optional publication time, unix seconds (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    /// Optional free-form origin (a URL, a feed name, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Document {
    /// A document with only an id and a text.
    pub fn new(id: impl Into<String>, text: impl Into<String>) -> Self {
        Document {
            id: id.into(),
            text: text.into(),
            title: None,
            timestamp: None,
            source: None,
        }
    }
}

/// One evaluation question about one document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    /// Unique within its dataset.
    pub id: String,
    /// The question text.
    pub question: String,
    /// Every gold answer (at least one); metrics take the maximum over them.
    pub answers: Vec<String>,
    /// Id of the [`Document`] that answers it; always one of the dataset's documents.
    pub doc_id: String,
    /// Optional time the question was asked, unix seconds (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
}

/// Documents with their questions, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dataset {
    /// Documents in stream order, ids unique.
    pub documents: Vec<Document>,
    /// Questions in file order; each `doc_id` names one of `documents`.
    pub questions: Vec<Question>,
}

impl Dataset {
    /// Keeps the first `n` documents and only the questions about them (order kept).
    pub fn limit_docs(self, n: usize) -> Dataset {
        let mut documents = self.documents;
        documents.truncate(n);
        let keep: HashSet<&str> = documents.iter().map(|d| d.id.as_str()).collect();
        let questions = self
            .questions
            .into_iter()
            .filter(|q| keep.contains(q.doc_id.as_str()))
            .collect();
        Dataset {
            documents,
            questions,
        }
    }
}

/// What [`read_documents`] found: the usable documents and the records it skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocumentsRead {
    /// Documents in input order, ids unique.
    pub documents: Vec<Document>,
    /// Skipped records, in input order (always empty when reading was strict).
    pub bad: Vec<BadRecord>,
}

/// "a string", "a number", ... for messages about a JSON value of the wrong type.
pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_docs_keeps_first_docs_and_their_questions() {
        let q = |id: &str, doc: &str| Question {
            id: id.into(),
            question: "?".into(),
            answers: vec!["a".into()],
            doc_id: doc.into(),
            timestamp: None,
        };
        let ds = Dataset {
            documents: vec![
                Document::new("a", "x"),
                Document::new("b", "y"),
                Document::new("c", "z"),
            ],
            questions: vec![q("1", "c"), q("2", "a"), q("3", "b"), q("4", "a")],
        };
        let small = ds.clone().limit_docs(2);
        assert_eq!(small.documents.len(), 2);
        let ids: Vec<&str> = small.questions.iter().map(|q| q.id.as_str()).collect();
        assert_eq!(ids, ["2", "3", "4"]);
        assert_eq!(ds.clone().limit_docs(10), ds);
        assert!(ds.limit_docs(0).questions.is_empty());
    }

    #[test]
    fn bad_record_display() {
        let b = BadRecord {
            file: "docs.jsonl".into(),
            line: 7,
            message: "field `text`: empty".into(),
        };
        assert_eq!(b.to_string(), "docs.jsonl:7: field `text`: empty");
    }
}
