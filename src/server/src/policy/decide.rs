//! Decisions: the actions as types, the [`Authorized`] proofs only this module
//! makes, and the Cedar inputs built natively (no JSON on the way).
//!
//! A decision needs the principal's entities (the user and the groups it is
//! in), the resource's and a context. The user's part and the catalog's
//! entitlements are built once per user and kept with the policy set that
//! made them ([`PolicySet`] is one generation: a new set starts empty), so a
//! decision on an entitlement builds only its context.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, OnceLock};

use cedar_policy::{
    ActionConstraint, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    PolicySet as CedarPolicySet, Request, RestrictedExpression, Schema,
};

use super::{Action, Entitlement, Kind, PolicySet};
use crate::domain::User;
use crate::fifo::Fifo;

/// The actions as types, for [`Authorized`].
pub mod act {
    /// Ask for an entitlement.
    #[derive(Debug)]
    pub enum Request {}
    /// Be approved without a human.
    #[derive(Debug)]
    pub enum AutoApprove {}
    /// Be granted at once, reviewed afterwards.
    #[derive(Debug)]
    pub enum BreakGlass {}
    /// Approve, deny or review someone's request.
    #[derive(Debug)]
    pub enum Approve {}
    /// Administer the broker.
    #[derive(Debug)]
    pub enum Admin {}
    /// Read the whole audit log and every request.
    #[derive(Debug)]
    pub enum Audit {}
    /// Withdraw a request before it is granted: its requester, or an admin a scheduled one
    /// ([`PolicySet::authorize_cancel`](crate::policy::PolicySet::authorize_cancel)).
    ///
    /// Its proof is made there only, and no other proof stands for it:
    ///
    /// ```compile_fail
    /// # fn f(policy: &jit_server::policy::PolicySet, user: &jit_server::domain::User,
    /// #      request: &jit_server::policy::OwnRequest<'_>) {
    /// use jit_server::policy::{Authorized, act};
    /// let revoke = policy.authorize_revoke(user, request).unwrap();
    /// let cancel: Authorized<act::Cancel> = revoke; // a revoke's proof is not a cancel's
    /// # }
    /// ```
    ///
    /// while its own does:
    ///
    /// ```no_run
    /// # fn f(policy: &jit_server::policy::PolicySet, user: &jit_server::domain::User,
    /// #      request: &jit_server::policy::OwnRequest<'_>) {
    /// use jit_server::policy::{Authorized, act};
    /// let cancel: Authorized<act::Cancel> = policy.authorize_cancel(user, request).unwrap();
    /// # }
    /// ```
    ///
    /// and it cannot be made elsewhere:
    ///
    /// ```compile_fail
    /// use jit_server::policy::{Authorized, act};
    /// let forged: Authorized<act::Cancel> = Authorized {
    ///     principal: "dev/mallory".to_owned(),
    ///     resource: "0190a5c0-0000-7000-8000-000000000000".to_owned(),
    ///     policies: vec![],
    ///     act: std::marker::PhantomData,
    /// };
    /// ```
    #[derive(Debug)]
    pub enum Cancel {}
    /// End a grant early: its requester or an admin
    /// ([`PolicySet::authorize_revoke`](crate::policy::PolicySet::authorize_revoke)).
    ///
    /// Its proof is made there only, and no other proof stands for it:
    ///
    /// ```compile_fail
    /// # fn f(policy: &jit_server::policy::PolicySet, user: &jit_server::domain::User,
    /// #      request: &jit_server::policy::OwnRequest<'_>) {
    /// use jit_server::policy::{Authorized, act};
    /// let cancel = policy.authorize_cancel(user, request).unwrap();
    /// let revoke: Authorized<act::Revoke> = cancel; // a cancel's proof is not a revoke's
    /// # }
    /// ```
    ///
    /// while its own does:
    ///
    /// ```no_run
    /// # fn f(policy: &jit_server::policy::PolicySet, user: &jit_server::domain::User,
    /// #      request: &jit_server::policy::OwnRequest<'_>) {
    /// use jit_server::policy::{Authorized, act};
    /// let revoke: Authorized<act::Revoke> = policy.authorize_revoke(user, request).unwrap();
    /// # }
    /// ```
    ///
    /// and it cannot be made elsewhere:
    ///
    /// ```compile_fail
    /// use jit_server::policy::{Authorized, act};
    /// let forged: Authorized<act::Revoke> = Authorized {
    ///     principal: "dev/mallory".to_owned(),
    ///     resource: "0190a5c0-0000-7000-8000-000000000000".to_owned(),
    ///     policies: vec![],
    ///     act: std::marker::PhantomData,
    /// };
    /// ```
    #[derive(Debug)]
    pub enum Revoke {}
    /// Ask for more time on a grant: its requester only
    /// ([`PolicySet::authorize_extend`](crate::policy::PolicySet::authorize_extend)).
    ///
    /// Its proof is made there only, and no other proof stands for it:
    ///
    /// ```compile_fail
    /// # fn f(policy: &jit_server::policy::PolicySet, user: &jit_server::domain::User,
    /// #      request: &jit_server::policy::OwnRequest<'_>) {
    /// use jit_server::policy::{Authorized, act};
    /// let revoke = policy.authorize_revoke(user, request).unwrap();
    /// let extend: Authorized<act::Extend> = revoke; // a revoke's proof is not an extension's
    /// # }
    /// ```
    ///
    /// while its own does:
    ///
    /// ```no_run
    /// # fn f(policy: &jit_server::policy::PolicySet, user: &jit_server::domain::User,
    /// #      request: &jit_server::policy::OwnRequest<'_>) {
    /// use jit_server::policy::{Authorized, act};
    /// let extend: Authorized<act::Extend> = policy.authorize_extend(user, request).unwrap();
    /// # }
    /// ```
    ///
    /// and it cannot be made elsewhere:
    ///
    /// ```compile_fail
    /// use jit_server::policy::{Authorized, act};
    /// let forged: Authorized<act::Extend> = Authorized {
    ///     principal: "dev/mallory".to_owned(),
    ///     resource: "0190a5c0-0000-7000-8000-000000000000".to_owned(),
    ///     policies: vec![],
    ///     act: std::marker::PhantomData,
    /// };
    /// ```
    #[derive(Debug)]
    pub enum Extend {}
}

