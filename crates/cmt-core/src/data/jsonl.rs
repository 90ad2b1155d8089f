//! JSONL: one JSON object per line, read as bytes so that a line that is not UTF-8 is a
//! reported record, not a fatal error.
use super::error::{BadRecord, DataError, Result};
use super::timestamp::timestamp_from_json;
use super::{json_kind, Document, DocumentsRead, Question};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::io::BufRead;

/// Reads lines as bytes, numbering them from 1; strips the line ending (`\n`, `\r\n`) and
/// a UTF-8 byte-order mark at the start of the input.
pub(crate) struct LineReader<R> {
    reader: R,
    line: usize,
    buf: Vec<u8>,
}

impl<R: BufRead> LineReader<R> {
    /// Starts after `line` lines already consumed.
    pub(crate) fn new(reader: R, line: usize) -> Self {
        LineReader {
            reader,
            line,
            buf: Vec::new(),
        }
    }

    /// The next line's number, or `None` at the end; its bytes are in [`Self::bytes`].
    pub(crate) fn next_line(&mut self) -> std::io::Result<Option<usize>> {
        self.buf.clear();
        if self.reader.read_until(b'\n', &mut self.buf)? == 0 {
            return Ok(None);
        }
        self.line += 1;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
        }
        if self.line == 1 && self.buf.starts_with(b"\xEF\xBB\xBF") {
            self.buf.drain(..3);
        }
        Ok(Some(self.line))
    }

    /// The current line, without its line ending.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The underlying reader (to read the rest of the input in one piece).
    pub(crate) fn into_inner(self) -> R {
        self.reader
    }
}

/// True for a line that holds only ASCII whitespace (skipped in JSONL).
pub(crate) fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| b.is_ascii_whitespace())
}

/// Decodes and parses one JSONL line into an object, or says why not.
pub(crate) fn parse_object_line(bytes: &[u8]) -> Result<Map<String, Value>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        format!(
            "line is not valid UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        )
    })?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!(
            "expected a JSON object, found {}",
            json_kind(&other)
        )),
        Err(e) => Err(format!("invalid JSON: {e}")),
    }
}

/// A required string field; `field `k`: ...` on error.
pub(crate) fn req_str<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(format!("field `{key}`: missing")),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!(
            "field `{key}`: expected a string, found {}",
            json_kind(other)
        )),
    }
}

/// A required string field that must hold something other than whitespace.
pub(crate) fn req_nonblank<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    let s = req_str(obj, key)?;
    if s.trim().is_empty() {
        Err(format!("field `{key}`: empty"))
    } else {
        Ok(s)
    }
}

/// An optional string field (`null` or absent is `None`).
pub(crate) fn opt_str(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!(
            "field `{key}`: expected a string, found {}",
            json_kind(other)
        )),
    }
}

fn opt_timestamp(obj: &Map<String, Value>, key: &str) -> Result<Option<u64>, String> {
    match obj.get(key) {
        None => Ok(None),
        Some(v) => timestamp_from_json(v).map_err(|m| format!("field `{key}`: {m}")),
    }
}

/// One JSONL document object: `id` and `text` required and non-blank; `title`, `source`
/// optional strings; `timestamp` optional (see [`timestamp_from_json`]). Other keys are
/// ignored.
pub(crate) fn document_from_object(obj: &Map<String, Value>) -> Result<Document, String> {
    Ok(Document {
        id: req_nonblank(obj, "id")?.to_string(),
        text: req_nonblank(obj, "text")?.to_string(),
        title: opt_str(obj, "title")?,
        timestamp: opt_timestamp(obj, "timestamp")?,
        source: opt_str(obj, "source")?,
    })
}

/// One JSONL question object: `id`, `question` and `doc_id` required and non-blank,
/// `answers` a non-empty list of non-blank strings, `timestamp` optional. Whether `doc_id`
/// names a known document is the caller's check.
pub(crate) fn question_from_object(obj: &Map<String, Value>) -> Result<Question, String> {
    let id = req_nonblank(obj, "id")?.to_string();
    let question = req_nonblank(obj, "question")?.to_string();
    let answers = match obj.get("answers") {
        None | Some(Value::Null) => return Err("field `answers`: missing".to_string()),
        Some(Value::Array(a)) => {
            let mut out = Vec::with_capacity(a.len());
            for (i, v) in a.iter().enumerate() {
                match v {
                    Value::String(s) if !s.trim().is_empty() => out.push(s.clone()),
                    Value::String(_) => {
                        return Err(format!("field `answers`: answer {i} is empty"))
                    }
                    other => {
                        return Err(format!(
                            "field `answers`: answer {i} is {}, expected a string",
                            json_kind(other)
                        ))
                    }
                }
            }
            if out.is_empty() {
                return Err("field `answers`: empty list".to_string());
            }
            out
        }
        Some(other) => {
            return Err(format!(
                "field `answers`: expected a list of strings, found {}",
                json_kind(other)
            ))
        }
    };
    let doc_id = req_nonblank(obj, "doc_id")?.to_string();
    let timestamp = opt_timestamp(obj, "timestamp")?;
    Ok(Question {
        id,
        question,
        answers,
        doc_id,
        timestamp,
    })
}

