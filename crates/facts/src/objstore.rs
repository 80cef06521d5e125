//! Iceberg storage through the `object_store` abstraction: the iceberg crate's FileIO calls
//! this adapter, which reads and writes a local directory by default ("simulating S3") or a
//! real S3-compatible bucket when configured (cargo feature `s3`). Iceberg locations are full
//! URLs (`file:///…`, `s3://bucket/…`); the adapter maps them to object keys.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use iceberg::io::{FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage, StorageConfig, StorageFactory};
use iceberg::{Error, ErrorKind, Result};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use serde::{Deserialize, Serialize};

/// Where the lake's files live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoreConfig {
    /// Local filesystem; Iceberg locations are `file://` URLs.
    Local,
    /// S3-compatible bucket; credentials come from the usual `AWS_*` environment.
    S3 { bucket: String, region: Option<String>, endpoint: Option<String>, allow_http: bool },
}

impl StoreConfig {
    /// The object store behind this configuration.
    pub fn build(&self) -> anyhow::Result<Arc<dyn ObjectStore>> {
        match self {
            Self::Local => Ok(Arc::new(object_store::local::LocalFileSystem::new())),
            #[cfg(feature = "s3")]
            Self::S3 { bucket, region, endpoint, allow_http } => {
                let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
                if let Some(region) = region {
                    builder = builder.with_region(region);
                }
                if let Some(endpoint) = endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                Ok(Arc::new(builder.with_allow_http(*allow_http).build()?))
            }
            #[cfg(not(feature = "s3"))]
            Self::S3 { .. } => anyhow::bail!("this build of `facts` has no S3 support (cargo feature `s3`)"),
        }
    }

    /// Maps an Iceberg location to the object key it names.
    fn key(&self, location: &str) -> Result<ObjPath> {
        let rest = match self {
            Self::Local => location
                .strip_prefix("file://")
                .or_else(|| location.strip_prefix("file:"))
                .unwrap_or(location)
                .trim_start_matches('/'),
            Self::S3 { bucket, .. } => location
                .strip_prefix("s3://")
                .and_then(|l| l.strip_prefix(bucket.as_str()))
                .map(|l| l.trim_start_matches('/'))
                .ok_or_else(|| Error::new(ErrorKind::DataInvalid, format!("{location} is outside s3://{bucket}")))?,
        };
        ObjPath::parse(rest).map_err(|e| Error::new(ErrorKind::DataInvalid, format!("bad location {location}: {e}")))
    }
}

/// The `Storage` the iceberg crate writes through.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "StoreConfig", into = "StoreConfig")]
pub struct ObjectStoreStorage {
    config: StoreConfig,
    store: Arc<dyn ObjectStore>,
}

impl ObjectStoreStorage {
    pub fn new(config: StoreConfig) -> anyhow::Result<Self> {
        let store = config.build()?;
        Ok(Self { config, store })
    }

    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }
}

impl TryFrom<StoreConfig> for ObjectStoreStorage {
    type Error = String;
    fn try_from(config: StoreConfig) -> std::result::Result<Self, String> {
        Self::new(config).map_err(|e| format!("{e:#}"))
    }
}

impl From<ObjectStoreStorage> for StoreConfig {
    fn from(storage: ObjectStoreStorage) -> Self {
        storage.config
    }
}

fn io_err(err: object_store::Error) -> Error {
    let kind = match err {
        object_store::Error::NotFound { .. } => ErrorKind::DataInvalid,
        _ => ErrorKind::Unexpected,
    };
    Error::new(kind, "object store operation failed").with_source(err)
}

#[async_trait]
#[typetag::serde]
impl Storage for ObjectStoreStorage {
    async fn exists(&self, path: &str) -> Result<bool> {
        match self.store.head(&self.config.key(path)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(err) => Err(io_err(err)),
        }
    }

    async fn metadata(&self, path: &str) -> Result<FileMetadata> {
        let meta = self.store.head(&self.config.key(path)?).await.map_err(io_err)?;
        Ok(FileMetadata { size: meta.size })
    }

    async fn read(&self, path: &str) -> Result<Bytes> {
        let got = self.store.get(&self.config.key(path)?).await.map_err(io_err)?;
        got.bytes().await.map_err(io_err)
    }

    async fn reader(&self, path: &str) -> Result<Box<dyn FileRead>> {
        Ok(Box::new(ObjectRead { store: self.store.clone(), key: self.config.key(path)? }))
    }

    async fn write(&self, path: &str, bs: Bytes) -> Result<()> {
        self.store.put(&self.config.key(path)?, PutPayload::from_bytes(bs)).await.map_err(io_err)?;
        Ok(())
    }

    async fn writer(&self, path: &str) -> Result<Box<dyn FileWrite>> {
        Ok(Box::new(ObjectWrite { store: self.store.clone(), key: self.config.key(path)?, buf: Vec::new() }))
    }

    async fn delete(&self, path: &str) -> Result<()> {
        match self.store.delete(&self.config.key(path)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(io_err(err)),
        }
    }

    async fn delete_prefix(&self, path: &str) -> Result<()> {
        let prefix = self.config.key(path)?;
        let mut listing = self.store.list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(io_err)?;
            self.store.delete(&meta.location).await.map_err(io_err)?;
        }
        Ok(())
    }

    async fn delete_stream(&self, mut paths: BoxStream<'static, String>) -> Result<()> {
        while let Some(path) = paths.next().await {
            self.delete(&path).await?;
        }
        Ok(())
    }

    fn new_input(&self, path: &str) -> Result<InputFile> {
        Ok(InputFile::new(Arc::new(self.clone()), path.to_owned()))
    }

    fn new_output(&self, path: &str) -> Result<OutputFile> {
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_owned()))
    }
}

struct ObjectRead {
    store: Arc<dyn ObjectStore>,
    key: ObjPath,
}

#[async_trait]
impl FileRead for ObjectRead {
    async fn read(&self, range: Range<u64>) -> Result<Bytes> {
        self.store.get_range(&self.key, range).await.map_err(io_err)
    }
}

/// Buffers a whole file and puts it in one request on close: data files are a few MB
/// (one flush interval of facts), and a single put is atomic on every backend.
struct ObjectWrite {
    store: Arc<dyn ObjectStore>,
    key: ObjPath,
    buf: Vec<u8>,
}

#[async_trait]
impl FileWrite for ObjectWrite {
    async fn write(&mut self, bs: Bytes) -> Result<()> {
        self.buf.extend_from_slice(&bs);
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        let payload = PutPayload::from(std::mem::take(&mut self.buf));
        self.store.put(&self.key, payload).await.map_err(io_err)?;
        Ok(())
    }
}

/// Hands the same storage to every FileIO the catalog builds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectStoreStorageFactory {
    pub storage: ObjectStoreStorage,
}

#[typetag::serde]
impl StorageFactory for ObjectStoreStorageFactory {
    fn build(&self, _config: &StorageConfig) -> Result<Arc<dyn Storage>> {
        Ok(Arc::new(self.storage.clone()))
    }
}
