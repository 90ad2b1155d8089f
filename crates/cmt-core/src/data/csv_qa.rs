//! Question sets in CSV, one question per record with its document's text, in the column
//! layouts of StreamingQA and ArchivalQA as the online-adaptation papers (CaMeLS, MAC)
//! distribute them.
//!
//! Assumed layouts (header names are matched trimmed and case-insensitively; the first
//! listed name present wins; columns not listed are ignored):
//!
//! | role             | StreamingQA                                            | ArchivalQA                                     |
//! |------------------|--------------------------------------------------------|------------------------------------------------|
//! | question         | `question`                                             | `question`                                     |
//! | answers          | `answers` (a list, see below)                          | `answer` (one answer), else `answers` (a list) |
//! | document text    | `text`, `context`, `document`, `passage`               | `ans_paragraph`, `paragraph`, `context`, `text`|
//! | document id      | `evidence_id`, `doc_id`, `document_id`, `sorting_key`  | `para_id`, `paragraph_id`                      |
//! | publication time | `publication_date`, `evidence_ts`, `publication_ts`, `date` | `publication_date`, `date`, `pub_date`    |
//! | question id      | `qa_id`, `question_id`, `id`                           | `id`, `question_id`, `qa_id`                   |
//! | question time    | `question_ts`, `question_date`                         | `question_ts`, `question_date`                 |
//! | title            | `title`, `headline`                                    | `title`, `headline`                            |
//!
//! StreamingQA's own release is JSONL (`qa_id`, `question`, `answers`, `evidence_ts`,
//! `evidence_id`) with the WMT texts apart; CaMeLS/MAC's CSV adds the `text` column and
//! joins the answers with a backslash (`a\b\c`). ArchivalQA's release has `question`,
//! `answer`, `para_id` (`<article>_<paragraph>`), `id`, ...; CaMeLS's paired CSV adds the
//! NYT paragraph as `ans_paragraph` (the whole article as `ans_text`, the article id as
//! `doc_id`, the date as `date`). The ArchivalQA document is the answer paragraph, so its
//! id is `para_id`, not the article-level `doc_id`.
//!
//! A list of answers is read as, in this order: a JSON list of strings (`["a", "b"]`), a
//! Python list literal as pandas writes one (`['a', "b's"]`), or text split on any of
//! [`CsvOptions::answer_separators`] (default: backslash and `|`); pieces are trimmed and
//! empty pieces dropped. The first answer of a list is not special.
//!
//! Documents are deduplicated by id (a repeated id with a different text is an error), or,
//! without an id column, by exact text, then named `text-<16 hex digits of SHA-256>`.
//! Timestamps: unix seconds, RFC 3339 or `YYYY-MM-DD` (see [`super::parse_timestamp`]);
//! an empty cell is no timestamp. Without a question id column, question ids are
//! `row-<n>`, `n` the 1-based data record. Every error names the file, the line, the
//! record and the column.
use super::error::{DataError, Result};
use super::timestamp::parse_timestamp;
use super::{Dataset, Document, Question};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Which column layout a CSV file has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CsvLayout {
    /// Decide from the header: an `answers` column means StreamingQA, else an `answer`
    /// column means ArchivalQA.
    #[default]
    Auto,
    /// StreamingQA-style: `question`, `answers` (a list), `text`, ...
    StreamingQa,
    /// ArchivalQA-style: `question`, `answer`, `ans_paragraph`/`paragraph`, `para_id`, ...
    ArchivalQa,
}

/// How to read a CSV question set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    /// Column layout.
    pub layout: CsvLayout,
    /// Separators between answers in a list cell that is not a JSON or Python list
    /// (default: `\` as in CaMeLS/MAC's StreamingQA CSV, and `|`).
    pub answer_separators: Vec<String>,
    /// Field delimiter (default `,`).
    pub delimiter: u8,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            layout: CsvLayout::Auto,
            answer_separators: vec!["\\".to_string(), "|".to_string()],
            delimiter: b',',
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum AnswerKind {
    Single,
    List,
}

struct Columns {
    question: (usize, String),
    answers: (usize, String, AnswerKind),
    text: (usize, String),
    doc_id: Option<(usize, String)>,
    timestamp: Option<(usize, String)>,
    question_id: Option<(usize, String)>,
    question_ts: Option<(usize, String)>,
    title: Option<(usize, String)>,
}

