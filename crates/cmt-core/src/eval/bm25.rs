//! The `rag` baseline's retriever: Okapi BM25 (the `bm25` crate: English tokenizer with
//! stop words and stemming, k1 = 1.2, b = 0.75, avgdl fitted to the indexed corpus) over
//! the raw text of the documents streamed so far.
use bm25::{Language, SearchEngine, SearchEngineBuilder};

/// A BM25 index over documents, which are named by their position in the indexed slice.
pub struct Bm25Index {
    engine: SearchEngine<u32>,
    len: usize,
}

impl Bm25Index {
    /// Indexes `texts` (document i is `texts[i]`); avgdl is fitted to them.
    pub fn new(texts: &[&str]) -> Bm25Index {
        let engine =
            SearchEngineBuilder::<u32>::with_corpus(Language::English, texts.iter().copied())
                .build();
        Bm25Index {
            engine,
            len: texts.len(),
        }
    }

    /// Documents indexed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `k` best documents for `query` as (index, score), best first; ties go to the
    /// earlier document, so results do not depend on hash order. Documents sharing no term
    /// with the query are never returned (so the list may be shorter than `k`, or empty).
    pub fn search(&self, query: &str, k: usize) -> Vec<(usize, f32)> {
        let mut hits: Vec<(usize, f32)> = self
            .engine
            .search(query, None)
            .into_iter()
            .map(|r| (r.document.id as usize, r.score))
            .collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hits.truncate(k);
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_the_matching_document_first() {
        let idx = Bm25Index::new(&[
            "The Rhine flows through Basel and Cologne.",
            "Genghis Khan founded the Mongol Empire.",
            "Black Death killed much of Europe.",
        ]);
        assert_eq!(idx.len(), 3);
        let hits = idx.search("Who founded the Mongol Empire?", 2);
        assert_eq!(hits[0].0, 1);
        assert!(hits.len() <= 2);
        assert!(idx.search("zzzz qqqq", 3).is_empty());
    }

    #[test]
    fn ties_go_to_the_earlier_document() {
        let idx = Bm25Index::new(&["apple pie", "banana", "apple pie"]);
        let hits = idx.search("apple", 3);
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), [0, 2]);
    }
}
