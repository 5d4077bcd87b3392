//! Managing what the service holds: cancelling and pinning builds (`<prefix>.build.cancel`,
//! `<prefix>.build.pin`), deleting images and components (`<prefix>.image.delete`,
//! `<prefix>.component.delete`), the catalogs (`<prefix>.catalog.images`, `<prefix>.catalog.components`)
//! and the collector (`<prefix>.gc.run`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::build::{BuildId, ListStatus, Timestamp};
use super::image::ImageRecord;
use crate::names::{Architecture, ComponentName, TagName};

/// `POST /builds/{buildId}/pin` (`pinned: true`), `DELETE /builds/{buildId}/pin` (`false`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildPinRequest {
    pub build_id: BuildId,
    pub pinned: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeletedStatus {
    Deleted,
}

/// The answer to a deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deleted {
    pub status: DeletedStatus,
}

pub const DEFAULT_CATALOG_LIMIT: u32 = 50;
pub const MAX_CATALOG_LIMIT: u32 = 500;

/// `GET /catalog/images`, `GET /catalog/components`: one page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CatalogQuery {
    pub component: Option<ComponentName>,
    /// Where the previous page ended (its `nextCursor`).
    pub cursor: Option<String>,
    /// At most this many items (default 50, at most 500).
    pub limit: Option<u32>,
}

impl CatalogQuery {
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_CATALOG_LIMIT).clamp(1, MAX_CATALOG_LIMIT) as usize
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentCatalogItem {
    pub component: ComponentName,
    pub tag: TagName,
    pub architecture: Architecture,
    pub digest: String,
    pub size: u64,
    pub build_id: BuildId,
    pub built_at: Timestamp,
}

/// A page of a catalog; `nextCursor` is absent on the last page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Catalog<T> {
    pub status: ListStatus,
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Image items are the image records themselves.
pub type ImageCatalog = Catalog<ImageRecord>;
pub type ComponentCatalog = Catalog<ComponentCatalogItem>;

/// `POST /gc`, `<prefix>.gc.run`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcRequest {
    /// Only say what would be removed.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a collection removed (or would remove, on a dry run).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Removed {
    pub builds: u64,
    pub images: u64,
    pub components: u64,
    pub uploads: u64,
    /// Registry blobs the sweep deleted (0 on a dry run, or when the collector has no
    /// `registry.storage_dir`).
    #[serde(default)]
    pub blobs: u64,
    /// Bytes of the component archives, uploads and registry blobs removed.
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    pub status: ListStatus,
    pub dry_run: bool,
    pub removed: Removed,
}