/// Reads a CSV question set (see the module documentation for the layouts).
pub fn read_csv_dataset(path: &Path, options: &CsvOptions) -> Result<Dataset> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|e| DataError::io(&name, e))?;
    read_csv_dataset_from(file, &name, options)
}

/// [`read_csv_dataset`] over any reader; `name` is the file name used in messages.
pub fn read_csv_dataset_from<R: Read>(
    reader: R,
    name: &str,
    options: &CsvOptions,
) -> Result<Dataset> {
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(options.delimiter)
        .has_headers(true)
        .flexible(false)
        .from_reader(reader);
    let names: Vec<String> = rdr
        .headers()
        .map_err(|e| csv_error(name, &e, 0, &[]))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').trim().to_lowercase())
        .collect();
    let cols = columns(&names, options.layout).map_err(|(column, message)| DataError::Csv {
        file: name.to_string(),
        line: 1,
        record: 0,
        column: Some(column),
        message,
    })?;

    let mut documents: Vec<Document> = Vec::new();
    let mut doc_index: HashMap<String, (usize, u64)> = HashMap::new();
    let mut questions = Vec::new();
    let mut question_ids: HashMap<String, u64> = HashMap::new();
    let mut record = csv::StringRecord::new();
    let mut n: u64 = 0;
    loop {
        match rdr.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_error(name, &e, n + 1, &names)),
        }
        n += 1;
        let line = record.position().map_or(0, |p| p.line());
        let fail = |column: &str, message: String| DataError::Csv {
            file: name.to_string(),
            line,
            record: n,
            column: Some(column.to_string()),
            message,
        };
        let cell = |i: usize| record.get(i).unwrap_or("");

        let question = cell(cols.question.0).trim();
        if question.is_empty() {
            return Err(fail(&cols.question.1, "empty question".into()));
        }
        let (ai, aname, kind) = &cols.answers;
        let answers = parse_answers(cell(*ai), *kind, &options.answer_separators)
            .map_err(|m| fail(aname, m))?;
        let text = cell(cols.text.0);
        if text.trim().is_empty() {
            return Err(fail(&cols.text.1, "empty document text".into()));
        }
        let doc_id = match &cols.doc_id {
            Some((i, cname)) => {
                let id = cell(*i).trim();
                if id.is_empty() {
                    return Err(fail(cname, "empty document id".into()));
                }
                id.to_string()
            }
            None => text_id(text),
        };
        let timestamp = match &cols.timestamp {
            Some((i, cname)) if !cell(*i).trim().is_empty() => {
                Some(parse_timestamp(cell(*i)).map_err(|m| fail(cname, m))?)
            }
            _ => None,
        };
        match doc_index.get(&doc_id) {
            Some(&(at, first_line)) => {
                if documents.get(at).is_some_and(|d| d.text != text) {
                    return Err(fail(
                        &cols.text.1,
                        format!(
                            "document {doc_id:?} (first at line {first_line}) has a different \
                             text here"
                        ),
                    ));
                }
            }
            None => {
                let title = cols
                    .title
                    .as_ref()
                    .map(|(i, _)| cell(*i).trim())
                    .filter(|t| !t.is_empty())
                    .map(str::to_string);
                doc_index.insert(doc_id.clone(), (documents.len(), line));
                documents.push(Document {
                    id: doc_id.clone(),
                    text: text.to_string(),
                    title,
                    timestamp,
                    source: None,
                });
            }
        }
        let id = match &cols.question_id {
            Some((i, cname)) => {
                let id = cell(*i).trim();
                if id.is_empty() {
                    return Err(fail(cname, "empty question id".into()));
                }
                if let Some(first) = question_ids.get(id) {
                    return Err(fail(
                        cname,
                        format!("duplicate question id {id:?} (first at line {first})"),
                    ));
                }
                id.to_string()
            }
            None => format!("row-{n}"),
        };
        question_ids.insert(id.clone(), line);
        let qts = match &cols.question_ts {
            Some((i, cname)) if !cell(*i).trim().is_empty() => {
                Some(parse_timestamp(cell(*i)).map_err(|m| fail(cname, m))?)
            }
            _ => None,
        };
        questions.push(Question {
            id,
            question: question.to_string(),
            answers,
            doc_id,
            timestamp: qts,
        });
    }
    Ok(Dataset {
        documents,
        questions,
    })
}

