//! What an account may hold, and its one canonical form: relay names and the e2e key.
//! Pure. The server applies these rules to what it stores; the client applies the same
//! rules to what it reads, so a record from node-registrar (which stores whatever it was
//! sent) looks like one of ours.
//!
//! Relays are stored as `host` or `host:port`, lower case. Clients send more: zos4 and
//! the Go client register `wss://relay.example.com` URLs. [`relay`] accepts
//! `host[:port]` and `ws://` / `wss://` URLs with an empty path, and returns the
//! `host[:port]` form (the scheme's default port dropped).
//!
//! The e2e key (`rmb_enc_key`) is a 33-byte compressed secp256k1 key. We write it as hex;
//! node-registrar documents base64, and its clients send `""` for "none". [`e2e_key`]
//! reads all three.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;

/// At most this many relays per twin.
pub const MAX_RELAYS: usize = 8;
/// Longest relay entry accepted as sent (a URL: scheme, 253-byte DNS name, port, `/`).
pub const MAX_RELAY_LEN: usize = 6 + 253 + 6 + 1;

/// Why a relay list or e2e key was refused (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    #[error("too many relays: {0} given, at most {MAX_RELAYS} allowed")]
    TooManyRelays(usize),
    #[error("relay {0:?} is listed twice; list each relay once")]
    DuplicateRelay(String),
    #[error("relay {entry:?} is not valid: {reason}; use host or host:port (a DNS name or IPv4 address, port 1-65535), or a ws:// or wss:// URL without a path")]
    BadRelay { entry: String, reason: &'static str },
    #[error("rmb_enc_key is neither hex nor base64 of 33 bytes ({0}); send the 33-byte compressed secp256k1 key as 66 hex digits")]
    E2eKeyEncoding(String),
    #[error("rmb_enc_key is not a valid key ({0}); send a 33-byte compressed secp256k1 public key (02/03 + 32 bytes)")]
    E2eKey(String),
}

/// Checks a whole relay list and returns it normalised: each entry valid, at most
/// [`MAX_RELAYS`], no duplicates once normalised.
pub fn relays(list: &[String]) -> Result<Vec<String>, ValidationError> {
    if list.len() > MAX_RELAYS {
        return Err(ValidationError::TooManyRelays(list.len()));
    }
    let mut seen = HashSet::with_capacity(list.len());
    let mut normalised = Vec::with_capacity(list.len());
    for entry in list {
        let name = relay(entry)?;
        if !seen.insert(name.clone()) {
            return Err(ValidationError::DuplicateRelay(entry.clone()));
        }
        normalised.push(name);
    }
    Ok(normalised)
}

/// The relays of a record read from a registrar, normalised; entries that are not valid
/// relay names, duplicates and entries past [`MAX_RELAYS`] are dropped (a registrar that
/// does not check what it stores must not make lookups fail, nor grow the cache).
pub fn relays_lenient(list: &[String]) -> Vec<String> {
    let mut normalised: Vec<String> = Vec::with_capacity(list.len().min(MAX_RELAYS));
    for entry in list {
        if normalised.len() == MAX_RELAYS {
            break;
        }
        match relay(entry) {
            Ok(name) if !normalised.contains(&name) => normalised.push(name),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "ignoring a relay entry of a registrar record"),
        }
    }
    normalised
}

/// One relay entry in its stored form: `host` or `host:port`, lower case, from
/// `host[:port]` or a `ws://` / `wss://` URL whose path is empty or `/`.
pub fn relay(entry: &str) -> Result<String, ValidationError> {
    let bad = |reason| ValidationError::BadRelay {
        entry: entry.chars().take(MAX_RELAY_LEN).collect(),
        reason,
    };
    if entry.len() > MAX_RELAY_LEN {
        return Err(bad("it is too long"));
    }
    let lower = entry.to_ascii_lowercase();
    let (rest, default_port) = if let Some(rest) = lower.strip_prefix("wss://") {
        (rest, Some("443"))
    } else if let Some(rest) = lower.strip_prefix("ws://") {
        (rest, Some("80"))
    } else if lower.contains("://") {
        return Err(bad("only ws:// and wss:// URLs name a relay"));
    } else {
        (lower.as_str(), None)
    };
    let authority = match default_port {
        Some(_) => rest.strip_suffix('/').unwrap_or(rest),
        None => rest,
    };
    if authority.contains(['/', '?', '#', '@']) {
        return Err(bad(
            "a relay is a host, not a URL with a path, query or user",
        ));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("the port is not a number"));
        }
        match port.parse::<u32>() {
            Ok(1..=65535) => {}
            _ => return Err(bad("the port is outside 1-65535")),
        }
    }
    hostname(host).map_err(bad)?;
    Ok(match port {
        Some(port) if Some(port) != default_port => format!("{host}:{port}"),
        _ => host.to_string(),
    })
}

