//! Characters refused in what people type (justifications, tickets, comments) and in local
//! paths: those that change how the rest of the text is shown or hide what it says.
//!
//! A justification `"ok\u{202E}gnp.exe"` is stored as typed but shown to approvers as
//! "okexe.png": bidirectional controls reorder what follows them, zero-width and other
//! format characters (Unicode category Cf) are invisible. Refused:
//! - control characters (Cc), except tab, line feed and carriage return where lines are allowed;
//! - bidirectional controls: U+202A–U+202E (embeddings, overrides), U+2066–U+2069 (isolates),
//!   U+200E, U+200F, U+061C (marks);
//! - every other format character (Cf): zero-width space U+200B, word joiner U+2060, byte order
//!   mark U+FEFF, soft hyphen U+00AD, invisible operators, tag characters, …
//!
//! Except where ordinary text needs them: zero-width (non-)joiners U+200C and U+200D between two
//! visible characters (Persian and Indic writing, emoji sequences like 👩‍💻), and tag characters in
//! an emoji tag sequence (a black flag U+1F3F4, tags, a cancel tag U+E007F: the flags of
//! England, Scotland, Wales). Combining marks, emoji, variation selectors and every script are
//! accepted.

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Why a character is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsafe {
    /// A control character (Cc).
    Control,
    /// A bidirectional control: reorders the text around it.
    Bidi,
    /// An invisible format character (Cf): zero-width, joiners out of place, tags, …
    Format,
}

impl Unsafe {
    /// How messages name it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Control => "a control character",
            Self::Bidi => "a bidirectional control character",
            Self::Format => "an invisible formatting character",
        }
    }
}

/// A refused character: where and what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// 1-based position among the text's characters.
    pub position: usize,
    /// The character.
    pub ch: char,
    /// Why.
    pub why: Unsafe,
}

/// Zero-width non-joiner and joiner.
const JOINERS: [char; 2] = ['\u{200C}', '\u{200D}'];
/// The base of emoji tag sequences (🏴).
const BLACK_FLAG: char = '\u{1F3F4}';
/// The end of a tag sequence.
const CANCEL_TAG: char = '\u{E007F}';

/// The bidirectional controls.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

fn is_tag(c: char) -> bool {
    ('\u{E0020}'..='\u{E007F}').contains(&c)
}

fn is_format(c: char) -> bool {
    c.general_category() == GeneralCategory::Format
}

/// A character a joiner may stand next to: visible, not a space, not itself invisible.
fn joinable(c: Option<&char>) -> bool {
    c.is_some_and(|c| !c.is_whitespace() && !c.is_control() && !is_format(*c))
}

/// The first refused character of `text`; `lines` allows tab, line feed and carriage return.
pub fn first_unsafe(text: &str, lines: bool) -> Option<Found> {
    let chars: Vec<char> = text.chars().collect();
    // Inside an emoji tag sequence: after a black flag, until the cancel tag.
    let mut in_tags = false;
    for (i, &c) in chars.iter().enumerate() {
        let why = if c.is_control() {
            (!(lines && matches!(c, '\n' | '\r' | '\t'))).then_some(Unsafe::Control)
        } else if is_bidi_control(c) {
            Some(Unsafe::Bidi)
        } else if is_tag(c) {
            let starts = i > 0 && chars[i - 1] == BLACK_FLAG;
            let ok = (in_tags || starts)
                && (c == CANCEL_TAG || chars.get(i + 1).copied().is_some_and(is_tag));
            in_tags = ok && c != CANCEL_TAG;
            (!ok).then_some(Unsafe::Format)
        } else if JOINERS.contains(&c) {
            let ok = i > 0 && joinable(chars.get(i - 1)) && joinable(chars.get(i + 1));
            (!ok).then_some(Unsafe::Format)
        } else if is_format(c) {
            Some(Unsafe::Format)
        } else {
            None
        };
        if let Some(why) = why {
            return Some(Found {
                position: i + 1,
                ch: c,
                why,
            });
        }
    }
    None
}

