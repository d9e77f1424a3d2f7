//! Markdown primitives: the lowest layer of the report's text, beside `markup::escape`.

/// `text` as a Markdown code span that nothing in it can break out of: the fence is one
/// backtick longer than the longest run inside (CommonMark), padded with a space when the text
/// starts or ends with a backtick, line breaks become spaces and `|` is escaped so a cell of a
/// table stays one cell. Label, concept and file names come from user data.
pub fn code(text: &str) -> String {
    let flat = text.replace(['\n', '\r'], " ").replace('|', "\\|");
    let mut longest = 0;
    let mut run = 0;
    for c in flat.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest + 1);
    let pad = if flat.starts_with('`') || flat.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{flat}{pad}{fence}")
}

#[cfg(test)]
mod tests {
    use super::code;

    #[test]
    fn backticks_and_newlines_stay_inside_the_span() {
        assert_eq!(code("topic"), "`topic`");
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`x`"), "`` `x` ``");
        assert_eq!(code("a``b\nc"), "```a``b c```");
        assert_eq!(code("a|b"), "`a\\|b`");
    }
}
