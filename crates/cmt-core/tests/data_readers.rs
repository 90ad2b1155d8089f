//! The document and dataset readers on small hand-made files (JSONL, SQuAD JSON,
//! StreamingQA- and ArchivalQA-style CSV), on malformed input, and on the real SQuAD dev
//! split when it is present.
use cmt_core::data::{
    read_csv_dataset, read_csv_dataset_from, read_dataset, read_dataset_auto, read_documents,
    read_documents_from, read_jsonl_dataset, CsvLayout, CsvOptions, DataError, Document,
};
use std::io::Cursor;
use std::path::{Path, PathBuf};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

// ---------------------------------------------------------------- JSONL documents

#[test]
fn jsonl_documents_with_optional_fields() {
    let dir = tempfile::tempdir().unwrap();
    let text = concat!(
        "{\"id\":\"d1\",\"text\":\"First doc.\",\"title\":\"One\",\"timestamp\":\"2021-01-01T00:00:00Z\",\"source\":\"feed\"}\n",
        "\n",
        "   \n",
        "{\"id\":\"d2\",\"text\":\"Second doc.\",\"timestamp\":86400,\"extra\":[1,2]}\r\n",
        "{\"id\":\"d3\",\"text\":\"Third.\",\"timestamp\":null,\"title\":null}",
    );
    let p = write(dir.path(), "docs.jsonl", text.as_bytes());
    let read = read_documents(&p, true).unwrap();
    assert!(read.bad.is_empty());
    assert_eq!(
        read.documents,
        vec![
            Document {
                id: "d1".into(),
                text: "First doc.".into(),
                title: Some("One".into()),
                timestamp: Some(1_609_459_200),
                source: Some("feed".into()),
            },
            Document {
                timestamp: Some(86_400),
                ..Document::new("d2", "Second doc.")
            },
            Document::new("d3", "Third."),
        ]
    );
    // the same through a reader, e.g. stdin
    let from = read_documents_from(Cursor::new(text.as_bytes()), "<stdin>", false).unwrap();
    assert_eq!(from.documents, read.documents);
    // a byte-order mark is not part of the first line
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(text.as_bytes());
    assert_eq!(
        read_documents_from(bom.as_slice(), "x", true)
            .unwrap()
            .documents
            .len(),
        3
    );
    // empty input: nothing, no error
    let empty = read_documents_from(&b"\n\n"[..], "empty", true).unwrap();
    assert!(empty.documents.is_empty() && empty.bad.is_empty());
}

/// Line: content. Each bad line must come back with its number; good lines are kept.
fn malformed_jsonl() -> (Vec<u8>, Vec<(usize, &'static str)>) {
    let mut bytes = Vec::new();
    let mut lines: Vec<&[u8]> = vec![
        br#"{"id":"a","text":"good one"}"#,                    // 1
        b"{\"id\":\"x\",\"text\":\"caf\xE9\"}",                // 2 latin-1 byte
        br#"{"id": "y", "text": }"#,                           // 3 invalid JSON
        br#"{"id":"z","text":"   "}"#,                         // 4 blank text
        br#"{"text":"no id"}"#,                                // 5 missing id
        br#"{"id":"a","text":"again"}"#,                       // 6 duplicate id
        b"",                                                   // 7 skipped
        br#"{"id":"t","text":"x","timestamp":"not a date"}"#,  // 8 bad timestamp
        br#"{"id":5,"text":"x"}"#,                             // 9 id not a string
        br#"{"id":"w","text":"x","title":3}"#,                 // 10 title not a string
        br#"{"id":"n","text":"x","timestamp":-3}"#,            // 11 before 1970
        br#"[1, 2]"#,                                          // 12 not an object
        br#"{"id":"","text":"x"}"#,                            // 13 empty id
        br#"{"id":"m"}"#,                                      // 14 missing text
        br#"{"id":"c","text":"ok","timestamp":"2020-02-30"}"#, // 15 no such date
        br#"{"id":"c","text":"ok","timestamp":1.5e9}"#,        // 16 good
    ];
    for l in lines.drain(..) {
        bytes.extend_from_slice(l);
        bytes.push(b'\n');
    }
    let bad = vec![
        (2, "UTF-8"),
        (3, "invalid JSON"),
        (4, "`text`"),
        (5, "`id`"),
        (6, "duplicate"),
        (8, "`timestamp`"),
        (9, "`id`"),
        (10, "`title`"),
        (11, "`timestamp`"),
        (12, "object"),
        (13, "`id`"),
        (14, "`text`"),
        (15, "`timestamp`"),
    ];
    (bytes, bad)
}

#[test]
fn jsonl_malformed_lines_are_bad_records() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, want) = malformed_jsonl();
    let p = write(dir.path(), "bad.jsonl", &bytes);
    let read = read_documents(&p, false).unwrap();
    let ids: Vec<&str> = read.documents.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["a", "c"]);
    assert_eq!(read.documents[1].timestamp, Some(1_500_000_000));
    let got: Vec<usize> = read.bad.iter().map(|b| b.line).collect();
    let want_lines: Vec<usize> = want.iter().map(|w| w.0).collect();
    assert_eq!(got, want_lines, "{:#?}", read.bad);
    for (b, (line, needle)) in read.bad.iter().zip(&want) {
        assert_eq!(b.file, p.display().to_string());
        assert!(
            b.message.contains(needle),
            "line {line}: {:?} lacks {needle:?}",
            b.message
        );
        assert!(b
            .to_string()
            .starts_with(&format!("{}:{line}: ", p.display())));
    }
    assert!(read.bad[4].message.contains("`id`: duplicate"));
    assert!(
        read.bad[4].message.contains(":1)"),
        "names the first line: {}",
        read.bad[4].message
    );
}