fn csv_error(file: &str, e: &csv::Error, record: u64, names: &[String]) -> DataError {
    let line = e.position().map_or(0, |p| p.line());
    let (column, message) = match e.kind() {
        csv::ErrorKind::Io(io) => {
            return DataError::io(file, std::io::Error::new(io.kind(), io.to_string()))
        }
        csv::ErrorKind::Utf8 { err, .. } => (
            names.get(err.field()).cloned(),
            "not valid UTF-8".to_string(),
        ),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => (
            None,
            format!("{len} fields where the header has {expected_len}"),
        ),
        _ => (None, e.to_string()),
    };
    DataError::Csv {
        file: file.to_string(),
        line,
        record,
        column,
        message,
    }
}

const QUESTION: &[&str] = &["question"];
const TITLE: &[&str] = &["title", "headline"];
const QUESTION_TS: &[&str] = &["question_ts", "question_date"];
const SQA_TEXT: &[&str] = &["text", "context", "document", "passage"];
const SQA_DOC_ID: &[&str] = &["evidence_id", "doc_id", "document_id", "sorting_key"];
const SQA_TIME: &[&str] = &["publication_date", "evidence_ts", "publication_ts", "date"];
const SQA_QID: &[&str] = &["qa_id", "question_id", "id"];
const AQA_TEXT: &[&str] = &["ans_paragraph", "paragraph", "context", "text"];
const AQA_DOC_ID: &[&str] = &["para_id", "paragraph_id"];
const AQA_TIME: &[&str] = &["publication_date", "date", "pub_date"];
const AQA_QID: &[&str] = &["id", "question_id", "qa_id"];

fn find(names: &[String], candidates: &[&str]) -> Option<(usize, String)> {
    candidates.iter().find_map(|c| {
        names
            .iter()
            .position(|n| n == c)
            .map(|i| (i, c.to_string()))
    })
}

