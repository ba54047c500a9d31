//! Text that other people control, made safe to show on root's terminal.
//!
//! A process name (`/proc/<pid>/comm`, set by its owner with `prctl(PR_SET_NAME)`), a
//! definition file in `/etc/mdevctl.d`, a sysfs attribute or a directory name may hold
//! terminal escape sequences, line breaks that forge output lines, bidirectional
//! overrides that reorder what is shown, or bytes that are not UTF-8. [`escape`] turns
//! each of those into a visible escape (`\x1b`, `\n`, `\u{202e}`, `\xff`), and doubles
//! the backslash so the escaped text is unambiguous; [`terminal_safe`] is the last
//! line of defence applied to whole messages (it keeps their own line breaks).

use std::borrow::Cow;
use std::fmt::Write as _;

/// Characters shown as an escape: every control character (C0, DEL, C1) and the
/// invisible format characters that reorder or hide text (bidi embeddings, overrides
/// and isolates, zero-width characters, line/paragraph separators, the BOM).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
        )
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        c if (c as u32) < 0x100 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\u{{{:04x}}}", c as u32);
        }
    }
}

/// One untrusted value (a process name, an attribute, a file name) as printable text
/// on one line: controls and invisible format characters become escapes, `\` becomes
/// `\\`. Text without any of those is returned as is.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c == '\\' || needs_escape(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if needs_escape(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Like [`escape`] for bytes that need not be UTF-8: each invalid byte becomes `\xNN`.
pub fn escape_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        out.push_str(&escape(chunk.valid()));
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// A whole message for the terminal: every control or invisible format character
/// except the line break and the tab becomes an escape. Backslashes are left alone
/// (the fields inside were escaped already; this only makes sure nothing reaches the
/// terminal that it would act on).
pub fn terminal_safe(s: &str) -> Cow<'_, str> {
    let bad = |c: char| c != '\n' && c != '\t' && needs_escape(c);
    if !s.chars().any(bad) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if bad(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_untouched() {
        for s in [
            "qemu-system-x86",
            "gvt_rs-GVTsim_64M",
            "1920x1200",
            "é ü 日本",
            "",
        ] {
            assert!(matches!(escape(s), Cow::Borrowed(_)), "{s}");
            assert!(matches!(terminal_safe(s), Cow::Borrowed(_)), "{s}");
        }
    }

    #[test]
    fn controls_and_format_characters_become_visible() {
        assert_eq!(
            escape("\x1b[2J\x1b]0;pwned\x07"),
            "\\x1b[2J\\x1b]0;pwned\\x07"
        );
        assert_eq!(escape("a\nb\tc\rd"), "a\\nb\\tc\\rd");
        assert_eq!(escape("del\x7f c1\u{9b}31m"), "del\\x7f c1\\x9b31m");
        assert_eq!(escape("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(
            escape("zero\u{200b}width\u{feff}"),
            "zero\\u{200b}width\\u{feff}"
        );
        // The backslash is doubled, so a name that spells an escape stays distinguishable.
        assert_eq!(escape("a\\x1b"), "a\\\\x1b");
        assert_eq!(escape_bytes(b"ok\xff\xfe\x1bz"), "ok\\xff\\xfe\\x1bz");
        assert_eq!(escape_bytes("日本".as_bytes()), "日本");
    }

    #[test]
    fn terminal_safe_keeps_line_breaks_and_backslashes() {
        assert_eq!(terminal_safe("a\nb\tc\\d"), "a\nb\tc\\d");
        assert_eq!(terminal_safe("x\x1b[31my\r\u{9b}"), "x\\x1b[31my\\r\\x9b");
    }

    #[test]
    fn output_never_holds_a_control_character() {
        // Every char below U+0100 and a few format characters, alone and in a row.
        let all: String = (0u32..0x100)
            .filter_map(char::from_u32)
            .chain("\u{202e}\u{2066}\u{200d}".chars())
            .collect();
        for s in [
            escape(&all).into_owned(),
            escape_bytes(&[0x80, 0x1b, 0xc0]),
            terminal_safe(&all).into_owned(),
        ] {
            assert!(
                !s.chars().any(|c| needs_escape(c) && c != '\n' && c != '\t'),
                "{s:?}"
            );
        }
        assert!(!escape(&all).contains('\n'));
    }
}