#[test]
fn jsonl_strict_stops_at_first_bad_record() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, _) = malformed_jsonl();
    let p = write(dir.path(), "bad.jsonl", &bytes);
    match read_documents(&p, true) {
        Err(DataError::Record(b)) => {
            assert_eq!(b.line, 2);
            assert!(b.message.contains("UTF-8"));
        }
        other => panic!("expected a record error, got {other:?}"),
    }
    let dup = b"{\"id\":\"a\",\"text\":\"1\"}\n\n{\"id\":\"a\",\"text\":\"2\"}\n";
    let err = read_documents_from(&dup[..], "dup.jsonl", true).unwrap_err();
    assert_eq!(
        err.to_string().split(": ").next(),
        Some("dup.jsonl:3"),
        "{err}"
    );
    let ts = b"{\"id\":\"a\",\"text\":\"1\",\"timestamp\":\"soon\"}\n";
    let err = read_documents_from(&ts[..], "ts.jsonl", true).unwrap_err();
    assert!(
        err.to_string().starts_with("ts.jsonl:1: field `timestamp`"),
        "{err}"
    );
}

#[test]
fn jsonl_with_a_truncated_first_line_is_still_jsonl() {
    let bytes = b"{\"id\":\"a\",\"text\":\"cut\n{\"id\":\"b\",\"text\":\"fine\"}\n";
    let read = read_documents_from(&bytes[..], "cut.jsonl", false).unwrap();
    assert_eq!(read.documents, vec![Document::new("b", "fine")]);
    assert_eq!(read.bad.len(), 1);
    assert_eq!(read.bad[0].line, 1);
}

#[test]
fn missing_file_names_the_file() {
    let err = read_documents(Path::new("/nonexistent/docs.jsonl"), false).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }));
    assert!(
        err.to_string().starts_with("/nonexistent/docs.jsonl: "),
        "{err}"
    );
}

// ---------------------------------------------------------------- SQuAD

const SQUAD: &str = r#"{"version": "1.1", "data": [
 {"title": "Foo_Bar", "paragraphs": [
   {"context": "Foo is a bar in Baz.", "qas": [
     {"id": "q1", "question": "What is Foo?", "answers": [{"text": "a bar", "answer_start": 7}, {"text": "bar", "answer_start": 9}]},
     {"id": "q2", "question": "Where is Foo?", "answers": [{"text": "Baz", "answer_start": 16}]}]},
   {"context": "Second paragraph.", "qas": []}]},
 {"title": "Baz", "paragraphs": [
   {"context": "Baz is a town.", "qas": [
     {"id": "q3", "question": "What is Baz?", "answers": [{"text": "a town", "answer_start": 7}]}]}]}
]}"#;

