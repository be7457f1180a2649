//! [`S3BlobStore`]: objects in a bucket of an S3-compatible service.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use guardyn_storage::{BlobStore, ObjectMeta, StorageError, StorageResult};
use object_store::aws::AmazonS3Builder;

use crate::object::{Flavour, ObjectBlobStore};

/// Where and how to reach the bucket.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Config {
    /// Endpoint URL (`https://s3.eu-west-1.amazonaws.com`, `http://minio:9000`); empty = AWS
    /// for `region`. Requests use path-style addressing (`<endpoint>/<bucket>/<key>`).
    pub endpoint: String,
    /// Bucket name; the bucket must exist.
    pub bucket: String,
    /// Region (empty = `us-east-1`).
    pub region: String,
    /// Static credentials; both empty = the `AWS_*` environment variables, then the instance
    /// metadata service.
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Allow a plain `http://` endpoint.
    pub allow_http: bool,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &if self.secret_access_key.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// A [`BlobStore`] in an S3 bucket (AWS S3, MinIO, Ceph RGW, ...): key `a/b` is the object
/// `a/b`. S3 gives atomic, durable single-object puts and strongly consistent reads and
/// listings; failures the client's retries could not hide are `StorageError::Unavailable`.
///
/// TLS is rustls on the process-wide crypto provider; [`S3BlobStore::open`] installs ring when
/// the process has none yet.
#[derive(Clone)]
pub struct S3BlobStore {
    endpoint: String,
    bucket: String,
    inner: ObjectBlobStore,
}

impl S3BlobStore {
    /// Builds the client. Does not contact the service: a wrong endpoint or bucket shows on the
    /// first operation.
    pub fn open(config: &S3Config) -> StorageResult<Self> {
        // reqwest uses rustls without a bundled provider; ring is the one Guardyn uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_allow_http(config.allow_http)
            .with_virtual_hosted_style_request(false);
        if !config.endpoint.is_empty() {
            builder = builder.with_endpoint(&config.endpoint);
        }
        if !config.region.is_empty() {
            builder = builder.with_region(&config.region);
        }
        if !config.access_key_id.is_empty() {
            builder = builder
                .with_access_key_id(&config.access_key_id)
                .with_secret_access_key(&config.secret_access_key);
        }
        let store = builder.build().map_err(|e| {
            StorageError::InvalidRequest(format!("S3 blob store {}: {e}", config.bucket))
        })?;
        Ok(Self {
            endpoint: config.endpoint.clone(),
            bucket: config.bucket.clone(),
            inner: ObjectBlobStore::new(Arc::new(store), Flavour::Remote),
        })
    }
}

impl std::fmt::Debug for S3BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3BlobStore")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .finish()
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn put(&self, key: &str, data: Bytes) -> StorageResult<()> {
        self.inner.put(key, data).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> StorageResult<Option<Bytes>> {
        self.inner.get_range(key, range).await
    }

    async fn size(&self, key: &str) -> StorageResult<Option<u64>> {
        self.inner.size(key).await
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }
}