mod sealed {
    pub trait Sealed {}
}

/// An action of [`act`]; implemented there only.
pub trait Act: sealed::Sealed {}

/// An action the Cedar policies decide.
pub trait CedarAct: Act {
    /// Its Cedar action.
    const ACTION: Action;
}

/// An action on a catalog entitlement.
pub trait OnEntitlement: CedarAct {}

/// An action on the broker as a whole.
pub trait OnBroker: CedarAct {}

macro_rules! acts {
    ($($t:ident => $a:ident: $on:ident),* $(,)?) => {$(
        impl sealed::Sealed for act::$t {}
        impl Act for act::$t {}
        impl CedarAct for act::$t {
            const ACTION: Action = Action::$a;
        }
        impl $on for act::$t {}
    )*};
}

// The broker's own rules on a request by its requester (an admin's part is Cedar's `admin`).
impl sealed::Sealed for act::Cancel {}
impl Act for act::Cancel {}
impl sealed::Sealed for act::Revoke {}
impl Act for act::Revoke {}
impl sealed::Sealed for act::Extend {}
impl Act for act::Extend {}

acts! {
    Request => Request: OnEntitlement,
    AutoApprove => AutoApprove: OnEntitlement,
    BreakGlass => BreakGlass: OnEntitlement,
    Approve => Approve: OnEntitlement,
    Admin => Admin: OnBroker,
    Audit => Audit: OnBroker,
}

/// Proof that the policies allowed action `A` to one user on one resource.
///
/// Only the policy module makes one, so a function that takes it cannot be
/// reached without a decision:
///
/// ```compile_fail
/// use jit_server::policy::{Authorized, act};
/// let forged: Authorized<act::Admin> = Authorized {
///     principal: "dev/mallory".to_owned(),
///     resource: "jit".to_owned(),
///     policies: vec![],
///     act: std::marker::PhantomData,
/// };
/// ```
#[derive(Debug)]
pub struct Authorized<A: Act> {
    principal: String,
    resource: String,
    policies: Vec<String>,
    act: PhantomData<fn() -> A>,
}

impl<A: Act> Authorized<A> {
    /// The key of the user it was decided for.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// The resource's id: an entitlement id, a request id, or `jit` for the broker.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// `@id`s of the policies that determined the decision.
    pub fn policies(&self) -> &[String] {
        &self.policies
    }

    /// Whether it was decided for `user`.
    pub fn is_for(&self, user: &User) -> bool {
        self.principal == user.key
    }

    /// Allowed to `user` on their own request `id` by the broker's rules, no policy needed.
    fn own(user: &User, id: &str) -> Self {
        Self {
            principal: user.key.clone(),
            resource: id.to_owned(),
            policies: Vec::new(),
            act: PhantomData,
        }
    }

    /// The decision on `resource` (a bundle, or its request) made of the decisions on each
    /// of its members, all allowed.
    fn all_of(user: &User, resource: &str, each: Vec<Self>) -> Self {
        let mut policies: Vec<String> = each.into_iter().flat_map(|a| a.policies).collect();
        policies.sort();
        policies.dedup();
        Self {
            principal: user.key.clone(),
            resource: resource.to_owned(),
            policies,
            act: PhantomData,
        }
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

impl Denied {
    #[expect(
        clippy::needless_pass_by_value,
        reason = "used as `map_err(Denied::error)` on owned errors"
    )]
    fn error(e: impl ToString) -> Self {
        Self {
            policies: vec![],
            errors: vec![e.to_string()],
        }
    }

    /// Refused with no policy involved: the broker's own rule says no.
    fn nothing() -> Self {
        Self {
            policies: vec![],
            errors: vec![],
        }
    }
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
    /// When a scheduled request's access begins (its `start_at`), unix seconds; `None` for
    /// access from the approval on. In the context as `start_at` when the schema declares it.
    pub start_at: Option<i64>,
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

/// A request as the broker's own rules on it see it: whose it is and whether it waits for
/// its start ([`PolicySet::authorize_cancel`], [`PolicySet::authorize_revoke`],
/// [`PolicySet::authorize_extend`]).
#[derive(Debug, Clone, Copy)]
pub struct OwnRequest<'a> {
    /// Request id.
    pub id: &'a str,
    /// Requester key.
    pub requester_key: &'a str,
    /// Whether it is scheduled (approved, waiting for its start).
    pub scheduled: bool,
}

/// What a user may request: each catalog entry's id, and whether they may break glass on
/// it ([`PolicySet::listing`]).
pub type Listing = Arc<[(String, bool)]>;

/// Which requests' entitlements a user might approve: a superset of what the
/// exact decision allows, for narrowing a list in SQL ([`PolicySet::approvable`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Approvable {
    /// Entitlement ids, in catalog order.
    pub entitlements: Vec<String>,
    /// Those of them the policies let the user approve whatever the request says (who
    /// filed it, for how long, break-glass or not): the exact decision allows every
    /// request on them but the user's own (the broker's rule). Partial evaluation over an
    /// unknown request sees every policy that could refuse one, since no policy may name a
    /// single request (the load refuses `Request::"…"`).
    pub unconditional: Vec<String>,
}

