//! The wire messages of PROTOCOL.md §2, written out by hand with `prost` derives.
//!
//! Deriving by hand (instead of generating from a `.proto` file) means building the
//! project never needs a system `protoc`. Struct fields are declared in the order the
//! existing clients write them (tag order, with the `message` oneof where tag 7 is and
//! the `payload` oneof where tag 13 is), so our encoding of an envelope is byte-identical
//! to the TypeScript client's. Decoding does not depend on order at all.

/// A twin's endpoint: the twin id plus an optional session ("connection") id.
#[derive(Clone, PartialEq, Eq, Hash, ::prost::Message)]
pub struct Address {
    #[prost(uint32, tag = "1")]
    pub twin: u32,
    #[prost(string, optional, tag = "2")]
    pub connection: Option<String>,
}

/// A request names the command to run on the destination.
#[derive(Clone, PartialEq, Eq, ::prost::Message)]
pub struct Request {
    #[prost(string, tag = "1")]
    pub command: String,
}

/// A successful reply; the body travels in the envelope payload.
#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct Response {}

/// An error reply (from the remote application, a peer, or a relay).
#[derive(Clone, PartialEq, Eq, ::prost::Message)]
pub struct Error {
    #[prost(uint32, tag = "1")]
    pub code: u32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// Dead-link detection: a relay answers it with a [`Pong`].
#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct Ping {}

/// The relay's answer to a [`Ping`].
#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct Pong {}

/// The one message that crosses relays.
#[derive(Clone, PartialEq, Eq, ::prost::Message)]
pub struct Envelope {
    #[prost(string, tag = "1")]
    pub uid: String,
    #[prost(string, optional, tag = "2")]
    pub tags: Option<String>,
    #[prost(uint64, tag = "3")]
    pub timestamp: u64,
    #[prost(uint64, tag = "4")]
    pub expiration: u64,
    #[prost(message, optional, tag = "5")]
    pub source: Option<Address>,
    #[prost(message, optional, tag = "6")]
    pub destination: Option<Address>,
    #[prost(oneof = "Message", tags = "7, 8, 12, 15, 16")]
    pub message: Option<Message>,
    #[prost(bytes = "vec", optional, tag = "9")]
    pub signature: Option<Vec<u8>>,
    #[prost(string, optional, tag = "10")]
    pub schema: Option<String>,
    #[prost(string, optional, tag = "11")]
    pub federation: Option<String>,
    #[prost(oneof = "Payload", tags = "13, 14")]
    pub payload: Option<Payload>,
    #[prost(string, repeated, tag = "17")]
    pub relays: Vec<String>,
}

/// What kind of envelope this is.
#[derive(Clone, PartialEq, Eq, ::prost::Oneof)]
pub enum Message {
    #[prost(message, tag = "7")]
    Request(Request),
    #[prost(message, tag = "8")]
    Response(Response),
    #[prost(message, tag = "12")]
    Error(Error),
    #[prost(message, tag = "15")]
    Ping(Ping),
    #[prost(message, tag = "16")]
    Pong(Pong),
}

/// The application body: `plain`, or `cipher` when end-to-end encrypted (§4.1).
#[derive(Clone, PartialEq, Eq, ::prost::Oneof)]
pub enum Payload {
    #[prost(bytes = "vec", tag = "13")]
    Plain(Vec<u8>),
    #[prost(bytes = "vec", tag = "14")]
    Cipher(Vec<u8>),
}

/// What rmb-peer remembers about a request it sent, so the reply finds its way back to
/// the application's `ret` list (PROTOCOL.md §4).
#[derive(Clone, PartialEq, Eq, ::prost::Message)]
pub struct Backlog {
    #[prost(string, tag = "1")]
    pub uid: String,
    #[prost(string, optional, tag = "2")]
    pub reference: Option<String>,
    #[prost(string, tag = "3")]
    pub reply_to: String,
    #[prost(string, tag = "4")]
    pub module: String,
    #[prost(uint64, tag = "5")]
    pub ttl: u64,
}

/// The fields of an [`Envelope`] a relay routes and checks by: everything but the payload
/// and an error's code and message. Decoding an envelope's bytes as this message skips
/// the payload without copying it, and when decoded from a [`bytes::Bytes`] buffer the
/// text and bytes fields are zero-copy slices of it: reading the header of a frame
/// allocates nothing but session ids and the list of relays. Text fields are bytes here
/// (not checked for UTF-8); [`crate::rules`] checks their shape.
#[derive(Clone, PartialEq, Eq, ::prost::Message)]
pub struct EnvelopeHeader {
    /// The uid's bytes (a string on the wire).
    #[prost(bytes = "bytes", tag = "1")]
    pub uid: ::bytes::Bytes,
    #[prost(bytes = "bytes", optional, tag = "2")]
    pub tags: Option<::bytes::Bytes>,
    #[prost(uint64, tag = "3")]
    pub timestamp: u64,
    #[prost(uint64, tag = "4")]
    pub expiration: u64,
    #[prost(message, optional, tag = "5")]
    pub source: Option<Address>,
    #[prost(message, optional, tag = "6")]
    pub destination: Option<Address>,
    /// Which message the envelope carries; for a request, its command.
    #[prost(oneof = "MessageKind", tags = "7, 8, 12, 15, 16")]
    pub kind: Option<MessageKind>,
    #[prost(bytes = "bytes", optional, tag = "9")]
    pub signature: Option<::bytes::Bytes>,
    #[prost(bytes = "bytes", optional, tag = "10")]
    pub schema: Option<::bytes::Bytes>,
    #[prost(bytes = "bytes", optional, tag = "11")]
    pub federation: Option<::bytes::Bytes>,
    #[prost(bytes = "bytes", repeated, tag = "17")]
    pub relays: Vec<::bytes::Bytes>,
}

impl EnvelopeHeader {
    /// The uid as text (lossy for a uid that is not UTF-8).
    pub fn uid_text(&self) -> String {
        String::from_utf8_lossy(&self.uid).into_owned()
    }

