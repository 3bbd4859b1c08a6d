//! The JSON bodies of PROTOCOL.md §5, shared by the server and the client.

use serde::{Deserialize, Deserializer, Serialize};

/// An account as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountJson {
    pub twin_id: u32,
    /// Standard base64 of the 32-byte key.
    pub public_key: String,
    pub relays: Vec<String>,
    /// Hex of the 33-byte compressed secp256k1 key, or null.
    pub rmb_enc_key: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
}

/// `POST /v1/accounts`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateRequest {
    /// Unix seconds; signed together with `public_key`.
    pub timestamp: u64,
    /// Standard base64 of the 32-byte key; the signature covers this text as sent.
    pub public_key: String,
    /// Base64 of the signature over `"<timestamp>:<public_key>"` (64 or 65 bytes).
    pub signature: String,
    #[serde(default)]
    pub relays: Vec<String>,
    #[serde(default)]
    pub rmb_enc_key: Option<String>,
}

/// `PATCH /v1/accounts/{twin_id}`: absent fields are left as they are; `"rmb_enc_key":
/// null` removes the e2e key. Unknown fields are refused, so a typo (or an attempt to
/// change the key) does not look like a success.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relays: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub rmb_enc_key: Option<Option<String>>,
}

/// Distinguishes a present `null` (`Some(None)`) from an absent field (`None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Every refusal: `{"error": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_request_tells_null_from_absent() {
        let absent: UpdateRequest = serde_json::from_str(r#"{"relays":["a"]}"#).unwrap();
        assert_eq!(absent.rmb_enc_key, None);
        let null: UpdateRequest = serde_json::from_str(r#"{"rmb_enc_key":null}"#).unwrap();
        assert_eq!(null.rmb_enc_key, Some(None));
        assert_eq!(null.relays, None);
        assert!(serde_json::from_str::<UpdateRequest>(r#"{"public_key":"x"}"#).is_err());
        assert_eq!(
            serde_json::to_string(&UpdateRequest::default()).unwrap(),
            "{}"
        );
    }
}
