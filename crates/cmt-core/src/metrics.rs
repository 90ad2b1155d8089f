//! Answer metrics with SQuAD v1.1 normalisation, exactly as the official evaluation script
//! (`evaluate-v1.1.py`) computes them, plus the prefix exact match of MAC and CaMeLS
//! (DESIGN §1 step 9).
//!
//! `normalize_answer(s) = white_space_fix(remove_articles(remove_punc(lower(s))))`:
//! - `lower`: Python's `str.lower` (full Unicode lowercase mapping; `char::to_lowercase`
//!   here, including the final-sigma rule both apply);
//! - `remove_punc`: deletes the 32 ASCII characters of Python's `string.punctuation`
//!   (`!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~`); other punctuation (`—`, `“`, `¿`) stays;
//! - `remove_articles`: `re.sub(r'\b(a|an|the)\b', ' ', text)`: a maximal run of word
//!   characters equal to `a`, `an` or `the` becomes one space. A word character is what
//!   Python's `re` means by `\w` on `str`: a letter or number (Unicode categories L* and
//!   N*) or `_` — which `remove_punc` has already removed;
//! - `white_space_fix`: `" ".join(text.split())`, splitting on Python's `str.isspace`
//!   characters (Unicode White_Space plus the separators U+001C..U+001F).
//!
//! Every `golds` slice is a question's gold answers; scores are the maximum over them, and
//! 0 / false for an empty slice (where the official script would raise).
use regex::Regex;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::LazyLock;

/// Runs of Python `\w` characters: letters, numbers and `_` (categories L*, N*).
static WORD_RUN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[\p{L}\p{N}_]+").expect("constant pattern"));

/// Python's `str.isspace`, the separator `str.split()` uses.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Replaces each maximal word run equal to `a`, `an` or `the` with one space: what
/// `re.sub(r'\b(a|an|the)\b', ' ', text)` does, since all three are word characters.
fn remove_articles(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for m in WORD_RUN.find_iter(text) {
        out.push_str(&text[last..m.start()]);
        if matches!(m.as_str(), "a" | "an" | "the") {
            out.push(' ');
        } else {
            out.push_str(m.as_str());
        }
        last = m.end();
    }
    out.push_str(&text[last..]);
    out
}