fn squad_one_line() -> String {
    let v: serde_json::Value = serde_json::from_str(SQUAD).unwrap();
    serde_json::to_string(&v).unwrap()
}

#[test]
fn squad_documents_for_ingest() {
    for (name, body) in [
        ("pretty.json", SQUAD.to_string()),
        ("line.json", squad_one_line()),
    ] {
        let read = read_documents_from(body.as_bytes(), name, true).unwrap();
        let ids: Vec<&str> = read.documents.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["Foo_Bar#0", "Foo_Bar#1", "Baz#0"], "{name}");
        assert_eq!(read.documents[0].title.as_deref(), Some("Foo_Bar"));
        assert_eq!(read.documents[2].text, "Baz is a town.");
    }
}

#[test]
fn squad_bad_paragraph_is_a_bad_record() {
    let body = r#"{"data": [{"title": "T", "paragraphs": [
        {"context": "ok", "qas": []}, {"context": "  "}, {"qas": []}, {"context": "fine"}]}]}"#;
    let read = read_documents_from(body.as_bytes(), "s.json", false).unwrap();
    let ids: Vec<&str> = read.documents.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["T#0", "T#3"]);
    let lines: Vec<usize> = read.bad.iter().map(|b| b.line).collect();
    assert_eq!(lines, [2, 3], "paragraph numbers");
    assert!(read.bad[0]
        .message
        .contains("data[0].paragraphs[1]: field `context`: empty"));
    assert!(read.bad[1]
        .message
        .contains("data[0].paragraphs[2]: field `context`: missing"));
    let err = read_documents_from(body.as_bytes(), "s.json", true).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("s.json:2: data[0].paragraphs[1]"),
        "{err}"
    );
}

#[test]
fn squad_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "squad.json", SQUAD.as_bytes());
    let ds = read_dataset(&p).unwrap();
    assert_eq!(ds.documents.len(), 3);
    assert_eq!(ds.questions.len(), 3);
    let q1 = &ds.questions[0];
    assert_eq!(q1.id, "q1");
    assert_eq!(q1.question, "What is Foo?");
    assert_eq!(q1.answers, ["a bar", "bar"]);
    assert_eq!(q1.doc_id, "Foo_Bar#0");
    assert_eq!(ds.questions[2].doc_id, "Baz#0");
    let auto = read_dataset_auto(&p).unwrap();
    assert_eq!(auto, ds);
    let small = ds.clone().limit_docs(2);
    assert_eq!(small.documents.len(), 2);
    assert_eq!(small.questions.len(), 2);
}

#[test]
fn squad_dataset_errors_name_the_record_and_field() {
    let cases = [
        (
            r#"{"data": [{"title": "T", "paragraphs": [{"context": "c", "qas": [{"id": "q", "question": "?", "answers": [{"answer_start": 0}]}]}]}]}"#,
            "data[0].paragraphs[0].qas[0]: field `answers[0].text`: missing",
        ),
        (
            r#"{"data": [{"title": "T", "paragraphs": [{"context": "c", "qas": [{"id": "q", "question": "?", "answers": []}]}]}]}"#,
            "data[0].paragraphs[0].qas[0]: field `answers`: empty list",
        ),
        (
            r#"{"data": [{"title": "T", "paragraphs": [{"context": "c", "qas": [{"id": "q", "question": 3, "answers": []}]}]}]}"#,
            "data[0].paragraphs[0].qas[0]: field `question`: expected a string, found a number",
        ),
        (
            r#"{"data": [{"title": "T", "paragraphs": [{"context": "c", "qas": [
                {"id": "q", "question": "?", "answers": [{"text": "a"}]},
                {"id": "q", "question": "?", "answers": [{"text": "a"}]}]}]}]}"#,
            "data[0].paragraphs[0].qas[1]: field `id`: duplicate question id",
        ),
        (
            r#"{"data": [{"paragraphs": []}]}"#,
            "data[0]: field `title`: missing",
        ),
        (r#"{"data": 3}"#, "$: field `data`"),
        (
            r#"{"data": [{"title": "T", "paragraphs": [{"context": "c"}]}, {"title": "T", "paragraphs": [{"context": "d"}]}]}"#,
            "data[1]: field `title`: duplicate document id \"T#0\"",
        ),
    ];
    for (body, want) in cases {
        let err = cmt_core::data::read_dataset_from(body.as_bytes(), "e.json").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("e.json: "), "{msg}");
        assert!(msg.contains(want), "{msg:?} lacks {want:?}");
    }
    let broken = "{\"data\": [\n  {\"title\": \"T\",\n   \"paragraphs\": [}\n]}";
    match cmt_core::data::read_dataset_from(broken.as_bytes(), "b.json") {
        Err(DataError::Json { file, line, .. }) => {
            assert_eq!(file, "b.json");
            assert_eq!(line, 3);
        }
        other => panic!("expected a JSON error, got {other:?}"),
    }
    // the same broken file offered for ingest: an error with the line, not a pile of
    // bad JSONL lines
    match read_documents_from(broken.as_bytes(), "b.json", false) {
        Err(DataError::Json { line, .. }) => assert_eq!(line, 3),
        other => panic!("expected a JSON error, got {other:?}"),
    }
}

