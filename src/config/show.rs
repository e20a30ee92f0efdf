//! `show-config`: the effective configuration, one `key = value` line per setting, sorted by
//! key (as `postconf` does), with the source of each value (`file:LINE`, `env VARIABLE` or `default`).
//! Secrets print as `"[redacted]"` (their `Serialize`); optional keys without a value are left
//! out.

use serde_json::Value;

use super::load::Loaded;

impl Loaded {
    /// All settings, or with `non_default` only those set in the file or the environment.
    pub fn render(&self, non_default: bool) -> String {
        let value = serde_json::to_value(&self.config).expect("the configuration serializes");
        let mut lines = Vec::new();
        flatten("", &value, &mut lines);
        let mut out = String::new();
        for (key, text) in lines {
            let source = self.source(&key);
            if non_default && source.is_none() {
                continue;
            }
            let source = source.unwrap_or_else(|| "default".into());
            out.push_str(&format!("{key} = {text}  # {source}\n"));
        }
        out
    }
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        // Lists of sections (`[[policy]]`) by index; lists of values as one value.
        Value::Array(items) if items.iter().any(Value::is_object) => {
            for (i, item) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), item, out);
            }
        }
        Value::Null => {}
        v => out.push((prefix.to_string(), toml_text(v))),
    }
}

/// A value as TOML writes it (JSON's strings, numbers and booleans are TOML's too).
fn toml_text(v: &Value) -> String {
    match v {
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(toml_text).collect::<Vec<_>>().join(", ")
        ),
        v => v.to_string(),
    }
}
