//! SQuAD v1.1 JSON: `{"version", "data": [{"title", "paragraphs": [{"context", "qas":
//! [{"id", "question", "answers": [{"text", "answer_start"}]}]}]}]}`.
//!
//! Each paragraph is one [`Document`] with id `<title>#<j>`, `j` the paragraph's index
//! within its article from 0, and `title` the article title as written (underscores kept).
use super::error::{DataError, Result};
use super::jsonl::DocCollector;
use super::{json_kind, Dataset, Document, Question};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

/// A problem inside one record: (field, message).
type FieldError = (String, String);

/// True when `v` looks like a SQuAD file (an object with a `data` key).
pub(crate) fn is_squad(v: &Value) -> bool {
    matches!(v, Value::Object(m) if m.contains_key("data"))
}

fn squad_err(file: &str, path: &str, field: &str, message: impl Into<String>) -> DataError {
    DataError::Squad {
        file: file.to_string(),
        path: path.to_string(),
        field: field.to_string(),
        message: message.into(),
    }
}

/// `(path, title, paragraphs)` of each article; a malformed article is fatal (its
/// paragraphs could not even be named).
fn articles<'a>(root: &'a Value, file: &str) -> Result<Vec<(String, &'a str, &'a [Value])>> {
    let root = match root {
        Value::Object(m) => m,
        other => {
            return Err(DataError::format(
                file,
                format!("expected a SQuAD JSON object, found {}", json_kind(other)),
            ))
        }
    };
    let data = match root.get("data") {
        Some(Value::Array(a)) => a,
        None => return Err(squad_err(file, "$", "data", "missing")),
        Some(other) => {
            return Err(squad_err(
                file,
                "$",
                "data",
                format!("expected a list of articles, found {}", json_kind(other)),
            ))
        }
    };
    let mut out = Vec::with_capacity(data.len());
    for (i, article) in data.iter().enumerate() {
        let path = format!("data[{i}]");
        let Value::Object(article) = article else {
            return Err(DataError::format(
                file,
                format!(
                    "{path}: expected an article object, found {}",
                    json_kind(article)
                ),
            ));
        };
        let title = match article.get("title") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.as_str(),
            Some(Value::String(_)) => return Err(squad_err(file, &path, "title", "empty")),
            None | Some(Value::Null) => return Err(squad_err(file, &path, "title", "missing")),
            Some(other) => {
                return Err(squad_err(
                    file,
                    &path,
                    "title",
                    format!("expected a string, found {}", json_kind(other)),
                ))
            }
        };
        let paragraphs = match article.get("paragraphs") {
            Some(Value::Array(a)) => a.as_slice(),
            None | Some(Value::Null) => {
                return Err(squad_err(file, &path, "paragraphs", "missing"))
            }
            Some(other) => {
                return Err(squad_err(
                    file,
                    &path,
                    "paragraphs",
                    format!("expected a list, found {}", json_kind(other)),
                ))
            }
        };
        out.push((path, title, paragraphs));
    }
    Ok(out)
}

/// The paragraph's context, or a message naming the field.
fn context(paragraph: &Value) -> Result<(&Map<String, Value>, &str), FieldError> {
    let Value::Object(p) = paragraph else {
        return Err((
            "context".into(),
            format!(
                "expected a paragraph object, found {}",
                json_kind(paragraph)
            ),
        ));
    };
    match p.get("context") {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok((p, s)),
        Some(Value::String(_)) => Err(("context".into(), "empty".into())),
        None | Some(Value::Null) => Err(("context".into(), "missing".into())),
        Some(other) => Err((
            "context".into(),
            format!("expected a string, found {}", json_kind(other)),
        )),
    }
}

fn paragraph_doc(title: &str, j: usize, text: &str) -> Document {
    Document {
        id: format!("{title}#{j}"),
        text: text.to_string(),
        title: Some(title.to_string()),
        timestamp: None,
        source: None,
    }
}

