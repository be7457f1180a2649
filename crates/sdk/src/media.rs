//! Encrypted attachments over MediaService: the server stores only ciphertext; the key and
//! the ciphertext digest travel inside the end-to-end-encrypted message ([`Attachment`]).
//!
//! # Blob format, version 1
//!
//! ```text
//! 0x01 | nonce prefix (8 random bytes) | segment 0 | segment 1 | ... | segment n-1
//! segment i = AES-256-GCM(key, nonce = prefix ++ i (u32 BE),
//!                         aad = "guardyn-media" ++ 0x01 ++ last (0 or 1),
//!                         plaintext bytes [i * 64 KiB, (i + 1) * 64 KiB))
//! ```
//!
//! The key is fresh (32 random bytes) for every file. Every segment but the last holds exactly
//! 64 KiB of plaintext; the last holds the rest (possibly nothing: an empty file is one empty
//! segment). Reordered segments fail (the index is in the nonce), and so does a blob cut at a
//! segment boundary (its new last segment was sealed with `last = 0`). Encryption and
//! decryption stream one segment at a time, so memory stays bounded by the upload/download
//! chunk size whatever the file size.
//!
//! # Upload and download
//!
//! Upload reads the source twice: once to compute the ciphertext's SHA-256 (declared at
//! CreateUpload), once to send it in the server's `chunk_size` pieces through unary
//! UploadChunk. After a failed chunk it asks GetUpload for the committed offset and resumes
//! there, a bounded number of times (`ClientConfig::max_attempts`). The server is only told
//! `application/octet-stream`; the real content type is in the attachment.
//!
//! Download streams the blob, checks every segment's AEAD tag as it arrives, and at the end
//! the size and SHA-256 declared in the attachment.
//!
//! # Attachment encoding, version 1
//!
//! ```text
//! 0x01 | media id | key (32) | sha256 (32) | size (u64) | plaintext size (u64)
//!      | content type | file name
//! ```
//! (big-endian, strings `u32`-length-prefixed).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use futures::StreamExt as _;
use guardyn_proto::guardyn::common::v1::ErrorReason;
use guardyn_proto::guardyn::media::v1 as pb;
use guardyn_proto::guardyn::media::v1::media_service_client::MediaServiceClient;
use rand::Rng as _;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::attachment::{
    Attachment, BLOB_VERSION, HEADER_LEN, PREFIX_LEN, SEGMENT_SIZE, TAG_LEN, blob_size, format_err,
    segment_count,
};
use crate::client::{Client, Inner};
use crate::content::BodyType;
use crate::error::SdkError;
use crate::messages::SentMessage;

const SEALED_SEGMENT: usize = SEGMENT_SIZE + TAG_LEN;
const AAD_LABEL: &[u8] = b"guardyn-media";
/// What the server is told about every blob's type.
const OPAQUE_TYPE: &str = "application/octet-stream";
/// Largest chunk size the client accepts from the server (gRPC's default message limit is
/// 4 MiB; the API promises at most 1 MiB).
const MAX_CHUNK: u32 = 1024 * 1024;

fn nonce(prefix: &[u8; PREFIX_LEN], index: u64) -> Result<[u8; 12], SdkError> {
    let index = u32::try_from(index).map_err(|_| format_err("too many segments"))?;
    let mut n = [0u8; 12];
    n[..PREFIX_LEN].copy_from_slice(prefix);
    n[PREFIX_LEN..].copy_from_slice(&index.to_be_bytes());
    Ok(n)
}

fn aad(last: bool) -> [u8; 15] {
    let mut a = [0u8; 15];
    a[..13].copy_from_slice(AAD_LABEL);
    a[13] = BLOB_VERSION;
    a[14] = u8::from(last);
    a
}

/// Seals one segment.
pub(crate) fn seal_segment(
    cipher: &Aes256Gcm,
    prefix: &[u8; PREFIX_LEN],
    index: u64,
    last: bool,
    plaintext: &[u8],
) -> Result<Vec<u8>, SdkError> {
    let n = nonce(prefix, index)?;
    cipher
        .encrypt(
            (&n).into(),
            Payload {
                msg: plaintext,
                aad: &aad(last),
            },
        )
        .map_err(|_| SdkError::Protocol("segment too large to seal".into()))
}

