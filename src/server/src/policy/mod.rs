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

use cedar_policy::{
    Authorizer, Context, Decision, Entities, EntityUid, PolicySet as CedarPolicySet, Request,
    Schema, ValidationMode, Validator,
};
use miette::Diagnostic;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::domain::User;

pub mod azure;
pub mod catalog;

pub use catalog::{Catalog, Entitlement, Kind};

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

/// Proof that the policies allowed `action`; only [`PolicySet`] makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorized {
    action: Action,
    /// `@id`s of the policies that determined the decision.
    pub policies: Vec<String>,
}

impl Authorized {
    /// The action it authorizes.
    pub fn action(&self) -> Action {
        self.action
    }
}

/// A refusal, with the determining policy ids (empty when nothing permitted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// `@id`s of forbid policies that applied.
    pub policies: Vec<String>,
    /// Evaluation errors (logged, never shown).
    pub errors: Vec<String>,
}

/// Facts about a request for the Cedar `context`.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts<'a> {
    /// Asked duration.
    pub duration_seconds: u64,
    /// Justification text.
    pub justification: &'a str,
    /// Ticket, if any.
    pub ticket: Option<&'a str>,
    /// Is this an extension.
    pub extension: bool,
    /// Break-glass asked.
    pub break_glass: bool,
    /// Now, unix seconds.
    pub now: i64,
}

