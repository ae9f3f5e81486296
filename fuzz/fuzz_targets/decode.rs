//! Raw Kinesis record bytes -> decode (JSON, schemas, enrichment) -> fold -> segments.
//! Must never panic; errors must name at least one problem.
#![no_main]

use std::sync::OnceLock;

use ember_core::fold::FoldConfig;
use ember_core::profile::Profile;
use ember_core::schema::Registry;
use ember_core::segment::RuleSet;
use libfuzzer_sys::fuzz_target;

fn state() -> &'static (Registry, RuleSet) {
    static S: OnceLock<(Registry, RuleSet)> = OnceLock::new();
    S.get_or_init(|| {
        (
            Registry::embedded().expect("embedded schemas"),
            RuleSet::embedded().expect("embedded rules"),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let (registry, rules) = state();
    match ember_core::enrich::decode(data, registry) {
        Ok(event) => {
            let mut profile = Profile::new(event.header.profile_key().unwrap_or_default());
            profile.apply(&event, &FoldConfig::default());
            rules.evaluate(&profile, event.header.occurred_at);
        }
        Err(problems) => assert!(!problems.is_empty()),
    }
});