fn hostname(host: &str) -> Result<(), &'static str> {
    if host.is_empty() {
        return Err("the host is empty");
    }
    if host.len() > 253 {
        return Err("the host is longer than 253 characters");
    }
    let mut all_numeric = true;
    for label in host.split('.') {
        if label.is_empty() {
            return Err("the host has an empty label (leading, trailing or double dot)");
        }
        if label.len() > 63 {
            return Err("a host label is longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("the host has a character other than letters, digits, '-' and '.'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a host label starts or ends with '-'");
        }
        all_numeric &= label.bytes().all(|b| b.is_ascii_digit());
    }
    // "300.1.2.3" or "1.2.3" look like addresses but are not valid ones.
    if all_numeric && host.parse::<Ipv4Addr>().is_err() {
        return Err("the host looks like an IPv4 address but is not a valid one");
    }
    Ok(())
}

/// Decodes and checks the e2e key: `""` is no key; otherwise hex (an optional `0x`) or
/// base64 (standard or URL-safe, padded or not) of a compressed secp256k1 point.
pub fn e2e_key(text: &str) -> Result<Option<[u8; 33]>, ValidationError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let digits = text.strip_prefix("0x").unwrap_or(text);
    let bytes = if digits.len() == 66 && digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(digits).map_err(|e| ValidationError::E2eKeyEncoding(e.to_string()))?
    } else {
        [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .ok_or_else(|| ValidationError::E2eKeyEncoding(format!("{} characters", text.len())))?
    };
    rmb_core::e2e::parse_public_key(&bytes).map_err(|e| ValidationError::E2eKey(e.to_string()))?;
    Ok(Some(
        bytes
            .try_into()
            .expect("parse_public_key checked the length"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn accepts_names_ipv4_ports_and_normalises_urls() {
        for (given, stored) in [
            ("relay.example.com", "relay.example.com"),
            ("Relay.Example.COM", "relay.example.com"),
            ("localhost", "localhost"),
            ("r1", "r1"),
            ("a-b.c-d.io:443", "a-b.c-d.io:443"),
            ("127.0.0.1", "127.0.0.1"),
            ("10.0.0.1:8080", "10.0.0.1:8080"),
            ("relay:1", "relay:1"),
            ("relay:65535", "relay:65535"),
            ("1relay.example", "1relay.example"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            // What zos4 and the Go client register (zosbase environment.go).
            ("wss://relay.dev.grid.tf", "relay.dev.grid.tf"),
            ("wss://relay.02.dev.grid.tf/", "relay.02.dev.grid.tf"),
            ("wss://relay.example.com:443", "relay.example.com"),
            ("wss://relay.example.com:8443/", "relay.example.com:8443"),
            ("ws://127.0.0.1:8081", "127.0.0.1:8081"),
            ("ws://relay.example.com:80", "relay.example.com"),
            ("WSS://RELAY.EXAMPLE.COM", "relay.example.com"),
        ] {
            assert_eq!(
                relay(given).unwrap_or_else(|e| panic!("{given}: {e}")),
                stored
            );
        }
        let long_label = "a".repeat(63);
        relay(&format!("{long_label}.com")).unwrap();
    }

    #[test]
    fn refuses_bad_hosts_ports_and_urls() {
        let too_long_label = format!("{}.com", "a".repeat(64));
        let too_long_host = ["abcdefghi"; 26].join(".");
        let way_too_long = "a".repeat(10_000);
        for bad in [
            "",
            ":80",
            "relay:",
            "relay:0",
            "relay:65536",
            "relay:+80",
            "relay:8o",
            "relay:123456",
            "-relay.com",
            "relay-.com",
            "re_lay.com",
            "relay..com",
            ".relay.com",
            "relay.com.",
            "relay com",
            "https://relay.com",
            "wss://relay.com/path",
            "wss://user@relay.com",
            "wss://relay.com?x=1",
            "wss://",
            "relay.com/path",
            "256.1.1.1",
            "1.2.3",
            "[::1]:80",
            "::1",
            "relay.com:80:90",
            "relé.com",
            too_long_label.as_str(),
            too_long_host.as_str(),
            way_too_long.as_str(),
        ] {
            let err = relay(bad).expect_err(bad);
            assert!(matches!(err, ValidationError::BadRelay { .. }), "{bad}");
            assert!(err.to_string().len() < 600, "the message stays short");
        }
    }

    #[test]
    fn list_limits_and_duplicates_after_normalising() {
        assert_eq!(relays(&[]).unwrap(), Vec::<String>::new());
        let eight: Vec<String> = (0..8).map(|i| format!("r{i}.example")).collect();
        assert_eq!(relays(&eight).unwrap(), eight);
        let nine: Vec<String> = (0..9).map(|i| format!("r{i}.example")).collect();
        assert_eq!(relays(&nine), Err(ValidationError::TooManyRelays(9)));
        assert!(matches!(
            relays(&strings(&["a.com", "b.com", "A.com"])),
            Err(ValidationError::DuplicateRelay(_))
        ));
        assert!(matches!(
            relays(&strings(&["a.com", "wss://a.com/"])),
            Err(ValidationError::DuplicateRelay(_))
        ));
        // Same host, different ports: distinct relays.
        relays(&strings(&["a.com:1", "a.com:2"])).unwrap();
        assert!(matches!(
            relays(&strings(&["a.com", "bad host"])),
            Err(ValidationError::BadRelay { .. })
        ));
    }

    #[test]
    fn lenient_reading_keeps_what_names_a_relay() {
        let read = relays_lenient(&strings(&[
            "wss://relay.dev.grid.tf",
            "not a relay",
            "RELAY.dev.grid.tf",
            "r2.example:8443",
        ]));
        assert_eq!(read, strings(&["relay.dev.grid.tf", "r2.example:8443"]));
        let many: Vec<String> = (0..100).map(|i| format!("r{i}.example")).collect();
        assert_eq!(relays_lenient(&many).len(), MAX_RELAYS);
    }

    #[test]
    fn e2e_key_in_hex_base64_or_empty() {
        let key = rmb_core::E2eKey::from_bytes(&[3; 32]).unwrap().public_key();
        let text = hex::encode(key);
        assert_eq!(e2e_key(&text).unwrap(), Some(key));
        assert_eq!(e2e_key(&format!("0x{text}")).unwrap(), Some(key));
        assert_eq!(e2e_key(&STANDARD.encode(key)).unwrap(), Some(key));
        assert_eq!(e2e_key(&URL_SAFE_NO_PAD.encode(key)).unwrap(), Some(key));
        assert_eq!(e2e_key("").unwrap(), None);
        assert!(matches!(
            e2e_key("zz"),
            Err(ValidationError::E2eKeyEncoding(_))
        ));
        assert!(matches!(
            e2e_key(&text[..64]),
            Err(ValidationError::E2eKey(_))
        ));
        // A wrong prefix byte, and an x coordinate that is not a field element: refused.
        let mut wrong_prefix = key;
        wrong_prefix[0] = 0x04;
        assert!(matches!(
            e2e_key(&hex::encode(wrong_prefix)),
            Err(ValidationError::E2eKey(_))
        ));
        let mut off_curve = [0xffu8; 33];
        off_curve[0] = 0x02;
        assert!(e2e_key(&hex::encode(off_curve)).is_err());
    }
}
