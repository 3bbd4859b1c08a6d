//! Input rules for what an account stores: relay addresses and the e2e key. Pure.

use std::collections::HashSet;
use std::net::Ipv4Addr;

/// At most this many relays per twin.
pub const MAX_RELAYS: usize = 8;

/// Why a relay list or e2e key was refused (HTTP 422, except [`ValidationError::E2eKeyHex`]: 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("too many relays: {0} given, at most {MAX_RELAYS} allowed")]
    TooManyRelays(usize),
    #[error("relay {0:?} is listed twice; list each relay once")]
    DuplicateRelay(String),
    #[error("relay {entry:?} is not valid: {reason}; use host or host:port (a DNS name or IPv4 address, port 1-65535)")]
    BadRelay { entry: String, reason: &'static str },
    #[error(
        "rmb_enc_key is not hex ({0}); send the 33-byte compressed secp256k1 key as 66 hex digits"
    )]
    E2eKeyHex(String),
    #[error("rmb_enc_key is not a valid key ({0}); send a 33-byte compressed secp256k1 public key (02/03 + 32 bytes)")]
    E2eKey(String),
}

impl ValidationError {
    pub fn status(&self) -> u16 {
        match self {
            ValidationError::E2eKeyHex(_) => 400,
            _ => 422,
        }
    }
}

/// Checks a whole relay list: each entry valid, at most [`MAX_RELAYS`], no duplicates
/// (host names compare case-insensitively).
pub fn relays(list: &[String]) -> Result<(), ValidationError> {
    if list.len() > MAX_RELAYS {
        return Err(ValidationError::TooManyRelays(list.len()));
    }
    let mut seen = HashSet::with_capacity(list.len());
    for entry in list {
        relay(entry)?;
        if !seen.insert(entry.to_ascii_lowercase()) {
            return Err(ValidationError::DuplicateRelay(entry.clone()));
        }
    }
    Ok(())
}

/// Checks one `host` or `host:port`: host is an RFC 1123 name or an IPv4 literal.
pub fn relay(entry: &str) -> Result<(), ValidationError> {
    let bad = |reason| ValidationError::BadRelay {
        entry: entry.to_string(),
        reason,
    };
    let (host, port) = match entry.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (entry, None),
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
    hostname(host).map_err(bad)
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

/// Decodes and checks the e2e key: hex (an optional `0x` is accepted) of a compressed
/// secp256k1 point.
pub fn e2e_key(text: &str) -> Result<[u8; 33], ValidationError> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    let bytes = hex::decode(digits).map_err(|e| ValidationError::E2eKeyHex(e.to_string()))?;
    rmb_core::e2e::parse_public_key(&bytes).map_err(|e| ValidationError::E2eKey(e.to_string()))?;
    Ok(bytes
        .try_into()
        .expect("parse_public_key checked the length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn accepts_names_ipv4_and_ports() {
        for ok in [
            "relay.example.com",
            "localhost",
            "r1",
            "a-b.c-d.io:443",
            "127.0.0.1",
            "10.0.0.1:8080",
            "relay:1",
            "relay:65535",
            "1relay.example",
            "xn--bcher-kva.example",
        ] {
            relay(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let long_label = "a".repeat(63);
        relay(&format!("{long_label}.com")).unwrap();
    }

    #[test]
    fn refuses_bad_hosts_and_ports() {
        let too_long_label = format!("{}.com", "a".repeat(64));
        let too_long_host = ["abcdefghi"; 26].join(".");
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
            "wss://relay.com",
            "relay.com/path",
            "256.1.1.1",
            "1.2.3",
            "[::1]:80",
            "::1",
            "relay.com:80:90",
            "relé.com",
            too_long_label.as_str(),
            too_long_host.as_str(),
        ] {
            let err = relay(bad).expect_err(bad);
            assert_eq!(err.status(), 422, "{bad}");
        }
    }

    #[test]
    fn list_limits_and_duplicates() {
        relays(&[]).unwrap();
        let eight: Vec<String> = (0..8).map(|i| format!("r{i}.example")).collect();
        relays(&eight).unwrap();
        let nine: Vec<String> = (0..9).map(|i| format!("r{i}.example")).collect();
        assert_eq!(relays(&nine), Err(ValidationError::TooManyRelays(9)));
        assert!(matches!(
            relays(&strings(&["a.com", "b.com", "A.com"])),
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
    fn e2e_key_must_be_a_compressed_point() {
        let key = rmb_core::E2eKey::from_bytes(&[3; 32]).unwrap().public_key();
        let text = hex::encode(key);
        assert_eq!(e2e_key(&text).unwrap(), key);
        assert_eq!(e2e_key(&format!("0x{text}")).unwrap(), key);
        assert_eq!(e2e_key("zz").unwrap_err().status(), 400);
        assert_eq!(e2e_key(&text[..64]).unwrap_err().status(), 422);
        // A wrong prefix byte, and an x coordinate that is not a field element: refused.
        let mut wrong_prefix = key;
        wrong_prefix[0] = 0x04;
        assert_eq!(
            e2e_key(&hex::encode(wrong_prefix)).unwrap_err().status(),
            422
        );
        let mut off_curve = [0xffu8; 33];
        off_curve[0] = 0x02;
        assert_eq!(e2e_key(&hex::encode(off_curve)).unwrap_err().status(), 422);
    }
}
