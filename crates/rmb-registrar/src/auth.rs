//! Proof-of-possession (account creation) and `X-Auth` (account update) checks.
//!
//! Pure functions: the caller passes `now` and the stored key, nothing here does I/O, so
//! every refusal is unit-tested below. What is signed (PROTOCOL.md §5):
//! - create: the ASCII text `<timestamp>:<public_key as sent>`;
//! - update: `X-Auth: <b64("<timestamp>:<twin_id>")>:<b64(signature over that text)>`.
//!
//! A signature is 64 bytes (raw ed25519, as older clients send) or 65 bytes (a type byte
//! `e`/`s` + 64, §1, so ed25519 or sr25519).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rmb_core::identity::{verify, verify_raw, KeyType, SignatureError};
use rmb_registrar_client::auth::create_challenge;

/// Why a proof or an `X-Auth` header was refused. [`AuthError::status`] maps each to HTTP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing X-Auth header: send X-Auth: <base64(\"<timestamp>:<twin_id>\")>:<base64(signature of that text)>")]
    MissingHeader,
    #[error("malformed X-Auth header: {0}; expected <base64(\"<timestamp>:<twin_id>\")>:<base64(signature of that text)>")]
    MalformedHeader(String),
    #[error("signature is not valid base64 ({0}); send the signature bytes in standard base64")]
    SignatureEncoding(String),
    #[error("signature must be 64 bytes (raw ed25519) or 65 bytes (type byte 'e'/'s' + 64), got {0} bytes")]
    SignatureLength(usize),
    #[error("timestamp {timestamp} is more than {window} s away from the server time {now}; sign again with the current unix time in seconds")]
    StaleTimestamp {
        timestamp: u64,
        now: u64,
        window: u64,
    },
    #[error("X-Auth is signed for twin {header} but the request is for twin {path}; sign \"<timestamp>:{path}\"")]
    TwinMismatch { header: u32, path: u32 },
    #[error("X-Auth timestamp {timestamp} is not newer than the last accepted one ({last}); a challenge is accepted once: sign a new one with a later timestamp")]
    Replayed { timestamp: u64, last: u64 },
    #[error(
        "signature does not verify ({0}); sign the exact challenge text with the account's key"
    )]
    BadSignature(SignatureError),
}

impl AuthError {
    /// The HTTP status for this refusal: 400 for a request that cannot be parsed, 401 for
    /// a proof that does not hold.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::MalformedHeader(_)
            | AuthError::SignatureEncoding(_)
            | AuthError::SignatureLength(_) => 400,
            AuthError::MissingHeader
            | AuthError::StaleTimestamp { .. }
            | AuthError::TwinMismatch { .. }
            | AuthError::Replayed { .. }
            | AuthError::BadSignature(_) => 401,
        }
    }
}

/// Refuses a timestamp more than `window` seconds before or after `now`.
pub fn check_window(timestamp: u64, now: u64, window: u64) -> Result<(), AuthError> {
    if timestamp.abs_diff(now) > window {
        return Err(AuthError::StaleTimestamp {
            timestamp,
            now,
            window,
        });
    }
    Ok(())
}

/// Verifies a 64-byte raw ed25519 or a 65-byte typed signature over `message`.
pub fn verify_signature(
    public_key: &[u8; 32],
    message: &[u8],
    signature: &[u8],
) -> Result<(), AuthError> {
    match signature.len() {
        64 => verify_raw(KeyType::Ed25519, public_key, message, signature),
        65 => verify(public_key, message, signature),
        n => return Err(AuthError::SignatureLength(n)),
    }
    .map_err(AuthError::BadSignature)
}

/// Decodes a standard-base64 signature.
pub fn decode_signature(text: &str) -> Result<Vec<u8>, AuthError> {
    STANDARD
        .decode(text.trim())
        .map_err(|e| AuthError::SignatureEncoding(e.to_string()))
}

/// Checks the proof that the creator holds the key: the timestamp is recent and
/// `signature` (base64) signs [`create_challenge`] with `public_key`.
pub fn verify_create_proof(
    timestamp: u64,
    public_key_text: &str,
    public_key: &[u8; 32],
    signature_b64: &str,
    now: u64,
    window: u64,
) -> Result<(), AuthError> {
    let signature = decode_signature(signature_b64)?;
    if !matches!(signature.len(), 64 | 65) {
        return Err(AuthError::SignatureLength(signature.len()));
    }
    check_window(timestamp, now, window)?;
    verify_signature(
        public_key,
        create_challenge(timestamp, public_key_text).as_bytes(),
        &signature,
    )
}

/// A parsed `X-Auth` header; not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XAuth {
    pub timestamp: u64,
    pub twin_id: u32,
    /// The signed text, `<timestamp>:<twin_id>`, exactly as the client encoded it.
    pub challenge: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Parses `<b64("<timestamp>:<twin_id>")>:<b64(signature)>`.
