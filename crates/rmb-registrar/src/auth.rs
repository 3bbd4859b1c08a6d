//! Proof-of-possession (account creation) and `X-Auth` (account update) checks.
//!
//! Pure functions: the caller passes `now` and the stored state, nothing here does I/O,
//! so every refusal is unit-tested below. What is signed (PROTOCOL.md §5):
//! - create: the ASCII text `<timestamp>:<public_key as sent>`;
//! - update: `X-Auth: <b64("<timestamp>:<twin_id>")>:<b64(signature over that text)>`.
//!
//! A signature is 65 bytes (a type byte `e`/`s` + 64, §1) or 64 bytes raw, which is what
//! node-registrar's clients send: like node-registrar (`pkg/server/sigverifier.go`) we
//! try ed25519, then sr25519.
//!
//! ## Time windows
//! A create proof must be within `time_window` (30 s) of the server clock either way
//! (node-registrar: 2 s, `handlers.go` `MaxTimestampDelta`). An `X-Auth` timestamp may
//! be up to `auth_max_age` (60 s) old, as node-registrar allows
//! (`middlewares.go` `ChallengeValidity`), and at most `time_window` in the future
//! (node-registrar has no bound there: a header signed for next year works next year).
//!
//! ## Replay guard
//! node-registrar has none: a captured header works again for a minute. Ours, in
//! [`admit`], refuses exact replays without refusing honest clients: any timestamp
//! inside the window is accepted, in any order (two clients of one twin, or one client
//! with requests in flight, may arrive out of order), and each accepted (header, body)
//! pair is remembered until its timestamp leaves the window. The same header with the
//! same body again is refused. Two different updates signed in the same second are both
//! accepted (the Go client signs `time.Now().Unix()`, so with ed25519, whose signatures
//! are deterministic, both carry the same header). The header does not sign the body
//! (the protocol's choice): whoever sees a header can send a different body with it
//! while it is in the window, at most [`MAX_UPDATES_PER_HEADER`] times; TLS is what keeps
//! headers from being seen.
//!
//! What is remembered is bounded: only headers whose signature verified are admitted,
//! an account remembers at most [`MAX_REMEMBERED`] of them (about 45 bytes each, so
//! under 3 KiB per account), and entries older than the window are dropped on every
//! update. Past the cap a twin's next update within the window is refused (429).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rmb_core::identity::{verify, verify_raw, KeyType, SignatureError};
use rmb_registrar_client::auth::create_challenge;
use sha2::{Digest, Sha256};

/// At most this many different updates are accepted with one X-Auth header.
pub const MAX_UPDATES_PER_HEADER: usize = 8;

/// At most this many accepted (header, body) pairs are remembered per account, i.e.
/// updates per account inside the X-Auth window (60 s): far more than an honest
/// client sends.
pub const MAX_REMEMBERED: usize = 64;

/// Why a proof or an `X-Auth` header was refused. [`AuthError::status`] maps each to HTTP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("missing X-Auth header: send X-Auth: <base64(\"<timestamp>:<twin_id>\")>:<base64(signature of that text)>")]
    MissingHeader,
    #[error("malformed X-Auth header: {0}; expected <base64(\"<timestamp>:<twin_id>\")>:<base64(signature of that text)>")]
    MalformedHeader(String),
    #[error("signature is not valid base64 ({0}); send the signature bytes in standard base64")]
    SignatureEncoding(String),
    #[error("signature must be 64 bytes (raw ed25519 or sr25519) or 65 bytes (type byte 'e'/'s' + 64), got {0} bytes")]
    SignatureLength(usize),
    /// A create proof outside the window: 400 with `server_time`, as node-registrar.
    #[error("timestamp {timestamp} is more than {window} s away from the server time {now}; sign again with the current unix time in seconds")]
    CreateTimestamp {
        timestamp: u64,
        now: u64,
        window: u64,
    },
    #[error("X-Auth timestamp {timestamp} is outside the accepted window ({max_age} s old to {skew} s ahead of the server time {now}); sign again with the current unix time in seconds")]
    StaleTimestamp {
        timestamp: u64,
        now: u64,
        max_age: u64,
        skew: u64,
    },
    #[error("X-Auth is signed for twin {header} but the request is for twin {path}; sign \"<timestamp>:{path}\"")]
    TwinMismatch { header: u32, path: u32 },
    #[error("this X-Auth header was already used for this same request; sign a new one with a later timestamp")]
    ReplayedBody,
    #[error("more than {MAX_UPDATES_PER_HEADER} updates signed with the timestamp {0}; sign the next one with a later timestamp")]
    TooManyUpdates(u64),
    #[error(
        "more than {MAX_REMEMBERED} updates of this account within {window} s; wait and retry"
    )]
    TooManyRecentUpdates { window: u64 },
    #[error(
        "signature does not verify ({0}); sign the exact challenge text with the account's key"
    )]
    BadSignature(SignatureError),
}