// ---------------------------------------------------------------- JSONL dataset

#[test]
fn jsonl_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let docs = write(
        dir.path(),
        "docs.jsonl",
        b"{\"id\":\"d1\",\"text\":\"Zorblat is in March.\"}\n{\"id\":\"d2\",\"text\":\"Quillby is a town.\"}\n",
    );
    let qs = write(
        dir.path(),
        "qs.jsonl",
        concat!(
            "{\"id\":\"q1\",\"question\":\"When is Zorblat?\",\"answers\":[\"March\",\"in March\"],\"doc_id\":\"d1\"}\n",
            "\n",
            "{\"id\":\"q2\",\"question\":\"What is Quillby?\",\"answers\":[\"a town\"],\"doc_id\":\"d2\",\"timestamp\":\"2024-05-01\"}\n",
        )
        .as_bytes(),
    );
    let ds = read_jsonl_dataset(&docs, &qs).unwrap();
    assert_eq!(ds.documents.len(), 2);
    assert_eq!(ds.questions.len(), 2);
    assert_eq!(ds.questions[0].answers, ["March", "in March"]);
    assert_eq!(ds.questions[1].timestamp, Some(1_714_521_600));

    let bad_cases: [(&str, usize, &str); 5] = [
        (
            "{\"id\":\"q1\",\"question\":\"?\",\"answers\":[\"a\"],\"doc_id\":\"d1\"}\n{\"id\":\"q2\",\"question\":\"?\",\"answers\":[\"a\"],\"doc_id\":\"nope\"}\n",
            2,
            "field `doc_id`: \"nope\" is not a document of",
        ),
        (
            "{\"id\":\"q1\",\"question\":\"?\",\"answers\":\"a\",\"doc_id\":\"d1\"}\n",
            1,
            "field `answers`: expected a list of strings",
        ),
        (
            "{\"id\":\"q1\",\"question\":\"?\",\"answers\":[],\"doc_id\":\"d1\"}\n",
            1,
            "field `answers`: empty list",
        ),
        (
            "\n{\"id\":\"q1\",\"question\":\"?\",\"answers\":[\"a\"],\"doc_id\":\"d1\"}\n{\"id\":\"q1\",\"question\":\"?\",\"answers\":[\"a\"],\"doc_id\":\"d1\"}\n",
            3,
            "field `id`: duplicate question id",
        ),
        (
            "{\"id\":\"q1\",\"question\":\"?\",\"answers\":[\"a\"]}\n",
            1,
            "field `doc_id`: missing",
        ),
    ];
    for (body, line, want) in bad_cases {
        let qs = write(dir.path(), "bad_qs.jsonl", body.as_bytes());
        match read_jsonl_dataset(&docs, &qs) {
            Err(DataError::Record(b)) => {
                assert_eq!(b.file, qs.display().to_string());
                assert_eq!(b.line, line, "{b}");
                assert!(b.message.contains(want), "{b}");
            }
            other => panic!("expected a record error, got {other:?}"),
        }
    }
    // a bad documents file is an error too (strict)
    let bad_docs = write(
        dir.path(),
        "bad_docs.jsonl",
        b"{\"id\":\"d1\",\"text\":\"\"}\n",
    );
    let err = read_jsonl_dataset(&bad_docs, &qs).unwrap_err();
    assert!(
        err.to_string().contains("bad_docs.jsonl:1: field `text`"),
        "{err}"
    );
    let err = read_dataset_auto(&qs).unwrap_err();
    assert!(matches!(err, DataError::Format { .. }), "{err}");
}