pub fn parse_x_auth(header: &str) -> Result<XAuth, AuthError> {
    let malformed = |what: &str| AuthError::MalformedHeader(what.to_string());
    let (challenge_b64, signature_b64) = header
        .trim()
        .split_once(':')
        .ok_or_else(|| malformed("no ':' between the challenge and the signature"))?;
    let challenge = STANDARD
        .decode(challenge_b64)
        .map_err(|e| malformed(&format!("the challenge is not valid base64 ({e})")))?;
    let text = std::str::from_utf8(&challenge)
        .map_err(|_| malformed("the challenge is not UTF-8 text"))?;
    let (ts, twin) = text
        .split_once(':')
        .ok_or_else(|| malformed("the challenge is not \"<timestamp>:<twin_id>\""))?;
    let timestamp = parse_decimal::<u64>(ts)
        .ok_or_else(|| malformed("the challenge's timestamp is not a unix time in seconds"))?;
    let twin_id = parse_decimal::<u32>(twin)
        .ok_or_else(|| malformed("the challenge's twin id is not a number"))?;
    let signature = decode_signature(signature_b64)?;
    if !matches!(signature.len(), 64 | 65) {
        return Err(AuthError::SignatureLength(signature.len()));
    }
    Ok(XAuth {
        timestamp,
        twin_id,
        challenge,
        signature,
    })
}

