#[test]
fn measure() {
    let r = ember_core::schema::Registry::embedded().unwrap();
    let rules = ember_core::segment::RuleSet::embedded().unwrap();
    let lines: Vec<Vec<u8>> = std::fs::read_to_string("/tmp/ember_fixture_events.jsonl").unwrap().lines()
        .map(|l| { let v: serde_json::Value = serde_json::from_str(l).unwrap(); serde_json::to_vec(&v["ev"]).unwrap() }).collect();
    let cfg = ember_core::fold::FoldConfig::default();
    let mut p = ember_core::profile::Profile::new("u");
    let start = std::time::Instant::now();
    let mut ok = 0;
    for _ in 0..3 { for b in &lines { if let Ok(e) = ember_core::enrich::decode(b, &r) { ok += 1; p.apply(&e, &cfg); let _ = rules.evaluate(&p, e.envelope.occurred_at); } } }
    let el = start.elapsed();
    println!("MEASURE {} records ({} ok) in {:?}: {:?}/record; ids {}", lines.len()*3, ok, el, el / (lines.len() as u32 * 3), p.recent_event_ids.len());
    let t = std::time::Instant::now(); for _ in 0..20 { ember_core::schema::Registry::embedded().unwrap(); } println!("MEASURE registry build {:?}", t.elapsed()/20);
}
