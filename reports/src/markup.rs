//! HTML primitives, the lowest layer of the report: escaping, inline code spans, the page
//! shell and the token snippet. Sections (`dictionary`, `pages`, `provenance`, `tcav_svg`) and
//! the main page (`html`) build on these; nothing here imports them.

/// Escapes text for HTML element content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes, then renders `code` spans written with backticks.
pub(crate) fn inline(text: &str) -> String {
    escape(text)
        .split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                format!("<code>{part}</code>")
            } else {
                part.to_owned()
            }
        })
        .collect()
}

/// A self-contained page: inline style, no scripts; `title` is escaped here.
pub(crate) fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>glassbox report — {}</title>\n<style>{}</style>\n</head>\n<body>\n{}</body>\n</html>\n",
        escape(title),
        STYLE,
        body
    )
}

/// A context window with each token shaded by the unit's activation on it (the example token
/// outlined; the exact value in its tooltip).
pub(crate) fn snippet(
    tokens: &[String],
    activations: &[f32],
    center: u32,
    activation: f32,
) -> String {
    let max = activations.iter().fold(0.0f32, |a, &b| a.max(b)).max(1e-6);
    let mut h = format!("<div class=\"snippet\" title=\"activation {activation:.3}\">");
    for (i, (t, a)) in tokens.iter().zip(activations).enumerate() {
        let alpha = (a.max(0.0) / max).min(1.0);
        let class = if i as u32 == center {
            " class=\"center\""
        } else {
            ""
        };
        // Inactive tokens (most of a window) carry no style or tooltip: pages of 100 units
        // with 20 windows each stay small.
        if *a == 0.0 {
            h.push_str(&format!("<span{class}>{}</span> ", escape(t)));
        } else {
            h.push_str(&format!(
                "<span{class} style=\"background:rgba(230,120,20,{alpha:.2})\" title=\"{a:.3}\">{}</span> ",
                escape(t)
            ));
        }
    }
    h.push_str("</div>\n");
    h
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\
code{background:#f3f3f3;padding:0 .2em;border-radius:3px}\
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:right}\
td:first-child,th:first-child{text-align:left}dt{font-weight:600}dd{margin:0 0 .5rem 1rem}\
small{color:#666}figure{margin:1rem 0}figcaption{color:#555;font-size:.9rem}.note{color:#555}\
tr.significant td{background:#eef6ee}\
.thumbs{margin:.2rem 0 .2rem 1rem}.thumbs img,figure.dissected img{margin-right:4px}.unit{margin:.6rem 0}.unit-head{font-size:.95rem}.snippet{font-family:ui-monospace,monospace;font-size:.85rem;margin:.15rem 0 .15rem 1rem}\
.snippet span{padding:0 1px;border-radius:2px}.snippet span.center{outline:1px solid #b55}\
.unit-page{border-top:1px solid #ddd;margin-top:1rem}.bin{color:#777;font-size:.8rem;margin-left:1rem}.nav{color:#555}";

/// Standard base64 (for images embedded as data URIs).
pub(crate) fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(A[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("<script>\"&'"), "&lt;script&gt;&quot;&amp;&#39;");
        assert_eq!(inline("a `<b>` c"), "a <code>&lt;b&gt;</code> c");
    }

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(input.as_bytes()), want);
        }
    }
}
