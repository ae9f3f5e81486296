//! Embeds `campaigns.yaml` as JSON (see `ember_build`).
fn main() {
    ember_build::embed_yaml_as_json("campaigns.yaml", "campaigns.json");
}