/// The Cedar parts of a loaded policy set that do not change: type names,
/// action and broker ids, the catalog as entities, and the per-user cache.
pub(super) struct Native {
    user_type: EntityTypeName,
    group_type: EntityTypeName,
    request_type: EntityTypeName,
    entitlement_type: EntityTypeName,
    actions: HashMap<Action, EntityUid>,
    broker: EntityUid,
    /// Entitlement uid by id.
    entitlement_uids: HashMap<String, EntityUid>,
    /// The catalog's entitlements as entities, by id (in every user's entities, with the
    /// broker).
    entitlement_entities: HashMap<String, Entity>,
    /// What every `approve` decision's entities hold besides the user, the request and its
    /// requester and entitlement ([`Native::prepare_approve`]).
    approve_shared: Vec<Entity>,
    /// Entitlement ids in `approve_shared`.
    approve_named: HashSet<String>,
    users: Mutex<UserCache>,
    /// The schema's `RequestContext` declares `start_at` (`start_at?: Long`): a schema
    /// written before it existed keeps working without it.
    start_at_in_context: bool,
    /// Some policy reads the time (`auth_age_seconds`, `hour_utc`, `weekday`): what a user
    /// may request can change from one call to the next (decided at load).
    pub(super) reads_time: bool,
    /// For each action, the policies whose scope can match it ([`Native::by_action`]).
    pub(super) by_action: HashMap<Action, CedarPolicySet>,
    /// The decision shapes (action, request context with `start_at`) the schema accepted at
    /// load ([`Native::check_shapes`]).
    accepted: HashSet<(Action, bool)>,
    /// The schema accepted the entities of an `approve` decision at load.
    request_entities_accepted: bool,
}

impl Native {
    /// What an `approve` decision needs besides the user (with their groups as parents),
    /// the request, its requester and its entitlement: the entitlements `named` by some
    /// policy (`Entitlement::"…"` in its text), whose attributes a policy may read, and the
    /// schema's action entities when an action is in a group (`action in …` then needs
    /// them). Nothing else can be reached from an `approve` decision: users' and
    /// entitlements' attributes name no entities, and an entity a policy names only to
    /// compare with (`==`, `in`) answers the same absent as present, as groups and the
    /// broker have no attributes and no parents. So the decision's entities are a handful,
    /// not the user's whole set: Cedar recomputes the ancestors of every entity of the set
    /// for each entity added, most of an `approve` decision's time (`benches/policy.rs`).
    pub(super) fn prepare_approve(&mut self, named: HashSet<String>, schema: &Schema) {
        let actions = schema
            .action_entities()
            .unwrap_or_else(|_| Entities::empty());
        let grouped = actions.iter().any(|a| {
            actions
                .ancestors(&a.uid())
                .is_some_and(|mut up| up.next().is_some())
        });
        let actions: Vec<Entity> = actions.iter().cloned().collect();
        let named: HashSet<String> = named
            .into_iter()
            .filter(|id| self.entitlement_entities.contains_key(id))
            .collect();
        self.approve_shared = named
            .iter()
            .filter_map(|id| self.entitlement_entities.get(id).cloned())
            .chain(actions.into_iter().filter(|_| grouped))
            .collect();
        self.approve_named = named;
    }

    /// For each action, the policies of `policies` whose action scope can match it: the
    /// others cannot apply to its decisions (their scope is false before their conditions
    /// are read, so they neither allow, forbid nor err), and Cedar reads every policy of the
    /// set it is given. An action matches `action == a`, `action in [...]` naming it or one
    /// of the groups the schema puts it in, and an unconstrained `action`. Without the
    /// schema's action groups, or when a policy cannot be added alone (one linked to a
    /// template), nothing is split and every decision reads every policy.
    /// (Measured on the bundled set: a decision spent most of its time in policies of
    /// other actions; `benches/policy.rs`.)
    pub(super) fn by_action(
        &self,
        policies: &CedarPolicySet,
        schema: &Schema,
    ) -> HashMap<Action, CedarPolicySet> {
        let Ok(groups) = schema.action_entities() else {
            return HashMap::new();
        };
        let mut out = HashMap::new();
        for (action, me) in &self.actions {
            let mut matching: HashSet<&EntityUid> = HashSet::from([me]);
            matching.extend(groups.ancestors(me).into_iter().flatten());
            let applies = |constraint: ActionConstraint| match constraint {
                ActionConstraint::Any => true,
                ActionConstraint::Eq(a) => matching.contains(&a),
                ActionConstraint::In(list) => list.iter().any(|a| matching.contains(a)),
            };
            let mut set = CedarPolicySet::new();
            for p in policies.policies() {
                if applies(p.action_constraint()) && set.add(p.clone()).is_err() {
                    return HashMap::new();
                }
            }
            out.insert(*action, set);
        }
        out
    }

