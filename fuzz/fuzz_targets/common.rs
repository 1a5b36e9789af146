//! Shared by every target: the readers hand the parsers a `String` (read_to_string), so an
//! input that is not UTF-8 never reaches a parser and is skipped here.

pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}