/// Opens one segment; fails on any modification, wrong position or wrong last flag.
pub(crate) fn open_segment(
    cipher: &Aes256Gcm,
    prefix: &[u8; PREFIX_LEN],
    index: u64,
    last: bool,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SdkError> {
    let n = nonce(prefix, index)?;
    cipher
        .decrypt(
            (&n).into(),
            Payload {
                msg: sealed,
                aad: &aad(last),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| SdkError::Corrupt("a segment failed authentication"))
}

/// Produces the encrypted blob of a seekable source at any offset, one segment at a time.
struct BlobReader<R> {
    src: R,
    cipher: Aes256Gcm,
    prefix: [u8; PREFIX_LEN],
    plaintext_size: u64,
    total: u64,
    /// The sealed unit (header or segment) that covers `buf_start..buf_start + buf.len()`.
    buf: Vec<u8>,
    buf_start: u64,
}

impl<R: Read + Seek> BlobReader<R> {
    fn new(mut src: R, key: &[u8; 32], prefix: [u8; PREFIX_LEN]) -> Result<Self, SdkError> {
        let plaintext_size = src.seek(SeekFrom::End(0))?;
        let total = blob_size(plaintext_size).ok_or_else(|| format_err("file too large"))?;
        Ok(Self {
            src,
            cipher: Aes256Gcm::new(key.into()),
            prefix,
            plaintext_size,
            total,
            buf: Vec::new(),
            buf_start: 0,
        })
    }

    /// Loads the unit that contains blob offset `pos` (< total).
    fn load(&mut self, pos: u64) -> Result<(), SdkError> {
        let header = HEADER_LEN as u64;
        if pos < header {
            self.buf.clear();
            self.buf.push(BLOB_VERSION);
            self.buf.extend_from_slice(&self.prefix);
            self.buf_start = 0;
            return Ok(());
        }
        let index = (pos - header) / SEALED_SEGMENT as u64;
        let start = index * SEGMENT_SIZE as u64;
        let len = (self.plaintext_size - start).min(SEGMENT_SIZE as u64) as usize;
        let last = index + 1 == segment_count(self.plaintext_size);
        let mut plain = Zeroizing::new(vec![0u8; len]);
        self.src.seek(SeekFrom::Start(start))?;
        self.src.read_exact(&mut plain).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                SdkError::Invalid("the file shrank while it was being uploaded".into())
            } else {
                SdkError::Io(e)
            }
        })?;
        self.buf = seal_segment(&self.cipher, &self.prefix, index, last, &plain)?;
        self.buf_start = header + index * SEALED_SEGMENT as u64;
        Ok(())
    }

    /// Up to `n` blob bytes starting at `pos`.
    fn read_at(&mut self, mut pos: u64, n: usize) -> Result<Vec<u8>, SdkError> {
        let end = pos.saturating_add(n as u64).min(self.total);
        let mut out = Vec::with_capacity(end.saturating_sub(pos) as usize);
        while pos < end {
            let buf_end = self.buf_start + self.buf.len() as u64;
            if pos < self.buf_start || pos >= buf_end {
                self.load(pos)?;
                continue;
            }
            let from = (pos - self.buf_start) as usize;
            let to = (end.min(buf_end) - self.buf_start) as usize;
            out.extend_from_slice(&self.buf[from..to]);
            pos += (to - from) as u64;
        }
        Ok(out)
    }

    /// SHA-256 of the whole blob.
    fn digest(&mut self) -> Result<[u8; 32], SdkError> {
        let mut hasher = Sha256::new();
        let mut pos = 0;
        while pos < self.total {
            let chunk = self.read_at(pos, 16 * SEALED_SEGMENT)?;
            hasher.update(&chunk);
            pos += chunk.len() as u64;
        }
        Ok(hasher.finalize().into())
    }
}

/// Decrypts a blob fed in arbitrary pieces, writing verified plaintext segment by segment.
struct BlobWriter {
    cipher: Aes256Gcm,
    prefix: Option<[u8; PREFIX_LEN]>,
    plaintext_size: u64,
    total: u64,
    segments: u64,
    expected_sha256: [u8; 32],
    hasher: Sha256,
    received: u64,
    index: u64,
    buf: Vec<u8>,
}

impl BlobWriter {
    fn new(att: &Attachment) -> Result<Self, SdkError> {
        if blob_size(att.plaintext_size) != Some(att.size) {
            return Err(format_err("size does not match the plaintext size"));
        }
        Ok(Self {
            cipher: Aes256Gcm::new((&*att.key).into()),
            prefix: None,
            plaintext_size: att.plaintext_size,
            total: att.size,
            segments: segment_count(att.plaintext_size),
            expected_sha256: att.sha256,
            hasher: Sha256::new(),
            received: 0,
            index: 0,
            buf: Vec::new(),
        })
    }

    fn segment_len(&self, index: u64) -> usize {
        if index + 1 < self.segments {
            SEALED_SEGMENT
        } else {
            (self.plaintext_size - index * SEGMENT_SIZE as u64) as usize + TAG_LEN
        }
    }

    fn push(&mut self, data: &[u8], out: &mut impl Write) -> Result<(), SdkError> {
        self.received += data.len() as u64;
        if self.received > self.total {
            return Err(SdkError::Corrupt("the blob is longer than declared"));
        }
        self.hasher.update(data);
        self.buf.extend_from_slice(data);
        let mut at = 0;
        if self.prefix.is_none() {
            if self.buf.len() < HEADER_LEN {
                return Ok(());
            }
            if self.buf[0] != BLOB_VERSION {
                return Err(SdkError::Corrupt("unknown blob version"));
            }
            let mut prefix = [0u8; PREFIX_LEN];
            prefix.copy_from_slice(&self.buf[1..HEADER_LEN]);
            self.prefix = Some(prefix);
            at = HEADER_LEN;
        }
        let Some(prefix) = self.prefix else {
            return Ok(());
        };
        while self.index < self.segments {
            let len = self.segment_len(self.index);
            if self.buf.len() - at < len {
                break;
            }
            let last = self.index + 1 == self.segments;
            let plain = open_segment(
                &self.cipher,
                &prefix,
                self.index,
                last,
                &self.buf[at..at + len],
            )?;
            out.write_all(&plain)?;
            at += len;
            self.index += 1;
        }
        self.buf.drain(..at);
        Ok(())
    }