/// Gathers documents from JSONL lines or SQuAD paragraphs: skips or (strict) fails on
/// bad records and rejects duplicate ids.
pub(crate) struct DocCollector {
    file: String,
    strict: bool,
    seen: HashMap<String, usize>,
    out: DocumentsRead,
}

impl DocCollector {
    pub(crate) fn new(file: &str, strict: bool) -> Self {
        DocCollector {
            file: file.to_string(),
            strict,
            seen: HashMap::new(),
            out: DocumentsRead::default(),
        }
    }

    /// Records a bad record at `line`; an error when strict.
    pub(crate) fn bad(&mut self, line: usize, message: String) -> Result<()> {
        let bad = BadRecord {
            file: self.file.clone(),
            line,
            message,
        };
        if self.strict {
            return Err(DataError::Record(bad));
        }
        self.out.bad.push(bad);
        Ok(())
    }

    /// Adds a parsed document found at `line`, unless its id was seen before.
    pub(crate) fn add(&mut self, line: usize, doc: Document) -> Result<()> {
        if let Some(&first) = self.seen.get(&doc.id) {
            return self.bad(
                line,
                format!(
                    "field `id`: duplicate id {:?} (first at {}:{first})",
                    doc.id, self.file
                ),
            );
        }
        self.seen.insert(doc.id.clone(), line);
        self.out.documents.push(doc);
        Ok(())
    }

    /// One JSONL line: blank lines are skipped.
    pub(crate) fn jsonl_line(&mut self, line: usize, bytes: &[u8]) -> Result<()> {
        if is_blank(bytes) {
            return Ok(());
        }
        match parse_object_line(bytes).and_then(|obj| document_from_object(&obj)) {
            Ok(doc) => self.add(line, doc),
            Err(message) => self.bad(line, message),
        }
    }

    pub(crate) fn finish(self) -> DocumentsRead {
        self.out
    }
}

/// Reads every remaining line of `lines` as JSONL documents into `docs`.
pub(crate) fn collect_jsonl<R: BufRead>(
    lines: &mut LineReader<R>,
    docs: &mut DocCollector,
    file: &str,
) -> Result<()> {
    while let Some(n) = lines.next_line().map_err(|e| DataError::io(file, e))? {
        docs.jsonl_line(n, lines.bytes())?;
    }
    Ok(())
}

/// Reads a questions JSONL file; every bad line is an error, as is a `doc_id` for which
/// `known_doc` is false or a duplicate question id.
pub(crate) fn read_questions<R: BufRead>(
    reader: R,
    file: &str,
    known_doc: impl Fn(&str) -> bool,
    docs_file: &str,
) -> Result<Vec<Question>> {
    let mut lines = LineReader::new(reader, 0);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    let fail = |line: usize, message: String| {
        DataError::Record(BadRecord {
            file: file.to_string(),
            line,
            message,
        })
    };
    while let Some(n) = lines.next_line().map_err(|e| DataError::io(file, e))? {
        let bytes = lines.bytes();
        if is_blank(bytes) {
            continue;
        }
        let q = parse_object_line(bytes)
            .and_then(|obj| question_from_object(&obj))
            .map_err(|m| fail(n, m))?;
        if !known_doc(&q.doc_id) {
            return Err(fail(
                n,
                format!(
                    "field `doc_id`: {:?} is not a document of {docs_file}",
                    q.doc_id
                ),
            ));
        }
        if let Some(&first) = seen.get(&q.id) {
            return Err(fail(
                n,
                format!(
                    "field `id`: duplicate question id {:?} (first at line {first})",
                    q.id
                ),
            ));
        }
        seen.insert(q.id.clone(), n);
        out.push(q);
    }
    Ok(out)
}
