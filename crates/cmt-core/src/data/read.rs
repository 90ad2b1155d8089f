//! Entry points: open files (`-` is stdin), sniff formats, dispatch to the parsers.
use super::csv_qa::{read_csv_dataset, CsvOptions};
use super::error::{DataError, Result};
use super::jsonl::{collect_jsonl, is_blank, read_questions, DocCollector, LineReader};
use super::{squad, Dataset, DocumentsRead};
use serde_json::Value;
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

fn name_of(path: &Path) -> String {
    path.display().to_string()
}

fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| DataError::io(&name_of(path), e))
}

/// A serde_json syntax error as [`DataError::Json`], its line shifted by `line_offset`.
fn json_error(file: &str, e: &serde_json::Error, line_offset: usize) -> DataError {
    let full = e.to_string();
    let message = match full.rfind(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full,
    };
    DataError::Json {
        file: file.to_string(),
        line: e.line() + line_offset,
        column: e.column(),
        message,
    }
}

/// Reads the documents to ingest from `path`; `-` reads stdin.
///
/// The format is sniffed from the content, not the extension:
/// - a SQuAD v1.1 JSON object (a `data` key, on one line or pretty-printed): each paragraph
///   is a document with id `<title>#<j>` (`j` its index within the article, from 0) and
///   `title` the article title as written; questions are ignored;
/// - otherwise JSONL, one object per line: `id` and `text` (non-blank strings) required,
///   `title` and `source` optional strings, `timestamp` optional (unix seconds as a number,
///   or a string: RFC 3339, `YYYY-MM-DD`, or digits; see [`super::parse_timestamp`]);
///   other keys are ignored. Blank lines are skipped.
///
/// A record that cannot be used (a line that is not UTF-8 or not JSON, a missing or empty
/// `id` or `text`, a field of the wrong type, a bad timestamp, an id seen before in this
/// input) is returned in [`DocumentsRead::bad`] with its 1-based line, and reading goes on;
/// with `strict` the first one is returned as [`DataError::Record`] instead. For SQuAD
/// input the bad record's `line` is the paragraph's 1-based number in file order.
/// Problems that leave nothing to read (I/O, a SQuAD file that is not valid JSON or has no
/// `data` list) are errors either way.
pub fn read_documents(path: &Path, strict: bool) -> Result<DocumentsRead> {
    if path.as_os_str() == "-" {
        let stdin = std::io::stdin();
        let lock = stdin.lock();
        return read_documents_from(lock, "<stdin>", strict);
    }
    read_documents_from(open(path)?, &name_of(path), strict)
}

/// [`read_documents`] over any reader; `name` is the file name used in messages.
pub fn read_documents_from<R: Read>(reader: R, name: &str, strict: bool) -> Result<DocumentsRead> {
    let mut lines = LineReader::new(BufReader::new(reader), 0);
    let mut docs = DocCollector::new(name, strict);
    let io = |e| DataError::io(name, e);
    let first_line = loop {
        match lines.next_line().map_err(io)? {
            None => return Ok(docs.finish()),
            Some(_) if is_blank(lines.bytes()) => continue,
            Some(n) => break n,
        }
    };
    let first = lines.bytes().to_vec();
    let opener = first.iter().copied().find(|b| !b.is_ascii_whitespace());
    match serde_json::from_slice::<Value>(&first) {
        Ok(v) if is_squad_root(&v) => {
            let mut rest = Vec::new();
            lines.into_inner().read_to_end(&mut rest).map_err(io)?;
            if !is_blank(&rest) {
                return Err(DataError::format(
                    name,
                    format!("unexpected content after the SQuAD JSON object of line {first_line}"),
                ));
            }
            squad::collect_documents(&v, name, &mut docs)?;
        }
        Err(e) if e.is_eof() && matches!(opener, Some(b'{' | b'[')) => {
            // An incomplete first line: a pretty-printed JSON file, or JSONL whose first
            // line is cut short. JSONL's next line stands alone as an object.
            let mut rest = Vec::new();
            lines.into_inner().read_to_end(&mut rest).map_err(io)?;
            let mut all = first.clone();
            all.push(b'\n');
            all.extend_from_slice(&rest);
            let whole = serde_json::from_slice::<Value>(&all);
            if let Ok(v) = &whole {
                if is_squad_root(v) {
                    squad::collect_documents(v, name, &mut docs)?;
                    return Ok(docs.finish());
                }
            }
            let next_is_object = rest
                .split(|&b| b == b'\n')
                .find(|l| !is_blank(l))
                .is_some_and(|l| {
                    matches!(serde_json::from_slice::<Value>(l), Ok(Value::Object(_)))
                });
            if next_is_object {
                docs.jsonl_line(first_line, &first)?;
                let mut more = LineReader::new(rest.as_slice(), first_line);
                collect_jsonl(&mut more, &mut docs, name)?;
            } else {
                return Err(match whole {
                    Err(e) => json_error(name, &e, first_line - 1),
                    Ok(_) => DataError::format(
                        name,
                        "a multi-line JSON value that is not a SQuAD file (no `data` list); \
                         documents must be JSONL (one object per line) or SQuAD v1.1 JSON",
                    ),
                });
            }
        }
        _ => {
            docs.jsonl_line(first_line, &first)?;
            collect_jsonl(&mut lines, &mut docs, name)?;
        }
    }
    Ok(docs.finish())
}

