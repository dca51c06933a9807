//! The codec of meterd's services: prost's, except that a request that does
//! not decode (invalid UTF-8 in a string, a truncated field) is the caller's
//! fault, INVALID_ARGUMENT naming the field, rather than INTERNAL.

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Encodes replies with prost; decodes requests with [`RequestDecoder`].
#[derive(Debug)]
pub struct RequestCodec<T, U> {
    prost: ProstCodec<T, U>,
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for RequestCodec<T, U> {
    fn default() -> Self {
        Self {
            prost: ProstCodec::default(),
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for RequestCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.prost.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder(self.prost.decoder())
    }
}

/// prost's decoder, with decode errors turned into INVALID_ARGUMENT.
#[derive(Debug)]
pub struct RequestDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0
            .decode(buf)
            .map_err(|status| Status::invalid_argument(undecodable(status.message())))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// `account_id: does not decode (…)` from prost's
/// `failed to decode Protobuf message: DeductRequest.account_id: invalid string value: …`.
fn undecodable(prost_message: &str) -> String {
    let detail = prost_message
        .strip_prefix("failed to decode Protobuf message: ")
        .unwrap_or(prost_message);
    let field = detail
        .split_once(": ")
        .and_then(|(path, _)| path.rsplit_once('.'))
        .map(|(_, field)| field)
        .filter(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    match field {
        Some(field) => format!("{field}: does not decode ({detail})"),
        None => format!("the request does not decode ({detail})"),
    }
}

#[cfg(test)]
mod tests {
    use super::undecodable;

    #[test]
    fn the_message_leads_with_the_field_prost_names() {
        assert_eq!(
            undecodable(
                "failed to decode Protobuf message: DeductRequest.account_id: invalid string value: data is not UTF-8 encoded"
            ),
            "account_id: does not decode (DeductRequest.account_id: invalid string value: data is not UTF-8 encoded)"
        );
        assert_eq!(
            undecodable("failed to decode Protobuf message: buffer underflow"),
            "the request does not decode (buffer underflow)"
        );
    }
}