fn require(
    names: &[String],
    candidates: &[&str],
    role: &str,
) -> Result<(usize, String), (String, String)> {
    find(names, candidates).ok_or_else(|| {
        (
            candidates[0].to_string(),
            format!(
                "no {role} column in the header (looked for {})",
                candidates
                    .iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })
}

fn columns(names: &[String], layout: CsvLayout) -> Result<Columns, (String, String)> {
    let has = |c: &str| names.iter().any(|n| n == c);
    let layout = match layout {
        CsvLayout::Auto if has("answers") => CsvLayout::StreamingQa,
        CsvLayout::Auto if has("answer") => CsvLayout::ArchivalQa,
        CsvLayout::Auto => {
            return Err((
                "answers".into(),
                "no `answers` (StreamingQA) or `answer` (ArchivalQA) column in the header".into(),
            ))
        }
        l => l,
    };
    let (answers, text, doc_id, time, qid) = match layout {
        CsvLayout::ArchivalQa => {
            let (i, n) = require(names, &["answer", "answers"], "answer")?;
            let kind = if n == "answer" {
                AnswerKind::Single
            } else {
                AnswerKind::List
            };
            let answers = (i, n, kind);
            (answers, AQA_TEXT, AQA_DOC_ID, AQA_TIME, AQA_QID)
        }
        _ => {
            let (i, n) = require(names, &["answers"], "answers")?;
            (
                (i, n, AnswerKind::List),
                SQA_TEXT,
                SQA_DOC_ID,
                SQA_TIME,
                SQA_QID,
            )
        }
    };
    Ok(Columns {
        question: require(names, QUESTION, "question")?,
        answers,
        text: require(names, text, "document text")?,
        doc_id: find(names, doc_id),
        timestamp: find(names, time),
        question_id: find(names, qid),
        question_ts: find(names, QUESTION_TS),
        title: find(names, TITLE),
    })
}

/// The `text-<hex>` id of a document without an id column.
fn text_id(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("text-{hex}")
}

fn parse_answers(
    cell: &str,
    kind: AnswerKind,
    separators: &[String],
) -> Result<Vec<String>, String> {
    let trimmed = cell.trim();
    if trimmed.is_empty() {
        return Err("no answer".into());
    }
    if kind == AnswerKind::Single {
        return Ok(vec![trimmed.to_string()]);
    }
    let pieces: Vec<String> = if trimmed.starts_with('[') {
        if let Ok(list) = serde_json::from_str::<Vec<String>>(trimmed) {
            list
        } else if let Some(list) = python_str_list(trimmed) {
            list
        } else {
            split(trimmed, separators)
        }
    } else {
        split(trimmed, separators)
    };
    let answers: Vec<String> = pieces
        .into_iter()
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect();
    if answers.is_empty() {
        return Err(format!("no answer in {cell:?}"));
    }
    Ok(answers)
}

fn split(s: &str, separators: &[String]) -> Vec<String> {
    let seps: Vec<&str> = separators
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < s.len() {
        match seps.iter().find(|sep| s[i..].starts_with(**sep)) {
            Some(sep) => {
                out.push(s[start..i].to_string());
                i += sep.len();
                start = i;
            }
            None => i += s[i..].chars().next().map_or(1, char::len_utf8),
        }
    }
    out.push(s[start..].to_string());
    out
}

/// A Python list of string literals (`['a', "b's", 'c\'d']`), as `str(list)` writes it;
/// `None` when `s` is not exactly that.
fn python_str_list(s: &str) -> Option<Vec<String>> {
    let mut chars = s.chars().peekable();
    let skip_ws = |c: &mut std::iter::Peekable<std::str::Chars>| {
        while c.peek().is_some_and(|ch| ch.is_whitespace()) {
            c.next();
        }
    };
    if chars.next()? != '[' {
        return None;
    }
    let mut out = Vec::new();
    skip_ws(&mut chars);
    if chars.peek() == Some(&']') {
        chars.next();
    } else {
        loop {
            skip_ws(&mut chars);
            let quote = chars.next()?;
            if quote != '\'' && quote != '"' {
                return None;
            }
            let mut item = String::new();
            loop {
                match chars.next()? {
                    c if c == quote => break,
                    '\\' => match chars.next()? {
                        'n' => item.push('\n'),
                        't' => item.push('\t'),
                        'r' => item.push('\r'),
                        '0' => item.push('\0'),
                        'x' => item.push(hex_char(&mut chars, 2)?),
                        'u' => item.push(hex_char(&mut chars, 4)?),
                        'U' => item.push(hex_char(&mut chars, 8)?),
                        c @ ('\\' | '\'' | '"') => item.push(c),
                        c => {
                            item.push('\\');
                            item.push(c);
                        }
                    },
                    c => item.push(c),
                }
            }
            out.push(item);
            skip_ws(&mut chars);
            match chars.next()? {
                ',' => continue,
                ']' => break,
                _ => return None,
            }
        }
    }
    skip_ws(&mut chars);
    chars.next().is_none().then_some(out)
}

fn hex_char(chars: &mut impl Iterator<Item = char>, n: usize) -> Option<char> {
    let mut v = 0u32;
    for _ in 0..n {
        v = v * 16 + chars.next()?.to_digit(16)?;
    }
    char::from_u32(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seps() -> Vec<String> {
        CsvOptions::default().answer_separators
    }

    #[test]
    fn answer_lists() {
        let l = |s: &str| parse_answers(s, AnswerKind::List, &seps());
        assert_eq!(l(r#"["a", "b"]"#).unwrap(), ["a", "b"]);
        assert_eq!(l(r#"['a', "b's", 'c\'d']"#).unwrap(), ["a", "b's", "c'd"]);
        assert_eq!(l(r"x\y\ z").unwrap(), ["x", "y", "z"]);
        assert_eq!(l("x | y||").unwrap(), ["x", "y"]);
        assert_eq!(l("[citation needed]").unwrap(), ["[citation needed]"]);
        assert_eq!(l("Café\\naïve").unwrap(), ["Café", "naïve"]);
        assert!(l("  ").is_err());
        assert!(l("[]").is_err());
        assert!(l(" | ").is_err());
        assert_eq!(
            parse_answers(" a|b ", AnswerKind::Single, &seps()).unwrap(),
            ["a|b"]
        );
    }

    #[test]
    fn python_lists() {
        assert_eq!(python_str_list("[]"), Some(vec![]));
        assert_eq!(
            python_str_list("['\\u00e9', '\\x41']"),
            Some(vec!["é".into(), "A".into()])
        );
        assert_eq!(python_str_list("['a' 'b']"), None);
        assert_eq!(python_str_list("['a'] x"), None);
        assert_eq!(python_str_list("['a"), None);
        assert_eq!(python_str_list("[1, 2]"), None);
    }

    #[test]
    fn text_ids_are_stable() {
        assert_eq!(text_id("abc"), text_id("abc"));
        assert_ne!(text_id("abc"), text_id("abd"));
        assert_eq!(text_id("abc").len(), "text-".len() + 16);
        // SHA-256("abc") = ba7816bf8f01cfea...
        assert_eq!(text_id("abc"), "text-ba7816bf8f01cfea");
    }
}