    /// The policies that can decide `action`: those [`Native::by_action`] kept for it, or
    /// all of `policies` when the set was not split.
    fn policies_for<'a>(
        &'a self,
        action: Action,
        policies: &'a CedarPolicySet,
    ) -> &'a CedarPolicySet {
        self.by_action.get(&action).unwrap_or(policies)
    }

    /// Whether a policy of `policies` reads the time of the decision (the context's
    /// `auth_age_seconds`, `hour_utc` or `weekday`). A policy merely mentioning one of those
    /// names counts: the answer may only err towards deciding afresh.
    pub(super) fn reads_time(policies: &CedarPolicySet) -> bool {
        policies.policies().any(|p| {
            let text = p.to_string();
            ["auth_age_seconds", "hour_utc", "weekday"]
                .iter()
                .any(|name| text.contains(name))
        })
    }

    /// Whether `schema` accepts the inputs of a decision on `action` as this module builds
    /// them, the request context with `start_at` or without. Their shape is fixed (the
    /// principal's, resource's and context's types; the context's keys and their types),
    /// only the values change, so one probe at load answers for every decision.
    fn accepts(&self, schema: &Schema, action: Action, start_at: bool) -> bool {
        let Ok(action_uid) = self.action(action) else {
            return false;
        };
        let probe = probe_user();
        let (resource, context) = match action {
            Action::Request | Action::AutoApprove | Action::BreakGlass => {
                let facts = RequestFacts {
                    start_at: start_at.then_some(0),
                    ..RequestFacts::default()
                };
                (
                    uid(&self.entitlement_type, "probe"),
                    request_context(&probe, &facts, start_at),
                )
            }
            Action::Approve => (uid(&self.request_type, "probe"), approve_context(&probe, 0)),
            Action::Admin | Action::Audit => (self.broker.clone(), Ok(Context::empty())),
        };
        context.is_ok_and(|context| {
            Request::new(
                uid(&self.user_type, "probe"),
                action_uid.clone(),
                resource,
                context,
                Some(schema),
            )
            .is_ok()
        })
    }

    /// The decision shapes `schema` accepts ([`Native::accepts`]): their requests go to Cedar
    /// without checking each against the schema again, which was a third of a decision's
    /// time (`benches/policy.rs`). A shape it refuses is checked at every decision, which
    /// then fails as it would have.
    /// Whether the request context carries `start_at` follows from it.
    /// Likewise the entities an `approve` decision adds (the request and its requester,
    /// [`Native::request_entities`]), probed on `ent`, an entitlement of the catalog.
    pub(super) fn check_shapes(&mut self, schema: &Schema, ent: Option<&Entitlement>) {
        let mut accepted = HashSet::new();
        for action in self.actions.keys().copied() {
            for start_at in [false, true] {
                if self.accepts(schema, action, start_at) {
                    accepted.insert((action, start_at));
                }
            }
        }
        self.start_at_in_context = accepted.contains(&(Action::Request, true));
        self.accepted = accepted;
        self.request_entities_accepted = ent.is_some_and(|ent| {
            let probe = RequestResource {
                id: "probe",
                requester_key: "probe-requester",
                requester_email: "",
                entitlement: ent,
                duration_seconds: 0,
                break_glass: false,
            };
            let approver = User {
                key: "probe-approver".to_owned(),
                ..probe_user()
            };
            self.request_entities(&approver, &probe)
                .is_ok_and(|(_, entities)| {
                    Entities::empty()
                        .add_entities(entities, Some(schema))
                        .is_ok()
                })
        });
    }

    /// The schema to check the entities an `approve` decision adds against: none when
    /// their shape was accepted at load.
    fn check_request_entities_against<'a>(&self, schema: &'a Schema) -> Option<&'a Schema> {
        (!self.request_entities_accepted).then_some(schema)
    }

    /// The schema to check a decision on `action` against: none when its shape was
    /// accepted at load.
    fn check_against<'a>(
        &self,
        schema: &'a Schema,
        action: Action,
        start_at: bool,
    ) -> Option<&'a Schema> {
        (!self.accepted.contains(&(action, start_at))).then_some(schema)
    }
}
/// The users' entities, by a hash of everything they are built from.
struct UserCache {
    hasher: std::collections::hash_map::RandomState,
    map: Fifo<u64, Arc<UserEntities>>,
}

/// Cap of the user cache: past it, the user added first goes for each one added.
const USER_CACHE_CAP: usize = 10_000;

/// One user's part of every decision.
struct UserEntities {
    key: String,
    email: String,
    name: String,
    mfa: bool,
    groups: Vec<String>,
    roles: Vec<String>,
    uid: EntityUid,
    /// The user, their groups, the catalog and the broker.
    entities: Entities,
    /// The user and what every `approve` decision needs ([`Native::prepare_approve`]).
    approve_base: Entities,
    /// What [`PolicySet::listing`] computed for this user, when no policy reads the time.
    listing: OnceLock<Listing>,
}

impl UserEntities {
    fn is(&self, user: &User) -> bool {
        self.key == user.key
            && self.email == user.email
            && self.name == user.name
            && self.mfa == user.mfa
            && self.groups == user.groups
            && self.roles == user.roles
    }
}

fn type_name(name: &str) -> Result<EntityTypeName, String> {
    name.parse()
        .map_err(|e: cedar_policy::ParseErrors| e.to_string())
}

fn uid(kind: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(kind.clone(), EntityId::new(id))
}

fn long(n: u64) -> RestrictedExpression {
    RestrictedExpression::new_long(i64::try_from(n).unwrap_or(i64::MAX))
}

fn string(s: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(s.to_owned())
}

fn attrs<const N: usize>(
    pairs: [(&str, RestrictedExpression); N],
) -> HashMap<String, RestrictedExpression> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

