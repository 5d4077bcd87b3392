//! Schema descriptions for the validated string types, for both consumers of schemas: JSON Schema
//! (`schemars`, exported to `schemas/json/` for NATS clients) and OpenAPI (`utoipa`, served by the
//! gateway). Both describe the value as a plain string with the rule it must follow.

/// Implements `schemars::JsonSchema` and `utoipa::ToSchema` for a type serialised as a string.
macro_rules! string_schema {
    ($ty:ident, $description:expr $(, pattern = $pattern:expr)?, example = $example:expr) => {
        impl schemars::JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($ty).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                #[allow(unused_mut)]
                let mut schema = schemars::json_schema!({
                    "type": "string",
                    "description": $description,
                    "examples": [$example],
                });
                $(schema.insert("pattern".into(), $pattern.into());)?
                schema
            }
        }
        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some($description))
                    .examples([$example])
                    $(.pattern(Some($pattern)))?
                    .into()
            }
        }
        impl utoipa::ToSchema for $ty {}
    };
}
pub(crate) use string_schema;