// ---------------------------------------------------------------- CSV

/// StreamingQA-style (CaMeLS/MAC CSV): answers joined by `\`, or a JSON list, or `|`;
/// no document id column, so documents are deduplicated by text.
const STREAMINGQA: &str = concat!(
    "qa_id,question,answers,evidence_ts,publication_date,text\n",
    "eval-0,Who won the cup?,Liverpool\\Liverpool FC\\ LFC ,1588291200,2020-05-01,\"Liverpool won the cup, again.\"\n",
    "eval-1,When did it happen?,\"[\"\"May 2020\"\", \"\"in May\"\"]\",1588291200,2020-05-01T00:00:00Z,\"Liverpool won the cup, again.\"\n",
    "eval-2,What opened?,\"a bridge|the bridge\",,1590969600,\"A bridge opened.\n",
    "It spans the river.\"\n",
    "eval-3,Where?,['the river'],,,A bridge opened.\n",
);

#[test]
fn streamingqa_csv() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "streamingqa.csv", STREAMINGQA.as_bytes());
    let ds = read_csv_dataset(&p, &CsvOptions::default()).unwrap();
    assert_eq!(ds.questions.len(), 4);
    assert_eq!(ds.documents.len(), 3, "{:#?}", ds.documents);
    let q: Vec<(&str, Vec<&str>)> = ds
        .questions
        .iter()
        .map(|q| {
            (
                q.id.as_str(),
                q.answers.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(q[0], ("eval-0", vec!["Liverpool", "Liverpool FC", "LFC"]));
    assert_eq!(q[1], ("eval-1", vec!["May 2020", "in May"]));
    assert_eq!(q[2], ("eval-2", vec!["a bridge", "the bridge"]));
    assert_eq!(q[3], ("eval-3", vec!["the river"]));
    assert_eq!(ds.questions[0].doc_id, ds.questions[1].doc_id);
    assert_ne!(ds.questions[2].doc_id, ds.questions[3].doc_id);
    assert!(ds.questions[0].doc_id.starts_with("text-"));
    let d0 = &ds.documents[0];
    assert_eq!(d0.text, "Liverpool won the cup, again.");
    assert_eq!(d0.timestamp, Some(1_588_291_200));
    assert_eq!(
        ds.documents[1].text,
        "A bridge opened.\nIt spans the river."
    );
    assert_eq!(ds.documents[1].timestamp, Some(1_590_969_600));
    assert_eq!(ds.documents[2].timestamp, None);
    for q in &ds.questions {
        assert!(ds.documents.iter().any(|d| d.id == q.doc_id));
    }
    // the extension picks the CSV reader
    assert_eq!(read_dataset_auto(&p).unwrap(), ds);
    // with an explicit layout, and with only `|` as separator the backslashes stay
    let opts = CsvOptions {
        layout: CsvLayout::StreamingQa,
        answer_separators: vec!["|".into()],
        ..CsvOptions::default()
    };
    let ds2 = read_csv_dataset(&p, &opts).unwrap();
    assert_eq!(ds2.questions[0].answers, ["Liverpool\\Liverpool FC\\ LFC"]);
}

#[test]
fn streamingqa_csv_with_document_ids() {
    let body = concat!(
        "question,answers,evidence_id,publication_date,text\n",
        "Q1?,a,doc-1,2021-03-04,Text one.\n",
        "Q2?,b,doc-2,,Text two.\n",
        "Q3?,c,doc-1,2021-03-04,Text one.\n",
    );
    let ds = read_csv_dataset_from(body.as_bytes(), "s.csv", &CsvOptions::default()).unwrap();
    let ids: Vec<&str> = ds.documents.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["doc-1", "doc-2"]);
    assert_eq!(ds.documents[0].timestamp, Some(1_614_816_000));
    let qids: Vec<&str> = ds.questions.iter().map(|q| q.id.as_str()).collect();
    assert_eq!(qids, ["row-1", "row-2", "row-3"]);
    assert_eq!(ds.questions[2].doc_id, "doc-1");
}

/// ArchivalQA-style, with the column names of the brief (`paragraph`, `para_id`).
const ARCHIVALQA: &str = concat!(
    "id,question,answer,paragraph,para_id,publication_date\n",
    "val_1,Who founded the firm?,John Smith,\"The firm, founded by John Smith, grew.\",100_3,1995-07-01\n",
    "val_2,What did the firm do?,grew,\"The firm, founded by John Smith, grew.\",100_3,1995-07-01\n",
    "val_3,What closed in 2001?,the mill,The mill closed in 2001.,101_0,2001-02-03\n",
);

/// ArchivalQA as CaMeLS pairs it: original columns plus `doc_id` (article), `date`,
/// `ans_paragraph` (the paragraph), `ans_text` (the article).
const ARCHIVALQA_PAIRED: &str = concat!(
    "id,question,answer,org_answer,answer_start,para_id,trans_que,trans_ans,source,doc_id,title,date,para_num,ans_paragraph,ans_text,year\n",
    "train_0,Who claimed responsibility?,Al Qaeda,Al Qaeda,10,1839755_20,0,0,wiki,1839755,Bombing,2007-04-12,20,Officials said Al Qaeda claimed it.,Whole article.,2007\n",
    "train_4,When did Tenneco announce it?,\"May 26, 1988\",today,103,148748_0,0,1,rand,148748,Tenneco,1988-05-26,0,Tenneco announced it today.,Whole article 2.,1988\n",
);

#[test]
fn archivalqa_csv() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "archivalqa.csv", ARCHIVALQA.as_bytes());
    let ds = read_csv_dataset(&p, &CsvOptions::default()).unwrap();
    let ids: Vec<&str> = ds.documents.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["100_3", "101_0"]);
    assert_eq!(
        ds.documents[0].text,
        "The firm, founded by John Smith, grew."
    );
    assert_eq!(ds.documents[0].timestamp, Some(804_556_800));
    assert_eq!(ds.questions.len(), 3);
    assert_eq!(ds.questions[0].id, "val_1");
    assert_eq!(ds.questions[0].answers, ["John Smith"]);
    assert_eq!(ds.questions[2].doc_id, "101_0");

    let p = write(dir.path(), "paired.csv", ARCHIVALQA_PAIRED.as_bytes());
    let ds = read_dataset_auto(&p).unwrap();
    assert_eq!(ds.documents.len(), 2);
    assert_eq!(ds.documents[0].id, "1839755_20");
    assert_eq!(ds.documents[0].text, "Officials said Al Qaeda claimed it.");
    assert_eq!(ds.documents[0].title.as_deref(), Some("Bombing"));
    assert_eq!(ds.documents[1].timestamp, Some(580_608_000));
    // a single answer is not split, commas and all
    assert_eq!(ds.questions[1].answers, ["May 26, 1988"]);
}

