//! The few IAM Query API calls the broker makes (`PutRolePolicy`,
//! `GetRolePolicy`), signed with `SigV4` by hand rather than pulling in the
//! whole IAM SDK.

use std::time::SystemTime;

use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_sts::error::DisplayErrorContext;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

use super::{CallError, Class, Shared, retry};

/// IAM API version.
const VERSION: &str = "2010-05-08";

/// Where IAM lives for a partition, and the region to sign for.
fn endpoint(partition: &str) -> Option<(&'static str, &'static str)> {
    match partition {
        "aws" => Some(("https://iam.amazonaws.com/", "us-east-1")),
        "aws-us-gov" => Some(("https://iam.us-gov.amazonaws.com/", "us-gov-west-1")),
        "aws-cn" => Some(("https://iam.cn-north-1.amazonaws.com.cn/", "cn-north-1")),
        _ => None,
    }
}

/// Calls IAM action `params[0]` (`Action=…`) in `partition`; returns the XML body.
pub(super) async fn query(
    shared: &Shared,
    partition: &str,
    op: &'static str,
    params: &[(&str, &str)],
) -> Result<String, CallError> {
    let (default_url, region) = endpoint(partition).ok_or_else(|| CallError {
        class: Class::Permanent,
        code: None,
        message: format!("{op}: no known IAM endpoint for partition `{partition}`"),
        retry_after: None,
    })?;
    let url = shared
        .endpoint_url
        .clone()
        .unwrap_or_else(|| default_url.to_owned());
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter().copied())
        .append_pair("Version", VERSION)
        .finish();
    retry(&shared.tuning, op, || {
        let (url, body) = (url.clone(), body.clone());
        async move { attempt(shared, op, region, &url, body).await }
    })
    .await
}

async fn attempt(
    shared: &Shared,
    op: &'static str,
    region: &str,
    url: &str,
    body: String,
) -> Result<String, CallError> {
    let permanent = |message: String| CallError {
        class: Class::Permanent,
        code: None,
        message,
        retry_after: None,
    };
    let credentials = shared
        .credentials
        .provide_credentials()
        .await
        .map_err(|e| CallError {
            class: Class::Transient,
            code: None,
            message: format!(
                "{op}: cannot load aws credentials: {}",
                DisplayErrorContext(&e)
            ),
            retry_after: None,
        })?;
    let identity = credentials.into();
    let content_type = "application/x-www-form-urlencoded; charset=utf-8";
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("iam")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| permanent(format!("{op}: cannot sign: {e}")))?
        .into();
    let signable = SignableRequest::new(
        "POST",
        url,
        [("content-type", content_type)].into_iter(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .map_err(|e| permanent(format!("{op}: cannot sign: {e}")))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| permanent(format!("{op}: cannot sign: {e}")))?
        .into_parts();
    let mut request = shared
        .http
        .post(url)
        .header("content-type", content_type)
        .body(body);
    for (name, value) in instructions.headers() {
        request = request.header(name, value);
    }
    let response = request.send().await.map_err(|e| super::http_error(op, e))?;
    let status = response.status();
    let retry_after = super::retry_after(response.headers());
    let text = response
        .text()
        .await
        .map_err(|e| super::http_error(op, e))?;
    if status.is_success() {
        return Ok(text);
    }
    let code = xml_text(&text, "Code");
    let message = xml_text(&text, "Message").unwrap_or_default();
    let class = match code.as_deref() {
        Some("Throttling" | "ServiceFailure" | "ServiceUnavailable" | "RequestLimitExceeded") => {
            Class::Retry
        }
        _ if status.is_server_error() || status.as_u16() == 429 => Class::Retry,
        _ => Class::Permanent,
    };
    Err(CallError {
        class,
        message: match &code {
            Some(c) => format!("{op}: {c}: {message}"),
            None => format!("{op}: http {}", status.as_u16()),
        },
        code,
        retry_after,
    })
}

/// The unescaped text of the first `<tag>…</tag>` in an XML answer.
pub(super) fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(unescape(&xml[start..end]))
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_text_finds_and_unescapes() {
        let xml = "<ErrorResponse><Error><Code>NoSuchEntity</Code>\
                   <Message>The role &quot;x&quot; &amp; co</Message></Error></ErrorResponse>";
        assert_eq!(xml_text(xml, "Code").as_deref(), Some("NoSuchEntity"));
        assert_eq!(
            xml_text(xml, "Message").as_deref(),
            Some("The role \"x\" & co")
        );
        assert_eq!(xml_text(xml, "Nope"), None);
    }

    #[test]
    fn partitions_have_endpoints() {
        assert_eq!(endpoint("aws").map(|e| e.1), Some("us-east-1"));
        assert!(endpoint("aws-cn").unwrap().0.ends_with(".com.cn/"));
        assert!(endpoint("aws-iso").is_none());
    }
}
