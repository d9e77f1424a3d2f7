//! Planted absorption: five letters, each a direction of its own; every word adds a small
//! direction of its own. A hand-built TopK (k = 1) SAE has one latent per letter, and for half
//! of the letter-`a` test words an extra latent along `a + that word` that out-competes the `a`
//! latent on exactly those words — absorption by construction. The metric must find latent 0 as
//! `a`'s main latent, full absorption (and absorption fraction 1) on exactly the absorbed tokens,
//! and none for the other letters.

use glassbox_concepts::absorption::words::{is_test_word, Words};
use glassbox_concepts::absorption::{measure_words, AbsorptionOptions};
use glassbox_concepts::sae::{Architecture, Sae};
use glassbox_data::rng::SeededRng;

const D: usize = 64;
const LETTERS: usize = 5;
const WORDS_PER_LETTER: usize = 10;
const OCCURRENCES: usize = 30;

fn unit(i: usize) -> Vec<f32> {
    let mut v = vec![0.0; D];
    v[i] = 1.0;
    v
}

#[test]
fn absorbed_words_are_found_and_nothing_else() {
    let options = AbsorptionOptions::default();
    let mut rng = SeededRng::new(5);
    // Word w of letter l: direction 5 + l·10 + w (all distinct, orthogonal to the letters').
    let word = |l: usize, w: usize| {
        format!(
            "{}{}{}q",
            (b'a' + l as u8) as char,
            (b'a' + w as u8) as char,
            (b'k' + l as u8) as char
        )
    };
    let absorbed: Vec<usize> = (0..WORDS_PER_LETTER)
        .filter(|&w| is_test_word(&word(0, w), options.seed, options.test_fraction))
        .step_by(2)
        .collect();
    assert!(!absorbed.is_empty());
    let mut words = Words {
        d: D,
        ..Words::default()
    };
    for l in 0..LETTERS {
        for w in 0..WORDS_PER_LETTER {
            let text = word(l, w);
            let test = is_test_word(&text, options.seed, options.test_fraction);
            for o in 0..OCCURRENCES {
                let dir = LETTERS + l * WORDS_PER_LETTER + w;
                let row: Vec<f32> = (0..D)
                    .map(|i| {
                        let base = if i == l {
                            1.0
                        } else if i == dir {
                            0.3
                        } else {
                            0.0
                        };
                        base + 0.01 * rng.gaussian() as f32
                    })
                    .collect();
                words.x.extend(row);
                words.letter.push(l as u8);
                words.word.push(text.clone());
                words.ids.push(((l * 1000 + w) as u64, o as u32));
                words.test.push(test);
            }
        }
    }
    // Latents 0..5: the letters. Then one absorbing latent per absorbed `a` word: encoder
    // 0.9·a + 3·u_w (1.8 on that word, 0.9 < 1 on other `a` words), decoder along a + 0.3 u_w.
    let mut w_enc: Vec<f32> = (0..LETTERS).flat_map(unit).collect();
    let mut w_dec = w_enc.clone();
    for &w in &absorbed {
        let dir = LETTERS + w;
        let mut enc = unit(0).iter().map(|v| 0.9 * v).collect::<Vec<f32>>();
        enc[dir] = 3.0;
        w_enc.extend(enc);
        let mut dec = unit(0);
        dec[dir] = 0.3;
        let n = (1.0f32 + 0.09).sqrt();
        w_dec.extend(dec.iter().map(|v| v / n));
    }
    let width = LETTERS + absorbed.len();
    let sae = Sae {
        input_norm: Default::default(),
        d_in: D,
        width,
        architecture: Architecture::TopK { k: 1 },
        w_enc,
        b_enc: vec![0.0; width],
        w_dec,
        b_dec: vec![0.0; D],
        threshold: Vec::new(),
        gate: None,
    };
    let a = measure_words(&sae, &words, &options).unwrap();
    assert_eq!(a.summary.letters_measured, LETTERS, "{:?}", a.gated);
    let letter_a = &a.letters[0];
    assert_eq!(letter_a.main_latents, vec![0]);
    let test_a_words = (0..WORDS_PER_LETTER)
        .filter(|&w| is_test_word(&word(0, w), options.seed, options.test_fraction))
        .count();
    // Over the tokens the ground-truth probe gets right (nearly all of them).
    let measured: Vec<_> = a.tokens.iter().filter(|t| t.letter == 'a').collect();
    let absorbed_measured = measured
        .iter()
        .filter(|t| absorbed.contains(&((words.ids[t.row].0 % 1000) as usize)))
        .count();
    let expected = absorbed_measured as f64 / measured.len() as f64;
    eprintln!(
        "letter a: {} absorbed of {} test words; full rate {:.3}, fraction {:.3}",
        absorbed.len(),
        test_a_words,
        letter_a.full_absorption_rate(),
        letter_a.mean_absorption_fraction
    );
    assert_eq!(letter_a.probe_true_positives, measured.len());
    assert!(measured.len() * 100 >= test_a_words * OCCURRENCES * 95);
    assert!((expected - absorbed.len() as f64 / test_a_words as f64).abs() < 0.05);
    assert!((letter_a.full_absorption_rate() - expected).abs() < 1e-9);
    assert!((letter_a.mean_absorption_fraction - expected).abs() < 1e-9);
    for t in a.tokens.iter().filter(|t| t.letter == 'a') {
        let w = (words.ids[t.row].0 % 1000) as usize;
        assert_eq!(t.full_absorption, absorbed.contains(&w), "word {w}");
    }
    for l in &a.letters[1..] {
        assert_eq!(l.main_latents.len(), 1, "{l:?}");
        assert_eq!(l.full_absorptions, 0, "{l:?}");
        assert_eq!(l.mean_absorption_fraction, 0.0, "{l:?}");
    }
    // Same inputs, same numbers.
    let again = measure_words(&sae, &words, &options).unwrap();
    assert_eq!(again.letters, a.letters);
}