impl AuthError {
    /// The HTTP status for this refusal: 400 for a request that cannot be parsed (and a
    /// create proof out of the window, as node-registrar answers), 401 for a proof that
    /// does not hold.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::MalformedHeader(_)
            | AuthError::SignatureEncoding(_)
            | AuthError::SignatureLength(_)
            | AuthError::CreateTimestamp { .. } => 400,
            AuthError::MissingHeader
            | AuthError::StaleTimestamp { .. }
            | AuthError::TwinMismatch { .. }
            | AuthError::ReplayedBody
            | AuthError::TooManyUpdates(_)
            | AuthError::BadSignature(_) => 401,
            AuthError::TooManyRecentUpdates { .. } => 429,
        }
    }

    /// The server's clock, for refusals a client fixes by signing again at that time.
    pub fn server_time(&self) -> Option<u64> {
        match self {
            AuthError::CreateTimestamp { now, .. } | AuthError::StaleTimestamp { now, .. } => {
                Some(*now)
            }
            _ => None,
        }
    }
}

/// Verifies a 64-byte raw (ed25519, else sr25519) or a 65-byte typed signature over
/// `message`.
pub fn verify_signature(
    public_key: &[u8; 32],
    message: &[u8],
    signature: &[u8],
) -> Result<(), AuthError> {
    match signature.len() {
        64 => verify_raw(KeyType::Ed25519, public_key, message, signature)
            .or_else(|_| verify_raw(KeyType::Sr25519, public_key, message, signature)),
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

/// Checks the proof that the creator holds the key: the timestamp is within `window`
/// of `now` and `signature` (base64) signs [`create_challenge`] with `public_key`.
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
    if timestamp.abs_diff(now) > window {
        return Err(AuthError::CreateTimestamp {
            timestamp,
            now,
            window,
        });
    }
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
    /// Verifies the header for a request on `path_twin_id` whose account has
    /// `public_key`: the twin matches, the signature holds, and the timestamp is at most
    /// `max_age` old and `skew` ahead of `now`. Replays are [`admit`]'s business.
    pub fn verify(
        &self,
        path_twin_id: u32,
        public_key: &[u8; 32],
        now: u64,
        max_age: u64,
        skew: u64,
    ) -> Result<(), AuthError> {
        if self.twin_id != path_twin_id {
            return Err(AuthError::TwinMismatch {
                header: self.twin_id,
                path: path_twin_id,
            });
        }
        verify_signature(public_key, &self.challenge, &self.signature)?;
        let too_old = now.saturating_sub(self.timestamp) > max_age;
        let too_new = self.timestamp.saturating_sub(now) > skew;
        if too_old || too_new {
            return Err(AuthError::StaleTimestamp {
                timestamp: self.timestamp,
                now,
                max_age,
                skew,
            });
        }
        Ok(())
    }
}

/// What an account remembers of accepted `X-Auth` headers: the newest timestamp seen
/// (informational) and the accepted (header, body) pairs still inside the window, as
/// comma-separated `<timestamp>:<header digest>:<body digest>` entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayGuard {
    pub last_ts: u64,
    pub digests: String,
}

/// The digest a request body is remembered by: 64 bits of SHA-256, hex.
pub fn body_digest(body: &[u8]) -> String {
    hex::encode(&Sha256::digest(body)[..8])
}

impl XAuth {
    /// The digest the header is remembered by: 64 bits of SHA-256 of the signed text and
    /// the signature (sr25519 signs the same text differently each time: two signatures
    /// are two headers).
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(&self.challenge);
        h.update([0]);
        h.update(&self.signature);
        hex::encode(&h.finalize()[..8])
    }
}

/// One remembered pair; entries that do not parse (the format before this one kept
/// only body digests) are dropped.
fn parse_entry(entry: &str) -> Option<(u64, &str, &str)> {
    let mut parts = entry.splitn(3, ':');
    let ts = parse_decimal::<u64>(parts.next()?)?;
    Some((ts, parts.next()?, parts.next()?))
}

