//! The checkers themselves catch mistakes.

use super::*;

#[test]
pub(crate) fn the_checkers_catch_broken_docs() {
    let doc = "\
```json peer-request
{\"ver\":1,\"ref\":null,\"command\":\"x\",\"dst\":[1],\"ret\":\"r\"}
```
```json
{not json}
```
```json registrar-acount
{}
```
```toml
a = [
```
```sh
rmb cal --dst 1
rmb call --dest 1 --cmd x
rmb-relay --domain r.example --no-such-flag
```
```rust
pub(crate) fn main() {}
```
```rust excerpt=crates/rmb-sdk/examples/call.rs
let nothing_like_this = 1;
```
";
    let blocks = parse_blocks("broken.md", doc);
    let json = json_and_toml_problems(&blocks);
    assert_eq!(json.len(), 4, "{json:#?}");
    assert!(
        json[0].contains("cmd") || json[0].contains("command"),
        "{}",
        json[0]
    );
    let shell = shell_problems(&blocks, &mut RmbHelp(HashMap::new()));
    assert_eq!(shell.len(), 3, "{shell:#?}");
    assert!(shell[1].contains("--dest"), "{}", shell[1]);
    let rust: Vec<_> = blocks
        .iter()
        .filter(|b| b.lang == "rust")
        .filter_map(excerpt_problem)
        .collect();
    assert_eq!(rust.len(), 2, "{rust:#?}");

    let known: BTreeSet<String> = ["--listen", "--db"].iter().map(|s| s.to_string()).collect();
    let table = "| `--listen ADDR` | x |\n| `--dbs X` | y |\n";
    let flags = flag_table_problems("t.md", table, &known);
    assert_eq!(flags.len(), 2, "{flags:#?}"); // --dbs is unknown, --db undocumented

    let expected: Value =
        serde_json::json!({"error": "X-Auth timestamp … is not newer", "created_at": 1});
    let actual: Value =
        serde_json::json!({"error": "X-Auth timestamp 5 is not newer", "created_at": 99});
    assert!(json_matches(&expected, &actual, ""));
    let other: Value =
        serde_json::json!({"error": "X-Auth timestamp 5 is newer", "created_at": 99});
    assert!(!json_matches(&expected, &other, ""));

    let (words, comment) =
        shell_words(r#"A=1 rmb call --data '{"hi":1}' "two words" # → {"hi":1}"#);
    assert_eq!(
        words,
        ["A=1", "rmb", "call", "--data", r#"{"hi":1}"#, "two words"]
    );
    assert_eq!(expectation(&comment).as_deref(), Some(r#"{"hi":1}"#));
}
