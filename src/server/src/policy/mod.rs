//! Policy: the entitlement catalog and the Cedar policies that decide who may
//! request, approve, break glass, administer and audit.
//!
//! Loaded and validated once at start-up ([`PolicySet::load`]); a broken
//! catalog or policy keeps the broker from starting. Decisions come back as
//! [`Authorized`] values that only this module can make.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::str::FromStr;

use cedar_policy::{Authorizer, PolicySet as CedarPolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;
use sha2::{Digest, Sha256};

pub mod azure;
pub mod catalog;
mod decide;

pub use catalog::{Catalog, Entitlement, Kind};
pub use decide::{
    Act, Approvable, Authorized, CedarAct, Denied, Listing, OnBroker, OnEntitlement, OwnRequest,
    RequestFacts, RequestResource, act,
};

/// Files of the bundled example policy set (`policies/`), for `serve --dev`.
pub const BUNDLED: &[(&str, &str)] = &[
    (
        "entitlements.toml",
        include_str!("../../../../policies/entitlements.toml"),
    ),
    (
        "schema.cedarschema",
        include_str!("../../../../policies/schema.cedarschema"),
    ),
    (
        "access.cedar",
        include_str!("../../../../policies/access.cedar"),
    ),
    (
        "approvals.cedar",
        include_str!("../../../../policies/approvals.cedar"),
    ),
    (
        "admin.cedar",
        include_str!("../../../../policies/admin.cedar"),
    ),
];

/// An action the policies decide on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Ask for an entitlement.
    Request,
    /// Be approved without a human (with `approvals_required = 0`).
    AutoApprove,
    /// Be granted at once, reviewed afterwards.
    BreakGlass,
    /// Approve or deny someone's request.
    Approve,
    /// Administer the broker (revoke any grant, revoke all sessions).
    Admin,
    /// Read the whole audit log and every request.
    Audit,
}

impl Action {
    /// Cedar action id.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::AutoApprove => "auto_approve",
            Self::BreakGlass => "break_glass",
            Self::Approve => "approve",
            Self::Admin => "admin",
            Self::Audit => "audit",
        }
    }

    /// Parses a Cedar action id.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Request,
            Self::AutoApprove,
            Self::BreakGlass,
            Self::Approve,
            Self::Admin,
            Self::Audit,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

/// The loaded catalog and Cedar policies.
pub struct PolicySet {
    /// The catalog.
    pub catalog: Catalog,
    schema: Schema,
    policies: CedarPolicySet,
    /// `@id` of each Cedar policy id.
    ids: BTreeMap<String, String>,
    /// SHA-256 over every file, for the audit log.
    pub hash: String,
    /// Where it came from.
    pub source: String,
    authorizer: Authorizer,
    /// Cedar entities of the catalog and of the users seen, for this set only.
    native: decide::Native,
}

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySet")
            .field("entitlements", &self.catalog.len())
            .field("hash", &self.hash)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl PolicySet {
    /// Loads `dir` (entitlements.toml, schema.cedarschema, *.cedar); errors are `file:line: message`.
    pub fn load(dir: &Path) -> Result<Self, Vec<String>> {
        let mut files = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|e| {
            vec![format!(
                "{}: cannot read policy directory: {e}",
                dir.display()
            )]
        })?;
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                Path::new(n)
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("cedar"))
                    || n == "entitlements.toml"
                    || n == "schema.cedarschema"
            })
            .collect();
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| vec![format!("{}: {e}", path.display())])?;
            files.push((path.display().to_string(), text));
        }
        Self::from_files(&files, &dir.display().to_string())
    }

    /// The bundled example set.
    pub fn bundled() -> Result<Self, Vec<String>> {
        let files: Vec<(String, String)> = BUNDLED
            .iter()
            .map(|(n, t)| (format!("policies/{n}"), (*t).to_owned()))
            .collect();
        Self::from_files(&files, "bundled example policies")
    }

    /// Builds from `(file name, text)` pairs.
    pub fn from_files(files: &[(String, String)], source: &str) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let catalog = load_catalog(files, source, &mut errors);
        let schema = load_schema(files, source, &mut errors);
        let texts = CedarTexts::of(files);
        let policies = match CedarPolicySet::from_str(&texts.all) {
            Ok(p) => Some(p),
            Err(e) => {
                let at =
                    first_offset(&e).map_or_else(|| "policies".to_owned(), |o| texts.locate(o));
                errors.push(format!("{at}: {}", flatten(&e)));
                None
            }
        };
        let ids = match (&schema, &policies) {
            (Some(schema), Some(policies)) => {
                check_policies(policies, schema, &catalog, &texts, &mut errors)
            }
            _ => BTreeMap::new(),
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let (Some(schema), Some(policies)) = (schema, policies) else {
            return Err(vec![format!("{source}: policies could not be loaded")]);
        };
        let mut native =
            decide::Native::new(catalog.iter()).map_err(|e| vec![format!("{source}: {e}")])?;
        native.reads_time = decide::Native::reads_time(&policies);
        native.by_action = native.by_action(&policies, &schema);
        native.check_shapes(&schema, catalog.iter().find(|e| e.kind != Kind::Bundle));
        native.prepare_approve(named_entitlements(&policies), &schema);
        Ok(Self {
            native,
            catalog,
            schema,
            policies,
            ids,
            hash: fingerprint(files),
            source: source.to_owned(),
            authorizer: Authorizer::new(),
        })
    }
}