/// SQuAD v1.1 answer normalisation: lowercase, delete ASCII punctuation, replace the
/// articles `a`/`an`/`the` (whole words) with spaces, fold whitespace.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punc: String = lower
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    let no_articles = remove_articles(&no_punc);
    no_articles
        .split(is_python_space)
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Normalised tokens, as `normalize_answer(s).split()`.
fn tokens(s: &str) -> Vec<String> {
    normalize_answer(s)
        .split(' ')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// Official SQuAD exact match: the normalised prediction equals a normalised gold answer.
pub fn exact_match(prediction: &str, golds: &[impl AsRef<str>]) -> bool {
    let p = normalize_answer(prediction);
    golds.iter().any(|g| normalize_answer(g.as_ref()) == p)
}

/// MAC / CaMeLS prefix exact match: the normalised prediction starts with a normalised
/// gold answer (`normalize(pred)[:len(normalize(gold))] == normalize(gold)`), so a
/// prediction that runs on after the answer still counts. Character-level, like the
/// original: gold `"1"` matches prediction `"10"`.
pub fn prefix_exact_match(prediction: &str, golds: &[impl AsRef<str>]) -> bool {
    let p = normalize_answer(prediction);
    golds
        .iter()
        .any(|g| p.starts_with(normalize_answer(g.as_ref()).as_str()))
}

fn f1_one(pred: &[String], gold: &[String]) -> f64 {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in gold {
        *counts.entry(t.as_str()).or_default() += 1;
    }
    let mut same = 0usize;
    for t in pred {
        if let Some(c) = counts.get_mut(t.as_str()) {
            if *c > 0 {
                *c -= 1;
                same += 1;
            }
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / pred.len() as f64;
    let recall = same as f64 / gold.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// Official SQuAD token F1 in [0, 1]: multiset overlap of normalised tokens, maximum over
/// the gold answers; 0 when no token is shared (so also when either side is empty, even
/// both).
pub fn f1(prediction: &str, golds: &[impl AsRef<str>]) -> f64 {
    let p = tokens(prediction);
    golds
        .iter()
        .map(|g| f1_one(&p, &tokens(g.as_ref())))
        .fold(0.0, f64::max)
}

/// The three scores of one prediction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AnswerScore {
    /// [`exact_match`].
    pub em: bool,
    /// [`prefix_exact_match`].
    pub prefix_em: bool,
    /// [`f1`], in [0, 1].
    pub f1: f64,
}

/// Scores one prediction against its gold answers.
pub fn score(prediction: &str, golds: &[impl AsRef<str>]) -> AnswerScore {
    AnswerScore {
        em: exact_match(prediction, golds),
        prefix_em: prefix_exact_match(prediction, golds),
        f1: f1(prediction, golds),
    }
}

/// Aggregate scores over `n` predictions, as percentages (0–100, like the official
/// script's output); all 0 when `n` is 0. Accumulate with [`Scores::add`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Scores {
    /// Predictions scored.
    pub n: usize,
    /// Mean exact match, percent.
    pub em: f64,
    /// Mean prefix exact match, percent.
    pub prefix_em: f64,
    /// Mean F1, percent.
    pub f1: f64,
    #[serde(skip)]
    em_hits: usize,
    #[serde(skip)]
    prefix_hits: usize,
    #[serde(skip)]
    f1_sum: f64,
}

impl Scores {
    /// No predictions yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Scores one prediction, adds it to the aggregate and returns its scores.
    pub fn add(&mut self, prediction: &str, golds: &[impl AsRef<str>]) -> AnswerScore {
        let s = score(prediction, golds);
        self.add_score(s);
        s
    }

    /// Adds an already computed score.
    pub fn add_score(&mut self, s: AnswerScore) {
        self.n += 1;
        self.em_hits += usize::from(s.em);
        self.prefix_hits += usize::from(s.prefix_em);
        self.f1_sum += s.f1;
        self.refresh();
    }

    /// Adds every prediction counted in `other`.
    pub fn merge(&mut self, other: &Scores) {
        self.n += other.n;
        self.em_hits += other.em_hits;
        self.prefix_hits += other.prefix_hits;
        self.f1_sum += other.f1_sum;
        self.refresh();
    }

    fn refresh(&mut self) {
        if self.n == 0 {
            return;
        }
        let n = self.n as f64;
        self.em = 100.0 * self.em_hits as f64 / n;
        self.prefix_em = 100.0 * self.prefix_hits as f64 / n;
        self.f1 = 100.0 * self.f1_sum / n;
    }
}

#[cfg(test)]
mod tests {
    //! Expectations worked out by hand from the official script's definitions.
    use super::*;

    const NONE: [&str; 0] = [];

    #[test]
    fn normalization_by_hand() {
        let cases = [
            ("The Cat", "cat"),
            ("theater", "theater"),
            ("Theater of the Absurd", "theater of absurd"),
            ("A man, a plan, a canal: Panama!", "man plan canal panama"),
            ("don't", "dont"),
            ("U.S.A.", "usa"),
            // punctuation goes first: "an-apple" -> "anapple", no article left
            ("an-apple", "anapple"),
            ("the_end", "theend"),
            ("THE END.", "end"),
            ("a an the", ""),
            ("  multiple\t\nspaces  ", "multiple spaces"),
            ("l'amour", "lamour"),
            // non-ASCII punctuation is not in string.punctuation: kept
            (
                "\u{201c}Quoted\u{201d} \u{2014} text",
                "\u{201c}quoted\u{201d} \u{2014} text",
            ),
            // "—" is not a word character, so both "the" are whole words
            ("the\u{2014}the", "\u{2014}"),
            ("\u{bf}Qu\u{e9}?", "\u{bf}qu\u{e9}"),
            ("\u{c5}ngstr\u{f6}m", "\u{e5}ngstr\u{f6}m"),
            ("\u{c9}COLE", "\u{e9}cole"),
            ("\u{3a3}\u{391}\u{3a3}", "\u{3c3}\u{3b1}\u{3c2}"),
            // letters glued to an article make one word
            ("\u{3b1}the", "\u{3b1}the"),
            ("1the", "1the"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_answer(input), want, "input {input:?}");
        }
    }

    #[test]
    fn exact_match_by_hand() {
        assert!(exact_match("The Eiffel Tower", &["eiffel tower"]));
        assert!(exact_match("Paris", &["London", "paris."]));
        assert!(!exact_match("Paris", &["London"]));
        assert!(!exact_match("Paris France", &["Paris"]));
        // empty prediction: only a gold that normalises to "" matches
        assert!(!exact_match("", &["Paris"]));
        assert!(exact_match("", &["The"]));
        assert!(exact_match("  ", &["a."]));
        assert!(!exact_match("x", &NONE));
    }

    #[test]
    fn f1_by_hand() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        // pred [cat sat on mat], gold [cat on mat]: 3 shared, P 3/4, R 1
        assert!(close(
            f1("the cat sat on the mat", &["a cat on a mat"]),
            6.0 / 7.0
        ));
        // multiset: x:2 y:1 vs x:1 y:2 share 2 of 3 each way
        assert!(close(f1("x x y", &["x y y"]), 2.0 / 3.0));
        // max over golds: [york] gives 1/2, [new york] gives 4/5
        assert!(close(f1("New York City", &["York", "New York"]), 0.8));
        assert!(close(f1("Paris.", &["paris"]), 1.0));
        assert_eq!(f1("Rome", &["Paris"]), 0.0);
        // empty prediction: 0 even against a gold that normalises to ""
        assert_eq!(f1("", &["Paris"]), 0.0);
        assert_eq!(f1("", &["the"]), 0.0);
        assert_eq!(f1("x", &NONE), 0.0);
    }

    #[test]
    fn prefix_em_by_hand() {
        // runs on after the answer: prefix-EM yes, EM no
        assert!(prefix_exact_match("Paris, France", &["Paris"]));
        assert!(!exact_match("Paris, France", &["Paris"]));
        // character-level prefix, as in MAC/CaMeLS: "10 million" starts with "1"
        assert!(prefix_exact_match("10 million", &["1"]));
        assert!(!exact_match("10 million", &["1"]));
        // shorter than the gold, or the answer not at the start: no
        assert!(!prefix_exact_match("Paris", &["Paris, France"]));
        assert!(!prefix_exact_match("The answer is Paris", &["Paris"]));
        // articles and punctuation are normalised away before comparing
        assert!(prefix_exact_match("The Beatles were a band", &["Beatles"]));
        // a gold that normalises to "" is a prefix of everything
        assert!(prefix_exact_match("anything", &["The"]));
        assert!(!exact_match("anything", &["The"]));
        assert!(prefix_exact_match("", &["the"]));
        assert!(!prefix_exact_match("", &["Paris"]));
        assert!(prefix_exact_match("Rome or so", &["Paris", "Rome"]));
        assert!(!prefix_exact_match("x", &NONE));
    }

    #[test]
    fn scores_accumulate_percentages() {
        let mut s = Scores::new();
        assert_eq!((s.n, s.em, s.prefix_em, s.f1), (0, 0.0, 0.0, 0.0));
        let a = s.add("Paris", &["Paris"]);
        assert_eq!((a.em, a.prefix_em, a.f1), (true, true, 1.0));
        let b = s.add("Paris France", &["Paris"]);
        assert_eq!((b.em, b.prefix_em), (false, true));
        assert!((b.f1 - 2.0 / 3.0).abs() < 1e-12);
        s.add("Rome", &[String::from("Paris")]);
        assert_eq!(s.n, 3);
        assert!((s.em - 100.0 / 3.0).abs() < 1e-9);
        assert!((s.prefix_em - 200.0 / 3.0).abs() < 1e-9);
        assert!((s.f1 - 100.0 * (5.0 / 3.0) / 3.0).abs() < 1e-9);
        let mut total = Scores::new();
        total.merge(&s);
        total.merge(&s);
        assert_eq!(total.n, 6);
        assert!((total.f1 - s.f1).abs() < 1e-9);
        let json = serde_json::to_value(s).unwrap();
        assert_eq!(json.as_object().map(|o| o.len()), Some(4));
    }
}