    fn finish(self) -> Result<u64, SdkError> {
        if self.received != self.total || self.index != self.segments || !self.buf.is_empty() {
            return Err(SdkError::Corrupt("the blob is shorter than declared"));
        }
        let digest: [u8; 32] = self.hasher.finalize().into();
        if digest != self.expected_sha256 {
            return Err(SdkError::Corrupt("the blob's SHA-256 does not match"));
        }
        Ok(self.plaintext_size)
    }
}

/// Whether a failed media call may succeed when repeated (after resyncing the offset).
fn transient(err: &SdkError) -> bool {
    match err.code() {
        Some(
            tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Aborted
            | tonic::Code::Cancelled,
        ) => true,
        Some(tonic::Code::FailedPrecondition) => err.reason() == Some(ErrorReason::OffsetMismatch),
        Some(_) => false,
        None => matches!(err, SdkError::Transport(_)),
    }
}

async fn backoff(failures: u32) {
    tokio::time::sleep(Duration::from_millis(50u64 << failures.min(6))).await;
}

/// Progress callbacks: `(bytes done, bytes total)`.
pub type Progress<'a> = &'a mut (dyn FnMut(u64, u64) + Send);

type ChunkStream = futures::stream::BoxStream<'static, Result<pb::DownloadResponse, SdkError>>;

/// The MediaService calls uploads and downloads make: the client's authenticated channel, or
/// a fault-injecting fake in tests.
pub(crate) trait MediaApi: Sync {
    fn create_upload(
        &self,
        req: pb::CreateUploadRequest,
    ) -> impl Future<Output = Result<pb::CreateUploadResponse, SdkError>> + Send;
    fn upload_chunk(
        &self,
        req: pb::UploadChunkRequest,
    ) -> impl Future<Output = Result<pb::UploadChunkResponse, SdkError>> + Send;
    fn get_upload(
        &self,
        req: pb::GetUploadRequest,
    ) -> impl Future<Output = Result<pb::GetUploadResponse, SdkError>> + Send;
    fn complete_upload(
        &self,
        req: pb::CompleteUploadRequest,
    ) -> impl Future<Output = Result<pb::CompleteUploadResponse, SdkError>> + Send;
    fn download(
        &self,
        req: pb::DownloadRequest,
    ) -> impl Future<Output = Result<ChunkStream, SdkError>> + Send;
    /// Attempts per upload or download (failures tolerated + 1).
    fn max_attempts(&self) -> u32;
}

impl Inner {
    async fn media<Req, Resp, F, Fut>(&self, req: Req, f: F) -> Result<Resp, SdkError>
    where
        Req: Clone,
        F: Fn(MediaServiceClient<tonic::transport::Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        Ok(self
            .call(req, |ch, r| f(MediaServiceClient::new(ch), r))
            .await?)
    }
}

impl MediaApi for Inner {
    async fn create_upload(
        &self,
        req: pb::CreateUploadRequest,
    ) -> Result<pb::CreateUploadResponse, SdkError> {
        self.media(req, |mut c, r| async move { c.create_upload(r).await })
            .await
    }

    async fn upload_chunk(
        &self,
        req: pb::UploadChunkRequest,
    ) -> Result<pb::UploadChunkResponse, SdkError> {
        self.media(req, |mut c, r| async move { c.upload_chunk(r).await })
            .await
    }

    async fn get_upload(
        &self,
        req: pb::GetUploadRequest,
    ) -> Result<pb::GetUploadResponse, SdkError> {
        self.media(req, |mut c, r| async move { c.get_upload(r).await })
            .await
    }

    async fn complete_upload(
        &self,
        req: pb::CompleteUploadRequest,
    ) -> Result<pb::CompleteUploadResponse, SdkError> {
        self.media(req, |mut c, r| async move { c.complete_upload(r).await })
            .await
    }

    async fn download(&self, req: pb::DownloadRequest) -> Result<ChunkStream, SdkError> {
        let stream = self
            .media(req, |mut c, r| async move { c.download(r).await })
            .await?;
        Ok(stream.map(|item| item.map_err(SdkError::from)).boxed())
    }

    fn max_attempts(&self) -> u32 {
        self.config.max_attempts.max(1)
    }
}

/// Repeats an idempotent call on transient errors, up to `api.max_attempts()` times.
async fn retrying<A, T, F, Fut>(api: &A, what: &str, f: F) -> Result<T, SdkError>
where
    A: MediaApi,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, SdkError>>,
{
    let mut failures = 0;
    loop {
        match f().await {
            Err(e) if transient(&e) && failures + 1 < api.max_attempts() => {
                failures += 1;
                tracing::debug!(error = %e, what, "media call failed; retrying");
                backoff(failures).await;
            }
            other => return other,
        }
    }
}

