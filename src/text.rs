//! Text from files made safe to show: names read from weights files, file names and paths can
//! hold terminal escape sequences (which recolour, retitle or rewrite a terminal) and line
//! breaks (which forge extra lines in logs and status bars).

use std::borrow::Cow;

/// `s` with every control character (C0, DEL, C1: `char::is_control`) and every bidirectional
/// override written as `\u{..}`, so that printing it shows the characters instead of obeying
/// them; text without one is borrowed unchanged. Everything else, backslashes and non-ASCII
/// letters included, is kept.
///
/// For text that reaches a terminal, a log or a status bar from outside the program: a model's
/// `name` metadata, a path given on the command line or found in a folder.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(hidden) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if hidden(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Characters that act on the display rather than show: controls, and the bidirectional
/// embeddings, overrides and isolates that make text read in another order than it is stored.
fn hidden(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for s in [
            "",
            "emocam ensemble",
            r"a\b",
            "mini-Xception (FER2013, 66%)",
            "Zoë 😀",
        ] {
            assert!(matches!(printable(s), Cow::Borrowed(b) if b == s), "{s}");
        }
    }

    #[test]
    fn escape_sequences_and_line_breaks_are_shown_not_obeyed() {
        let name = "evil\x1b]0;pwned\x07\x1b[2J\r\nfake line\u{9b}31m\x7f";
        let p = printable(name);
        assert_eq!(
            p,
            "evil\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\u{d}\\u{a}fake line\\u{9b}31m\\u{7f}"
        );
        assert!(!p.chars().any(char::is_control), "{p}");
        assert_eq!(printable("model\u{202e}txt.exe"), "model\\u{202e}txt.exe");
    }

    #[test]
    fn tabs_are_escaped_and_backslashes_kept() {
        assert_eq!(printable("a\tb"), r"a\u{9}b");
        assert!(matches!(printable(r"a\b"), Cow::Borrowed(r"a\b")));
    }
}
