//! Process-wide AWS configuration. Endpoints come only from the standard
//! `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` variables, which `aws-config` reads.

use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

/// Loads the SDK configuration once, with the single rustls/ring HTTPS client.
pub async fn sdk_config() -> SdkConfig {
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .load()
        .await
}

/// Reads a required environment variable, naming it in the error.
pub fn env_var(name: &str) -> Result<String, crate::AwsError> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| crate::AwsError::Config(format!("environment variable {name} is not set")))
}

/// The endpoint the SDK uses for `service` (its id as the variables spell it: `DYNAMODB`,
/// `SESV2`, `EVENTBRIDGE`, …): `AWS_ENDPOINT_URL_<SERVICE>`, else `AWS_ENDPOINT_URL`, else
/// none (AWS itself). For what reads an emulator outside the SDK (its sent mail, a proxy).
pub fn endpoint_of(service: &str) -> Option<String> {
    endpoint_from(service, |name| std::env::var(name).ok())
}

/// [`endpoint_of`] over any variable lookup.
pub fn endpoint_from(service: &str, lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
    let set = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    set(&format!(
        "AWS_ENDPOINT_URL_{}",
        service.to_ascii_uppercase()
    ))
    .or_else(|| set("AWS_ENDPOINT_URL"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_variable_wins_over_the_global_one() {
        let env = |name: &str| match name {
            "AWS_ENDPOINT_URL" => Some("http://a".to_owned()),
            "AWS_ENDPOINT_URL_DYNAMODB" => Some("http://b".to_owned()),
            "AWS_ENDPOINT_URL_SQS" => Some(" ".to_owned()),
            _ => None,
        };
        assert_eq!(endpoint_from("dynamodb", env).as_deref(), Some("http://b"));
        assert_eq!(endpoint_from("SQS", env).as_deref(), Some("http://a"));
        assert_eq!(endpoint_from("KINESIS", |_| None), None);
    }
}
