//! The JSON bodies of PROTOCOL.md §5, shared by the server and the client.
//!
//! Reading is lenient where real software differs (node-registrar,
//! `threefoldtech/tfgridv4-sdk-go` `node-registrar/pkg/db/models.go` and
//! `pkg/server/handlers.go`, and its Go client `node-registrar/client/account.go`):
//! `"relays": null` is an empty list, `created_at`/`updated_at` are unix seconds or
//! RFC 3339 strings (or absent), unknown fields are ignored. Writing follows our
//! contract: unix seconds, hex e2e key or `null`.

use serde::{Deserialize, Deserializer, Serialize};

/// An account as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountJson {
    pub twin_id: u32,
    /// Standard base64 of the 32-byte key.
    pub public_key: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub relays: Vec<String>,
    /// Hex of the 33-byte compressed secp256k1 key, or null (we write); node-registrar
    /// writes base64 or `""`.
    #[serde(default)]
    pub rmb_enc_key: Option<String>,
    /// Unix seconds (we write); node-registrar writes RFC 3339; 0 if absent or unreadable.
    #[serde(default, deserialize_with = "unix_or_rfc3339")]
    pub created_at: u64,
    #[serde(default, deserialize_with = "unix_or_rfc3339")]
    pub updated_at: u64,
}

/// A body some node-registrar versions wrap answers in: `{"msg": "...", "data": {...}}`
/// (`pkg/server/wrapper.go`).
#[derive(Debug, Clone, Deserialize)]
pub struct Wrapped<T> {
    pub data: T,
}

/// `POST /v1/accounts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRequest {
    /// Unix seconds; signed together with `public_key`.
    pub timestamp: u64,
    /// Standard base64 of the 32-byte key; the signature covers this text as sent.
    pub public_key: String,
    /// Base64 of the signature over `"<timestamp>:<public_key>"` (64 or 65 bytes).
    pub signature: String,
    /// The Go client sends `null` for no relays.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub relays: Vec<String>,
    /// `null`, absent or `""`: no e2e key.
    #[serde(default)]
    pub rmb_enc_key: Option<String>,
}

/// `PATCH /v1/accounts/{twin_id}`: absent fields (and `"relays": null`, and
/// `"rmb_enc_key": ""`, as node-registrar reads them) are left as they are;
/// `"rmb_enc_key": null` removes the e2e key. Unknown fields are ignored, as
/// node-registrar does; `public_key` is read only to refuse a change of key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UpdateRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relays: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub rmb_enc_key: Option<Option<String>>,
    /// The original rmb-rs registrar client sends the account's key here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// Every refusal: `{"error": "..."}`; a signed timestamp outside the window also gets
/// `server_time` (unix seconds), as node-registrar answers, so a client can sign again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_time: Option<u64>,
}

/// A refusal as any registrar writes it: `error` (ours, node-registrar), `msg`
/// (node-registrar's wrapped answers) or `message`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AnyErrorBody {
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub msg: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub server_time: Option<u64>,
    /// Wrapped answers put `server_time` here.
    #[serde(default)]
    pub data: Option<ErrorData>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorData {
    #[serde(default)]
    pub server_time: Option<u64>,
}

impl AnyErrorBody {
    pub fn text(&self) -> Option<&str> {
        self.error
            .as_deref()
            .or(self.msg.as_deref())
            .or(self.message.as_deref())
    }

    /// The registrar's clock, when it refused a timestamp.
    pub fn server_time(&self) -> Option<u64> {
        self.server_time
            .or_else(|| self.data.as_ref().and_then(|d| d.server_time))
    }
}

/// Distinguishes a present `null` (`Some(None)`) from an absent field (`None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

fn unix_or_rfc3339<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Time {
        Unix(u64),
        Text(String),
        Other(serde::de::IgnoredAny),
    }
    Ok(match Time::deserialize(d)? {
        Time::Unix(secs) => secs,
        Time::Text(text) => rfc3339_to_unix(&text).unwrap_or(0),
        Time::Other(_) => 0,
    })
}

/// Unix seconds of an RFC 3339 time (`2025-01-31T12:00:00Z`, fractions and `±hh:mm`
/// offsets allowed, as Go's `time.Time` writes them); `None` if it is not one or is
/// before 1970.
pub fn rfc3339_to_unix(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        i += digits;
    }
    let offset = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let minutes = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return None,
    };
    // Days from the civil date (H. Hinnant's algorithm), proleptic Gregorian.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    u64::try_from(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_request_tells_null_from_absent_and_ignores_unknown_fields() {
        let absent: UpdateRequest = serde_json::from_str(r#"{"relays":["a"]}"#).unwrap();
        assert_eq!(absent.rmb_enc_key, None);
        let null: UpdateRequest = serde_json::from_str(r#"{"rmb_enc_key":null}"#).unwrap();
        assert_eq!(null.rmb_enc_key, Some(None));
        assert_eq!(null.relays, None);
        let relays_null: UpdateRequest = serde_json::from_str(r#"{"relays":null}"#).unwrap();
        assert_eq!(relays_null.relays, None);
        let other: UpdateRequest = serde_json::from_str(r#"{"public_key":"x","farm":1}"#).unwrap();
        assert_eq!(other.public_key.as_deref(), Some("x"));
        assert_eq!(
            serde_json::to_string(&UpdateRequest::default()).unwrap(),
            "{}"
        );
    }

    #[test]
    fn account_reads_node_registrar_shapes() {
        // db.Account as node-registrar's handlers write it (pkg/db/models.go): RFC 3339
        // times, base64 or "" e2e key, an untagged `Farms` relation.
        let account: AccountJson = serde_json::from_str(
            r#"{"twin_id":7,"relays":null,"rmb_enc_key":"","created_at":"2025-02-03T10:11:12.123456Z","updated_at":"2025-02-03T12:11:12+02:00","public_key":"AAAA","Farms":null}"#,
        )
        .unwrap();
        assert_eq!(account.relays, Vec::<String>::new());
        assert_eq!(account.rmb_enc_key.as_deref(), Some(""));
        assert_eq!(account.created_at, 1_738_577_472);
        assert_eq!(account.updated_at, 1_738_577_472);
        // The lean answer of later versions: no times at all.
        let lean: AccountJson = serde_json::from_str(
            r#"{"twin_id":7,"relays":["wss://r.example"],"rmb_enc_key":"","public_key":"AAAA"}"#,
        )
        .unwrap();
        assert_eq!((lean.created_at, lean.updated_at), (0, 0));
    }

    #[test]
    fn rfc3339_known_answers() {
        for (text, unix) in [
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2000-02-29T23:59:59Z", Some(951_868_799)),
            ("2023-11-14T22:13:20Z", Some(1_700_000_000)),
            ("2023-11-14T22:13:20.999999999Z", Some(1_700_000_000)),
            ("2023-11-15T00:13:20+02:00", Some(1_700_000_000)),
            ("2023-11-14T20:13:20-02:00", Some(1_700_000_000)),
            ("1969-12-31T23:59:59Z", None),
            ("2023-13-14T22:13:20Z", None),
            ("2023-11-14T22:13:20", None),
            ("2023-11-14T22:13:20.Z", None),
            ("2023-11-14T22:13:20+0200", None),
            ("not a time at all!!", None),
            ("", None),
        ] {
            assert_eq!(rfc3339_to_unix(text), unix, "{text}");
        }
    }
}
