//! The first-letter task's data: which stored tokens are whole alphabetic words, their first
//! letters, and a seeded sample of their rows split into training and test *words* (a word's
//! every occurrence on one side, as SAEBench splits the vocabulary, so the test measures letters
//! of words the probe has not seen).

use crate::sae::stream::{RowId, RowSource};
use crate::ConceptError;
use glassbox_data::rng::SeededRng;
use glassbox_data::tokens::Tokens;

/// How the run's tokenizer marks word starts, read from its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordStarts {
    /// Byte-level BPE (`Ġword`) or SentencePiece (`▁word`): a word token carries the marker.
    Marked,
    /// WordPiece (`word`, `##piece`): a word token is any token without `##`.
    WordPiece,
    /// Neither seen: every alphabetic token counts.
    Plain,
}

impl WordStarts {
    pub fn detect(tokens: &Tokens) -> Self {
        if tokens
            .tokens
            .iter()
            .any(|t| t.starts_with('Ġ') || t.starts_with('▁'))
        {
            Self::Marked
        } else if tokens.tokens.iter().any(|t| t.starts_with("##")) {
            Self::WordPiece
        } else {
            Self::Plain
        }
    }

    /// The word a token spells (lower case) when it is a whole alphabetic word of at least two
    /// letters; `None` otherwise.
    pub fn word(self, token: &str) -> Option<String> {
        let word = match self {
            Self::Marked => token
                .strip_prefix('Ġ')
                .or_else(|| token.strip_prefix('▁'))
                .or_else(|| token.strip_prefix(' '))?,
            Self::WordPiece if token.starts_with("##") => return None,
            _ => token.trim_start_matches(' '),
        };
        (word.len() >= 2 && word.bytes().all(|b| b.is_ascii_alphabetic()))
            .then(|| word.to_ascii_lowercase())
    }
}

/// The sampled word rows of one hook.
#[derive(Debug, Clone, Default)]
pub struct Words {
    pub d: usize,
    /// `n × d`, the hook's rows at the word tokens.
    pub x: Vec<f32>,
    /// First letter, 0 (`a`) to 25 (`z`).
    pub letter: Vec<u8>,
    pub word: Vec<String>,
    pub ids: Vec<RowId>,
    /// Whether the row's word is a test word.
    pub test: Vec<bool>,
}

impl Words {
    pub fn len(&self) -> usize {
        self.letter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.letter.is_empty()
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.d..(i + 1) * self.d]
    }

    fn push(&mut self, row: &[f32], letter: u8, word: String, id: RowId, test: bool) {
        self.x.extend_from_slice(row);
        self.letter.push(letter);
        self.word.push(word);
        self.ids.push(id);
        self.test.push(test);
    }

    fn replace(
        &mut self,
        slot: usize,
        row: &[f32],
        letter: u8,
        word: String,
        id: RowId,
        test: bool,
    ) {
        self.x[slot * self.d..(slot + 1) * self.d].copy_from_slice(row);
        self.letter[slot] = letter;
        self.word[slot] = word;
        self.ids[slot] = id;
        self.test[slot] = test;
    }
}

/// Finds a token by `(example, position)` by binary search: tokens.parquet is written in that
/// order, so no index is needed (4 bytes a token for a sorted permutation otherwise) — a hash
/// map over a million tokens would be tens of MB.
struct TokenIndex<'a> {
    tokens: &'a Tokens,
    order: Option<Vec<u32>>,
}

impl<'a> TokenIndex<'a> {
    fn new(tokens: &'a Tokens) -> Self {
        let key = |t: usize| (tokens.example_ids[t], tokens.positions[t]);
        let sorted = (1..tokens.len()).all(|t| key(t - 1) < key(t));
        let order = (!sorted).then(|| {
            let mut order: Vec<u32> = (0..tokens.len() as u32).collect();
            order.sort_by_key(|&t| key(t as usize));
            order
        });
        Self { tokens, order }
    }

