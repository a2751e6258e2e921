//! Text hygiene for everything a notification carries out of the broker.
//!
//! Requesters write justifications, comments and (through the `IdP`) their own
//! names; none of that may add a mail header, reorder text on screen or
//! smuggle a disguised link into a Teams card.

use time::OffsetDateTime;
use time::macros::format_description;

/// Characters that reorder text on screen (bidi embeddings, overrides,
/// isolates, marks) — a classic way to make `evil.com` read as `moc.live`.
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Characters that end a line somewhere: CR, LF, NEL, line and paragraph separators.
fn is_line_break(c: char) -> bool {
    matches!(c, '\r' | '\n' | '\u{0085}' | '\u{2028}' | '\u{2029}')
}

/// Cuts `s` to at most `max` characters, ending with `…` when something was cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// One line fit for a mail header (subject, display name).
///
/// Every control character (CR, LF, TAB, NUL, DEL, C1), line separator and
/// bidi control becomes a space, whitespace runs collapse to one space, and
/// the result is cut to `max` characters. Nothing that comes out can start a
/// new header line.
pub fn header_text(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars() {
        let c = if c.is_control() || is_line_break(c) || is_bidi_control(c) || c.is_whitespace() {
            ' '
        } else {
            c
        };
        if c == ' ' {
            if !space && !out.is_empty() {
                out.push(' ');
            }
            space = true;
        } else {
            out.push(c);
            space = false;
        }
    }
    truncate(out.trim_end(), max)
}

/// Multi-line body text: line breaks of any kind become `\n`, tabs stay,
/// other control and bidi characters are dropped; cut to `max` characters.
pub fn body_text(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' {
            if chars.peek() == Some(&'\n') {
                chars.next();
            }
            out.push('\n');
        } else if is_line_break(c) {
            out.push('\n');
        } else if c == '\t' || !(c.is_control() || is_bidi_control(c)) {
            out.push(c);
        }
    }
    truncate(out.trim_end(), max)
}

/// One line for an Adaptive Card `TextBlock` or `Fact.value`.
///
/// Teams renders a Markdown subset there, links included, so on top of
/// [`header_text`] the link syntax `](` is broken with a zero-width space:
/// user text can show a URL but never hide one behind other words.
pub fn card_text(s: &str, max: usize) -> String {
    header_text(s, max).replace("](", "]\u{200B}(")
}

/// A time as people read it in a notification: `2026-05-01 14:05 UTC`.
pub fn when(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(format_description!(
            "[year]-[month]-[day] [hour]:[minute] UTC"
        ))
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_text_cannot_start_a_header() {
        let s = header_text("x\r\nBcc: evil@example.com", 200);
        assert_eq!(s, "x Bcc: evil@example.com");
        for evil in [
            "a\rb",
            "a\nb",
            "a\u{0}b",
            "a\u{7f}b",
            "a\u{85}b",
            "a\u{2028}b",
            "a\tb",
        ] {
            let s = header_text(evil, 200);
            assert_eq!(s, "a b", "{evil:?}");
        }
        assert!(!header_text("\r\n\r\nX-Injected: 1", 200).contains('\n'));
        assert_eq!(header_text("  lots   of\n\n space  ", 200), "lots of space");
    }

    #[test]
    fn header_text_drops_bidi_overrides() {
        assert_eq!(header_text("pay\u{202E}moc.live", 200), "pay moc.live");
        assert_eq!(header_text("a\u{2066}b\u{2069}", 200), "a b");
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        assert_eq!(truncate("ééééé", 5), "ééééé");
        assert_eq!(truncate("ééééé", 3), "éé…");
        assert_eq!(header_text(&"a".repeat(500), 10).chars().count(), 10);
    }

    #[test]
    fn body_text_keeps_lines_and_drops_controls() {
        assert_eq!(
            body_text("one\r\ntwo\rthree\u{2029}four", 100),
            "one\ntwo\nthree\nfour"
        );
        assert_eq!(body_text("a\u{1b}[31mred\u{7}", 100), "a[31mred");
        assert_eq!(body_text("tab\there", 100), "tab\there");
    }

    #[test]
    fn card_text_breaks_markdown_links() {
        let s = card_text("see [Approve now](https://evil.example)", 200);
        assert!(!s.contains("]("), "{s}");
        assert!(
            s.contains("https://evil.example"),
            "the URL stays visible: {s}"
        );
        assert!(!card_text("x\r\ny", 200).contains(['\r', '\n']));
    }

    #[test]
    fn times_read_as_utc() {
        let t = time::macros::datetime!(2026-05-01 16:05 +02:00);
        assert_eq!(when(t), "2026-05-01 14:05 UTC");
    }
}