/// Digits only: `str::parse` would also take a leading `+`.
fn parse_decimal<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl XAuth {
    /// Verifies the header for a request on `path_twin_id` whose account has `public_key`
    /// and last accepted `last_auth_ts`. The storage update must then re-check
    /// `last_auth_ts < timestamp` atomically: this check alone cannot stop two concurrent
    /// requests with the same header.
    pub fn verify(
        &self,
        path_twin_id: u32,
        public_key: &[u8; 32],
        last_auth_ts: u64,
        now: u64,
        window: u64,
    ) -> Result<(), AuthError> {
        if self.twin_id != path_twin_id {
            return Err(AuthError::TwinMismatch {
                header: self.twin_id,
                path: path_twin_id,
            });
        }
        verify_signature(public_key, &self.challenge, &self.signature)?;
        check_window(self.timestamp, now, window)?;
        if self.timestamp <= last_auth_ts {
            return Err(AuthError::Replayed {
                timestamp: self.timestamp,
                last: last_auth_ts,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmb_core::Signer;
    use rmb_registrar_client::auth::x_auth_header;

    fn signer(kind: KeyType) -> Signer {
        Signer::from_seed(&[7; 32], kind).unwrap()
    }

    fn create_proof(s: &Signer, ts: u64, raw: bool) -> (String, String) {
        let pk = STANDARD.encode(s.public_key());
        let sig = s.sign(create_challenge(ts, &pk).as_bytes());
        let sig = if raw { &sig[1..] } else { &sig[..] };
        (pk, STANDARD.encode(sig))
    }

    #[test]
    fn create_proof_accepts_typed_ed25519_sr25519_and_raw_ed25519() {
        for (kind, raw) in [
            (KeyType::Ed25519, false),
            (KeyType::Sr25519, false),
            (KeyType::Ed25519, true),
        ] {
            let s = signer(kind);
            let (pk, sig) = create_proof(&s, 1000, raw);
            verify_create_proof(1000, &pk, &s.public_key(), &sig, 1010, 30)
                .unwrap_or_else(|e| panic!("{kind} raw={raw}: {e}"));
        }
    }

    #[test]
    fn raw_64_byte_sr25519_signature_is_refused() {
        // 64 bytes means ed25519; an sr25519 signature must carry its type byte.
        let s = signer(KeyType::Sr25519);
        let (pk, sig) = create_proof(&s, 1000, true);
        let err = verify_create_proof(1000, &pk, &s.public_key(), &sig, 1000, 30).unwrap_err();
        assert!(matches!(err, AuthError::BadSignature(_)), "{err}");
        assert_eq!(err.status(), 401);
    }

    #[test]
    fn create_proof_refuses_other_key_other_text_and_bad_encoding() {
        let s = signer(KeyType::Ed25519);
        let other = Signer::from_seed(&[8; 32], KeyType::Ed25519).unwrap();
        let (pk, sig) = create_proof(&s, 1000, false);
        let err = verify_create_proof(1000, &pk, &other.public_key(), &sig, 1000, 30).unwrap_err();
        assert_eq!(err.status(), 401);
        // The timestamp is part of the signed text.
        let err = verify_create_proof(1001, &pk, &s.public_key(), &sig, 1000, 30).unwrap_err();
        assert!(matches!(err, AuthError::BadSignature(_)));
        let err = verify_create_proof(1000, &pk, &s.public_key(), "%%%", 1000, 30).unwrap_err();
        assert!(matches!(err, AuthError::SignatureEncoding(_)));
        assert_eq!(err.status(), 400);
        let short = STANDARD.encode([1u8; 63]);
        let err = verify_create_proof(1000, &pk, &s.public_key(), &short, 1000, 30).unwrap_err();
        assert_eq!(err, AuthError::SignatureLength(63));
    }

    #[test]
    fn window_applies_in_both_directions_inclusive() {
        assert!(check_window(970, 1000, 30).is_ok());
        assert!(check_window(1030, 1000, 30).is_ok());
        assert!(matches!(
            check_window(969, 1000, 30),
            Err(AuthError::StaleTimestamp { .. })
        ));
        assert!(matches!(
            check_window(1031, 1000, 30),
            Err(AuthError::StaleTimestamp { .. })
        ));
        let s = signer(KeyType::Sr25519);
        let (pk, sig) = create_proof(&s, 900, false);
        let err = verify_create_proof(900, &pk, &s.public_key(), &sig, 1000, 30).unwrap_err();
        assert_eq!(err.status(), 401);
    }

    #[test]
    fn x_auth_round_trip_and_checks() {
        for kind in [KeyType::Ed25519, KeyType::Sr25519] {
            let s = signer(kind);
            let pk = s.public_key();
            let header = x_auth_header(&s, 42, 1000);
            let auth = parse_x_auth(&header).unwrap();
            assert_eq!((auth.timestamp, auth.twin_id), (1000, 42));
            auth.verify(42, &pk, 999, 1000, 30).unwrap();
            assert_eq!(
                auth.verify(43, &pk, 0, 1000, 30),
                Err(AuthError::TwinMismatch {
                    header: 42,
                    path: 43
                })
            );
            assert_eq!(
                auth.verify(42, &pk, 1000, 1000, 30),
                Err(AuthError::Replayed {
                    timestamp: 1000,
                    last: 1000
                })
            );
            assert!(matches!(
                auth.verify(42, &pk, 0, 1100, 30),
                Err(AuthError::StaleTimestamp { .. })
            ));
            let other = Signer::from_seed(&[9; 32], kind).unwrap().public_key();
            assert!(matches!(
                auth.verify(42, &other, 0, 1000, 30),
                Err(AuthError::BadSignature(_))
            ));
        }
    }

    #[test]
    fn x_auth_accepts_raw_ed25519_signature() {
        let s = signer(KeyType::Ed25519);
        let challenge = "1000:5";
        let sig = s.sign(challenge.as_bytes());
        let header = format!(
            "{}:{}",
            STANDARD.encode(challenge),
            STANDARD.encode(&sig[1..])
        );
        parse_x_auth(&header)
            .unwrap()
            .verify(5, &s.public_key(), 0, 1000, 30)
            .unwrap();
    }

    #[test]
    fn x_auth_forged_signature_is_refused() {
        let s = signer(KeyType::Ed25519);
        let mut auth = parse_x_auth(&x_auth_header(&s, 5, 1000)).unwrap();
        auth.signature[10] ^= 1;
        assert!(matches!(
            auth.verify(5, &s.public_key(), 0, 1000, 30),
            Err(AuthError::BadSignature(_))
        ));
        // A signature for another challenge does not verify the claimed one.
        let real = parse_x_auth(&x_auth_header(&s, 5, 1000)).unwrap();
        let swapped = format!(
            "{}:{}",
            STANDARD.encode("1001:5"),
            STANDARD.encode(&real.signature)
        );
        assert!(parse_x_auth(&swapped)
            .unwrap()
            .verify(5, &s.public_key(), 0, 1000, 30)
            .is_err());
    }

    #[test]
    fn malformed_x_auth_headers_are_400() {
        let sig = STANDARD.encode([0u8; 65]);
        let cases = [
            "no-colon-here".to_string(),
            format!("!!!:{sig}"),
            format!("{}:{sig}", STANDARD.encode("1000")),
            format!("{}:{sig}", STANDARD.encode("+1000:5")),
            format!("{}:{sig}", STANDARD.encode("1000:x")),
            format!("{}:{sig}", STANDARD.encode("1000:4294967296")),
            format!("{}:@@", STANDARD.encode("1000:5")),
            format!(
                "{}:{}",
                STANDARD.encode("1000:5"),
                STANDARD.encode([0u8; 10])
            ),
        ];
        for header in cases {
            let err = parse_x_auth(&header).unwrap_err();
            assert_eq!(err.status(), 400, "{header}: {err}");
        }
        assert_eq!(AuthError::MissingHeader.status(), 401);
    }
}
