//! `GET /v1/campaigns/{name}/report`: what a campaign earns, from its counters (one ledger
//! query, whatever the number of customers): recipients, conversions, conversion rate and
//! revenue per recipient of each variant and the holdout, and each variant's uplift over the
//! holdout with its 95 % interval ([`ember_core::report`]).

use ember_core::attribution::report_pk;
use ember_core::report::CampaignReport;
use ember_email::compiled::compile;
use lambda_http::{http::StatusCode, Body, Request, Response};
use serde_json::json;

use crate::admin::current;
use crate::auth;
use crate::deps::Deps;
use crate::error::ApiError;
use crate::http;

/// The report of `campaign` from the ledger (`expected`: the groups its configuration has).
pub async fn campaign_report(
    ledger: &dyn ember_core::ports::Ledger,
    campaign: &str,
    expected: &[String],
) -> Result<CampaignReport, ApiError> {
    let records = ledger
        .query(&report_pk(campaign), "")
        .await
        .map_err(|e| ApiError::dependency("report.query", e))?;
    Ok(CampaignReport::from_records(campaign, expected, &records))
}

/// `GET /v1/campaigns/{name}/report` (admin key). A campaign removed from the configuration
/// still reports what it counted.
pub async fn get(deps: &Deps, req: &Request, name: &str) -> Result<Response<Body>, ApiError> {
    auth::require(req, &deps.config.admin_keys)?;
    let c = current(&deps.config_store()).await?;
    let compiled = compile(&c.doc).map_err(ApiError::InvalidConfig)?;
    let configured = compiled.campaigns.get(name);
    let expected = configured
        .map(|c| c.experiment.groups())
        .unwrap_or_default();
    let report = campaign_report(deps.ledger.as_ref(), name, &expected).await?;
    if configured.is_none() && report.groups.is_empty() {
        return Err(ApiError::ConfigItemNotFound(format!("campaigns/{name}")));
    }
    let mut body = serde_json::to_value(&report).map_err(|e| {
        ApiError::dependency(
            "report.encode",
            ember_core::ports::PortError::Permanent {
                stage: "report.encode",
                reason: e.to_string(),
            },
        )
    })?;
    if let Some(campaign) = configured {
        body["holdout_percent"] = json!(campaign.experiment.holdout_percent);
        body["attribution_hours"] = json!(campaign.experiment.attribution_hours);
    }
    body["at"] = json!(deps.clock.now().to_rfc3339());
    Ok(http::json(StatusCode::OK, &body))
}
