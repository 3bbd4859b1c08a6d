//! JSON and TOML.

use super::*;

/// Deserializes `value` into `T` and checks every field shown survives a round trip.
pub(crate) fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(
    value: &Value,
) -> Result<(), String> {
    let parsed: T = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&parsed).map_err(|e| e.to_string())?;
    shown_fields_kept(value, &back)
}

pub(crate) fn shown_fields_kept(shown: &Value, back: &Value) -> Result<(), String> {
    match (shown, back) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, v) in a {
                let kept = b
                    .get(key)
                    .ok_or_else(|| format!("field {key:?} is not part of the type"))?;
                shown_fields_kept(v, kept).map_err(|e| format!("{key}: {e}"))?;
            }
            Ok(())
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .try_for_each(|(x, y)| shown_fields_kept(x, y)),
        (a, b) if a == b => Ok(()),
        (a, b) => Err(format!("{a} reads back as {b}")),
    }
}

pub(crate) fn check_json_block(block: &Block) -> Result<(), String> {
    let value: Value =
        serde_json::from_str(&block.body).map_err(|e| format!("not valid JSON: {e}"))?;
    let Some(kind) = block.tags.first() else {
        return Ok(());
    };
    match kind.as_str() {
        "peer-request" => typed::<OutgoingRequest>(&value),
        "peer-incoming-request" => typed::<IncomingRequest>(&value),
        "peer-reply" => typed::<OutgoingResponse>(&value),
        "peer-incoming-reply" => typed::<IncomingResponse>(&value),
        "registrar-account" => typed::<AccountJson>(&value),
        "registrar-accounts" => typed::<Vec<AccountJson>>(&value),
        "registrar-create" => typed::<CreateRequest>(&value),
        "registrar-update" => typed::<UpdateRequest>(&value),
        "registrar-error" => typed::<ErrorBody>(&value),
        other => Err(format!("unknown JSON type {other:?}")),
    }
    .map_err(|e| format!("json {kind}: {e}"))
}

pub(crate) fn json_and_toml_problems(blocks: &[Block]) -> Vec<String> {
    let mut problems = Vec::new();
    for block in blocks {
        let result = match block.lang.as_str() {
            "json" => check_json_block(block),
            "toml" => toml::from_str::<toml::Table>(&block.body)
                .map(drop)
                .map_err(|e| format!("not valid TOML: {e}")),
            _ => Ok(()),
        };
        if let Err(e) = result {
            problems.push(format!("{}: {e}", block.at()));
        }
    }
    problems
}

#[test]
pub(crate) fn json_and_toml_blocks_parse_and_typed_ones_fit_their_types() {
    let blocks = all_blocks();
    let counted = |lang: &str| blocks.iter().filter(|b| b.lang == lang).count();
    assert!(counted("json") >= 5, "the docs show peer JSON; none found");
    fail_on(json_and_toml_problems(&blocks));
}
