//! The raw configuration before it is typed: the TOML file as a tree whose every node remembers
//! where it was set (file line or environment variable), with the `CSGW__…` overrides laid over
//! it. Types are applied by [`super::de`]; an error's key path is looked up here for its location.

use std::fmt;

use toml::de::{DeTable, DeValue};

/// Where a value was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Origin {
    /// 1-based line of the key in the file.
    File { line: usize },
    /// An environment variable (its name).
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { line } => write!(f, "file:{line}"),
            Origin::Env(var) => write!(f, "env {var}"),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) enum Kind {
    /// Keys in file order (environment additions last).
    Table(Vec<(String, Node)>),
    Array(Vec<Node>),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    /// The text of an environment variable: typed when read, by what the key expects.
    Env(String),
}

#[derive(Debug, Clone)]
pub(super) struct Node {
    pub kind: Kind,
    pub origin: Origin,
}

/// One step of a key path: `policy[0].on_error` is `Key(policy) Index(0) Key(on_error)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    Key(String),
    Index(usize),
}

/// Split `policy[0].senders[1]` into steps (the path format of serde_path_to_error and of the
/// keys named by `validate`).
pub(super) fn steps(path: &str) -> Vec<Step> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            out.push(Step::Key(rest[..i].to_string()));
            rest = &rest[i..];
            while let Some(end) = rest.find(']') {
                if let Ok(n) = rest[1..end].parse() {
                    out.push(Step::Index(n));
                }
                rest = &rest[end + 1..];
            }
        } else {
            out.push(Step::Key(rest.to_string()));
        }
    }
    out
}

impl Node {
    fn child(&self, step: &Step) -> Option<&Node> {
        match (&self.kind, step) {
            (Kind::Table(entries), Step::Key(k)) => {
                entries.iter().find(|(name, _)| name == k).map(|(_, n)| n)
            }
            (Kind::Array(items), Step::Index(i)) => items.get(*i),
            _ => None,
        }
    }

    /// The node at `path`, or None when the key was not set (its default applies).
    pub fn get(&self, path: &str) -> Option<&Node> {
        steps(path).iter().try_fold(self, |n, s| n.child(s))
    }

    /// The deepest node on `path` that was set: the value itself, or the section it is
    /// missing from. A value from the environment covers everything below it (a list).
    pub fn nearest(&self, path: &str) -> &Node {
        let mut node = self;
        for s in steps(path) {
            match node.child(&s) {
                Some(n) => node = n,
                None => break,
            }
        }
        node
    }
}

/// Parse the file into a tree. Errors are `(line, message)`.
pub(super) fn from_toml(text: &str) -> Result<Node, (Option<usize>, String)> {
    let doc = DeTable::parse(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        (line, format!("TOML syntax: {}", e.message()))
    })?;
    // Line 0: the document itself (an error about it names the file only).
    let root = Origin::File { line: 0 };
    Ok(Node {
        kind: table(text, doc.get_ref())?,
        origin: root,
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn table(text: &str, t: &DeTable<'_>) -> Result<Kind, (Option<usize>, String)> {
    let mut entries = Vec::new();
    for (k, v) in t.iter() {
        let line = line_of(text, k.span().start);
        entries.push((
            k.span().start,
            k.get_ref().to_string(),
            value(text, v.get_ref(), line)?,
        ));
    }
    entries.sort_by_key(|(start, _, _)| *start);
    Ok(Kind::Table(
        entries.into_iter().map(|(_, k, n)| (k, n)).collect(),
    ))
}

fn value(text: &str, v: &DeValue<'_>, line: usize) -> Result<Node, (Option<usize>, String)> {
    let kind = match v {
        DeValue::String(s) => Kind::Str(s.to_string()),
        DeValue::Integer(i) => {
            let digits = i.as_str().replace('_', "");
            Kind::Int(i64::from_str_radix(&digits, i.radix()).map_err(|_| {
                (
                    Some(line),
                    format!("integer {} is out of range", i.as_str()),
                )
            })?)
        }
        DeValue::Float(f) => Kind::Float(
            f.as_str()
                .replace('_', "")
                .parse()
                .map_err(|_| (Some(line), format!("float {} is out of range", f.as_str())))?,
        ),
        DeValue::Boolean(b) => Kind::Bool(*b),
        DeValue::Datetime(d) => Kind::Datetime(d.to_string()),
        DeValue::Array(a) => Kind::Array(
            a.into_iter()
                .map(|e| value(text, e.get_ref(), line_of(text, e.span().start)))
                .collect::<Result<_, _>>()?,
        ),
        DeValue::Table(t) => table(text, t)?,
    };
    Ok(Node {
        kind,
        origin: Origin::File { line },
    })
}

/// Lay the `CSGW__SECTION__KEY` variables over the tree (sorted by name, so the result does not
/// depend on the order of the environment). `CSGW__POLICY__0__THRESHOLD` addresses the first
/// `[[policy]]`; the index one past the last adds a rule. Errors are `(variable, message)`.
pub(super) fn apply_env(
    root: &mut Node,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(), (String, String)> {
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with("CSGW__"))
        .collect();
    vars.sort();
    for (var, text) in vars {
        let segments: Vec<String> = var["CSGW__".len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if segments.iter().any(String::is_empty) {
            return Err((var, "empty key segment (write CSGW__SECTION__KEY)".into()));
        }
        let origin = Origin::Env(var.clone());
        let leaf = Node {
            kind: Kind::Env(text),
            origin: origin.clone(),
        };
        set(root, &segments, leaf, &origin).map_err(|m| (var.clone(), m))?;
    }
    Ok(())
}

fn set(node: &mut Node, path: &[String], leaf: Node, origin: &Origin) -> Result<(), String> {
    let (first, rest) = path.split_first().expect("non-empty path");
    let last = rest.is_empty();
    let empty_table = || Node {
        kind: Kind::Table(Vec::new()),
        origin: origin.clone(),
    };
    match &mut node.kind {
        Kind::Table(entries) => {
            let pos = entries.iter().position(|(k, _)| k == first);
            if last {
                match pos {
                    Some(i) => entries[i].1 = leaf,
                    None => entries.push((first.clone(), leaf)),
                }
                return Ok(());
            }
            let i = match pos {
                Some(i) => i,
                None => {
                    // `policy` is a list of tables; every other section a table.
                    let child = if rest[0].parse::<usize>().is_ok() {
                        Node {
                            kind: Kind::Array(Vec::new()),
                            origin: origin.clone(),
                        }
                    } else {
                        empty_table()
                    };
                    entries.push((first.clone(), child));
                    entries.len() - 1
                }
            };
            set(&mut entries[i].1, rest, leaf, origin)
        }
        Kind::Array(items) => {
            let Ok(i) = first.parse::<usize>() else {
                return Err(format!("{first:?} is not an index of the list"));
            };
            if i > items.len() {
                return Err(format!(
                    "index {i} is past the end of the list (indexes 0 to {} exist or add one)",
                    items.len()
                ));
            }
            if last {
                if i == items.len() {
                    items.push(leaf);
                } else {
                    items[i] = leaf;
                }
                return Ok(());
            }
            if i == items.len() {
                items.push(empty_table());
            }
            set(&mut items[i], rest, leaf, origin)
        }
        _ => Err(format!("{first:?} is below a value, not a section")),
    }
}