/// Ingest: every paragraph becomes a document; a bad paragraph is a bad record whose
/// `line` is the paragraph's 1-based number in file order. Questions are not read.
pub(crate) fn collect_documents(root: &Value, file: &str, docs: &mut DocCollector) -> Result<()> {
    let mut ordinal = 0usize;
    for (path, title, paragraphs) in articles(root, file)? {
        for (j, paragraph) in paragraphs.iter().enumerate() {
            ordinal += 1;
            match context(paragraph) {
                Ok((_, text)) => docs.add(ordinal, paragraph_doc(title, j, text))?,
                Err((field, msg)) => docs.bad(
                    ordinal,
                    format!("{path}.paragraphs[{j}]: field `{field}`: {msg}"),
                )?,
            }
        }
    }
    Ok(())
}

/// Evaluation: documents and questions; every problem is an error.
pub(crate) fn dataset(root: &Value, file: &str) -> Result<Dataset> {
    let mut documents = Vec::new();
    let mut questions = Vec::new();
    let mut doc_ids = HashSet::new();
    let mut question_ids: HashMap<String, String> = HashMap::new();
    for (apath, title, paragraphs) in articles(root, file)? {
        for (j, paragraph) in paragraphs.iter().enumerate() {
            let ppath = format!("{apath}.paragraphs[{j}]");
            let (p, text) =
                context(paragraph).map_err(|(field, msg)| squad_err(file, &ppath, &field, msg))?;
            let doc = paragraph_doc(title, j, text);
            if !doc_ids.insert(doc.id.clone()) {
                return Err(squad_err(
                    file,
                    &apath,
                    "title",
                    format!(
                        "duplicate document id {:?} (two articles with this title)",
                        doc.id
                    ),
                ));
            }
            let qas = match p.get("qas") {
                Some(Value::Array(a)) => a.as_slice(),
                None | Some(Value::Null) => &[],
                Some(other) => {
                    return Err(squad_err(
                        file,
                        &ppath,
                        "qas",
                        format!("expected a list, found {}", json_kind(other)),
                    ))
                }
            };
            for (k, qa) in qas.iter().enumerate() {
                let qpath = format!("{ppath}.qas[{k}]");
                let q = question(qa, &doc.id).map_err(|(f, m)| squad_err(file, &qpath, &f, m))?;
                if let Some(first) = question_ids.get(&q.id) {
                    return Err(squad_err(
                        file,
                        &qpath,
                        "id",
                        format!("duplicate question id {:?} (first at {first})", q.id),
                    ));
                }
                question_ids.insert(q.id.clone(), qpath);
                questions.push(q);
            }
            documents.push(doc);
        }
    }
    Ok(Dataset {
        documents,
        questions,
    })
}

fn nonblank<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a str, FieldError> {
    match obj.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::String(_)) => Err((key.into(), "empty".into())),
        None | Some(Value::Null) => Err((key.into(), "missing".into())),
        Some(other) => Err((
            key.into(),
            format!("expected a string, found {}", json_kind(other)),
        )),
    }
}

fn question(qa: &Value, doc_id: &str) -> Result<Question, FieldError> {
    let Value::Object(qa) = qa else {
        return Err((
            "id".into(),
            format!("expected a question object, found {}", json_kind(qa)),
        ));
    };
    let id = nonblank(qa, "id")?.to_string();
    let question = nonblank(qa, "question")?.to_string();
    let answers = match qa.get("answers") {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => return Err(("answers".into(), "missing".into())),
        Some(other) => {
            return Err((
                "answers".into(),
                format!("expected a list, found {}", json_kind(other)),
            ))
        }
    };
    if answers.is_empty() {
        return Err((
            "answers".into(),
            "empty list (an unanswerable SQuAD v2 question? only v1.1 is supported)".into(),
        ));
    }
    let mut texts = Vec::with_capacity(answers.len());
    for (a, answer) in answers.iter().enumerate() {
        let Value::Object(answer) = answer else {
            return Err((
                format!("answers[{a}]"),
                format!("expected an answer object, found {}", json_kind(answer)),
            ));
        };
        let text = nonblank(answer, "text").map_err(|(f, m)| (format!("answers[{a}].{f}"), m))?;
        texts.push(text.to_string());
    }
    Ok(Question {
        id,
        question,
        answers: texts,
        doc_id: doc_id.to_string(),
        timestamp: None,
    })
}