#[test]
fn tsv_and_sniffed_csv() {
    let dir = tempfile::tempdir().unwrap();
    let tsv = ARCHIVALQA.replace(',', "\t");
    // the quoted commas became tabs inside quotes: still one field each
    let p = write(dir.path(), "a.tsv", tsv.as_bytes());
    let ds = read_dataset_auto(&p).unwrap();
    assert_eq!(ds.questions.len(), 3);
    let p = write(dir.path(), "a.data", ARCHIVALQA.as_bytes());
    assert_eq!(read_dataset_auto(&p).unwrap().questions.len(), 3);
    let p = write(dir.path(), "s.data", SQUAD.as_bytes());
    assert_eq!(read_dataset_auto(&p).unwrap().questions.len(), 3);
}

#[test]
fn csv_errors_name_line_record_and_column() {
    let opts = CsvOptions::default();
    let cases: [(&str, &str); 8] = [
        ("question,text\nQ?,T\n", "s.csv:1: record 0, column `answers`: no `answers`"),
        (
            "question,answers,publication_date,text\nQ?,a,2020-01-01,T\nQ2?,b,someday,T2\n",
            "s.csv:3: record 2, column `publication_date`: not a timestamp",
        ),
        (
            "question,answers,text\nQ?,\" | \",T\n",
            "s.csv:2: record 1, column `answers`: no answer",
        ),
        ("question,answers,text\n ,a,T\n", "s.csv:2: record 1, column `question`: empty"),
        ("question,answers,text\nQ?,a,\"  \"\n", "s.csv:2: record 1, column `text`: empty"),
        (
            "question,answer,para_id,paragraph\nQ?,a,1_0,One.\nQ?,a,1_0,Other.\n",
            "s.csv:3: record 2, column `paragraph`: document \"1_0\" (first at line 2) has a different text",
        ),
        ("question,answers,text\nQ?,a,T\nQ?,a\n", "s.csv:3: record 2: 2 fields where the header has 3"),
        ("question,answer,text\nQ?,a\n", "s.csv:2: record 1: 2 fields where the header has 3"),
    ];
    for (body, want) in cases {
        let err = read_csv_dataset_from(body.as_bytes(), "s.csv", &opts).unwrap_err();
        assert!(err.to_string().starts_with(want), "{err} / wanted {want}");
    }
    // a missing text column for the layout
    let err = read_csv_dataset_from(&b"question,answer,para_id\nQ,a,1\n"[..], "s.csv", &opts)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("column `ans_paragraph`: no document text column"),
        "{err}"
    );
    // not UTF-8: the line and column
    let bytes = b"question,answers,text\nQ?,caf\xE9,T\n";
    let err = read_csv_dataset_from(&bytes[..], "s.csv", &opts).unwrap_err();
    assert!(err.to_string().starts_with("s.csv:2: record 1"), "{err}");
    assert!(err.to_string().contains("UTF-8"), "{err}");
    // a record spanning lines: the error is at the line where its record starts
    let body = "question,answers,text\nQ?,a,\"two\nlines\"\nQ2?,b,bad\"quote\n ,c,T\n";
    let err = read_csv_dataset_from(body.as_bytes(), "s.csv", &opts).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("s.csv:5: record 3, column `question`"),
        "{err}"
    );
}

