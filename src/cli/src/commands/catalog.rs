//! Entitlement names: what I may request, and a "did you mean" for a name that is not there.

use jit_api::Entitlement;

use crate::api::Api;
use crate::error::{CliError, Result};

/// Where the names come from, said after every unknown name.
const LISTED: &str = "`jit entitlements` lists what you may request";

/// The entitlements I may request (`GET /api/v1/entitlements`).
pub fn requestable(api: &mut Api) -> Result<Vec<Entitlement>> {
    api.get::<Vec<Entitlement>>("/entitlements", &[])
        .map(|f| f.value)
}

/// The error for `name`, which is not among `list`: the closest name when one is near.
pub fn unknown(name: &str, list: &[Entitlement]) -> CliError {
    let err = CliError::new(format!("unknown entitlement `{name}`"));
    match closest(name, list.iter().map(|e| e.id.as_str())) {
        Some(best) => err.hint(format!("did you mean `{best}`? {LISTED}")),
        None => err.hint(LISTED),
    }
}

/// The broker said `unknown entitlement`: the same error, with the closest name I may request
/// (the list is fetched; without it the pointer to `jit entitlements` alone).
pub fn unknown_from_broker(api: &mut Api, name: &str, err: CliError) -> CliError {
    match requestable(api) {
        Ok(list) => unknown(name, &list),
        Err(_) => err.or_hint(LISTED),
    }
}

/// The candidate nearest to `name` in edits (a typo or two, more for long names), if any.
pub fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 4).max(2);
    candidates
        .map(|c| (strsim::osa_distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(id: &str) -> Entitlement {
        Entitlement {
            id: id.into(),
            title: id.into(),
            kind: "aws_role".into(),
            max_duration: "2h".into(),
            approvals_required: 0,
            require_mfa: false,
            auth_context: None,
            require_ticket: false,
            break_glass: false,
            target: String::new(),
            members: vec![],
        }
    }

    #[test]
    fn typos_get_the_nearest_name() {
        let list = [
            ent("aws-sandbox"),
            ent("aws-prod-admin"),
            ent("aws-prod-readonly"),
        ];
        assert_eq!(
            unknown("aws-sandbx", &list).line(),
            "error: unknown entitlement `aws-sandbx`: did you mean `aws-sandbox`? \
             `jit entitlements` lists what you may request"
        );
        assert_eq!(
            closest("aws-prod-admn", list.iter().map(|e| e.id.as_str())),
            Some("aws-prod-admin")
        );
        assert_eq!(
            unknown("nosuch", &list).line(),
            "error: unknown entitlement `nosuch`: `jit entitlements` lists what you may request"
        );
    }
}
