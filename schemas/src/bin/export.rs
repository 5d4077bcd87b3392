//! Writes the JSON Schema of every message into `schemas/json/`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("json");
    artifacts_schemas::json_schema::export(&dir)?;
    println!("wrote JSON Schemas to {}", dir.display());
    Ok(())
}