/// A SQuAD root: an object with `data` and no `text` (a JSONL document may carry any key).
fn is_squad_root(v: &Value) -> bool {
    squad::is_squad(v) && !matches!(v, Value::Object(m) if m.contains_key("text"))
}

/// Reads a SQuAD v1.1 JSON file for evaluation: documents as in [`read_documents`] and
/// questions (id, question, every answer text, `doc_id` = the paragraph's document id).
/// Every problem is an error naming the file, the JSON path of the record
/// (`data[i].paragraphs[j].qas[k]`) and the field. A paragraph without `qas` has no
/// questions; a question without answers (SQuAD v2's unanswerable ones) is an error.
pub fn read_dataset(path: &Path) -> Result<Dataset> {
    read_dataset_from(open(path)?, &name_of(path))
}

/// [`read_dataset`] over any reader; `name` is the file name used in messages.
pub fn read_dataset_from<R: Read>(mut reader: R, name: &str) -> Result<Dataset> {
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|e| DataError::io(name, e))?;
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let v: Value = serde_json::from_slice(body).map_err(|e| json_error(name, &e, 0))?;
    if !squad::is_squad(&v) {
        return Err(DataError::format(
            name,
            "not a SQuAD v1.1 file: expected a JSON object with a `data` list",
        ));
    }
    squad::dataset(&v, name)
}

/// Reads an evaluation set from a documents file (as [`read_documents`], strict: any bad
/// record is an error) and a questions JSONL file with one object per line:
/// `{"id", "question", "answers": [..], "doc_id"}` plus an optional `timestamp`.
/// `answers` is a non-empty list of non-blank strings; `doc_id` must name one of the
/// documents; question ids are unique. Errors name the file, the line and the field.
pub fn read_jsonl_dataset(docs: &Path, questions: &Path) -> Result<Dataset> {
    let documents = read_documents(docs, true)?.documents;
    let ids: HashSet<&str> = documents.iter().map(|d| d.id.as_str()).collect();
    let qname = name_of(questions);
    let questions = read_questions(
        BufReader::new(open(questions)?),
        &qname,
        |id| ids.contains(id),
        &name_of(docs),
    )?;
    drop(ids);
    Ok(Dataset {
        documents,
        questions,
    })
}

/// Reads an evaluation set from one file, choosing the reader by extension, then content:
/// `.json` is SQuAD ([`read_dataset`]); `.csv` is CSV and `.tsv` tab-separated CSV
/// ([`read_csv_dataset`], layout detected from the header); `.jsonl` is an error (a
/// JSONL set needs two files: [`read_jsonl_dataset`]). Any other extension: a file whose
/// first non-blank byte is `{` is SQuAD, anything else CSV.
pub fn read_dataset_auto(path: &Path) -> Result<Dataset> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("json") => read_dataset(path),
        Some("csv") => read_csv_dataset(path, &CsvOptions::default()),
        Some("tsv") => read_csv_dataset(
            path,
            &CsvOptions {
                delimiter: b'\t',
                ..CsvOptions::default()
            },
        ),
        Some("jsonl") => Err(DataError::format(
            &name_of(path),
            "a JSONL evaluation set needs a documents file and a questions file \
             (read_jsonl_dataset / --docs and --questions)",
        )),
        _ => {
            let mut r = BufReader::new(open(path)?);
            let first = loop {
                let buf = r.fill_buf().map_err(|e| DataError::io(&name_of(path), e))?;
                if buf.is_empty() {
                    break None;
                }
                let skip = buf
                    .iter()
                    .take_while(|b| b.is_ascii_whitespace() || matches!(b, 0xEF | 0xBB | 0xBF))
                    .count();
                if skip < buf.len() {
                    break Some(buf[skip]);
                }
                let n = buf.len();
                r.consume(n);
            };
            if first == Some(b'{') {
                read_dataset(path)
            } else {
                read_csv_dataset(path, &CsvOptions::default())
            }
        }
    }
}