/// A local path to return to after sign-in (`next`, `return_to`): one leading `/` and not
/// `//` or `/\` (another host), no backslash, no whitespace, no refused character, at most 2048
/// bytes; anything else becomes `/`. Browsers drop tabs and line breaks from URLs, so
/// `"/\t/evil.example"` would lead elsewhere; a line break would not even fit a `Location`.
pub fn local_path(path: &str) -> String {
    let ok = path.starts_with('/')
        && !path.starts_with("//")
        && path.len() <= 2048
        && !path.chars().any(|c| c == '\\' || c.is_whitespace())
        && first_unsafe(path, false).is_none();
    if ok { path.to_owned() } else { "/".to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> Option<(usize, u32, Unsafe)> {
        first_unsafe(text, true).map(|f| (f.position, u32::from(f.ch), f.why))
    }

    #[test]
    fn bidi_controls_are_refused_with_their_position() {
        assert_eq!(
            refused("ok\u{202E}gnp.exe"),
            Some((3, 0x202E, Unsafe::Bidi))
        );
        for c in ('\u{202A}'..='\u{202E}')
            .chain('\u{2066}'..='\u{2069}')
            .chain(['\u{200E}', '\u{200F}', '\u{061C}'])
        {
            assert_eq!(
                refused(&format!("a{c}b")),
                Some((2, u32::from(c), Unsafe::Bidi))
            );
        }
    }

    #[test]
    fn zero_width_and_other_format_characters_are_refused() {
        for c in [
            '\u{200B}',
            '\u{2060}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{2062}',
            '\u{180E}',
            '\u{FFF9}',
            '\u{E0001}',
            '\u{E0041}',
            '\u{1BCA0}',
        ] {
            assert_eq!(
                refused(&format!("ab{c}cd")),
                Some((3, u32::from(c), Unsafe::Format)),
                "U+{:04X}",
                u32::from(c)
            );
        }
        // joiners out of place: at either end, next to a space, doubled
        for text in [
            "\u{200D}a",
            "a\u{200D}",
            "a \u{200C}b",
            "a\u{200D}\u{200D}b",
            "a\u{200D}\nb",
        ] {
            assert_eq!(refused(text).map(|r| r.2), Some(Unsafe::Format), "{text:?}");
        }
        // tags outside a flag, or a flag sequence never cancelled
        for text in [
            "x\u{E0067}\u{E007F}",
            "\u{1F3F4}\u{E0067}\u{E0062}",
            "\u{1F3F4}\u{E007F}\u{E0067}",
        ] {
            assert_eq!(refused(text).map(|r| r.2), Some(Unsafe::Format), "{text:?}");
        }
    }

    #[test]
    fn control_characters_are_refused_and_lines_only_where_allowed() {
        assert_eq!(refused("fix\0it"), Some((4, 0, Unsafe::Control)));
        assert_eq!(refused("a\u{85}b"), Some((2, 0x85, Unsafe::Control)));
        assert_eq!(refused("line\r\nnext\tcol"), None);
        assert_eq!(
            first_unsafe("a\nb", false).map(|f| f.why),
            Some(Unsafe::Control)
        );
    }

    #[test]
    fn ordinary_text_of_any_script_emoji_and_combining_marks_pass() {
        for text in [
            "déploiement du correctif",
            "Ελληνικά, русский, 中文, 日本語, 한국어",
            "עברית ومرحبا بالعالم", // right-to-left scripts, no controls
            "می‌خواهم",              // Persian with a zero-width non-joiner
            "क्‍ष",                   // Devanagari with a zero-width joiner
            "e\u{301}\u{308} a\u{20DD} n\u{303}", // combining marks
            "🚀 👍🏽 ❤️ 👩‍💻 👨‍👩‍👧",       // emoji, skin tone, variation selector, ZWJ sequences
            "\u{1F3F4}\u{E0067}\u{E0062}\u{E0065}\u{E006E}\u{E0067}\u{E007F} England",
        ] {
            assert_eq!(refused(text), None, "{text:?}");
        }
    }

    #[test]
    fn local_paths_stay_on_the_site() {
        assert_eq!(local_path("/requests/1?x=y%20z"), "/requests/1?x=y%20z");
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "/\t/evil.example/phish",
            "/\n/evil.example",
            "/a\r\nSet-Cookie: x=y",
            "/a b",
            "/\u{202E}moc.elpmaxe",
            "/\u{200B}/evil.example",
            "evil",
            "",
            "javascript:alert(1)",
        ] {
            assert_eq!(local_path(bad), "/", "{bad:?}");
        }
        assert_eq!(local_path(&format!("/{}", "a".repeat(2048))), "/");
    }
}