    /// The tags as text, if present and UTF-8.
    pub fn tags_text(&self) -> Option<&str> {
        self.tags
            .as_deref()
            .and_then(|t| std::str::from_utf8(t).ok())
    }

    /// A request's command bytes; `None` for any other kind of message.
    pub fn command(&self) -> Option<&[u8]> {
        match &self.kind {
            Some(MessageKind::Request(req)) => Some(&req.command),
            _ => None,
        }
    }

    /// Which kind of message this is, without its contents.
    pub fn message_kind(&self) -> Option<Kind> {
        self.kind.as_ref().map(|k| match k {
            MessageKind::Request(_) => Kind::Request,
            MessageKind::Response(_) => Kind::Response,
            MessageKind::Error(_) => Kind::Error,
            MessageKind::Ping(_) => Kind::Ping,
            MessageKind::Pong(_) => Kind::Pong,
        })
    }
}

/// The kind of message an [`EnvelopeHeader`] carries (a request with its command, the
/// others with their contents skipped).
#[derive(Clone, PartialEq, Eq, ::prost::Oneof)]
pub enum MessageKind {
    #[prost(message, tag = "7")]
    Request(RequestHeader),
    #[prost(message, tag = "8")]
    Response(Skipped),
    #[prost(message, tag = "12")]
    Error(Skipped),
    #[prost(message, tag = "15")]
    Ping(Skipped),
    #[prost(message, tag = "16")]
    Pong(Skipped),
}

/// A request's command, as a zero-copy slice of the frame.
#[derive(Clone, PartialEq, Eq, ::prost::Message)]
pub struct RequestHeader {
    #[prost(bytes = "bytes", tag = "1")]
    pub command: ::bytes::Bytes,
}

/// A message whose fields are skipped when decoding.
#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct Skipped {}

/// The five kinds of envelope message, without their contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Request,
    Response,
    Error,
    Ping,
    Pong,
}

impl Kind {
    /// The message's field number on the wire (7, 8, 12, 15, 16): a stable byte to hash.
    pub fn tag(self) -> u8 {
        match self {
            Kind::Request => 7,
            Kind::Response => 8,
            Kind::Error => 12,
            Kind::Ping => 15,
            Kind::Pong => 16,
        }
    }
}

impl Envelope {
    /// Which kind of message this is, without its contents.
    pub fn message_kind(&self) -> Option<Kind> {
        self.message.as_ref().map(|m| match m {
            Message::Request(_) => Kind::Request,
            Message::Response(_) => Kind::Response,
            Message::Error(_) => Kind::Error,
            Message::Ping(_) => Kind::Ping,
            Message::Pong(_) => Kind::Pong,
        })
    }
}
