//! "Did you mean" hints for misspelt names (hooks, columns, options).

/// " (did you mean `x`?)" when a close candidate exists, else "".
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    // Case is compared last: `BLOCKS.0.HOOK_RESID_POST` is one typo of its lowercase name, not 20.
    let lower = name.to_lowercase();
    let best = candidates
        .into_iter()
        .map(|c| {
            (
                levenshtein(&lower, &c.to_lowercase()),
                levenshtein(name, c),
                c,
            )
        })
        .min_by_key(|(folded, exact, _)| (*folded, *exact))
        .map(|(d, _, c)| (d, c));
    match best {
        Some((d, c)) if d <= (name.len() / 3).max(3) => format!(" (did you mean `{c}`?)"),
        _ => String::new(),
    }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diag + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(above + 1);
            diag = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_in_the_wrong_case_is_still_recognised() {
        let hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"];
        assert_eq!(
            did_you_mean("BLOCKS.0.HOOK_RESID_POST", hooks),
            " (did you mean `blocks.0.hook_resid_post`?)"
        );
        assert_eq!(
            did_you_mean("Topic", ["topic", "tonic"]),
            " (did you mean `topic`?)"
        );
    }

    #[test]
    fn edit_distance() {
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("same", "same"), 0);
    }

    #[test]
    fn suggestion_only_when_close() {
        let c = ["blocks.0.hook_resid_post", "hook_embed"];
        assert_eq!(
            did_you_mean("blocks.0.hook_resid_pots", c),
            " (did you mean `blocks.0.hook_resid_post`?)"
        );
        assert_eq!(did_you_mean("zzzzzzzzzzzzzzzz", c), "");
    }
}
