//! The API contract, `api/openapi.yaml`, compiled in so the gateway serves the document
//! the stacks are built from (not a copy that could drift).

use serde_json::Value;

/// The document as written (YAML).
pub const YAML: &str = include_str!("../../api/openapi.yaml");

/// The document as JSON.
pub fn document() -> Result<Value, String> {
    serde_norway::from_str(YAML).map_err(|e| format!("api/openapi.yaml is not valid YAML: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_parses_and_names_the_three_routes() {
        let doc = document().unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.0"));
        for route in ["/gasdetector", "/dust", "/temp"] {
            assert!(doc["paths"][route]["post"].is_object(), "{route}");
        }
    }
}