/// Admits a verified header (timestamp `ts`, [`XAuth::digest`] `header`) for a body of
/// digest `body`, at `now` with X-Auth headers valid for `max_age` seconds, and returns
/// what the account remembers afterwards. The store must replace `guard` by the result
/// only if it is still `guard` (compare and swap), so that of two concurrent requests
/// with the same header and body at most one succeeds.
pub fn admit(
    guard: &ReplayGuard,
    ts: u64,
    header: &str,
    body: &str,
    now: u64,
    max_age: u64,
) -> Result<ReplayGuard, AuthError> {
    // What left the window is forgotten: the window check refuses it anyway.
    let oldest = now.saturating_sub(max_age);
    let kept: Vec<(u64, &str, &str)> = guard
        .digests
        .split(',')
        .filter_map(parse_entry)
        .filter(|(t, _, _)| *t >= oldest)
        .collect();
    let same_header = kept.iter().filter(|(t, h, _)| *t == ts && *h == header);
    let mut uses = 0;
    for (_, _, b) in same_header {
        if *b == body {
            return Err(AuthError::ReplayedBody);
        }
        uses += 1;
    }
    if uses >= MAX_UPDATES_PER_HEADER {
        return Err(AuthError::TooManyUpdates(ts));
    }
    if kept.len() >= MAX_REMEMBERED {
        return Err(AuthError::TooManyRecentUpdates { window: max_age });
    }
    let mut digests = String::with_capacity((kept.len() + 1) * 45);
    for (t, h, b) in kept.iter().copied().chain([(ts, header, body)]) {
        if !digests.is_empty() {
            digests.push(',');
        }
        digests.push_str(&format!("{t}:{h}:{b}"));
    }
    Ok(ReplayGuard {
        last_ts: guard.last_ts.max(ts),
        digests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmb_core::Signer;
    use rmb_registrar_client::auth::{sign_raw, x_auth_header};

    fn signer(kind: KeyType) -> Signer {
        Signer::from_seed(&[7; 32], kind).unwrap()
    }

    fn create_proof(s: &Signer, ts: u64, raw: bool) -> (String, String) {
        let pk = STANDARD.encode(s.public_key());
        let text = create_challenge(ts, &pk);
        let sig = if raw {
            sign_raw(s, text.as_bytes()).to_vec()
        } else {
            s.sign(text.as_bytes()).to_vec()
        };
        (pk, STANDARD.encode(sig))
    }

    #[test]
    fn create_proof_accepts_typed_and_raw_signatures_of_both_schemes() {
        // Raw 64-byte sr25519 is what node-registrar's farmers send (go-subkey).
        for kind in [KeyType::Ed25519, KeyType::Sr25519] {
            for raw in [false, true] {
                let s = signer(kind);
                let (pk, sig) = create_proof(&s, 1000, raw);
                verify_create_proof(1000, &pk, &s.public_key(), &sig, 1010, 30)
                    .unwrap_or_else(|e| panic!("{kind} raw={raw}: {e}"));
            }
        }
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
    fn create_window_applies_in_both_directions_and_tells_the_server_time() {
        let s = signer(KeyType::Sr25519);
        for (ts, ok) in [(970, true), (1030, true), (969, false), (1031, false)] {
            let (pk, sig) = create_proof(&s, ts, true);
            let result = verify_create_proof(ts, &pk, &s.public_key(), &sig, 1000, 30);
            assert_eq!(result.is_ok(), ok, "{ts}");
            if let Err(e) = result {
                assert_eq!(e.status(), 400);
                assert_eq!(e.server_time(), Some(1000));
            }
        }
    }

    #[test]
    fn x_auth_round_trip_and_checks() {
        for kind in [KeyType::Ed25519, KeyType::Sr25519] {
            let s = signer(kind);
            let pk = s.public_key();
            let header = x_auth_header(&s, 42, 1000);
            let auth = parse_x_auth(&header).unwrap();
            assert_eq!((auth.timestamp, auth.twin_id), (1000, 42));
            auth.verify(42, &pk, 1000, 60, 30).unwrap();
            assert_eq!(
                auth.verify(43, &pk, 1000, 60, 30),
                Err(AuthError::TwinMismatch {
                    header: 42,
                    path: 43
                })
            );
            // 60 s old is fine (node-registrar's validity), 61 s is not; 30 s ahead is
            // fine, 31 s is not.
            auth.verify(42, &pk, 1060, 60, 30).unwrap();
            auth.verify(42, &pk, 970, 60, 30).unwrap();
            for now in [1061, 969] {
                let err = auth.verify(42, &pk, now, 60, 30).unwrap_err();
                assert!(matches!(err, AuthError::StaleTimestamp { .. }), "{now}");
                assert_eq!(err.status(), 401);
            }
            let other = Signer::from_seed(&[9; 32], kind).unwrap().public_key();
            assert!(matches!(
                auth.verify(42, &other, 1000, 60, 30),
                Err(AuthError::BadSignature(_))
            ));
        }
    }

    #[test]
    fn x_auth_accepts_typed_signatures_too() {
        let s = signer(KeyType::Sr25519);
        let challenge = "1000:5";
        let sig = s.sign(challenge.as_bytes());
        let header = format!("{}:{}", STANDARD.encode(challenge), STANDARD.encode(sig));
        parse_x_auth(&header)
            .unwrap()
            .verify(5, &s.public_key(), 1000, 60, 30)
            .unwrap();
    }

    #[test]
    fn x_auth_forged_signature_is_refused() {
        let s = signer(KeyType::Ed25519);
        let mut auth = parse_x_auth(&x_auth_header(&s, 5, 1000)).unwrap();
        auth.signature[10] ^= 1;
        assert!(matches!(
            auth.verify(5, &s.public_key(), 1000, 60, 30),
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
            .verify(5, &s.public_key(), 1000, 60, 30)
            .is_err());
    }

    #[test]
    fn replay_guard_refuses_exact_replays_only() {
        let fresh = ReplayGuard::default();
        let a = body_digest(br#"{"relays":["a.example"]}"#);
        let b = body_digest(br#"{"relays":["b.example"]}"#);
        let after_a = admit(&fresh, 1000, "h1", &a, 1000, 60).unwrap();
        // The same header, another body: an honest second update in the same second.
        let after_b = admit(&after_a, 1000, "h1", &b, 1000, 60).unwrap();
        // The same header and body again: a replay.
        assert_eq!(
            admit(&after_b, 1000, "h1", &a, 1001, 60),
            Err(AuthError::ReplayedBody)
        );
        // A newer header, then an older one still in the window: both honest.
        let newer = admit(&after_b, 1040, "h2", &a, 1040, 60).unwrap();
        let older = admit(&newer, 990, "h3", &a, 1040, 60).unwrap();
        assert_eq!(older.last_ts, 1040);
        // Entries that left the window are forgotten.
        let later = admit(&older, 1100, "h4", &a, 1100, 60).unwrap();
        assert_eq!(later.digests.split(',').count(), 2, "{}", later.digests);
        // Bounded per header.
        let mut guard = ReplayGuard::default();
        for i in 0..MAX_UPDATES_PER_HEADER {
            let body = body_digest(format!("{i}").as_bytes());
            guard = admit(&guard, 5, "h", &body, 5, 60).unwrap();
        }
        assert_eq!(
            admit(&guard, 5, "h", &body_digest(b"one more"), 5, 60),
            Err(AuthError::TooManyUpdates(5))
        );
    }

    #[test]
    fn the_replay_memory_of_an_account_is_capped_in_entries_and_bytes() {
        let mut guard = ReplayGuard::default();
        let body = body_digest(b"{}");
        for i in 0..MAX_REMEMBERED {
            let header = format!("{i:016x}");
            guard = admit(&guard, 1_700_000_000, &header, &body, 1_700_000_000, 60).unwrap();
        }
        let refused = admit(&guard, 1_700_000_000, "ffff", &body, 1_700_000_000, 60);
        assert_eq!(refused, Err(AuthError::TooManyRecentUpdates { window: 60 }));
        assert_eq!(refused.unwrap_err().status(), 429);
        assert!(
            guard.digests.len() <= MAX_REMEMBERED * 45,
            "{} bytes remembered",
            guard.digests.len()
        );
        // Once the window passed, the account may update again.
        assert!(admit(&guard, 1_700_000_061, "new", &body, 1_700_000_061, 60).is_ok());
    }

    #[test]
    fn entries_of_the_old_format_are_dropped() {
        let old = ReplayGuard {
            last_ts: 1000,
            digests: "0123456789abcdef,fedcba9876543210".into(),
        };
        let next = admit(&old, 1000, "h", "b", 1000, 60).unwrap();
        assert_eq!(next.digests, "1000:h:b");
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