    fn find(&self, id: RowId) -> Option<usize> {
        let key = |t: usize| (self.tokens.example_ids[t], self.tokens.positions[t]);
        match &self.order {
            None => {
                let (mut lo, mut hi) = (0, self.tokens.len());
                while lo < hi {
                    let mid = (lo + hi) / 2;
                    match key(mid).cmp(&id) {
                        std::cmp::Ordering::Less => lo = mid + 1,
                        std::cmp::Ordering::Greater => hi = mid,
                        std::cmp::Ordering::Equal => return Some(mid),
                    }
                }
                None
            }
            Some(order) => order
                .binary_search_by_key(&id, |&t| key(t as usize))
                .ok()
                .map(|i| order[i] as usize),
        }
    }
}

/// Whether `word` is a test word: a seeded hash of its letters.
pub fn is_test_word(word: &str, seed: u64, fraction: f64) -> bool {
    // FNV-1a: stable across runs and platforms.
    let hash = word.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    SeededRng::new(seed ^ hash).unit_f64() < fraction
}

/// One pass over `rows`: the rows of word tokens, at most `max_rows` of them (a seeded
/// reservoir sample, so the pass order does not bias it; 0 keeps all).
pub fn collect<S: RowSource>(
    rows: &mut S,
    tokens: &Tokens,
    max_rows: usize,
    test_fraction: f64,
    seed: u64,
) -> Result<Words, ConceptError> {
    let starts = WordStarts::detect(tokens);
    let index = TokenIndex::new(tokens);
    let d = rows.width();
    let mut words = Words {
        d,
        ..Words::default()
    };
    let mut rng = SeededRng::new(seed ^ 0xAB50_4B71_0000);
    let (mut batch, mut ids) = (Vec::new(), Vec::new());
    let mut seen = 0usize;
    rows.rewind();
    while rows.next_rows(&mut batch, &mut ids)? {
        for (r, &id) in ids.iter().enumerate() {
            let Some(word) = index.find(id).and_then(|t| starts.word(&tokens.tokens[t])) else {
                continue;
            };
            let letter = word.as_bytes()[0] - b'a';
            let test = is_test_word(&word, seed, test_fraction);
            let row = &batch[r * d..(r + 1) * d];
            if max_rows == 0 || words.len() < max_rows {
                words.push(row, letter, word, id, test);
            } else {
                let slot = rng.below(seen + 1);
                if slot < max_rows {
                    words.replace(slot, row, letter, word, id, test);
                }
            }
            seen += 1;
        }
        batch.clear();
        ids.clear();
    }
    rows.rewind();
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_tokens_by_tokenizer_style() {
        assert_eq!(WordStarts::Marked.word("Ġdog"), Some("dog".into()));
        assert_eq!(WordStarts::Marked.word("▁Cat"), Some("cat".into()));
        assert_eq!(WordStarts::Marked.word("ing"), None);
        assert_eq!(WordStarts::Marked.word("Ġa"), None);
        assert_eq!(WordStarts::Marked.word("Ġ42"), None);
        assert_eq!(WordStarts::WordPiece.word("dog"), Some("dog".into()));
        assert_eq!(WordStarts::WordPiece.word("##ing"), None);
        assert_eq!(WordStarts::Plain.word("it's"), None);
    }

    #[test]
    fn tokens_are_found_sorted_or_not() {
        let tokens = Tokens {
            example_ids: vec![0, 0, 1, 1, 2],
            positions: vec![0, 1, 0, 1, 0],
            tokens: ["a", "b", "c", "d", "e"].map(String::from).to_vec(),
            spans: vec![None; 5],
        };
        let index = TokenIndex::new(&tokens);
        assert!(index.order.is_none());
        assert_eq!(index.find((1, 1)), Some(3));
        assert_eq!(index.find((1, 2)), None);
        let shuffled = Tokens {
            example_ids: vec![2, 0, 1, 0, 1],
            positions: vec![0, 1, 1, 0, 0],
            ..tokens.clone()
        };
        let index = TokenIndex::new(&shuffled);
        assert_eq!(index.find((0, 0)), Some(3));
        assert_eq!(index.find((2, 0)), Some(0));
        assert_eq!(index.find((3, 0)), None);
    }

    #[test]
    fn test_words_are_seeded_and_near_their_fraction() {
        let words: Vec<String> = (0..5000).map(|i| format!("w{i}")).collect();
        let n = words.iter().filter(|w| is_test_word(w, 3, 0.3)).count();
        assert!((1300..1700).contains(&n), "{n}");
        assert_eq!(is_test_word("dog", 3, 0.3), is_test_word("dog", 3, 0.3));
    }
}
