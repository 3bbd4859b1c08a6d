//! HTTP exchanges against a real registrar.

use super::*;

pub(crate) struct Http {
    pub(crate) start: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

pub(crate) fn parse_http(body: &str) -> Http {
    let (head, body) = body.split_once("\n\n").unwrap_or((body, ""));
    let mut lines = head.lines();
    let start = lines.next().unwrap_or_default().trim().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Http {
        start,
        headers,
        body: body.trim().to_string(),
    }
}

/// Compares an actual JSON answer with the documented one (see the conventions).
pub(crate) fn json_matches(expected: &Value, actual: &Value, key: &str) -> bool {
    match (expected, actual) {
        (Value::Number(_), Value::Number(_)) if key == "created_at" || key == "updated_at" => true,
        (Value::String(e), Value::String(a)) if e.contains('…') => {
            let mut rest = a.as_str();
            let pieces: Vec<&str> = e.split('…').collect();
            for (i, piece) in pieces.iter().enumerate() {
                match rest.find(piece) {
                    Some(at) if i > 0 || at == 0 => rest = &rest[at + piece.len()..],
                    _ => return false,
                }
            }
            pieces.last().is_some_and(|l| l.is_empty()) || rest.is_empty()
        }
        (Value::Object(e), Value::Object(a)) => {
            e.len() == a.len()
                && e.iter()
                    .all(|(k, v)| a.get(k).is_some_and(|av| json_matches(v, av, k)))
        }
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(x, y)| json_matches(x, y, key))
        }
        (e, a) => e == a,
    }
}

/// Replays the file's exchanges against `base`; returns the number replayed.
pub(crate) async fn replay(blocks: &[&Block], base: &str) -> Result<usize, String> {
    let http = reqwest::Client::new();
    let mut replayed = 0;
    let mut iter = blocks.iter();
    while let Some(block) = iter.next() {
        let request = parse_http(&block.body);
        let mut start = request.start.split_whitespace();
        let (method, path) = (start.next().unwrap_or(""), start.next().unwrap_or(""));
        if method == "HTTP/1.1" {
            return Err(format!(
                "{}: a response without a request before it",
                block.at()
            ));
        }
        let Some(answer) = iter.next() else {
            return Err(format!("{}: a request without its response", block.at()));
        };
        let expected = parse_http(&answer.body);
        let mut send = http.request(
            reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?,
            format!("{base}{path}"),
        );
        for (k, v) in &request.headers {
            send = send.header(k, v);
        }
        if !request.body.is_empty() {
            serde_json::from_str::<Value>(&request.body)
                .map_err(|e| format!("{}: request body is not JSON: {e}", block.at()))?;
            send = send.body(request.body.clone());
        }
        let response = send.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let got_headers = response.headers().clone();
        let text = response.text().await.map_err(|e| e.to_string())?;
        let at = answer.at();
        let mut status_line = expected.start.split_whitespace().skip(1);
        let code: u16 = status_line
            .next()
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("{at}: expected `HTTP/1.1 <status> <reason>`"))?;
        let reason = status_line.collect::<Vec<_>>().join(" ");
        if status.as_u16() != code || status.canonical_reason() != Some(reason.as_str()) {
            return Err(format!(
                "{at}: {method} {path} answered {status} {text}, the doc says {code} {reason}"
            ));
        }
        for (k, v) in &expected.headers {
            let got = got_headers
                .get(k)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            if !got.starts_with(v.as_str()) {
                return Err(format!("{at}: header {k} is {got:?}, the doc says {v:?}"));
            }
        }
        let want: Value = serde_json::from_str(&expected.body)
            .map_err(|e| format!("{at}: response body is not JSON: {e}"))?;
        let got: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{at}: the server answered non-JSON {text:?}: {e}"))?;
        if !json_matches(&want, &got, "") {
            return Err(format!(
                "{at}: {method} {path} answered\n    {got}\n  the doc says\n    {want}"
            ));
        }
        replayed += 1;
    }
    Ok(replayed)
}

#[tokio::test]
pub(crate) async fn http_examples_replay_exactly_against_a_registrar() {
    let blocks = all_blocks();
    let mut files: Vec<&str> = blocks
        .iter()
        .filter(|b| b.lang == "http")
        .map(|b| b.file.as_str())
        .collect();
    files.dedup();
    assert!(
        files.contains(&"docs/registrar.md"),
        "docs/registrar.md shows no HTTP exchanges"
    );
    let mut problems = Vec::new();
    for file in files {
        let dir = tempfile::tempdir().unwrap();
        let mut config =
            rmb_registrar::Config::new(dir.path().join("r.db").to_string_lossy().to_string());
        // The examples carry fixed timestamps: accept any.
        config.time_window = Duration::from_secs(100 * 365 * 24 * 3600);
        config.auth_max_age = config.time_window;
        let registrar = rmb_testkit::TestRegistrar::start_with_config(config)
            .await
            .unwrap();
        let exchanges: Vec<&Block> = blocks
            .iter()
            .filter(|b| b.lang == "http" && b.file == file)
            .collect();
        match replay(&exchanges, &registrar.url()).await {
            Ok(n) => assert!(n > 0),
            Err(e) => problems.push(e),
        }
    }
    fail_on(problems);
}
