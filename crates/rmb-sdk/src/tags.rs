//! Envelope tags: comma or space separated tokens, covered by the signature, chosen by
//! whoever signs the envelope.

/// The token our receivers put in the tags of every reply they sign: "I drop copies of
/// requests I have seen" (docs/compatibility.md, "Not running a request twice").
/// Existing clients ignore tokens they do not know.
pub const DEDUP: &str = "dedup";

/// Whether `tags` hold `token`.
pub(crate) fn has(tags: Option<&str>, token: &str) -> bool {
    tags.is_some_and(|tags| tokens(tags).any(|t| t == token))
}

/// `tags` with `token` added (unless already there), separated by a comma.
pub(crate) fn with(tags: Option<String>, token: &str) -> Option<String> {
    match tags {
        Some(tags) if has(Some(&tags), token) => Some(tags),
        Some(tags) if tokens(&tags).next().is_some() => Some(format!("{tags},{token}")),
        _ => Some(token.to_string()),
    }
}

fn tokens(tags: &str) -> impl Iterator<Item = &str> {
    tags.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_comma_or_space_separated() {
        assert!(has(Some("dedup"), DEDUP));
        assert!(has(Some("fail-fast, dedup"), DEDUP));
        assert!(has(Some("a b\tdedup"), DEDUP));
        assert!(!has(Some("dedupe,xdedup"), DEDUP));
        assert!(!has(Some(""), DEDUP));
        assert!(!has(None, DEDUP));
    }

    #[test]
    fn adding_a_token_keeps_what_was_there() {
        assert_eq!(with(None, DEDUP).as_deref(), Some("dedup"));
        assert_eq!(with(Some(String::new()), DEDUP).as_deref(), Some("dedup"));
        assert_eq!(
            with(Some("fail-fast".into()), DEDUP).as_deref(),
            Some("fail-fast,dedup")
        );
        assert_eq!(
            with(Some("x dedup".into()), DEDUP).as_deref(),
            Some("x dedup")
        );
    }
}
