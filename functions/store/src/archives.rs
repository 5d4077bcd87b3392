//! Component archives (`.tar.gz`) and uploaded build sources, in the two object stores.

use async_nats::jetstream::object_store::{self, ObjectInfo, ObjectStore};
use tokio::io::AsyncRead;

use crate::{Store, StoreError};

/// An object being read.
pub type ObjectReader = object_store::Object;

/// Which object store.
#[derive(Debug, Clone, Copy)]
pub enum Objects {
    /// Component archives, by `<component key>/<build id>.tar.gz`.
    Archives,
    /// Build sources by content: `dockerfiles/<sha256 hex>`, `contexts/<sha256 hex>`.
    Uploads,
}

impl Store {
    fn objects(&self, objects: Objects) -> &ObjectStore {
        match objects {
            Objects::Archives => &self.buckets.archives,
            Objects::Uploads => &self.buckets.uploads,
        }
    }

    /// The name of the archives' object store, as component records name it.
    pub fn archives_bucket(&self) -> String {
        self.names.bucket("archives")
    }

    /// Stores an object read from `reader` (the object store refuses it past its byte cap).
    pub async fn put_object(
        &self,
        objects: Objects,
        name: &str,
        reader: &mut (impl AsyncRead + Unpin),
    ) -> Result<ObjectInfo, StoreError> {
        self.objects(objects).put(name, reader).await.map_err(StoreError::unavailable)
    }

    /// Opens an object for reading: `NotFound` when there is none.
    pub async fn object(&self, objects: Objects, name: &str) -> Result<ObjectReader, StoreError> {
        self.objects(objects).get(name).await.map_err(|err| match err.kind() {
            object_store::GetErrorKind::NotFound => StoreError::NotFound(format!("no object {name}")),
            _ => StoreError::unavailable(err),
        })
    }

    /// An object's description, if it is stored.
    pub async fn object_info(&self, objects: Objects, name: &str) -> Result<Option<ObjectInfo>, StoreError> {
        match self.objects(objects).info(name).await {
            Ok(info) if !info.deleted => Ok(Some(info)),
            Ok(_) => Ok(None),
            Err(err) if err.kind() == object_store::InfoErrorKind::NotFound => Ok(None),
            Err(err) => Err(StoreError::unavailable(err)),
        }
    }

    /// Every stored object's description.
    pub async fn all_objects(&self, objects: Objects) -> Result<Vec<ObjectInfo>, StoreError> {
        use futures::TryStreamExt;
        let list = self.objects(objects).list().await.map_err(StoreError::unavailable)?;
        list.try_collect().await.map_err(StoreError::unavailable)
    }

    /// Deletes an object and the marker the object store leaves for a deleted name: with a name per
    /// build, markers alone would grow the bucket by one for every build ever collected. An absent
    /// object is no error.
    pub async fn remove_object(&self, objects: Objects, name: &str) -> Result<(), StoreError> {
        use base64::Engine as _;
        match self.objects(objects).delete(name).await {
            Ok(()) => {}
            Err(err) if err.kind() == object_store::DeleteErrorKind::NotFound => {}
            Err(err) => return Err(StoreError::unavailable(err)),
        }
        let bucket = match objects {
            Objects::Archives => self.names.bucket("archives"),
            Objects::Uploads => self.names.bucket("uploads"),
        };
        let marker = format!("$O.{bucket}.M.{}", base64::engine::general_purpose::URL_SAFE.encode(name));
        let stream = self.js.get_stream(format!("OBJ_{bucket}")).await.map_err(StoreError::unavailable)?;
        stream.purge().filter(marker).await.map_err(StoreError::unavailable)?;
        Ok(())
    }

    pub(crate) async fn remove_archive(&self, name: &str) -> Result<(), StoreError> {
        self.remove_object(Objects::Archives, name).await
    }
}