/// What an approver decides on.
#[derive(Debug, Clone)]
pub struct RequestResource<'a> {
    /// Request id.
    pub id: &'a str,
    /// Requester key.
    pub requester_key: &'a str,
    /// Requester email.
    pub requester_email: &'a str,
    /// Entitlement.
    pub entitlement: &'a Entitlement,
    /// Duration.
    pub duration_seconds: u64,
    /// Break-glass.
    pub break_glass: bool,
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
    #[expect(
        clippy::too_many_lines,
        reason = "one linear sequence of checks; splitting it hides the order"
    )]
    pub fn from_files(files: &[(String, String)], source: &str) -> Result<Self, Vec<String>> {
        let find = |suffix: &str| files.iter().find(|(n, _)| n.ends_with(suffix));
        let mut errors = Vec::new();
        let catalog = if let Some((name, text)) = find("entitlements.toml") {
            Catalog::parse(text, name).unwrap_or_else(|e| {
                errors.extend(e);
                Catalog::default()
            })
        } else {
            errors.push(format!("{source}: entitlements.toml is missing"));
            Catalog::default()
        };
        let schema = if let Some((name, text)) = find("schema.cedarschema") {
            match Schema::from_cedarschema_str(text) {
                Ok((schema, _warnings)) => Some(schema),
                Err(e) => {
                    errors.push(diagnostic(name, text, 0, &e));
                    None
                }
            }
        } else {
            errors.push(format!("{source}: schema.cedarschema is missing"));
            None
        };
        // All .cedar files are parsed as one text so policy ids stay unique;
        // offsets map back to files for messages.
        let mut all = String::new();
        let mut spans: Vec<(usize, &str, &str)> = Vec::new();
        for (name, text) in files.iter().filter(|(n, _)| {
            Path::new(n)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("cedar"))
        }) {
            spans.push((all.len(), name, text));
            all.push_str(text);
            all.push('\n');
        }
        let locate = |offset: usize| -> String {
            let (start, name, text) = spans
                .iter()
                .rev()
                .find(|(s, _, _)| *s <= offset)
                .copied()
                .unwrap_or((0, "policies", ""));
            format!("{name}:{}", catalog::line_of(text, offset - start))
        };
        let policies = match CedarPolicySet::from_str(&all) {
            Ok(p) => Some(p),
            Err(e) => {
                let at = first_offset(&e).map_or_else(|| "policies".to_owned(), locate);
                errors.push(format!("{at}: {}", flatten(&e)));
                None
            }
        };
        let mut ids = BTreeMap::new();
        if let (Some(schema), Some(policies)) = (&schema, &policies) {
            let result = Validator::new(schema.clone()).validate(policies, ValidationMode::Strict);
            for e in result.validation_errors() {
                let at = first_offset(e).map_or_else(|| "policies".to_owned(), locate);
                errors.push(format!("{at}: {}", flatten(e)));
            }
            let mut seen = BTreeMap::new();
            for p in policies.policies() {
                let at = p
                    .annotation("id")
                    .and_then(|id| all.find(&format!("@id(\"{id}\")")))
                    .map_or_else(|| "policies".to_owned(), locate);
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
                // Entitlement ids named by policies must exist in the catalog.
                for uid in entity_literals(&p.to_string()) {
                    if let Some(ent) = uid.strip_prefix("Entitlement::") {
                        let ent = ent.trim_matches('"');
                        if catalog.get(ent).is_none() {
                            errors.push(format!("{at}: unknown entitlement `{ent}`"));
                        }
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let (Some(schema), Some(policies)) = (schema, policies) else {
            return Err(vec![format!("{source}: policies could not be loaded")]);
        };
        let mut hasher = Sha256::new();
        let mut sorted: Vec<&(String, String)> = files.iter().collect();
        sorted.sort_by(|a, b| file_name(&a.0).cmp(file_name(&b.0)));
        for (name, text) in sorted {
            hasher.update(file_name(name).as_bytes());
            hasher.update([0]);
            hasher.update(text.as_bytes());
            hasher.update([0]);
        }
        Ok(Self {
            catalog,
            schema,
            policies,
            ids,
            hash: hex::encode(hasher.finalize()),
            source: source.to_owned(),
            authorizer: Authorizer::new(),
        })
    }

    /// Decides `action` by `user` on an entitlement.
    pub fn authorize_entitlement(
        &self,
        user: &User,
        action: Action,
        ent: &Entitlement,
        facts: &RequestFacts<'_>,
    ) -> Result<Authorized, Denied> {
        let resource = entity_uid("Entitlement", &ent.id);
        let mut entities = user_entities(user);
        entities.push(entitlement_entity(ent));
        let context = json!({
            "duration_seconds": i64::try_from(facts.duration_seconds).unwrap_or(i64::MAX),
            "justification": facts.justification,
            "has_ticket": facts.ticket.is_some(),
            "ticket": facts.ticket.unwrap_or(""),
            "mfa": user.mfa,
            "auth_age_seconds": user.auth_time.map_or(i64::MAX, |t| (facts.now - t).max(0)),
            "hour_utc": (facts.now.rem_euclid(86_400)) / 3600,
            "weekday": ((facts.now.div_euclid(86_400)) + 4).rem_euclid(7),
            "extension": facts.extension,
            "break_glass": facts.break_glass,
        });
        self.decide(user, action, resource, entities, context)
    }

    /// Decides `approve` by `user` on a request.
    pub fn authorize_request(
        &self,
        user: &User,
        request: &RequestResource<'_>,
        now: i64,
    ) -> Result<Authorized, Denied> {
        let mut entities = user_entities(user);
        entities.push(entitlement_entity(request.entitlement));
        let requester = entity_uid("User", request.requester_key);
        if request.requester_key != user.key {
            entities.push(json!({
                "uid": {"type": "User", "id": request.requester_key},
                "attrs": {"email": request.requester_email, "name": request.requester_email, "mfa": false},
                "parents": [],
            }));
        }
        entities.push(json!({
            "uid": {"type": "Request", "id": request.id},
            "attrs": {
                "requester": requester,
                "entitlement": entity_uid("Entitlement", &request.entitlement.id),
                "duration_seconds": i64::try_from(request.duration_seconds).unwrap_or(i64::MAX),
                "break_glass": request.break_glass,
            },
            "parents": [],
        }));
        let context = json!({
            "mfa": user.mfa,
            "hour_utc": (now.rem_euclid(86_400)) / 3600,
        });
        self.decide(
            user,
            Action::Approve,
            entity_uid("Request", request.id),
            entities,
            context,
        )
    }

    /// Decides a broker-wide action (`admin`, `audit`).
    pub fn authorize_broker(&self, user: &User, action: Action) -> Result<Authorized, Denied> {
        let mut entities = user_entities(user);
        entities.push(json!({"uid": {"type": "Broker", "id": "jit"}, "attrs": {}, "parents": []}));
        self.decide(
            user,
            action,
            entity_uid("Broker", "jit"),
            entities,
            json!({}),
        )
    }

    fn decide(
        &self,
        user: &User,
        action: Action,
        resource: Value,
        entities: Vec<Value>,
        context: Value,
    ) -> Result<Authorized, Denied> {
        let fail = |e: String| Denied {
            policies: vec![],
            errors: vec![e],
        };
        let action_uid = EntityUid::from_json(json!({"type": "Action", "id": action.as_str()}))
            .map_err(|e| fail(e.to_string()))?;
        let principal =
            EntityUid::from_json(entity_uid("User", &user.key)).map_err(|e| fail(e.to_string()))?;
        let resource = EntityUid::from_json(resource).map_err(|e| fail(e.to_string()))?;
        let entities = Entities::from_json_value(Value::Array(entities), Some(&self.schema))
            .map_err(|e| fail(flatten(&e)))?;
        let context = Context::from_json_value(context, Some((&self.schema, &action_uid)))
            .map_err(|e| fail(flatten(&e)))?;
        let request = Request::new(principal, action_uid, resource, context, Some(&self.schema))
            .map_err(|e| fail(flatten(&e)))?;
        let response = self
            .authorizer
            .is_authorized(&request, &self.policies, &entities);
        let policies: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|id| {
                self.ids
                    .get(&id.to_string())
                    .cloned()
                    .unwrap_or_else(|| id.to_string())
            })
            .collect();
        match response.decision() {
            Decision::Allow => Ok(Authorized { action, policies }),
            Decision::Deny => Err(Denied {
                policies,
                errors: response
                    .diagnostics()
                    .errors()
                    .map(ToString::to_string)
                    .collect(),
            }),
        }
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn entity_uid(kind: &str, id: &str) -> Value {
    json!({"type": kind, "id": id})
}

fn user_entities(user: &User) -> Vec<Value> {
    let mut out = vec![json!({
        "uid": {"type": "User", "id": user.key},
        "attrs": {"email": user.email, "name": user.name, "mfa": user.mfa},
        "parents": user.groups.iter().chain(user.roles.iter())
            .map(|g| json!({"type": "Group", "id": g})).collect::<Vec<_>>(),
    })];
    for g in user.groups.iter().chain(user.roles.iter()) {
        out.push(json!({"uid": {"type": "Group", "id": g}, "attrs": {}, "parents": []}));
    }
    out.dedup();
    out
}

fn entitlement_entity(ent: &Entitlement) -> Value {
    json!({
        "uid": {"type": "Entitlement", "id": ent.id},
        "attrs": {
            "kind": ent.kind.as_str(),
            "approvals_required": i64::from(ent.approvals_required),
            "require_mfa": ent.require_mfa,
            "max_duration_seconds": i64::try_from(ent.max_duration).unwrap_or(i64::MAX),
        },
        "parents": [],
    })
}

/// `Type::"id"` literals in a policy's text.
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