/// Uploads the blob: CreateUpload, chunks (resuming from GetUpload's committed offset after a
/// failure), CompleteUpload. Returns the published media id.
async fn upload_blob<A, R>(
    api: &A,
    blob: &mut BlobReader<R>,
    sha256: [u8; 32],
    progress: Progress<'_>,
) -> Result<String, SdkError>
where
    A: MediaApi,
    R: Read + Seek,
{
    let total = blob.total;
    progress(0, total);
    let created = retrying(api, "CreateUpload", || {
        api.create_upload(pb::CreateUploadRequest {
            total_size: total,
            sha256: sha256.to_vec(),
            content_type: OPAQUE_TYPE.into(),
        })
    })
    .await?;
    let upload_id = created.upload_id;
    if created.chunk_size == 0 || created.chunk_size > MAX_CHUNK {
        return Err(SdkError::Protocol(format!(
            "unusable chunk size {}",
            created.chunk_size
        )));
    }
    let chunk = created.chunk_size as usize;

    let mut offset = 0u64;
    let mut failures = 0u32;
    while offset < total {
        let data = blob.read_at(offset, chunk)?;
        let len = data.len() as u64;
        let result = api
            .upload_chunk(pb::UploadChunkRequest {
                upload_id: upload_id.clone(),
                offset,
                data,
            })
            .await;
        match result {
            Ok(resp) => {
                if resp.committed_offset <= offset
                    || resp.committed_offset > offset + len
                    || resp.committed_offset > total
                {
                    return Err(SdkError::Protocol(format!(
                        "committed offset {} after a chunk at {offset} of {len} bytes",
                        resp.committed_offset
                    )));
                }
                offset = resp.committed_offset;
                progress(offset, total);
            }
            Err(e) if transient(&e) => {
                failures += 1;
                tracing::debug!(error = %e, offset, "upload chunk failed; resuming");
                if failures >= api.max_attempts() {
                    return Err(SdkError::exhausted(failures, Some(e)));
                }
                backoff(failures).await;
                match api
                    .get_upload(pb::GetUploadRequest {
                        upload_id: upload_id.clone(),
                    })
                    .await
                {
                    Ok(state) if state.committed_offset <= total => {
                        offset = state.committed_offset;
                        progress(offset, total);
                    }
                    Ok(state) => {
                        return Err(SdkError::Protocol(format!(
                            "committed offset {} past the blob size",
                            state.committed_offset
                        )));
                    }
                    // Retry the chunk at the old offset; an OFFSET_MISMATCH comes back here.
                    Err(e) if transient(&e) => {
                        tracing::debug!(error = %e, "GetUpload failed");
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }

    let completed = retrying(api, "CompleteUpload", || {
        api.complete_upload(pb::CompleteUploadRequest {
            upload_id: upload_id.clone(),
        })
    })
    .await
    .map_err(|e| {
        if e.reason() == Some(ErrorReason::ChecksumMismatch) {
            SdkError::Invalid("the file changed while it was being uploaded".into())
        } else {
            e
        }
    })?;
    let media = completed
        .media
        .ok_or_else(|| SdkError::Protocol("CompleteUpload without media".into()))?;
    if media.media_id.is_empty()
        || media.size != total
        || (!media.sha256.is_empty() && media.sha256 != sha256)
    {
        return Err(SdkError::Protocol(
            "the completed media does not match the upload".into(),
        ));
    }
    Ok(media.media_id)
}

/// Downloads, verifies and decrypts a blob into `out`, resuming an interrupted stream at the
/// received offset.
async fn download_blob<A, W>(
    api: &A,
    attachment: &Attachment,
    out: &mut W,
    progress: Progress<'_>,
) -> Result<u64, SdkError>
where
    A: MediaApi,
    W: Write + Send,
{
    let mut blob = BlobWriter::new(attachment)?;
    let total = attachment.size;
    let mut offset = 0u64;
    let mut failures = 0u32;
    progress(0, total);
    while offset < total {
        let opened = api
            .download(pb::DownloadRequest {
                media_id: attachment.media_id.clone(),
                offset,
                length: 0,
            })
            .await;
        let failure = match opened {
            Ok(mut stream) => loop {
                match stream.next().await {
                    Some(Ok(chunk)) => {
                        if chunk.offset != offset {
                            return Err(SdkError::Protocol(format!(
                                "download chunk at {} where {offset} was expected",
                                chunk.offset
                            )));
                        }
                        blob.push(&chunk.data, out)?;
                        offset += chunk.data.len() as u64;
                        progress(offset, total);
                    }
                    Some(Err(e)) => break Some(e),
                    None => break None,
                }
            },
            Err(e) => Some(e),
        };
        match failure {
            None if offset < total => {
                return Err(SdkError::Corrupt("the blob is shorter than declared"));
            }
            None => {}
            Some(e) if transient(&e) && failures + 1 < api.max_attempts() => {
                failures += 1;
                tracing::debug!(error = %e, offset, "download failed; resuming");
                backoff(failures).await;
            }
            Some(e) => return Err(e),
        }
    }
    out.flush()?;
    blob.finish()
}

impl Client {
    /// Encrypts and uploads the file at `path` (its file name goes into the attachment).
    pub async fn upload_file(
        &self,
        path: impl AsRef<Path>,
        content_type: &str,
    ) -> Result<Attachment, SdkError> {
        let path = path.as_ref();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file = std::fs::File::open(path)?;
        self.upload_reader(file, &name, content_type).await
    }

    /// Encrypts and uploads everything in `src` (from its start to its end). The source is
    /// read twice (digest, then upload) and must not change meanwhile.
    pub async fn upload_reader<R>(
        &self,
        src: R,
        file_name: &str,
        content_type: &str,
    ) -> Result<Attachment, SdkError>
    where
        R: Read + Seek + Send + 'static,
    {
        self.upload_reader_with_progress(src, file_name, content_type, &mut |_, _| {})
            .await
    }

    /// [`Client::upload_reader`], reporting encrypted bytes committed by the server.
    pub async fn upload_reader_with_progress<R>(
        &self,
        src: R,
        file_name: &str,
        content_type: &str,
        progress: Progress<'_>,
    ) -> Result<Attachment, SdkError>
    where
        R: Read + Seek + Send + 'static,
    {
        let mut key = Zeroizing::new([0u8; 32]);
        let mut prefix = [0u8; PREFIX_LEN];
        rand::rng().fill_bytes(key.as_mut_slice());
        rand::rng().fill_bytes(&mut prefix);
        let blob = BlobReader::new(src, &key, prefix)?;
        // Pass 1 (off the async runtime): the ciphertext's digest.
        let (mut blob, sha256) = tokio::task::spawn_blocking(move || {
            let mut blob = blob;
            let digest = blob.digest();
            (blob, digest)
        })
        .await
        .map_err(|e| SdkError::Protocol(format!("digest task failed: {e}")))?;
        let sha256 = sha256?;
        // Pass 2: the upload.
        let media_id = upload_blob(&*self.inner, &mut blob, sha256, progress).await?;
        Ok(Attachment {
            media_id,
            key,
            sha256,
            size: blob.total,
            plaintext_size: blob.plaintext_size,
            content_type: content_type.to_owned(),
            file_name: file_name.to_owned(),
        })
    }

    /// Sends an attachment message to every device of account `to` (and sync copies).
    pub async fn send_attachment(
        &self,
        to: &str,
        attachment: &Attachment,
    ) -> Result<SentMessage, SdkError> {
        let message_id = crate::messages::new_message_id();
        self.send_body(
            to,
            BodyType::Attachment,
            &attachment.to_bytes(),
            &message_id,
        )
        .await
    }

    /// Sends an attachment message to an MLS group; returns its message id.
    pub async fn send_group_attachment(
        &self,
        group_id: &[u8],
        attachment: &Attachment,
    ) -> Result<String, SdkError> {
        self.send_group_body(group_id, BodyType::Attachment, &attachment.to_bytes())
            .await
    }

    /// Downloads and decrypts an attachment into `out`; returns the plaintext size.
    ///
    /// Every segment is authenticated before its plaintext is written, and the blob's size
    /// and SHA-256 are checked at the end. On an error `out` may already hold a prefix of the
    /// file: discard it ([`Client::download_to_path`] does so itself).
    pub async fn download<W: Write + Send>(
        &self,
        attachment: &Attachment,
        out: &mut W,
    ) -> Result<u64, SdkError> {
        self.download_with_progress(attachment, out, &mut |_, _| {})
            .await
    }

    /// [`Client::download`], reporting encrypted bytes received.
    pub async fn download_with_progress<W: Write + Send>(
        &self,
        attachment: &Attachment,
        out: &mut W,
        progress: Progress<'_>,
    ) -> Result<u64, SdkError> {
        download_blob(&*self.inner, attachment, out, progress).await
    }

    /// Downloads and decrypts an attachment into a new file at `path` (which must not exist).
    /// The data goes to a temporary file next to it that is renamed into place only after
    /// every check passed, and removed on any failure.
    pub async fn download_to_path(
        &self,
        attachment: &Attachment,
        path: impl AsRef<Path>,
    ) -> Result<u64, SdkError> {
        self.download_to_path_with_progress(attachment, path, &mut |_, _| {})
            .await
    }

    /// [`Client::download_to_path`], reporting encrypted bytes received.
    pub async fn download_to_path_with_progress(
        &self,
        attachment: &Attachment,
        path: impl AsRef<Path>,
        progress: Progress<'_>,
    ) -> Result<u64, SdkError> {
        let path = path.as_ref();
        if path.exists() {
            return Err(SdkError::Io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} already exists", path.display()),
            )));
        }
        let tmp = partial_path(path);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        // Also removes the partial file when this future is dropped midway.
        let _cleanup = RemoveOnDrop(&tmp);
        let result = async {
            let n = self
                .download_with_progress(attachment, &mut file, progress)
                .await?;
            file.sync_all()?;
            Ok::<_, SdkError>(n)
        }
        .await;
        drop(file);
        result.and_then(|n| {
            place_without_clobbering(&tmp, path)?;
            Ok(n)
        })
    }
}

/// Removes a file when dropped (if it still exists).
struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

/// A hidden, unique temporary name next to `path`.
fn partial_path(path: &Path) -> PathBuf {
    let mut tag = [0u8; 6];
    rand::rng().fill_bytes(&mut tag);
    let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{tag}.part"))
}

/// Moves `tmp` to `path`, failing if `path` appeared meanwhile (a hard link refuses to
/// replace; filesystems without hard links fall back to a checked rename).
fn place_without_clobbering(tmp: &Path, path: &Path) -> Result<(), SdkError> {
    match std::fs::hard_link(tmp, path) {
        Ok(()) => {
            std::fs::remove_file(tmp)?;
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(SdkError::Io(e)),
        Err(_) if !path.exists() => {
            std::fs::rename(tmp, path)?;
            Ok(())
        }
        Err(e) => Err(SdkError::Io(e)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::io::Cursor;

    use super::*;
    use crate::attachment::ATTACHMENT_VERSION;

    fn random(n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        rand::rng().fill_bytes(&mut v);
        v
    }

    /// Encrypts `plain` with a fresh key; returns the attachment (media id "m") and the blob.
    fn encrypt(plain: &[u8]) -> (Attachment, Vec<u8>) {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(key.as_mut_slice());
        let mut prefix = [0u8; PREFIX_LEN];
        rand::rng().fill_bytes(&mut prefix);
        let mut r = BlobReader::new(Cursor::new(plain.to_vec()), &key, prefix).unwrap();
        let sha256 = r.digest().unwrap();
        // Read in odd-sized pieces to exercise unit boundaries.
        let mut blob = Vec::new();
        while (blob.len() as u64) < r.total {
            blob.extend(r.read_at(blob.len() as u64, 50_001).unwrap());
        }
        assert_eq!(Sha256::digest(&blob).as_slice(), sha256.as_slice());
        let att = Attachment {
            media_id: "m".into(),
            key,
            sha256,
            size: blob.len() as u64,
            plaintext_size: plain.len() as u64,
            content_type: "application/x-test".into(),
            file_name: "f.bin".into(),
        };
        (att, blob)
    }

    fn decrypt(att: &Attachment, blob: &[u8], piece: usize) -> Result<Vec<u8>, SdkError> {
        let mut w = BlobWriter::new(att)?;
        let mut out = Vec::new();
        for c in blob.chunks(piece.max(1)) {
            w.push(c, &mut out)?;
        }
        w.finish()?;
        Ok(out)
    }

    /// The attachment a receiver would trust for a blob the server changed (the digest and
    /// size match the changed blob, so only the segment AEAD can catch it).
    fn trusting(att: &Attachment, blob: &[u8], plaintext_size: u64) -> Attachment {
        Attachment {
            sha256: Sha256::digest(blob).into(),
            size: blob.len() as u64,
            plaintext_size,
            ..att.clone()
        }
    }

    #[test]
    fn round_trips_at_segment_boundaries() {
        for n in [
            0,
            1,
            SEGMENT_SIZE - 1,
            SEGMENT_SIZE,
            SEGMENT_SIZE + 1,
            3 * SEGMENT_SIZE,
            3 * SEGMENT_SIZE + 17,
        ] {
            let plain = random(n);
            let (att, blob) = encrypt(&plain);
            assert_eq!(Some(blob.len() as u64), blob_size(n as u64));
            assert_ne!(&blob[HEADER_LEN..], plain.as_slice());
            for piece in [1, 7, SEALED_SEGMENT, 1 << 20] {
                if n > SEGMENT_SIZE && piece == 1 {
                    continue;
                }
                assert_eq!(decrypt(&att, &blob, piece).unwrap(), plain, "n={n}");
            }
        }
    }

    #[test]
    fn tampered_blob_or_digest_fails() {
        let plain = random(2 * SEGMENT_SIZE + 5);
        let (att, blob) = encrypt(&plain);
        for at in [
            0,
            3,
            HEADER_LEN,
            HEADER_LEN + SEGMENT_SIZE + 3,
            blob.len() - 1,
        ] {
            let mut bad = blob.clone();
            bad[at] ^= 1;
            // Caught by the digest ...
            assert!(decrypt(&att, &bad, 4096).is_err());
            // ... and by the segment AEAD when the digest is made to match.
            let lying = trusting(&att, &bad, att.plaintext_size);
            assert!(decrypt(&lying, &bad, 4096).is_err(), "flip at {at}");
        }
        let mut wrong_key = att.clone();
        wrong_key.key[0] ^= 1;
        assert!(matches!(
            decrypt(&wrong_key, &blob, 4096),
            Err(SdkError::Corrupt(_))
        ));
    }

    #[test]
    fn truncated_blob_fails() {
        let plain = random(3 * SEGMENT_SIZE + 100);
        let (att, blob) = encrypt(&plain);
        // Shorter than declared.
        assert!(decrypt(&att, &blob[..blob.len() - 1], 4096).is_err());
        // Cut at a segment boundary and re-declared (size, digest) as if complete: the new
        // last segment was sealed as not-last.
        for segments in [1, 2, 3] {
            let cut = &blob[..HEADER_LEN + segments * SEALED_SEGMENT];
            let lying = trusting(&att, cut, (segments * SEGMENT_SIZE) as u64);
            assert!(matches!(
                decrypt(&lying, cut, 4096),
                Err(SdkError::Corrupt(_))
            ));
        }
        // Longer than declared.
        let mut long = blob.clone();
        long.push(0);
        assert!(decrypt(&att, &long, 4096).is_err());
    }

    #[test]
    fn reordered_segments_fail() {
        let plain = random(3 * SEGMENT_SIZE + 100);
        let (att, blob) = encrypt(&plain);
        let seg = |i: usize| HEADER_LEN + i * SEALED_SEGMENT..HEADER_LEN + (i + 1) * SEALED_SEGMENT;
        let mut swapped = blob[..HEADER_LEN].to_vec();
        swapped.extend_from_slice(&blob[seg(1)]);
        swapped.extend_from_slice(&blob[seg(0)]);
        swapped.extend_from_slice(&blob[HEADER_LEN + 2 * SEALED_SEGMENT..]);
        assert_eq!(swapped.len(), blob.len());
        let lying = trusting(&att, &swapped, att.plaintext_size);
        assert!(matches!(
            decrypt(&lying, &swapped, 4096),
            Err(SdkError::Corrupt(_))
        ));
        // A segment of another file under the same key and prefix does not fit either.
        let key: &[u8; 32] = &att.key;
        let cipher = Aes256Gcm::new(key.into());
        let mut prefix = [0u8; PREFIX_LEN];
        prefix.copy_from_slice(&blob[1..HEADER_LEN]);
        let sealed = seal_segment(&cipher, &prefix, 0, true, b"x").unwrap();
        assert!(open_segment(&cipher, &prefix, 0, false, &sealed).is_err());
        assert!(open_segment(&cipher, &prefix, 1, true, &sealed).is_err());
        assert_eq!(
            open_segment(&cipher, &prefix, 0, true, &sealed)
                .unwrap()
                .as_slice(),
            b"x"
        );
    }

    #[test]
    fn attachment_encoding_round_trips_and_redacts() {
        let (att, _) = encrypt(b"hello");
        let bytes = att.to_bytes();
        assert_eq!(bytes[0], ATTACHMENT_VERSION);
        assert_eq!(Attachment::from_bytes(&bytes).unwrap(), att);
        let mut other = bytes.to_vec();
        other[0] = 2;
        assert!(Attachment::from_bytes(&other).is_err());
        let mut trailing = bytes.to_vec();
        trailing.push(0);
        assert!(Attachment::from_bytes(&trailing).is_err());
        let inconsistent = Attachment {
            size: att.size + 1,
            ..att.clone()
        };
        assert!(Attachment::from_bytes(&inconsistent.to_bytes()).is_err());
        let debug = format!("{att:?}");
        assert!(debug.contains("redacted"));
        assert!(!debug.contains(&format!("{:?}", att.key.as_slice())));
    }

    #[test]
    fn file_names_are_reduced_to_one_component() {
        let (att, _) = encrypt(b"");
        for (given, safe) in [
            ("report.pdf", "report.pdf"),
            ("../../etc/passwd", "passwd"),
            ("/abs/path/x.txt", "x.txt"),
            ("..\\..\\win.ini", "win.ini"),
            ("dir/", "attachment"),
            ("..", "attachment"),
            ("", "attachment"),
            ("a\nb\u{0}c", "abc"),
            ("C:evil", "Cevil"),
        ] {
            let a = Attachment {
                file_name: given.into(),
                ..att.clone()
            };
            assert_eq!(a.safe_file_name(), safe, "{given:?}");
        }
    }

    /// What the fake does to one UploadChunk call.
    #[derive(Clone, Copy)]
    enum Fault {
        /// Fails without committing.
        Before,
        /// Commits, then the response is lost.
        After,
    }

    #[derive(Default)]
    struct FakeState {
        declared: u64,
        sha256: Vec<u8>,
        data: Vec<u8>,
        chunk_faults: std::collections::VecDeque<Option<Fault>>,
        get_faults: u32,
        /// Per Download call: chunks sent before the stream fails.
        download_cuts: std::collections::VecDeque<usize>,
        chunk_calls: u32,
        get_calls: u32,
        download_offsets: Vec<u64>,
    }

    /// An in-memory MediaService that injects failures.
    struct Fake {
        chunk_size: u32,
        state: std::sync::Mutex<FakeState>,
    }

    fn status(code: tonic::Code, reason: Option<ErrorReason>) -> SdkError {
        SdkError::Server {
            code,
            reason,
            message: "injected".into(),
        }
    }

    impl MediaApi for Fake {
        async fn create_upload(
            &self,
            req: pb::CreateUploadRequest,
        ) -> Result<pb::CreateUploadResponse, SdkError> {
            let mut st = self.state.lock().unwrap();
            assert_eq!(req.content_type, OPAQUE_TYPE);
            st.declared = req.total_size;
            st.sha256 = req.sha256;
            Ok(pb::CreateUploadResponse {
                upload_id: "u1".into(),
                chunk_size: self.chunk_size,
                expires_at: None,
            })
        }

        async fn upload_chunk(
            &self,
            req: pb::UploadChunkRequest,
        ) -> Result<pb::UploadChunkResponse, SdkError> {
            let mut st = self.state.lock().unwrap();
            st.chunk_calls += 1;
            let fault = st.chunk_faults.pop_front().flatten();
            if matches!(fault, Some(Fault::Before)) {
                return Err(status(tonic::Code::Unavailable, None));
            }
            let committed = st.data.len() as u64;
            let end = req.offset + req.data.len() as u64;
            assert!(req.data.len() <= self.chunk_size as usize);
            if end <= committed {
                return Ok(pb::UploadChunkResponse {
                    committed_offset: committed,
                });
            }
            if req.offset != committed {
                return Err(status(
                    tonic::Code::FailedPrecondition,
                    Some(ErrorReason::OffsetMismatch),
                ));
            }
            st.data.extend_from_slice(&req.data);
            if matches!(fault, Some(Fault::After)) {
                return Err(status(tonic::Code::Unavailable, None));
            }
            Ok(pb::UploadChunkResponse {
                committed_offset: st.data.len() as u64,
            })
        }

        async fn get_upload(
            &self,
            _: pb::GetUploadRequest,
        ) -> Result<pb::GetUploadResponse, SdkError> {
            let mut st = self.state.lock().unwrap();
            st.get_calls += 1;
            if st.get_faults > 0 {
                st.get_faults -= 1;
                return Err(status(tonic::Code::Unavailable, None));
            }
            Ok(pb::GetUploadResponse {
                committed_offset: st.data.len() as u64,
                total_size: st.declared,
                chunk_size: self.chunk_size,
                expires_at: None,
            })
        }

        async fn complete_upload(
            &self,
            _: pb::CompleteUploadRequest,
        ) -> Result<pb::CompleteUploadResponse, SdkError> {
            let st = self.state.lock().unwrap();
            if st.data.len() as u64 != st.declared {
                return Err(status(
                    tonic::Code::FailedPrecondition,
                    Some(ErrorReason::UploadIncomplete),
                ));
            }
            if Sha256::digest(&st.data).as_slice() != st.sha256.as_slice() {
                return Err(status(
                    tonic::Code::FailedPrecondition,
                    Some(ErrorReason::ChecksumMismatch),
                ));
            }
            Ok(pb::CompleteUploadResponse {
                media: Some(pb::MediaInfo {
                    media_id: "m1".into(),
                    size: st.declared,
                    sha256: st.sha256.clone(),
                    ..Default::default()
                }),
            })
        }

        async fn download(&self, req: pb::DownloadRequest) -> Result<ChunkStream, SdkError> {
            let mut st = self.state.lock().unwrap();
            st.download_offsets.push(req.offset);
            let cut = st.download_cuts.pop_front().unwrap_or(usize::MAX);
            let mut items = Vec::new();
            let mut at = req.offset as usize;
            while at < st.data.len() {
                if items.len() == cut {
                    items.push(Err(status(tonic::Code::Unavailable, None)));
                    break;
                }
                let end = (at + 10_000).min(st.data.len());
                items.push(Ok(pb::DownloadResponse {
                    offset: at as u64,
                    data: st.data[at..end].to_vec(),
                }));
                at = end;
            }
            Ok(futures::stream::iter(items).boxed())
        }

        fn max_attempts(&self) -> u32 {
            4
        }
    }

    fn fake(chunk_faults: Vec<Option<Fault>>, get_faults: u32, cuts: Vec<usize>) -> Fake {
        Fake {
            chunk_size: 50_000,
            state: std::sync::Mutex::new(FakeState {
                chunk_faults: chunk_faults.into(),
                get_faults,
                download_cuts: cuts.into(),
                ..FakeState::default()
            }),
        }
    }

    async fn upload_to(api: &Fake, plain: &[u8]) -> Result<Attachment, SdkError> {
        let (mut att, _) = encrypt(plain);
        let prefix = [9u8; PREFIX_LEN];
        let mut r = BlobReader::new(Cursor::new(plain.to_vec()), &att.key, prefix)?;
        att.sha256 = r.digest()?;
        let mut seen = Vec::new();
        att.media_id = upload_blob(api, &mut r, att.sha256, &mut |done, total| {
            seen.push((done, total));
        })
        .await?;
        assert!(seen.windows(2).all(|w| w[0].1 == w[1].1));
        assert_eq!(seen.last().copied(), Some((att.size, att.size)));
        Ok(att)
    }

    #[tokio::test]
    async fn upload_resumes_from_the_committed_offset_and_download_resumes_too() {
        let plain = random(300_000);
        let api = fake(
            vec![
                None,
                Some(Fault::After),
                Some(Fault::Before),
                None,
                Some(Fault::After),
            ],
            1,
            vec![3, 0, 2],
        );
        let att = upload_to(&api, &plain).await.unwrap();
        assert_eq!(att.media_id, "m1");
        let mut out = Vec::new();
        let n = download_blob(&api, &att, &mut out, &mut |_, _| {})
            .await
            .unwrap();
        assert_eq!(n, plain.len() as u64);
        assert!(out == plain);
        let st = api.state.lock().unwrap();
        assert_eq!(st.data.len() as u64, att.size);
        assert!(st.get_calls >= 3, "GetUpload after every failed chunk");
        assert_eq!(st.download_offsets, vec![0, 30_000, 30_000, 50_000]);
    }

    #[tokio::test]
    async fn upload_and_download_give_up_after_bounded_failures() {
        let api = fake(vec![Some(Fault::Before); 10], 0, vec![]);
        let err = upload_to(&api, &random(120_000)).await.unwrap_err();
        assert!(matches!(err, SdkError::RetriesExhausted { .. }), "{err}");
        assert_eq!(api.state.lock().unwrap().chunk_calls, 4);

        // A download stream that keeps failing.
        let api = fake(vec![], 0, vec![]);
        let plain = random(120_000);
        let att = upload_to(&api, &plain).await.unwrap();
        api.state.lock().unwrap().download_cuts = vec![1; 10].into();
        let mut out = Vec::new();
        let err = download_blob(&api, &att, &mut out, &mut |_, _| {})
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(tonic::Code::Unavailable));
        assert_eq!(api.state.lock().unwrap().download_offsets.len(), 4);

        // A server that serves different bytes is caught.
        api.state.lock().unwrap().download_cuts.clear();
        api.state.lock().unwrap().data[100] ^= 1;
        let mut out = Vec::new();
        let err = download_blob(&api, &att, &mut out, &mut |_, _| {})
            .await
            .unwrap_err();
        assert!(matches!(err, SdkError::Corrupt(_)), "{err}");
    }

    #[test]
    fn a_file_that_shrinks_between_passes_is_refused() {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(key.as_mut_slice());
        let mut r = BlobReader::new(Cursor::new(random(SEGMENT_SIZE * 2)), &key, [0; 8]).unwrap();
        r.src.get_mut().truncate(10);
        assert!(
            r.read_at(HEADER_LEN as u64 + SEALED_SEGMENT as u64, 10)
                .is_err()
        );
    }
}
