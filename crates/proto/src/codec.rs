//! The codec every generated client and server uses: prost's, with a smaller initial encode
//! buffer.
//!
//! tonic allocates each response stream's encode buffer when the stream starts and keeps it
//! for the stream's life; its 8 KiB default was half of what an idle Listen stream cost the
//! server. Most Guardyn messages are far smaller, and the buffer grows on demand for the
//! rest, so streams start with 1 KiB. Decoding keeps tonic's default: request buffers live
//! only as long as the request.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::ProstCodec;

/// Initial encode buffer of a call or stream.
const ENCODE_BUFFER: usize = 1024;
/// Encoded bytes gathered before the encoder yields to the transport (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`ProstCodec`] with a 1 KiB initial encode buffer.
#[derive(Debug, Clone)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(ENCODE_BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::default().decoder()
    }
}
