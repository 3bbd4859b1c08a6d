//! The relay connection token (§3.1): `base64url(header).base64url(claims).base64url(sig)`
//! where `sig` is a 65-byte typed signature over the ASCII text `header.claims`.
//!
//! Verification works from the raw text received, never from a re-encoding, because
//! clients differ in header contents and claim order. It is split in two steps so a
//! relay can learn the twin id ([`UnverifiedToken::claims`]) before it fetches the key
//! the token must be verified with.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::identity::{self, SignatureError, Signer};

/// The header the reference implementation writes.
pub const HEADER: &str = r#"{"alg":"RS512"}"#;

/// What the token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The twin id.
    pub sub: u32,
    /// The session id; `None` for the twin's default session (the TypeScript client
    /// omits the field, the reference writes `null`).
    #[serde(default)]
    pub sid: Option<String>,
    /// Issued at, unix seconds.
    pub iat: u64,
    /// Expires at, unix seconds.
    pub exp: u64,
}

/// Limits a verifier applies on top of the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwtPolicy {
    /// Longest accepted `exp − iat`, in seconds. The TypeScript client uses 1000 s.
    pub max_lifetime: u64,
    /// How far in the future `iat` may be (clock skew between client and relay).
    pub max_clock_skew: u64,
}

impl Default for JwtPolicy {
    fn default() -> Self {
        JwtPolicy {
            max_lifetime: 3600,
            max_clock_skew: 60,
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("token header is not valid: {0}")]
    BadHeader(String),
    #[error("token claims are not valid: {0}")]
    BadClaims(String),
    #[error("token algorithm must be \"RS512\" (the RMB typed signature), got {0:?}")]
    UnsupportedAlgorithm(String),
    #[error("token expired at {exp} (now {now})")]
    Expired { exp: u64, now: u64 },
    #[error("token issued in the future (iat {iat}, now {now}): check the client's clock")]
    IssuedInFuture { iat: u64, now: u64 },
    #[error("token expires before it was issued (iat {iat}, exp {exp})")]
    ExpiresBeforeIssued { iat: u64, exp: u64 },
    #[error("token lifetime {lifetime}s exceeds the maximum of {max}s")]
    LifetimeTooLong { lifetime: u64, max: u64 },
    #[error("token signature is invalid: {0}")]
    BadSignature(#[from] SignatureError),
}

#[derive(Serialize)]
struct ClaimsOut<'a> {
    sub: u32,
    sid: Option<&'a str>,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
}

/// Creates a token for `twin`/`sid` valid from `now` for `lifetime` seconds, exactly as
/// the reference does (header `{"alg":"RS512"}`, claims in the order sub, sid, iat, exp).
pub fn create(signer: &Signer, twin: u32, sid: Option<&str>, now: u64, lifetime: u64) -> String {
    let claims = ClaimsOut {
        sub: twin,
        sid,
        iat: now,
        exp: now.saturating_add(lifetime),
    };
    let claims = serde_json::to_vec(&claims).expect("claims serialize");
    let mut token = URL_SAFE_NO_PAD.encode(HEADER);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(claims, &mut token);
    let signature = signer.sign(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    token
}

/// A token whose structure and claims parsed, but whose signature and times are not
/// checked yet.
#[derive(Debug, Clone)]
pub struct UnverifiedToken<'a> {
    signed_text: &'a str,
    claims: Claims,
    signature: Vec<u8>,
}

/// Splits and decodes a token. Checks structure only.
pub fn parse(token: &str) -> Result<UnverifiedToken<'_>, JwtError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(JwtError::Malformed("the token is empty"));
    }
    let (signed_text, signature_b64) = token
        .rsplit_once('.')
        .ok_or(JwtError::Malformed("expected three dot-separated parts"))?;
    let (header_b64, claims_b64) = signed_text
        .split_once('.')
        .ok_or(JwtError::Malformed("expected three dot-separated parts"))?;
    if claims_b64.contains('.') {
        return Err(JwtError::Malformed("expected three dot-separated parts"));
    }
    let header = decode_part(header_b64, "header is not base64url")?;
    let header: Header =
        serde_json::from_slice(&header).map_err(|e| JwtError::BadHeader(e.to_string()))?;
    match header.alg.as_deref() {
        Some("RS512") => {}
        other => {
            return Err(JwtError::UnsupportedAlgorithm(
                other.unwrap_or("<none>").to_string(),
            ))
        }
    }
    let claims = decode_part(claims_b64, "claims are not base64url")?;
    let claims: Claims =
        serde_json::from_slice(&claims).map_err(|e| JwtError::BadClaims(e.to_string()))?;
    let signature = decode_part(signature_b64, "signature is not base64url")?;
    Ok(UnverifiedToken {
        signed_text,
        claims,
        signature,
    })
}

fn decode_part(part: &str, what: &'static str) -> Result<Vec<u8>, JwtError> {
    // Tolerate padding: some base64url encoders add it.
    URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed(what))
}

impl UnverifiedToken<'_> {
    /// The claims as sent; not to be trusted before [`verify`](Self::verify).
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// The ASCII text the signature covers (`header.claims`).
    pub fn signed_text(&self) -> &str {
        self.signed_text
    }

    /// The raw (typed) signature bytes.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// Checks times against `now` and `policy` (cheap, done first), then the signature
    /// against the twin's public key. Returns the now trusted claims.
    pub fn verify(
        self,
        public_key: &[u8],
        now: u64,
        policy: &JwtPolicy,
    ) -> Result<Claims, JwtError> {
        check_times(&self.claims, now, policy)?;
        self.verify_signature(public_key)?;
        Ok(self.claims)
    }

    /// Signature only, ignoring times (for known-answer tests of expired tokens).
    pub fn verify_signature(&self, public_key: &[u8]) -> Result<(), JwtError> {
        identity::verify(public_key, self.signed_text.as_bytes(), &self.signature)?;
        Ok(())
    }
}

fn check_times(claims: &Claims, now: u64, policy: &JwtPolicy) -> Result<(), JwtError> {
    let Claims { iat, exp, .. } = *claims;
    if exp < iat {
        return Err(JwtError::ExpiresBeforeIssued { iat, exp });
    }
    if exp - iat > policy.max_lifetime {
        return Err(JwtError::LifetimeTooLong {
            lifetime: exp - iat,
            max: policy.max_lifetime,
        });
    }
    if iat > now.saturating_add(policy.max_clock_skew) {
        return Err(JwtError::IssuedInFuture { iat, now });
    }
    if exp <= now {
        return Err(JwtError::Expired { exp, now });
    }
    Ok(())
}
