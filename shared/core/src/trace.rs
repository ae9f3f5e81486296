//! The trace context an event carries from the API request to the email it causes: W3C
//! `traceparent` in the stream record (`trace`) and in the segment event, and its X-Ray form
//! (`Root=1-…;Parent=…;Sampled=…`) on the EventBridge entry, so the email function's
//! invocation joins the API request's trace.
//!
//! The two forms map one to one: an X-Ray root `1-<8 hex>-<24 hex>` is the W3C trace id's 32
//! hex digits split after the eighth (the seconds of its start), as the AWS Distro for
//! OpenTelemetry maps them. Hand-written: a crate for it would be OpenTelemetry's SDK.

use std::fmt;

/// A trace id, the span that caused this work, and whether the trace is sampled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits, not all zero.
    trace_id: String,
    /// 16 lowercase hex digits, not all zero.
    parent_id: String,
    pub sampled: bool,
}

fn hex_of_len(s: &str, len: usize) -> Option<String> {
    let ok =
        s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0');
    ok.then(|| s.to_ascii_lowercase())
}

impl TraceContext {
    /// Reads a W3C `traceparent` header (`00-<trace id>-<parent id>-<flags>`); a later
    /// version's extra fields are ignored, version `ff` is invalid.
    pub fn from_traceparent(header: &str) -> Option<TraceContext> {
        let mut parts = header.trim().split('-');
        let version = parts.next()?;
        if version.len() != 2 || version.eq_ignore_ascii_case("ff") {
            return None;
        }
        u8::from_str_radix(version, 16).ok()?;
        let trace_id = hex_of_len(parts.next()?, 32)?;
        let parent_id = hex_of_len(parts.next()?, 16)?;
        let flags = u8::from_str_radix(parts.next().filter(|f| f.len() == 2)?, 16).ok()?;
        if version == "00" && parts.next().is_some() {
            return None;
        }
        Some(TraceContext {
            trace_id,
            parent_id,
            sampled: flags & 1 == 1,
        })
    }

    /// Reads an X-Ray trace header (`Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=1`, in
    /// any order, other fields ignored). Without a parent (the API's own invocation) the
    /// parent is the root's last 16 digits, a stand-in span id.
    pub fn from_xray(header: &str) -> Option<TraceContext> {
        let (mut root, mut parent, mut sampled) = (None, None, false);
        for field in header.split(';') {
            match field.trim().split_once('=') {
                Some(("Root", v)) => root = Some(v),
                Some(("Parent", v)) => parent = Some(v),
                Some(("Sampled", v)) => sampled = v == "1",
                _ => {}
            }
        }
        let mut root_parts = root?.split('-');
        if root_parts.next()? != "1" {
            return None;
        }
        let (time, unique) = (root_parts.next()?, root_parts.next()?);
        if time.len() != 8 || root_parts.next().is_some() {
            return None;
        }
        let trace_id = hex_of_len(&format!("{time}{unique}"), 32)?;
        let parent_id = match parent {
            Some(p) => hex_of_len(p, 16)?,
            None => trace_id[16..].to_owned(),
        };
        Some(TraceContext {
            trace_id,
            parent_id,
            sampled,
        })
    }

    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// The X-Ray trace header of this context.
    pub fn to_xray(&self) -> String {
        format!(
            "Root=1-{}-{};Parent={};Sampled={}",
            &self.trace_id[..8],
            &self.trace_id[8..],
            self.parent_id,
            u8::from(self.sampled)
        )
    }
}

/// The `traceparent` form.
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.parent_id,
            u8::from(self.sampled)
        )
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const TP: &str = "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01";

    #[test]
    fn a_traceparent_maps_to_the_xray_header_and_back() {
        let t = TraceContext::from_traceparent(TP).unwrap();
        assert_eq!(
            t.to_xray(),
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
        );
        assert_eq!(TraceContext::from_xray(&t.to_xray()), Some(t.clone()));
        assert_eq!(t.to_string(), TP);
        assert_eq!(t.trace_id(), "5759e988bd862e3fe1be46a994272793");
    }

    #[test]
    fn lambda_xray_ids_without_a_parent_still_give_a_context() {
        let t = TraceContext::from_xray(
            "Root=1-5759e988-bd862e3fe1be46a994272793;Lineage=a:1;Sampled=0",
        )
        .unwrap();
        assert!(!t.sampled);
        assert_eq!(
            t.to_string(),
            "00-5759e988bd862e3fe1be46a994272793-e1be46a994272793-00"
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in [
            "",
            "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8",
            "ff-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01",
            "00-00000000000000000000000000000000-53995c3f42cd8ad8-01",
            "00-5759e988bd862e3fe1be46a994272793-0000000000000000-01",
            "00-5759e988bd862e3fe1be46a99427279z-53995c3f42cd8ad8-01",
            "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01-extra",
            "0-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01",
        ] {
            assert_eq!(TraceContext::from_traceparent(bad), None, "{bad}");
        }
        for bad in [
            "",
            "Root=2-5759e988-bd862e3fe1be46a994272793",
            "Parent=53995c3f42cd8ad8",
        ] {
            assert_eq!(TraceContext::from_xray(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn every_valid_context_round_trips_through_both_forms(
            trace in "[0-9a-f]{31}[1-9a-f]",
            parent in "[1-9a-f][0-9a-f]{15}",
            sampled: bool,
        ) {
            let header = format!("00-{trace}-{parent}-0{}", u8::from(sampled));
            let t = TraceContext::from_traceparent(&header).unwrap();
            prop_assert_eq!(t.to_string(), header);
            prop_assert_eq!(TraceContext::from_xray(&t.to_xray()), Some(t));
        }
    }
}
