//! Character sets and length checks for the text fields of an envelope.

use super::violation::{Field, Violation};

/// Which bytes a field may hold, with a name for error messages.
#[derive(Clone, Copy)]
pub(super) struct Charset {
    pub name: &'static str,
    pub allows: fn(u8) -> bool,
}

fn graphic(b: u8) -> bool {
    b.is_ascii_graphic()
}

fn printable(b: u8) -> bool {
    b == b' ' || b.is_ascii_graphic()
}

/// Command names: dotted identifiers (`zos.deployment.deploy`, `rmb.version`). No `/`,
/// `{` or `"`, so a command cannot absorb a schema (always `type/subtype`) or the start
/// of a JSON payload.
fn name(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._-:".contains(&b)
}

/// RFC 9110 `tchar`, plus what a media type with parameters needs (`/`, `;`, `=`, space).
fn media_type(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/;= ".contains(&b)
}

/// Host names, IPv4 and bracketed IPv6 literals, an optional `:port`; `_` because
/// tfchain joins a twin's relays with it and the Go client sends that in `federation`.
fn host(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b".-_:[]".contains(&b)
}

pub(super) const COMMAND: Charset = Charset {
    name: "letters, digits and . _ - :",
    allows: name,
};

/// Identifiers: uid, session id. No spaces or control characters, so they can
/// be logged, used in Redis key names and printed as `twin:session` safely.
pub(super) const TOKEN: Charset = Charset {
    name: "printable ASCII without spaces",
    allows: graphic,
};

/// Tags are tokens separated by commas or spaces.
pub(super) const TAGS: Charset = Charset {
    name: "printable ASCII",
    allows: printable,
};

pub(super) const SCHEMA: Charset = Charset {
    name: "a media type such as application/json",
    allows: media_type,
};

pub(super) const HOST: Charset = Charset {
    name: "host name characters, ':' and '[]'",
    allows: host,
};

/// Checks a text field's length and characters. `allow_empty` is false for fields whose
/// empty value no real client sends and that would be meaningless (a uid, a command).
pub(super) fn check_text(
    field: Field,
    value: &[u8],
    max: usize,
    charset: Charset,
    allow_empty: bool,
) -> Result<(), Violation> {
    if value.len() > max {
        return Err(Violation::TooLong {
            field,
            len: value.len(),
            max,
        });
    }
    if value.is_empty() && !allow_empty {
        return Err(Violation::Empty { field });
    }
    match value.iter().position(|b| !(charset.allows)(*b)) {
        Some(at) => Err(Violation::BadCharacter {
            field,
            at,
            byte: value[at],
            allowed: charset.name,
        }),
        None => Ok(()),
    }
}

/// The top-level media types registered with IANA (RFC 6838 §4.2 and later additions).
const TOP_LEVEL_TYPES: [&str; 11] = [
    "application",
    "audio",
    "example",
    "font",
    "haptics",
    "image",
    "message",
    "model",
    "multipart",
    "text",
    "video",
];

/// A schema is empty (older rmb-peer applications send `""`) or a media type
/// `type/subtype[; parameters]` whose type is registered. Requiring the shape refuses
/// the shifts that glue a command, a session id or payload bytes onto a schema
/// (`zos.deployment.deploy` + `application/json` → `zos.deployment.dep` +
/// `loyapplication/json`).
pub(super) fn check_schema(value: &[u8], max: usize) -> Result<(), Violation> {
    check_text(Field::Schema, value, max, SCHEMA, true)?;
    if value.is_empty() {
        return Ok(());
    }
    let essence = value.split(|b| *b == b';').next().unwrap_or_default();
    let mut parts = essence.split(|b| *b == b'/');
    let (kind, subtype) = (parts.next(), parts.next());
    let well_formed = match (kind, subtype, parts.next()) {
        (Some(kind), Some(subtype), None) => {
            !subtype.is_empty()
                && !subtype.contains(&b' ')
                && TOP_LEVEL_TYPES
                    .iter()
                    .any(|t| t.as_bytes().eq_ignore_ascii_case(kind))
        }
        _ => false,
    };
    if well_formed {
        Ok(())
    } else {
        Err(Violation::NotAMediaType {
            schema: String::from_utf8_lossy(value).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_checked_before_characters_and_the_limit_itself_is_allowed() {
        assert!(check_text(Field::Uid, b"abc", 3, TOKEN, false).is_ok());
        assert_eq!(
            check_text(Field::Uid, b"ab\n", 2, TOKEN, false),
            Err(Violation::TooLong {
                field: Field::Uid,
                len: 3,
                max: 2
            })
        );
    }

    #[test]
    fn empty_values_are_refused_only_where_asked() {
        assert_eq!(
            check_text(Field::Uid, b"", 3, TOKEN, false),
            Err(Violation::Empty { field: Field::Uid })
        );
        assert!(check_text(Field::Tags, b"", 3, TAGS, true).is_ok());
    }

    #[test]
    fn the_first_bad_byte_is_reported() {
        assert_eq!(
            check_text(Field::Command, "a.bé".as_bytes(), 10, TOKEN, false),
            Err(Violation::BadCharacter {
                field: Field::Command,
                at: 3,
                byte: 0xc3,
                allowed: TOKEN.name
            })
        );
    }

    #[test]
    fn charsets_hold_what_real_clients_send() {
        let ok = |v: &str, c: Charset| v.bytes().all(c.allows);
        assert!(ok("2c6bd4a8-1c5f-4a8e-9d0e-5b1f1f3f0a01", TOKEN));
        assert!(ok("zos.deployment.deploy", COMMAND));
        assert!(ok("zos.network.public_config_get", COMMAND));
        assert!(!ok("zos.deployment.deployapplication/json", COMMAND));
        assert!(!ok("calc.add{\"a\"", COMMAND));
        assert!(ok("dedup, fail-fast", TAGS));
        assert!(ok("application/json", SCHEMA));
        assert!(ok("text/plain; charset=utf-8", SCHEMA));
        assert!(ok("relay.grid.tf", HOST));
        assert!(ok("127.0.0.1:8080", HOST));
        assert!(ok("[::1]:8080", HOST));
        assert!(ok("relay.grid.tf_relay.02.grid.tf", HOST));
        assert!(!ok("a b", TOKEN));
        assert!(!ok("a\tb", TAGS));
        assert!(!ok("application/json{\"a", SCHEMA));
        assert!(!ok("relay/x", HOST));
    }

    #[test]
    fn schemas_are_empty_or_registered_media_types() {
        for good in [
            "",
            "application/json",
            "text/plain",
            "Application/JSON",
            "text/plain; charset=utf-8",
            "application/vnd.api+json",
        ] {
            assert!(check_schema(good.as_bytes(), 128).is_ok(), "{good}");
        }
        for bad in [
            "json",
            "loyapplication/json",
            "lication/json",
            "application/",
            "/json",
            "application/json/x",
            "application/js on",
        ] {
            assert_eq!(
                check_schema(bad.as_bytes(), 128),
                Err(Violation::NotAMediaType { schema: bad.into() }),
                "{bad}"
            );
        }
        assert!(matches!(
            check_schema(b"application/json{", 128),
            Err(Violation::BadCharacter { .. })
        ));
    }
}
