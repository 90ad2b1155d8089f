//! The metrics against the official SQuAD v1.1 evaluation functions (and MAC's prefix exact
//! match), re-implemented in a few lines of Python and run through `python3` over the
//! same cases. Skipped, with a message, where `python3` is missing.
use cmt_core::metrics::{exact_match, f1, normalize_answer, prefix_exact_match};
use std::process::Command;

/// `evaluate-v1.1.py`'s normalize_answer / f1_score / exact_match_score /
/// metric_max_over_ground_truths, and MAC's `exact_match(..., match_length=False)`.
const OFFICIAL: &str = r#"
import json, re, string, sys
from collections import Counter

def normalize_answer(s):
    def remove_articles(text):
        return re.sub(r'\b(a|an|the)\b', ' ', text)
    def white_space_fix(text):
        return ' '.join(text.split())
    def remove_punc(text):
        exclude = set(string.punctuation)
        return ''.join(ch for ch in text if ch not in exclude)
    def lower(text):
        return text.lower()
    return white_space_fix(remove_articles(remove_punc(lower(s))))

def f1_score(prediction, ground_truth):
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1

def exact_match_score(prediction, ground_truth):
    return (normalize_answer(prediction) == normalize_answer(ground_truth))

def prefix_match(prediction, ground_truth):
    norm_pred = normalize_answer(prediction)
    norm_truth = normalize_answer(ground_truth)
    return norm_pred[:len(norm_truth)] == norm_truth

def metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    return max(metric_fn(prediction, gt) for gt in ground_truths)

cases = json.load(open(sys.argv[1], encoding='utf-8'))
out = []
for pred, golds in cases:
    out.append([normalize_answer(pred),
                bool(metric_max_over_ground_truths(exact_match_score, pred, golds)),
                bool(metric_max_over_ground_truths(prefix_match, pred, golds)),
                float(metric_max_over_ground_truths(f1_score, pred, golds)),
                [normalize_answer(g) for g in golds]])
json.dump(out, sys.stdout)
"#;

fn cases() -> Vec<(String, Vec<String>)> {
    let raw: &[(&str, &[&str])] = &[
        ("The Cat", &["cat"]),
        ("theater", &["the theater"]),
        (
            "A man, a plan, a canal: Panama!",
            &["man plan canal panama"],
        ),
        ("an-apple", &["apple"]),
        ("the_end", &["end"]),
        ("don't stop", &["dont stop", "do not stop"]),
        ("U.S.A.", &["USA"]),
        ("\u{201c}Quoted\u{201d} \u{2014} text", &["quoted text"]),
        ("the\u{2014}the", &["\u{2014}"]),
        ("\u{c5}ngstr\u{f6}m units", &["\u{e5}ngstr\u{f6}m"]),
        (
            "\u{c9}COLE NORMALE",
            &["\u{e9}cole normale sup\u{e9}rieure"],
        ),
        ("\u{3a3}\u{391}\u{3a3} \u{3a3}", &["\u{3c3}\u{3b1}\u{3c2}"]),
        ("\u{130}stanbul", &["istanbul"]),
        ("Stra\u{df}e", &["strasse"]),
        ("\u{1c5}ungla", &["\u{1c6}ungla"]),
        ("a\u{b2} the b", &["b"]),
        ("a\u{301} b", &["b"]),
        ("the\u{203f}end", &["end"]),
        ("\u{216b} the", &["\u{216b}"]),
        ("\u{663} an \u{663}", &["\u{663} \u{663}"]),
        ("a\u{a0}the\u{a0}b", &["b"]),
        ("x\u{1f}y", &["x y"]),
        ("x\u{200b}y", &["x y"]),
        ("the\u{3000}end\u{85}", &["end"]),
        ("", &["Paris"]),
        ("", &["the"]),
        ("anything", &["The"]),
        ("Paris, France", &["Paris"]),
        ("10 million", &["1", "ten million"]),
        ("The answer is Paris", &["Paris"]),
        ("the cat sat on the mat", &["a cat on a mat"]),
        ("x x y", &["x y y"]),
        ("New York City", &["York", "New York"]),
        ("Rome", &["Paris", "London"]),
        ("\u{fb01}sh", &["fish"]),
        ("  multiple\t\nspaces  ", &["multiple spaces"]),
        ("1the a1 ATHE", &["1the a1 athe"]),
    ];
    raw.iter()
        .map(|(p, g)| (p.to_string(), g.iter().map(|s| s.to_string()).collect()))
        .collect()
}

#[test]
fn metrics_match_the_official_script() {
    let cases = cases();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("cases.json");
    std::fs::write(&input, serde_json::to_vec(&cases).unwrap()).unwrap();
    let out = match Command::new("python3")
        .arg("-c")
        .arg(OFFICIAL)
        .arg(&input)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            println!("SKIPPED: python3 not available ({e})");
            return;
        }
    };
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: Vec<(String, bool, bool, f64, Vec<String>)> =
        serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(want.len(), cases.len());
    for ((pred, golds), (norm, em, pem, f, gnorm)) in cases.iter().zip(&want) {
        let ctx = format!("prediction {pred:?}, golds {golds:?}");
        assert_eq!(&normalize_answer(pred), norm, "normalize: {ctx}");
        assert_eq!(exact_match(pred, golds), *em, "EM: {ctx}");
        assert_eq!(prefix_exact_match(pred, golds), *pem, "prefix-EM: {ctx}");
        assert!(
            (f1(pred, golds) - f).abs() < 1e-12,
            "F1 {} vs {f}: {ctx}",
            f1(pred, golds)
        );
        for (g, n) in golds.iter().zip(gnorm) {
            assert_eq!(&normalize_answer(g), n, "normalize gold {g:?}");
        }
    }
}
