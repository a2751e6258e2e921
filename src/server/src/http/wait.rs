//! The long poll's query of `GET /api/v1/requests/{id}` (`?wait=…&timeout=…`).

use std::time::Duration;

use jit_api::RequestState;
use serde::Deserialize;
use utoipa::IntoParams;

use super::ApiError;
use crate::service::wait::MAX_WAIT;

/// How long a wait lasts when the query does not say.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// Waiting for a state change instead of polling.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct WaitQuery {
    /// Answer as soon as the request is in one of these states, comma-separated
    /// (`active,denied,failed`), or has ended (`expired`, `denied`, `cancelled`,
    /// `timed_out`, `revoked`, `failed`: it changes no more), or with the request as
    /// it stands when `timeout` runs out. Without it the request is answered at once.
    #[serde(default)]
    #[param(value_type = Option<Vec<RequestState>>, style = Form, explode = false)]
    wait: Option<String>,
    /// How long to wait at most, with `wait` only: `45s`, `1m` or plain seconds;
    /// default `30s`, at most `50s`.
    #[serde(default)]
    #[param(value_type = Option<String>, example = "30s")]
    timeout: Option<String>,
}

/// A validated [`WaitQuery`].
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Wait {
    /// The states that end the wait.
    pub states: Vec<RequestState>,
    /// The longest wait.
    pub timeout: Duration,
}

impl WaitQuery {
    /// The wait asked for, if any; a clear 400 for anything malformed.
    pub(super) fn parse(self) -> Result<Option<Wait>, ApiError> {
        let Some(wait) = self.wait else {
            return match self.timeout {
                Some(_) => Err(ApiError::bad_request("`timeout` needs `wait`")),
                None => Ok(None),
            };
        };
        let states = wait
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<RequestState>()
                    .map_err(|e| ApiError::bad_request(format!("invalid `wait`: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if states.is_empty() {
            return Err(ApiError::bad_request(
                "`wait` names no state: use e.g. `wait=active,denied,failed`",
            ));
        }
        let timeout = match self.timeout.as_deref() {
            None => DEFAULT_WAIT,
            Some(t) => jit_api::parse_duration(t)
                .map(Duration::from_secs)
                .map_err(|e| ApiError::bad_request(format!("invalid `timeout`: {e}")))?,
        };
        if timeout > MAX_WAIT {
            return Err(ApiError::bad_request(format!(
                "invalid `timeout`: at most `{}s`",
                MAX_WAIT.as_secs()
            )));
        }
        Ok(Some(Wait { states, timeout }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(wait: Option<&str>, timeout: Option<&str>) -> Result<Option<Wait>, String> {
        WaitQuery {
            wait: wait.map(str::to_owned),
            timeout: timeout.map(str::to_owned),
        }
        .parse()
        .map_err(|e| e.message)
    }

    #[test]
    fn waits_are_validated() {
        assert_eq!(parse(None, None), Ok(None));
        assert_eq!(
            parse(Some("active, denied,failed"), Some("45s")),
            Ok(Some(Wait {
                states: vec![
                    RequestState::Active,
                    RequestState::Denied,
                    RequestState::Failed
                ],
                timeout: Duration::from_secs(45),
            }))
        );
        assert_eq!(
            parse(Some("active"), None).unwrap().unwrap().timeout,
            DEFAULT_WAIT
        );
        assert_eq!(
            parse(None, Some("5s")).unwrap_err(),
            "`timeout` needs `wait`"
        );
        assert_eq!(
            parse(Some("active,granted"), None).unwrap_err(),
            "invalid `wait`: unknown state `granted`"
        );
        assert!(
            parse(Some(""), None)
                .unwrap_err()
                .contains("names no state")
        );
        assert_eq!(
            parse(Some("active"), Some("51s")).unwrap_err(),
            "invalid `timeout`: at most `50s`"
        );
        assert!(
            parse(Some("active"), Some("0"))
                .unwrap_err()
                .starts_with("invalid `timeout`: ")
        );
        assert!(
            parse(Some("active"), Some("soon"))
                .unwrap_err()
                .starts_with("invalid `timeout`: ")
        );
    }
}
