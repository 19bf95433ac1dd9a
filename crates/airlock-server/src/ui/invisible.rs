//! Characters that change how text looks without being seen, made visible.
//!
//! An agent chooses its arguments, tool name and justification. Shown as they are, a U+202E
//! (right-to-left override) makes `{"path": "/etc/\u{202E}txt.dwssap"}` read as something harmless, a
//! U+200B splits a word a reviewer checks for, and tag characters (U+E0000 block) carry text no
//! one sees. The review UI shows every such character as a marker, `⟨U+202E⟩`, styled apart and
//! named on hover, and warns above the facts, so what a human approves is what the agent sent.
//!
//! Which characters: every Unicode format character (general category `Cf`: the zero-width
//! U+200B – U+200F, the bidirectional embeddings and overrides U+202A – U+202E and isolates
//! U+2066 – U+2069, U+FEFF, U+00AD, U+2060 – U+2064, the tag characters, …), the line and
//! paragraph separators U+2028 and U+2029, the blank fillers (U+115F, U+1160, U+3164, U+FFA0),
//! the combining grapheme joiner U+034F, and variation selectors, which can smuggle bytes after
//! a visible character. The one exception: a single U+FE0E or U+FE0F (text or emoji
//! presentation) right after a visible character, which is how emoji are written.

use std::borrow::Cow;

use maud::{Markup, html};
use serde_json::Value;
use unicode_general_category::{GeneralCategory, get_general_category};

fn is_variation_selector(c: char) -> bool {
    matches!(c, '\u{180B}'..='\u{180D}' | '\u{180F}' | '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}')
}

/// Whether `c` is hidden in itself, whatever comes before it.
fn is_hidden_char(c: char) -> bool {
    get_general_category(c) == GeneralCategory::Format
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{034F}' | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}')
        || is_variation_selector(c)
}

/// Whether `c`, coming after `previous`, is shown as a marker.
fn is_hidden(previous: Option<char>, c: char) -> bool {
    let presentation = matches!(c, '\u{FE0E}' | '\u{FE0F}');
    let after_visible = previous.is_some_and(|p| !is_hidden_char(p) && !p.is_whitespace());
    is_hidden_char(c) && !(presentation && after_visible)
}

/// The pieces of `text`: runs of ordinary text (`Ok`) and hidden characters (`Err`).
fn pieces(text: &str) -> Vec<Result<&str, char>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut previous = None;
    for (i, c) in text.char_indices() {
        if is_hidden(previous, c) {
            if start < i {
                out.push(Ok(&text[start..i]));
            }
            out.push(Err(c));
            start = i + c.len_utf8();
        }
        previous = Some(c);
    }
    if start < text.len() {
        out.push(Ok(&text[start..]));
    }
    out
}

/// Whether `text` holds a character [`reveal`] would mark.
pub(super) fn contains_hidden(text: &str) -> bool {
    pieces(text).iter().any(Result::is_err)
}