/// The file of `files` whose name ends with `suffix`.
fn find<'a>(files: &'a [(String, String)], suffix: &str) -> Option<&'a (String, String)> {
    files.iter().find(|(n, _)| n.ends_with(suffix))
}

/// The catalog of `files` (`entitlements.toml`); an empty one, with its errors added to
/// `errors`, when it is missing or wrong.
fn load_catalog(files: &[(String, String)], source: &str, errors: &mut Vec<String>) -> Catalog {
    if let Some((name, text)) = find(files, "entitlements.toml") {
        Catalog::parse(text, name).unwrap_or_else(|e| {
            errors.extend(e);
            Catalog::default()
        })
    } else {
        errors.push(format!("{source}: entitlements.toml is missing"));
        Catalog::default()
    }
}

/// The Cedar schema of `files` (`schema.cedarschema`); `None`, with the error added to
/// `errors`, when it is missing or wrong.
fn load_schema(
    files: &[(String, String)],
    source: &str,
    errors: &mut Vec<String>,
) -> Option<Schema> {
    let Some((name, text)) = find(files, "schema.cedarschema") else {
        errors.push(format!("{source}: schema.cedarschema is missing"));
        return None;
    };
    match Schema::from_cedarschema_str(text) {
        Ok((schema, _warnings)) => Some(schema),
        Err(e) => {
            errors.push(diagnostic(name, text, 0, &e));
            None
        }
    }
}

/// All `.cedar` files as one text, parsed together so that policy ids stay unique, with
/// where each file starts so that offsets map back to files for messages.
struct CedarTexts<'a> {
    all: String,
    /// Start offset, file name and text of each file.
    spans: Vec<(usize, &'a str, &'a str)>,
}

impl<'a> CedarTexts<'a> {
    fn of(files: &'a [(String, String)]) -> Self {
        let mut all = String::new();
        let mut spans = Vec::new();
        for (name, text) in files.iter().filter(|(n, _)| {
            Path::new(n)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("cedar"))
        }) {
            spans.push((all.len(), name.as_str(), text.as_str()));
            all.push_str(text);
            all.push('\n');
        }
        Self { all, spans }
    }

    /// `file:line` of `offset` in the joined text.
    fn locate(&self, offset: usize) -> String {
        let (start, name, text) = self
            .spans
            .iter()
            .rev()
            .find(|(s, _, _)| *s <= offset)
            .copied()
            .unwrap_or((0, "policies", ""));
        format!("{name}:{}", catalog::line_of(text, offset - start))
    }
}

