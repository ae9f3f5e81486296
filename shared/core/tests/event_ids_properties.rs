//! Property tests of the packed form of a profile's recent event ids: exact round trips for
//! any ids, and no panic on any bytes.

use ember_core::profile::EventIds;
use proptest::prelude::*;

/// An id as producers send them: a UUID (canonical or upper-case), an id of the schema's
/// characters, or any text (stored rings written by older versions are not re-validated).
fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
        any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string().to_uppercase()),
        "[A-Za-z0-9._:-]{0,140}",
        any::<String>(),
    ]
}

proptest! {
    #[test]
    fn packed_ids_read_back_exactly(ids in prop::collection::vec(id(), 0..60), bound in 1usize..80) {
        let mut ring = EventIds::default();
        for id in &ids {
            ring.push(id, bound);
        }
        let back = EventIds::unpack(&ring.pack()).expect("its own packed form reads back");
        prop_assert_eq!(back.iter().collect::<Vec<_>>(), ring.iter().collect::<Vec<_>>());
        for id in &ids {
            prop_assert_eq!(back.contains(id), ring.contains(id));
        }
    }

    #[test]
    fn any_bytes_are_read_or_refused_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = EventIds::unpack(&bytes);
        let mut with_format = vec![ember_core::profile::PACKED_FORMAT];
        with_format.extend_from_slice(&bytes);
        if let Ok(ring) = EventIds::unpack(&with_format) {
            // What was read packs to a form that reads back the same.
            prop_assert_eq!(EventIds::unpack(&ring.pack()).expect("repacked"), ring);
        }
    }
}
