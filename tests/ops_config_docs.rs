//! The shipped example configuration and the configuration reference cover every key of
//! src/config/types.rs (the key names are an operator contract), and the example is valid.

use std::collections::BTreeSet;

use cryptshare_gateway::config::Config;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Section of each config struct, as written in TOML.
const SECTIONS: &[(&str, &str)] = &[
    ("ServerConfig", "server"),
    ("TlsConfig", "server.tls"),
    ("AuthConfig", "server.auth"),
    ("RelayConfig", "relay"),
    ("CryptshareConfig", "cryptshare"),
    ("StateConfig", "state"),
    ("MetricsConfig", "metrics"),
    ("DkimConfig", "dkim"),
    ("DkimKeyConfig", "dkim.key"),
    ("PolicyConfig", "policy"),
];

/// `section.key` for every `pub` field of the config structs, read from the source so that a
/// key added to config/types.rs without documentation fails here.
fn keys_from_source() -> BTreeSet<(String, String)> {
    let src = std::fs::read_to_string(format!("{ROOT}/src/config/types.rs")).unwrap();
    let mut keys = BTreeSet::new();
    for &(strukt, section) in SECTIONS {
        let start = src
            .find(&format!("pub struct {strukt} {{"))
            .unwrap_or_else(|| panic!("struct {strukt} not found in config/types.rs"));
        let body = &src[start..];
        let body = &body[..body.find("\n}").unwrap()];
        for line in body.lines().skip(1) {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("pub ")
                && let Some((name, _)) = rest.split_once(':')
            {
                let name = name.trim();
                // Nested sections are documented as sections, not keys.
                if !(matches!(name, "tls" | "auth") && section == "server"
                    || name == "key" && section == "dkim")
                {
                    keys.insert((section.to_string(), name.to_string()));
                }
            }
        }
    }
    // `tls` of [relay] is a key (off/opportunistic/required), not a section.
    keys.insert(("relay".into(), "tls".into()));
    keys
}

#[test]
fn source_parsing_finds_the_contract_keys() {
    let keys = keys_from_source();
    for (s, k) in [
        ("server", "listen"),
        ("server", "max_message_size"),
        ("server.tls", "cert"),
        ("relay", "next_hop"),
        ("cryptshare", "client_id"),
        ("state", "dir"),
        ("metrics", "listen"),
        ("policy", "on_error"),
        ("policy", "template_dir"),
    ] {
        assert!(keys.contains(&(s.into(), k.into())), "{s}.{k}");
    }
    assert!(keys.len() >= 50, "{}", keys.len());
}

#[test]
fn example_config_is_valid_and_mentions_every_key() {
    let path = format!("{ROOT}/config/gateway.example.toml");
    let cfg = Config::load_with_env(std::path::Path::new(&path), []).unwrap();
    assert_eq!(cfg.relay.next_hop.to_string(), "127.0.0.1:10026");
    assert!(
        cfg.policy.is_empty(),
        "the shipped config must pass mail through until a policy is enabled"
    );

    let text = std::fs::read_to_string(&path).unwrap();
    // Track the section each (possibly commented) line belongs to.
    let mut section = String::new();
    let mut seen = BTreeSet::new();
    for line in text.lines() {
        let l = line.trim_start_matches('#').trim();
        if let Some(s) = l.strip_prefix("[[").and_then(|s| s.strip_suffix("]]")) {
            section = s.to_string();
        } else if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.to_string();
        } else if let Some((k, _)) = l.split_once(" = ")
            && !k.contains(' ')
        {
            seen.insert((section.clone(), k.to_string()));
        }
    }
    let missing: Vec<String> = keys_from_source()
        .difference(&seen)
        .map(|(s, k)| format!("{s}.{k}"))
        .collect();
    assert!(
        missing.is_empty(),
        "keys missing in the example: {missing:?}"
    );
}

#[test]
fn configuration_reference_documents_every_key() {
    let doc = std::fs::read_to_string(format!("{ROOT}/docs/configuration.md")).unwrap();
    let missing: Vec<String> = keys_from_source()
        .into_iter()
        .map(|(s, k)| format!("`{s}.{k}`"))
        .filter(|k| !doc.contains(k.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "keys missing in docs/configuration.md: {missing:?}"
    );
}
