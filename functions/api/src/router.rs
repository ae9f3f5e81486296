//! The route table (the single source of truth the OpenAPI test checks) and path matching.

use std::sync::OnceLock;

use matchit::Router;

use crate::admin::Kind;
use crate::error::ApiError;

/// A path template of the API and the methods it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    /// Template in OpenAPI syntax (`{name}` for a path parameter).
    pub path: &'static str,
    pub methods: &'static [&'static str],
    pub route: Route,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Events,
    EventsBatch,
    Webhook,
    Unsubscribe,
    Profile,
    Config,
    ConfigVersions,
    ConfigRollback,
    ConfigList(Kind),
    ConfigItem(Kind),
    SegmentPreview,
    CampaignPreview,
    CampaignReport,
}

/// Every route the API serves.
pub const ROUTES: &[RouteSpec] = &[
    RouteSpec {
        path: "/v1/events",
        methods: &["POST"],
        route: Route::Events,
    },
    RouteSpec {
        path: "/v1/events/batch",
        methods: &["POST"],
        route: Route::EventsBatch,
    },
    RouteSpec {
        path: "/v1/webhooks/{provider}",
        methods: &["POST"],
        route: Route::Webhook,
    },
    RouteSpec {
        path: "/v1/unsubscribe",
        methods: &["GET", "POST"],
        route: Route::Unsubscribe,
    },
    RouteSpec {
        path: "/v1/profiles/{user_id}",
        methods: &["GET", "DELETE"],
        route: Route::Profile,
    },
    RouteSpec {
        path: "/v1/config",
        methods: &["GET"],
        route: Route::Config,
    },
    RouteSpec {
        path: "/v1/config/versions",
        methods: &["GET"],
        route: Route::ConfigVersions,
    },
    RouteSpec {
        path: "/v1/config/rollback",
        methods: &["POST"],
        route: Route::ConfigRollback,
    },
    RouteSpec {
        path: "/v1/segments",
        methods: &["GET"],
        route: Route::ConfigList(Kind::Segments),
    },
    RouteSpec {
        path: "/v1/segments/{name}",
        methods: &["GET", "PUT", "DELETE"],
        route: Route::ConfigItem(Kind::Segments),
    },
    RouteSpec {
        path: "/v1/segments/{name}/preview",
        methods: &["GET", "POST"],
        route: Route::SegmentPreview,
    },
    RouteSpec {
        path: "/v1/campaigns",
        methods: &["GET"],
        route: Route::ConfigList(Kind::Campaigns),
    },
    RouteSpec {
        path: "/v1/campaigns/{name}",
        methods: &["GET", "PUT", "DELETE"],
        route: Route::ConfigItem(Kind::Campaigns),
    },
    RouteSpec {
        path: "/v1/campaigns/{name}/preview",
        methods: &["GET"],
        route: Route::CampaignPreview,
    },
    RouteSpec {
        path: "/v1/campaigns/{name}/report",
        methods: &["GET"],
        route: Route::CampaignReport,
    },
    RouteSpec {
        path: "/v1/templates",
        methods: &["GET"],
        route: Route::ConfigList(Kind::Templates),
    },
    RouteSpec {
        path: "/v1/templates/{name}",
        methods: &["GET", "PUT", "DELETE"],
        route: Route::ConfigItem(Kind::Templates),
    },
];

/// What a request asks for, with its path parameters decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    PostEvent,
    PostEventBatch,
    PostWebhook { provider: String },
    UnsubscribePage,
    Unsubscribe,
    ExportProfile { user_id: String },
    DeleteProfile { user_id: String },
    GetConfig,
    ConfigVersions,
    Rollback,
    ListConfig { kind: Kind },
    GetConfigItem { kind: Kind, name: String },
    PutConfigItem { kind: Kind, name: String },
    DeleteConfigItem { kind: Kind, name: String },
    PreviewSegment { name: String },
    PreviewRule { name: String },
    PreviewCampaign { name: String },
    CampaignReport { name: String },
}

fn router() -> &'static Router<&'static RouteSpec> {
    static ROUTER: OnceLock<Router<&'static RouteSpec>> = OnceLock::new();
    ROUTER.get_or_init(|| {
        let mut router = Router::new();
        for spec in ROUTES {
            // The templates are constants checked by the tests below; a bad one is a bug.
            if let Err(e) = router.insert(spec.path, spec) {
                unreachable!("route table is invalid: {e}");
            }
        }
        router
    })
}