/// Whether any key or string in `value` holds a character [`reveal`] would mark.
pub(super) fn value_contains_hidden(value: &Value) -> bool {
    match value {
        Value::String(s) => contains_hidden(s),
        Value::Array(items) => items.iter().any(value_contains_hidden),
        Value::Object(map) => map.iter().any(|(k, v)| contains_hidden(k) || value_contains_hidden(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// The marker of a hidden character: `⟨U+202E⟩`.
fn marker(c: char) -> String {
    format!("⟨U+{:04X}⟩", u32::from(c))
}

/// What a hidden character does, for the marker's tooltip.
fn describe(c: char) -> &'static str {
    match c {
        '\u{00AD}' => "soft hyphen (invisible)",
        '\u{200B}' => "zero width space",
        '\u{200C}' => "zero width non-joiner",
        '\u{200D}' => "zero width joiner",
        '\u{200E}' => "left-to-right mark",
        '\u{200F}' => "right-to-left mark",
        '\u{202A}' => "left-to-right embedding: changes the direction of the text after it",
        '\u{202B}' => "right-to-left embedding: changes the direction of the text after it",
        '\u{202C}' => "pop directional formatting",
        '\u{202D}' => "left-to-right override: reorders the text after it",
        '\u{202E}' => "right-to-left override: reverses the text after it",
        '\u{2066}' => "left-to-right isolate",
        '\u{2067}' => "right-to-left isolate: changes the direction of the text after it",
        '\u{2068}' => "first strong isolate",
        '\u{2069}' => "pop directional isolate",
        '\u{2028}' => "line separator",
        '\u{2029}' => "paragraph separator",
        '\u{2060}' => "word joiner (invisible)",
        '\u{FEFF}' => "zero width no-break space (byte order mark)",
        '\u{E0000}'..='\u{E007F}' => "tag character (invisible; can carry hidden text)",
        c if is_variation_selector(c) => "variation selector (invisible)",
        _ => "invisible format character",
    }
}

/// `text` with each hidden character replaced by its marker, for places that take plain text
/// (the page title, attributes).
pub(super) fn reveal_plain(text: &str) -> Cow<'_, str> {
    let pieces = pieces(text);
    if pieces.iter().all(Result::is_ok) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        pieces
            .into_iter()
            .map(|p| match p {
                Ok(run) => Cow::Borrowed(run),
                Err(c) => Cow::Owned(marker(c)),
            })
            .collect(),
    )
}

/// `text` with each hidden character shown as a marked-up `⟨U+XXXX⟩` that says what it does on
/// hover. Everything is escaped by `maud`.
pub(super) fn reveal(text: &str) -> Markup {
    html! {
        @for piece in pieces(text) {
            @match piece {
                Ok(run) => (run),
                Err(c) => mark.hidden-char title=(describe(c)) { (marker(c)) },
            }
        }
    }
}

/// The warning above an action's facts, one line per part that holds hidden characters, each
/// the start of a sentence with its verb ("The arguments contain", "The justification contains").
pub(super) fn warning(parts: &[&str]) -> Markup {
    if parts.is_empty() {
        return html! {};
    }
    html! {
        div.flash.error.hidden-chars role="alert" {
            @for part in parts {
                strong { (part) " invisible or direction-changing characters." } " "
            }
            "They are shown here as " mark.hidden-char { "⟨U+…⟩" } " markers (hover one to see what it does). \
             Elsewhere the same text can read differently from what it is: check what is marked before you vote."
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_character_is_marked() {
        let listed = ('\u{200B}'..='\u{200F}')
            .chain('\u{202A}'..='\u{202E}')
            .chain('\u{2066}'..='\u{2069}')
            .chain(['\u{FEFF}', '\u{00AD}', '\u{2060}', '\u{061C}', '\u{180E}', '\u{E0001}', '\u{E0041}'])
            .chain(['\u{2028}', '\u{2029}', '\u{3164}', '\u{115F}', '\u{034F}', '\u{FE00}', '\u{E0100}']);
        for c in listed {
            let text = format!("a{c}b");
            assert!(contains_hidden(&text), "U+{:04X}", u32::from(c));
            assert_eq!(reveal_plain(&text), format!("a⟨U+{:04X}⟩b", u32::from(c)));
        }
        // Every `Cf` character, not just the listed ones.
        let all_cf = (0..=0x10FFFFu32)
            .filter_map(char::from_u32)
            .filter(|c| get_general_category(*c) == GeneralCategory::Format);
        for c in all_cf {
            assert!(contains_hidden(&format!("x{c}")), "U+{:04X}", u32::from(c));
        }
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        for text in ["plain", "Grüße, naïve café", "日本語", "עברית", "emoji ❤️ and ☺︎", "tab\tnew\nline", ""]
        {
            assert!(!contains_hidden(text), "{text:?}");
            assert!(matches!(reveal_plain(text), Cow::Borrowed(_)), "{text:?}");
        }
        // A run of presentation selectors is not how emoji are written.
        assert!(contains_hidden("❤\u{FE0F}\u{FE0F}"));
        assert!(contains_hidden("\u{FE0F}"));
    }

    #[test]
    fn markers_are_marked_up_and_escaped() {
        let html = reveal("<b>\u{202E}gnp.exe").into_string();
        assert_eq!(
            html,
            "&lt;b&gt;<mark class=\"hidden-char\" title=\"right-to-left override: reverses the text after it\">\
             ⟨U+202E⟩</mark>gnp.exe"
        );
        assert!(!html.contains('\u{202E}'));
    }

    #[test]
    fn values_are_searched_in_keys_and_strings() {
        assert!(value_contains_hidden(&serde_json::json!({"a": [1, {"b": "x\u{200B}"}]})));
        assert!(value_contains_hidden(&serde_json::json!({"k\u{2066}": 1})));
        assert!(!value_contains_hidden(&serde_json::json!({"a": [1, {"b": "x"}], "n": null})));
    }

    #[test]
    fn the_warning_names_what_holds_them() {
        let two = warning(&["The arguments contain", "The justification contains"]).into_string();
        assert!(two.contains("The arguments contain invisible or direction-changing characters."), "{two}");
        assert!(two.contains("The justification contains invisible or direction-changing characters."), "{two}");
        assert_eq!(warning(&[]).into_string(), "");
    }
}