// ---------------------------------------------------------------- the real dev split

/// (documents, questions, first document id) by a plain walk of the SQuAD JSON.
fn walk_squad(v: &serde_json::Value) -> (usize, usize, String) {
    let mut docs = 0;
    let mut questions = 0;
    let mut first = None;
    for article in v["data"].as_array().unwrap() {
        let title = article["title"].as_str().unwrap();
        for (j, p) in article["paragraphs"].as_array().unwrap().iter().enumerate() {
            docs += 1;
            questions += p["qas"].as_array().map_or(0, Vec::len);
            first.get_or_insert_with(|| format!("{title}#{j}"));
        }
    }
    (docs, questions, first.unwrap_or_default())
}

#[test]
fn squad_dev_split_matches_a_plain_walk() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/squad/dev.json");
    if !path.exists() {
        println!("SKIPPED: {} not present", path.display());
        return;
    }
    let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let (docs, questions, first) = walk_squad(&raw);
    assert_eq!(first, "Black_Death#0");

    let ds = read_dataset(&path).unwrap();
    assert_eq!(ds.documents.len(), docs);
    assert_eq!(ds.questions.len(), questions);
    assert_eq!(ds.documents[0].id, "Black_Death#0");
    assert_eq!(ds.documents[0].title.as_deref(), Some("Black_Death"));
    let known: std::collections::HashSet<&str> =
        ds.documents.iter().map(|d| d.id.as_str()).collect();
    assert!(ds
        .questions
        .iter()
        .all(|q| known.contains(q.doc_id.as_str()) && !q.answers.is_empty()));

    let ingest = read_documents(&path, true).unwrap();
    assert!(ingest.bad.is_empty());
    assert_eq!(ingest.documents, ds.documents);

    let ten = ds.limit_docs(10);
    assert_eq!(ten.documents.len(), 10);
    let want: usize = raw["data"][0]["paragraphs"]
        .as_array()
        .unwrap()
        .iter()
        .take(10)
        .map(|p| p["qas"].as_array().map_or(0, Vec::len))
        .sum();
    if raw["data"][0]["paragraphs"].as_array().unwrap().len() >= 10 {
        assert_eq!(ten.questions.len(), want);
    }
    println!("dev.json: {docs} documents, {questions} questions");
}
