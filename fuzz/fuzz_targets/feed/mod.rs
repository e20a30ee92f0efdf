//! The in-memory stream both session fuzz targets feed the inbound session with.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Reads of `chunk` bytes from `input`, then EOF; writes are discarded. With `wait_for_354`, a
/// read also ends after each `DATA<CRLF>`, as a client that waits for the 354 sends it.
pub struct Feed {
    pub input: Vec<u8>,
    pub pos: usize,
    pub chunk: usize,
    pub wait_for_354: bool,
}

impl AsyncRead for Feed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut n = self
            .chunk
            .min(buf.remaining())
            .min(self.input.len() - self.pos);
        let start = self.pos;
        if self.wait_for_354 {
            // The first DATA line that ends within this read ends the read.
            if let Some(end) = (start + 1..=start + n)
                .find(|&e| e >= 6 && self.input[e - 6..e].eq_ignore_ascii_case(b"DATA\r\n"))
            {
                n = end - start;
            }
        }
        buf.put_slice(&self.input[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Feed {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
