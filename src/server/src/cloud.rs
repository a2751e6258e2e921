//! The AWS SDK configuration shared by the clients outside the grant providers: the audit
//! checkpoint sink (S3), the KMS signer and the Secrets Manager reader of config secrets.
//!
//! Region and endpoint override come from `[aws]` when it is there (the override only from
//! `aws.endpoint_url`, as for the providers); credentials from the default chain. Timeouts are
//! explicit, and the SDK's standard retries (3 attempts, backoff) apply: checkpoint writes are
//! retried again at the next round anyway.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;

use crate::config::AwsConfig;

/// The SDK configuration for `aws` (defaults when `[aws]` is absent: region from the
/// environment's chain, no endpoint override).
pub async fn sdk_config(aws: Option<&AwsConfig>) -> SdkConfig {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(10))
        .operation_timeout(Duration::from_secs(30))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .timeout_config(timeouts);
    if let Some(aws) = aws {
        loader = loader.region(aws_config::Region::new(aws.region.clone()));
    }
    loader.load().await
}

/// `aws.endpoint_url` (tests only).
pub fn endpoint_url(aws: Option<&AwsConfig>) -> Option<String> {
    aws.and_then(|a| a.endpoint_url.clone())
}

/// An SDK error in one line: the service's code and message when it answered, else what went
/// wrong on the way (timeout, connection); never the raw response or a credential.
pub fn describe<E>(
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_s3::error::ProvideErrorMetadata as _;
    match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => match e {
            aws_sdk_s3::error::SdkError::ServiceError(s) => {
                format!("status {}", s.raw().status().as_u16())
            }
            other => {
                let text = aws_sdk_s3::error::DisplayErrorContext(other).to_string();
                text.split(" (").next().unwrap_or(&text).to_owned()
            }
        },
    }
}