impl Native {
    /// The parts of `catalog`'s policy set that never change.
    pub(super) fn new<'a>(
        catalog: impl IntoIterator<Item = &'a Entitlement>,
    ) -> Result<Self, String> {
        let action_type = type_name("Action")?;
        let entitlement_type = type_name("Entitlement")?;
        let broker = uid(&type_name("Broker")?, "jit");
        let actions = [
            Action::Request,
            Action::AutoApprove,
            Action::BreakGlass,
            Action::Approve,
            Action::Admin,
            Action::Audit,
        ]
        .into_iter()
        .map(|a| (a, uid(&action_type, a.as_str())))
        .collect();
        let mut entitlement_uids = HashMap::new();
        let mut entitlement_entities = HashMap::new();
        for ent in catalog {
            let id = uid(&entitlement_type, &ent.id);
            entitlement_entities.insert(ent.id.clone(), entitlement_entity(id.clone(), ent)?);
            entitlement_uids.insert(ent.id.clone(), id);
        }
        Ok(Self {
            user_type: type_name("User")?,
            group_type: type_name("Group")?,
            request_type: type_name("Request")?,
            entitlement_type,
            actions,
            broker,
            entitlement_uids,
            entitlement_entities,
            approve_shared: Vec::new(),
            approve_named: HashSet::new(),
            users: Mutex::new(UserCache {
                hasher: std::collections::hash_map::RandomState::new(),
                map: Fifo::new(USER_CACHE_CAP),
            }),
            start_at_in_context: false,
            reads_time: true,
            by_action: HashMap::new(),
            accepted: HashSet::new(),
            request_entities_accepted: false,
        })
    }

    /// `user`'s entities, from the cache or built now.
    fn user(&self, user: &User, schema: &Schema) -> Result<Arc<UserEntities>, Denied> {
        let cache = self
            .users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = cache.hasher.hash_one((
            &user.key,
            &user.email,
            &user.name,
            user.mfa,
            &user.groups,
            &user.roles,
        ));
        if let Some(found) = cache.map.get(&key)
            && found.is(user)
        {
            return Ok(Arc::clone(found));
        }
        drop(cache);
        let built = Arc::new(self.build_user(user, schema)?);
        let mut cache = self
            .users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let gone = cache.map.insert(key, Arc::clone(&built));
        drop(cache);
        drop(gone);
        Ok(built)
    }

    fn build_user(&self, user: &User, schema: &Schema) -> Result<UserEntities, Denied> {
        let groups: HashSet<EntityUid> = user
            .groups
            .iter()
            .chain(&user.roles)
            .map(|g| uid(&self.group_type, g))
            .collect();
        let me = uid(&self.user_type, &user.key);
        let entity = Entity::new(
            me.clone(),
            user_attrs(&user.email, &user.name, user.mfa),
            groups.clone(),
        )
        .map_err(Denied::error)?;
        let approve_base = Entities::from_entities(
            std::iter::once(entity.clone()).chain(self.approve_shared.iter().cloned()),
            None,
        )
        .map_err(Denied::error)?;
        let entities = Entities::from_entities(
            std::iter::once(entity)
                .chain(
                    groups
                        .into_iter()
                        .map(|g| Entity::new_no_attrs(g, HashSet::new())),
                )
                .chain(std::iter::once(Entity::new_no_attrs(
                    self.broker.clone(),
                    HashSet::new(),
                )))
                .chain(self.entitlement_entities.values().cloned()),
            Some(schema),
        )
        .map_err(Denied::error)?;
        Ok(UserEntities {
            key: user.key.clone(),
            email: user.email.clone(),
            name: user.name.clone(),
            mfa: user.mfa,
            groups: user.groups.clone(),
            roles: user.roles.clone(),
            uid: me,
            entities,
            approve_base,
            listing: OnceLock::new(),
        })
    }

    fn action(&self, action: Action) -> Result<&EntityUid, Denied> {
        self.actions
            .get(&action)
            .ok_or_else(|| Denied::error(format!("no action `{}`", action.as_str())))
    }

    /// The request entity (and its requester, when another user) for `approve`.
    fn request_entities(
        &self,
        user: &User,
        r: &RequestResource<'_>,
    ) -> Result<(EntityUid, Vec<Entity>), Denied> {
        let id = uid(&self.request_type, r.id);
        let requester = uid(&self.user_type, r.requester_key);
        let entitlement = self
            .entitlement_uids
            .get(&r.entitlement.id)
            .cloned()
            .unwrap_or_else(|| uid(&self.entitlement_type, &r.entitlement.id));
        let mut out = vec![
            Entity::new(
                id.clone(),
                attrs([
                    (
                        "requester",
                        RestrictedExpression::new_entity_uid(requester.clone()),
                    ),
                    (
                        "entitlement",
                        RestrictedExpression::new_entity_uid(entitlement),
                    ),
                    ("duration_seconds", long(r.duration_seconds)),
                    ("break_glass", RestrictedExpression::new_bool(r.break_glass)),
                ]),
                HashSet::new(),
            )
            .map_err(Denied::error)?,
        ];
        if !self.approve_named.contains(&r.entitlement.id)
            && let Some(entity) = self.entitlement_entities.get(&r.entitlement.id)
        {
            out.push(entity.clone());
        }
        if r.requester_key != user.key {
            out.push(
                Entity::new(
                    requester,
                    user_attrs(r.requester_email, r.requester_email, false),
                    HashSet::new(),
                )
                .map_err(Denied::error)?,
            );
        }
        Ok((id, out))
    }
}

/// A user's attributes.
fn user_attrs(email: &str, name: &str, mfa: bool) -> HashMap<String, RestrictedExpression> {
    attrs([
        ("email", string(email)),
        ("name", string(name)),
        ("mfa", RestrictedExpression::new_bool(mfa)),
    ])
}

/// An entitlement's entity.
fn entitlement_entity(id: EntityUid, ent: &Entitlement) -> Result<Entity, String> {
    Entity::new(
        id,
        attrs([
            ("kind", string(ent.kind.as_str())),
            (
                "approvals_required",
                long(u64::from(ent.approvals_required)),
            ),
            (
                "require_mfa",
                RestrictedExpression::new_bool(ent.require_mfa),
            ),
            ("max_duration_seconds", long(ent.max_duration)),
        ]),
        HashSet::new(),
    )
    .map_err(|e| e.to_string())
}

/// Hour of the day (UTC) of unix seconds `now`.
fn hour_utc(now: i64) -> i64 {
    now.rem_euclid(86_400) / 3600
}

/// A user with nothing but a key, for the probes at load.
fn probe_user() -> User {
    User {
        key: "probe".to_owned(),
        oid: None,
        name: String::new(),
        email: String::new(),
        groups: vec![],
        roles: vec![],
        mfa: false,
        auth_time: None,
        acrs: vec![],
    }
}

/// The context of a decision on an entitlement (`request`, `auto_approve`, `break_glass`)
/// by `user`, with `start_at` when `with_start_at` and the request has one.
fn request_context(
    user: &User,
    facts: &RequestFacts<'_>,
    with_start_at: bool,
) -> Result<Context, Denied> {
    Context::from_pairs(
        [
            ("duration_seconds".to_owned(), long(facts.duration_seconds)),
            ("justification".to_owned(), string(facts.justification)),
            (
                "has_ticket".to_owned(),
                RestrictedExpression::new_bool(facts.ticket.is_some()),
            ),
            ("ticket".to_owned(), string(facts.ticket.unwrap_or(""))),
            ("mfa".to_owned(), RestrictedExpression::new_bool(user.mfa)),
            (
                "auth_age_seconds".to_owned(),
                RestrictedExpression::new_long(
                    user.auth_time.map_or(i64::MAX, |t| (facts.now - t).max(0)),
                ),
            ),
            (
                "hour_utc".to_owned(),
                RestrictedExpression::new_long(hour_utc(facts.now)),
            ),
            (
                "weekday".to_owned(),
                RestrictedExpression::new_long((facts.now.div_euclid(86_400) + 4).rem_euclid(7)),
            ),
            (
                "extension".to_owned(),
                RestrictedExpression::new_bool(facts.extension),
            ),
            (
                "break_glass".to_owned(),
                RestrictedExpression::new_bool(facts.break_glass),
            ),
        ]
        .into_iter()
        .chain(
            facts
                .start_at
                .filter(|_| with_start_at)
                .map(|at| ("start_at".to_owned(), RestrictedExpression::new_long(at))),
        ),
    )
    .map_err(Denied::error)
}