/// Resolves method and path: unknown path -> 404, known path with another method -> 405.
pub fn resolve(method: &str, path: &str) -> Result<Endpoint, ApiError> {
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let matched = router()
        .at(path)
        .map_err(|_| ApiError::NotFound(path.to_owned()))?;
    let spec = *matched.value;
    let param = |name: &str| percent_decode(matched.params.get(name).unwrap_or_default());
    let method = method.to_ascii_uppercase();
    let endpoint = match (spec.route, method.as_str()) {
        (Route::Events, "POST") => Endpoint::PostEvent,
        (Route::EventsBatch, "POST") => Endpoint::PostEventBatch,
        (Route::Webhook, "POST") => Endpoint::PostWebhook {
            provider: param("provider")?,
        },
        (Route::Unsubscribe, "GET") => Endpoint::UnsubscribePage,
        (Route::Unsubscribe, "POST") => Endpoint::Unsubscribe,
        (Route::Profile, "GET") => Endpoint::ExportProfile {
            user_id: param("user_id")?,
        },
        (Route::Profile, "DELETE") => Endpoint::DeleteProfile {
            user_id: param("user_id")?,
        },
        (Route::Config, "GET") => Endpoint::GetConfig,
        (Route::ConfigVersions, "GET") => Endpoint::ConfigVersions,
        (Route::ConfigRollback, "POST") => Endpoint::Rollback,
        (Route::ConfigList(kind), "GET") => Endpoint::ListConfig { kind },
        (Route::ConfigItem(kind), "GET") => Endpoint::GetConfigItem {
            kind,
            name: param("name")?,
        },
        (Route::ConfigItem(kind), "PUT") => Endpoint::PutConfigItem {
            kind,
            name: param("name")?,
        },
        (Route::ConfigItem(kind), "DELETE") => Endpoint::DeleteConfigItem {
            kind,
            name: param("name")?,
        },
        (Route::SegmentPreview, "GET") => Endpoint::PreviewSegment {
            name: param("name")?,
        },
        (Route::SegmentPreview, "POST") => Endpoint::PreviewRule {
            name: param("name")?,
        },
        (Route::CampaignPreview, "GET") => Endpoint::PreviewCampaign {
            name: param("name")?,
        },
        (Route::CampaignReport, "GET") => Endpoint::CampaignReport {
            name: param("name")?,
        },
        _ => {
            return Err(ApiError::MethodNotAllowed {
                method,
                allowed: spec.methods.to_vec(),
            })
        }
    };
    Ok(endpoint)
}

/// Decodes `%XX` escapes of a path segment (API Gateway passes the raw path).
fn percent_decode(segment: &str) -> Result<String, ApiError> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    ApiError::InvalidRequest(format!(
                        "bad percent-escape in path segment {segment:?}"
                    ))
                })?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| ApiError::InvalidRequest(format!("path segment {segment:?} is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_every_route_and_method() {
        assert_eq!(resolve("POST", "/v1/events").unwrap(), Endpoint::PostEvent);
        assert_eq!(resolve("post", "/v1/events/").unwrap(), Endpoint::PostEvent);
        assert_eq!(
            resolve("POST", "/v1/events/batch").unwrap(),
            Endpoint::PostEventBatch
        );
        assert_eq!(
            resolve("POST", "/v1/webhooks/payments").unwrap(),
            Endpoint::PostWebhook {
                provider: "payments".into()
            }
        );
        assert_eq!(
            resolve("GET", "/v1/unsubscribe").unwrap(),
            Endpoint::UnsubscribePage
        );
        assert_eq!(
            resolve("POST", "/v1/unsubscribe").unwrap(),
            Endpoint::Unsubscribe
        );
        assert_eq!(
            resolve("DELETE", "/v1/profiles/u%2D1%20x").unwrap(),
            Endpoint::DeleteProfile {
                user_id: "u-1 x".into()
            }
        );
        assert_eq!(
            resolve("GET", "/v1/profiles/u-1").unwrap(),
            Endpoint::ExportProfile {
                user_id: "u-1".into()
            }
        );
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405() {
        assert!(matches!(
            resolve("GET", "/v2/events"),
            Err(ApiError::NotFound(_))
        ));
        assert!(matches!(resolve("GET", "/"), Err(ApiError::NotFound(_))));
        match resolve("GET", "/v1/events") {
            Err(ApiError::MethodNotAllowed { allowed, .. }) => assert_eq!(allowed, vec!["POST"]),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            resolve("PUT", "/v1/profiles/u-1"),
            Err(ApiError::MethodNotAllowed { .. })
        ));
        assert!(matches!(
            resolve("GET", "/v1/profiles/%zz"),
            Err(ApiError::InvalidRequest(_))
        ));
    }
}
