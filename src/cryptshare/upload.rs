//! Streamed uploads: explicit `Content-Length`, retried as a whole (a repeated PUT replaces
//! the content), timed out only when no progress is made.

use std::future::Future;
use std::path::Path;

use bytes::Bytes;
use futures_util::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::client::{Client, UPLOAD_CHUNK};
use super::error::{Error, ErrorKind};
use super::token::Need;
use super::transport::{Progress, exact_length};

impl Client {
    /// `PUT …/files/{file_id}/content`: stream `size` bytes with an explicit Content-Length.
    ///
    /// `make_stream` is called once per attempt (the upload is retried on temporary failures
    /// because a repeated PUT replaces the content), so it must produce the same bytes each time;
    /// it opens the source, it does not hold it in memory.
    pub async fn upload_file<F, Fut, S>(
        &self,
        sender: &str,
        tracking_id: &str,
        file_id: &str,
        size: u64,
        make_stream: F,
    ) -> Result<(), Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = std::io::Result<S>>,
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        const OP: &str = "upload";
        let url = self.user_url(
            sender,
            &[
                "transfer-sessions",
                tracking_id,
                "files",
                file_id,
                "content",
            ],
        );
        let progress = Progress::new();
        self.send_verified(
            OP,
            sender,
            Need::Session(tracking_id),
            true,
            Some(&progress),
            |_| {
                let fut = make_stream();
                let url = url.clone();
                let progress = progress.clone();
                async move {
                    let stream = fut.await.map_err(|e| {
                        Error::local(ErrorKind::Temporary, OP, format!("opening the source: {e}"))
                    })?;
                    let body = reqwest::Body::wrap_stream(exact_length(stream, size, progress));
                    Ok(self
                        .http
                        .put(url)
                        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                        // Without it reqwest sends a stream chunked.
                        .header(reqwest::header::CONTENT_LENGTH, size)
                        .body(body))
                }
            },
        )
        .await?;
        Ok(())
    }

    /// [`Client::upload_file`] from `len` bytes of the file `path` starting at `offset`.
    pub async fn upload_path(
        &self,
        sender: &str,
        tracking_id: &str,
        file_id: &str,
        path: &Path,
        offset: u64,
        len: u64,
    ) -> Result<(), Error> {
        self.upload_file(sender, tracking_id, file_id, len, || async move {
            let mut f = tokio::fs::File::open(path).await?;
            f.seek(std::io::SeekFrom::Start(offset)).await?;
            Ok(tokio_util::io::ReaderStream::with_capacity(
                f.take(len),
                UPLOAD_CHUNK,
            ))
        })
        .await
    }
}