/// The context of an `approve` decision by `user` at unix seconds `now`.
fn approve_context(user: &User, now: i64) -> Result<Context, Denied> {
    Context::from_pairs([
        ("mfa".to_owned(), RestrictedExpression::new_bool(user.mfa)),
        (
            "hour_utc".to_owned(),
            RestrictedExpression::new_long(hour_utc(now)),
        ),
    ])
    .map_err(Denied::error)
}

impl PolicySet {
    /// Decides action `A` by `user` on entitlement `ent`.
    ///
    /// On a bundle: allowed only when the policies allow it on every member.
    pub fn authorize_entitlement<A: OnEntitlement>(
        &self,
        user: &User,
        ent: &Entitlement,
        facts: &RequestFacts<'_>,
    ) -> Result<Authorized<A>, Denied> {
        if ent.kind == Kind::Bundle {
            let each = ent
                .members()
                .iter()
                .map(|m| self.authorize_entitlement::<A>(user, m, facts))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Authorized::all_of(user, &ent.id, each));
        }
        let cached = self.native.user(user, &self.schema)?;
        let start_at = facts.start_at.is_some() && self.native.start_at_in_context;
        let context = request_context(user, facts, start_at)?;
        let schema = self.native.check_against(&self.schema, A::ACTION, start_at);
        if let Some(resource) = self.native.entitlement_uids.get(&ent.id) {
            return self.decide(
                &cached,
                resource,
                &ent.id,
                &cached.entities,
                context,
                schema,
            );
        }
        // Not from this catalog: its entity is added for this decision.
        let resource = uid(&self.native.entitlement_type, &ent.id);
        let entities = cached
            .entities
            .clone()
            .add_entities(
                [entitlement_entity(resource.clone(), ent).map_err(Denied::error)?],
                Some(&self.schema),
            )
            .map_err(Denied::error)?;
        self.decide(&cached, &resource, &ent.id, &entities, context, schema)
    }

    /// Decides `approve` by `user` on a request. A bundle's request is approved only by whom
    /// the policies let approve it for every member.
    pub fn authorize_request(
        &self,
        user: &User,
        request: &RequestResource<'_>,
        now: i64,
    ) -> Result<Authorized<act::Approve>, Denied> {
        if request.entitlement.kind == Kind::Bundle {
            let each = request
                .entitlement
                .members()
                .iter()
                .map(|m| {
                    self.authorize_request(
                        user,
                        &RequestResource {
                            entitlement: m,
                            ..request.clone()
                        },
                        now,
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Authorized::all_of(user, request.id, each));
        }
        let cached = self.native.user(user, &self.schema)?;
        let (resource, extra) = self.native.request_entities(user, request)?;
        let entities = cached
            .approve_base
            .clone()
            .add_entities(
                extra,
                self.native.check_request_entities_against(&self.schema),
            )
            .map_err(Denied::error)?;
        let context = approve_context(user, now)?;
        let schema = self
            .native
            .check_against(&self.schema, Action::Approve, false);
        self.decide(&cached, &resource, request.id, &entities, context, schema)
    }

    /// Decides `cancel` by `user` on `request`: its requester, or an admin while it waits
    /// for its start.
    pub fn authorize_cancel(
        &self,
        user: &User,
        request: &OwnRequest<'_>,
    ) -> Result<Authorized<act::Cancel>, Denied> {
        if request.requester_key == user.key {
            return Ok(Authorized::own(user, request.id));
        }
        if !request.scheduled {
            return Err(Denied::nothing());
        }
        self.by_admin(user, request.id)
    }

    /// Decides `revoke` by `user` on `request`: its requester or an admin.
    pub fn authorize_revoke(
        &self,
        user: &User,
        request: &OwnRequest<'_>,
    ) -> Result<Authorized<act::Revoke>, Denied> {
        if request.requester_key == user.key {
            return Ok(Authorized::own(user, request.id));
        }
        self.by_admin(user, request.id)
    }

    /// Decides `extend` by `user` on `request`: its requester only (the extension itself is
    /// then a `request` the policies decide).
    pub fn authorize_extend(
        &self,
        user: &User,
        request: &OwnRequest<'_>,
    ) -> Result<Authorized<act::Extend>, Denied> {
        if request.requester_key == user.key {
            Ok(Authorized::own(user, request.id))
        } else {
            Err(Denied::nothing())
        }
    }

    /// Action `A` on request `id`, allowed to `user` because the policies let them administer
    /// the broker.
    fn by_admin<A: Act>(&self, user: &User, id: &str) -> Result<Authorized<A>, Denied> {
        let admin = self.authorize_broker::<act::Admin>(user)?;
        Ok(Authorized {
            principal: admin.principal,
            resource: id.to_owned(),
            policies: admin.policies,
            act: PhantomData,
        })
    }

    /// Decides broker-wide action `A` (`admin`, `audit`) by `user`.
    pub fn authorize_broker<A: OnBroker>(&self, user: &User) -> Result<Authorized<A>, Denied> {
        let cached = self.native.user(user, &self.schema)?;
        self.decide(
            &cached,
            &self.native.broker,
            "jit",
            &cached.entities,
            Context::empty(),
            self.native.check_against(&self.schema, A::ACTION, false),
        )
    }

    /// What `user` may request, as `compute` finds it (for `GET /api/v1/entitlements` and
    /// the new-request page: a decision per catalog entry and per break-glass). Kept per
    /// user and policy set when no policy reads the time: the answer then depends only on
    /// the user's identity, groups and MFA, which key the cache, and on the policies, whose
    /// reload starts a new set. Otherwise `compute` runs on every call.
    pub fn listing(&self, user: &User, compute: impl FnOnce() -> Listing) -> Listing {
        if self.native.reads_time {
            return compute();
        }
        match self.native.user(user, &self.schema) {
            Ok(cached) => Arc::clone(cached.listing.get_or_init(compute)),
            Err(_) => compute(),
        }
    }

    /// The entitlements whose requests `user` might approve at `now`: every
    /// entitlement for which some request (any requester, duration or
    /// break-glass) could be allowed. Decided by Cedar's partial evaluation
    /// with the request's attributes unknown, so the set holds everything the
    /// exact decision ([`PolicySet::authorize_request`]) can allow; it may
    /// hold more, which that decision then refuses.
    pub fn approvable(&self, user: &User, now: i64) -> Result<Approvable, Denied> {
        let cached = self.native.user(user, &self.schema)?;
        let action = self.native.action(Action::Approve)?.clone();
        let context = approve_context(user, now)?;
        let approve_policies = self.native.policies_for(Action::Approve, &self.policies);
        let mut entitlements = Vec::new();
        let mut unconditional = Vec::new();
        for ent in self.catalog.iter().filter(|e| e.kind != Kind::Bundle) {
            let Some(ent_uid) = self.native.entitlement_uids.get(&ent.id) else {
                continue;
            };
            let resource = uid(&self.native.request_type, "*");
            let request = Entity::new(
                resource.clone(),
                attrs([
                    ("requester", RestrictedExpression::new_unknown("requester")),
                    (
                        "entitlement",
                        RestrictedExpression::new_entity_uid(ent_uid.clone()),
                    ),
                    (
                        "duration_seconds",
                        RestrictedExpression::new_unknown("duration_seconds"),
                    ),
                    (
                        "break_glass",
                        RestrictedExpression::new_unknown("break_glass"),
                    ),
                ]),
                HashSet::new(),
            )
            .map_err(Denied::error)?;
            let entities = cached
                .entities
                .clone()
                .add_entities([request], None)
                .map_err(Denied::error)?;
            let query = Request::builder()
                .principal(cached.uid.clone())
                .action(action.clone())
                .resource(resource)
                .context(context.clone())
                .build();
            let answer = self
                .authorizer
                .is_authorized_partial(&query, approve_policies, &entities);
            match answer.decision() {
                Some(Decision::Deny) => continue,
                Some(Decision::Allow) => unconditional.push(ent.id.clone()),
                None => {}
            }
            entitlements.push(ent.id.clone());
        }
        // A bundle's requests may be approved by whoever might approve every member's.
        let bundles = |of: &[String]| -> Vec<String> {
            self.catalog
                .iter()
                .filter(|b| {
                    b.kind == Kind::Bundle && b.members().iter().all(|m| of.contains(&m.id))
                })
                .map(|b| b.id.clone())
                .collect()
        };
        let (more, more_unconditional) = (bundles(&entitlements), bundles(&unconditional));
        entitlements.extend(more);
        unconditional.extend(more_unconditional);
        Ok(Approvable {
            entitlements,
            unconditional,
        })
    }

    /// Decides action `A` by `user` on `resource`, checking the request against `schema`
    /// when given (not when its shape was accepted at load).
    fn decide<A: CedarAct>(
        &self,
        user: &UserEntities,
        resource: &EntityUid,
        resource_id: &str,
        entities: &Entities,
        context: Context,
        schema: Option<&Schema>,
    ) -> Result<Authorized<A>, Denied> {
        let action = self.native.action(A::ACTION)?;
        let request = Request::new(
            user.uid.clone(),
            action.clone(),
            resource.clone(),
            context,
            schema,
        )
        .map_err(Denied::error)?;
        let response = self.authorizer.is_authorized(
            &request,
            self.native.policies_for(A::ACTION, &self.policies),
            entities,
        );
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
            Decision::Allow => Ok(Authorized {
                principal: user.key.clone(),
                resource: resource_id.to_owned(),
                policies,
                act: PhantomData,
            }),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{BUNDLED, act};

    /// The bundled set, its files passed through `edit`, and `extra` Cedar beside them.
    fn set(edit: impl Fn(&str, &str) -> String, extra: &str) -> PolicySet {
        let mut files: Vec<(String, String)> = BUNDLED
            .iter()
            .map(|(name, text)| ((*name).to_owned(), edit(name, text)))
            .collect();
        if !extra.is_empty() {
            files.push(("extra.cedar".to_owned(), extra.to_owned()));
        }
        PolicySet::from_files(&files, "test").unwrap()
    }

    fn alice() -> User {
        User {
            key: "dev/alice".to_owned(),
            oid: None,
            name: "Alice".to_owned(),
            email: "alice@example.com".to_owned(),
            groups: vec!["grp-jit-requesters".to_owned()],
            roles: vec![],
            mfa: true,
            auth_time: None,
            acrs: vec![],
        }
    }

    fn may_request(policy: &PolicySet, start_at: Option<i64>) -> bool {
        let facts = RequestFacts {
            duration_seconds: 3600,
            justification: "test",
            ticket: None,
            extension: false,
            break_glass: false,
            now: 1_800_000_000,
            start_at,
        };
        let ent = policy.catalog.get("aws-sandbox").unwrap();
        policy
            .authorize_entitlement::<act::Request>(&alice(), ent, &facts)
            .is_ok()
    }

    #[test]
    fn the_context_carries_start_at_when_the_schema_declares_it() {
        let policy = set(
            |_, text| text.to_owned(),
            r#"@id("no-scheduling-far-ahead")
forbid (principal, action == Action::"request", resource)
when { context has start_at && context.start_at > 1800086400 };"#,
        );
        assert!(may_request(&policy, None));
        assert!(may_request(&policy, Some(1_800_003_600)));
        assert!(!may_request(&policy, Some(1_800_090_000)));

        // A schema written before `start_at` existed: the context goes without it.
        let old = set(
            |name, text| {
                if name.ends_with(".cedarschema") {
                    text.replace("start_at?: Long,", "")
                } else {
                    text.to_owned()
                }
            },
            "",
        );
        assert!(!old.native.start_at_in_context);
        assert!(may_request(&old, Some(1_800_090_000)));
    }

    /// The bundled set with `from` replaced by `to` in its schema, and `extra` Cedar.
    fn with_schema(from: &str, to: &str, extra: &str) -> PolicySet {
        set(
            |name, text| {
                if name.ends_with(".cedarschema") {
                    text.replace(from, to)
                } else {
                    text.to_owned()
                }
            },
            extra,
        )
    }

    fn ids(set: &CedarPolicySet) -> Vec<String> {
        let mut ids: Vec<String> = set
            .policies()
            .filter_map(|p| p.annotation("id").map(str::to_owned))
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn a_decision_reads_the_policies_its_action_or_its_groups_can_match() {
        let bundled = set(|_, text| text.to_owned(), "");
        assert_eq!(
            ids(&bundled.native.by_action[&Action::Audit]),
            ["admins-administer", "auditors-read"]
        );
        assert_eq!(
            ids(&bundled.native.by_action[&Action::Approve]),
            [
                "admins-administer",
                "approvers-approve",
                "no-approval-of-break-glass-by-requester-group",
                "prod-admins-approve-sandbox"
            ]
        );

        // An action group of the schema: a policy on the group decides its members.
        let grouped = with_schema(
            "action admin, audit appliesTo",
            "action elevated;\naction admin, audit in [elevated] appliesTo",
            r#"@id("alice-elevated")
permit (principal == User::"dev/alice", action in Action::"elevated", resource);
@id("anyone-anything")
forbid (principal == User::"dev/nobody", action, resource);"#,
        );
        let audit = ids(&grouped.native.by_action[&Action::Audit]);
        assert!(audit.contains(&"alice-elevated".to_owned()), "{audit:?}");
        assert!(audit.contains(&"anyone-anything".to_owned()), "{audit:?}");
        let request = ids(&grouped.native.by_action[&Action::Request]);
        assert!(
            !request.contains(&"alice-elevated".to_owned()),
            "{request:?}"
        );
        assert!(
            request.contains(&"anyone-anything".to_owned()),
            "{request:?}"
        );
        assert!(grouped.authorize_broker::<act::Audit>(&alice()).is_ok());
        assert!(bundled.authorize_broker::<act::Audit>(&alice()).is_err());
    }

    #[test]
    fn a_decision_the_schema_refuses_is_refused_at_every_call() {
        // The schema asks for a context key the broker does not send: no request decision
        // can be made, even where a policy would allow it (checked at load, and again at
        // every decision, as before the check moved to load).
        let policy = with_schema(
            "  break_glass: Bool,\n  //",
            "  break_glass: Bool,\n  region: String,\n  //",
            r#"@id("region-anyone")
permit (principal, action == Action::"request", resource)
when { context.region == "eu" };"#,
        );
        assert!(!policy.native.accepted.contains(&(Action::Request, false)));
        assert!(policy.native.accepted.contains(&(Action::Approve, false)));
        assert!(!may_request(&policy, None));
        let bundled = set(|_, text| text.to_owned(), "");
        assert!(bundled.native.accepted.contains(&(Action::Request, false)));
        assert!(bundled.native.request_entities_accepted);
        assert!(may_request(&bundled, None));
    }

    #[test]
    fn an_approve_decision_reads_what_its_policies_name() {
        // Carol is in no group: only these policies let her approve. They read a named
        // entitlement's attributes, the request's entitlement's and its requester's.
        let policy = set(
            |_, text| text.to_owned(),
            r#"@id("carol-approves-prod-readonly")
permit (principal == User::"dev/carol", action == Action::"approve", resource)
when {
  Entitlement::"aws-prod-admin".approvals_required == 1 &&
  resource.entitlement.approvals_required == 2 &&
  resource.requester.email == "alice@example.com"
};"#,
        );
        let carol = User {
            key: "dev/carol".to_owned(),
            groups: vec![],
            ..alice()
        };
        let on = |ent: &str, requester_email: &str| {
            let resource = RequestResource {
                id: "0190b7a2-0000-7000-8000-000000000001",
                requester_key: "dev/alice",
                requester_email,
                entitlement: policy.catalog.get(ent).unwrap(),
                duration_seconds: 3600,
                break_glass: false,
            };
            policy.authorize_request(&carol, &resource, 1_800_000_000)
        };
        let allowed = on("aws-prod-readonly", "alice@example.com").unwrap();
        assert_eq!(allowed.policies(), ["carol-approves-prod-readonly"]);
        assert!(on("aws-prod-admin", "alice@example.com").is_err());
        assert!(on("aws-prod-readonly", "mallory@example.com").is_err());
        assert!(policy.native.approve_named.contains("aws-prod-admin"));
    }

    #[test]
    fn users_past_the_cap_keep_the_cache_at_its_cap() {
        let policy = set(|_, text| text.to_owned(), "");
        {
            let mut cache = policy.native.users.lock().unwrap();
            cache.map = Fifo::new(2);
        }
        for name in ["a", "b", "c", "d"] {
            let user = User {
                key: format!("dev/{name}"),
                ..alice()
            };
            assert!(policy.authorize_broker::<act::Audit>(&user).is_err());
        }
        let cache = policy.native.users.lock().unwrap();
        assert_eq!(cache.map.len(), 2);
    }
}