/// Checks `policies` against `schema` (strict validation) and `catalog`, adding what is
/// wrong to `errors`: every policy needs a unique `@id`, and the entitlements it names must
/// exist. The `@id` of each Cedar policy id.
fn check_policies(
    policies: &CedarPolicySet,
    schema: &Schema,
    catalog: &Catalog,
    texts: &CedarTexts<'_>,
    errors: &mut Vec<String>,
) -> BTreeMap<String, String> {
    let locate_or =
        |offset: Option<usize>| offset.map_or_else(|| "policies".to_owned(), |o| texts.locate(o));
    let result = Validator::new(schema.clone()).validate(policies, ValidationMode::Strict);
    for e in result.validation_errors() {
        errors.push(format!("{}: {}", locate_or(first_offset(e)), flatten(e)));
    }
    let mut ids = BTreeMap::new();
    let mut seen = BTreeMap::new();
    for p in policies.policies() {
        let at = locate_or(
            p.annotation("id")
                .and_then(|id| texts.all.find(&format!("@id(\"{id}\")"))),
        );
        match p.annotation("id") {
            Some(id) => {
                if let Some(prev) = seen.insert(id.to_owned(), at.clone()) {
                    errors.push(format!(
                        "{at}: duplicate policy @id(\"{id}\") (also at {prev})"
                    ));
                }
                ids.insert(p.id().to_string(), id.to_owned());
            }
            None => errors.push(format!("{at}: policy has no @id(\"…\") annotation")),
        }
        // Entitlement ids named by policies must exist in the catalog;
        // requests are made at run time and cannot be named (lists are
        // narrowed by entitlement before the exact decision,
        // `PolicySet::approvable`).
        for uid in entity_literals(&p.to_string()) {
            if let Some(ent) = uid.strip_prefix("Entitlement::") {
                let ent = ent.trim_matches('"');
                if catalog.get(ent).is_none() {
                    errors.push(format!("{at}: unknown entitlement `{ent}`"));
                }
            } else if uid.starts_with("Request::") {
                errors.push(format!(
                    "{at}: a policy cannot name a request ({uid}): requests are made at run time"
                ));
            }
        }
    }
    ids
}

/// SHA-256 over every file (name and text), in the order of their names, for the audit log.
fn fingerprint(files: &[(String, String)]) -> String {
    let mut hasher = Sha256::new();
    let mut sorted: Vec<&(String, String)> = files.iter().collect();
    sorted.sort_by(|a, b| file_name(&a.0).cmp(file_name(&b.0)));
    for (name, text) in sorted {
        hasher.update(file_name(name).as_bytes());
        hasher.update([0]);
        hasher.update(text.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `Type::"id"` literals in a policy's text.
/// The entitlement ids `policies` name (`Entitlement::"…"`).
fn named_entitlements(policies: &CedarPolicySet) -> std::collections::HashSet<String> {
    policies
        .policies()
        .flat_map(|p| entity_literals(&p.to_string()))
        .filter_map(|uid| {
            uid.strip_prefix("Entitlement::")
                .map(|id| id.trim_matches('"').to_owned())
        })
        .collect()
}

fn entity_literals(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("::\"") {
        let head = &rest[..i];
        let name_start = head
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .map_or(0, |p| p + 1);
        let tail = &rest[i + 3..];
        let Some(end) = tail.find('"') else { break };
        out.push(format!("{}::\"{}\"", &head[name_start..], &tail[..end]));
        rest = &tail[end + 1..];
    }
    out
}

fn first_offset(e: &dyn Diagnostic) -> Option<usize> {
    if let Some(mut labels) = e.labels()
        && let Some(l) = labels.next()
    {
        return Some(l.offset());
    }
    if let Some(related) = e.related() {
        for r in related {
            if let Some(o) = first_offset(r) {
                return Some(o);
            }
        }
    }
    None
}

fn flatten(e: &(dyn Diagnostic + 'static)) -> String {
    let mut s = e.to_string();
    if let Some(help) = e.help() {
        let _ = write!(s, " ({help})");
    }
    if let Some(related) = e.related() {
        for r in related {
            let _ = write!(s, "; {r}");
        }
    }
    s.replace('\n', " ")
}

fn diagnostic(name: &str, text: &str, base: usize, e: &(dyn Diagnostic + 'static)) -> String {
    let line = first_offset(e).map_or(1, |o| catalog::line_of(text, o.saturating_sub(base)));
    format!("{name}:{line}: {}", flatten(e))
}
