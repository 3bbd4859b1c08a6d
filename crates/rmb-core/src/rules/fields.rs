//! One view over a full [`Envelope`] and a zero-copy [`EnvelopeHeader`], so the rules and
//! the de-duplication keys are written once and give the same answer for both.

use crate::proto::{Address, Envelope, EnvelopeHeader, Kind, Message};

/// The fields of an envelope that the rules check and the de-duplication keys hash.
///
/// Implemented by [`Envelope`] (receivers) and [`EnvelopeHeader`] (relays). Text fields
/// are given as bytes: a header does not check UTF-8, and the rules refuse anything that
/// is not in their (ASCII) character sets anyway.
pub trait EnvelopeFields {
    fn uid(&self) -> &[u8];
    fn tags(&self) -> Option<&[u8]>;
    fn timestamp(&self) -> u64;
    fn expiration(&self) -> u64;
    fn source(&self) -> Option<&Address>;
    fn destination(&self) -> Option<&Address>;
    fn kind(&self) -> Option<Kind>;
    /// A request's command; `None` for other kinds.
    fn command(&self) -> Option<&[u8]>;
    fn signature(&self) -> Option<&[u8]>;
    fn schema(&self) -> Option<&[u8]>;
    fn federation(&self) -> Option<&[u8]>;
    fn relay_count(&self) -> usize;
    fn relay(&self, index: usize) -> Option<&[u8]>;
}

/// The accessors that read a field of the same name and type in both structs.
macro_rules! same_named_fields {
    () => {
        fn timestamp(&self) -> u64 {
            self.timestamp
        }
        fn expiration(&self) -> u64 {
            self.expiration
        }
        fn source(&self) -> Option<&Address> {
            self.source.as_ref()
        }
        fn destination(&self) -> Option<&Address> {
            self.destination.as_ref()
        }
    };
}

impl EnvelopeFields for Envelope {
    fn uid(&self) -> &[u8] {
        self.uid.as_bytes()
    }
    fn tags(&self) -> Option<&[u8]> {
        self.tags.as_deref().map(str::as_bytes)
    }
    same_named_fields!();
    fn kind(&self) -> Option<Kind> {
        self.message_kind()
    }
    fn command(&self) -> Option<&[u8]> {
        match &self.message {
            Some(Message::Request(req)) => Some(req.command.as_bytes()),
            _ => None,
        }
    }
    fn signature(&self) -> Option<&[u8]> {
        self.signature.as_deref()
    }
    fn schema(&self) -> Option<&[u8]> {
        self.schema.as_deref().map(str::as_bytes)
    }
    fn federation(&self) -> Option<&[u8]> {
        self.federation.as_deref().map(str::as_bytes)
    }
    fn relay_count(&self) -> usize {
        self.relays.len()
    }
    fn relay(&self, index: usize) -> Option<&[u8]> {
        self.relays.get(index).map(|r| r.as_bytes())
    }
}

impl EnvelopeFields for EnvelopeHeader {
    fn uid(&self) -> &[u8] {
        &self.uid
    }
    fn tags(&self) -> Option<&[u8]> {
        self.tags.as_deref()
    }
    same_named_fields!();
    fn kind(&self) -> Option<Kind> {
        self.message_kind()
    }
    fn command(&self) -> Option<&[u8]> {
        EnvelopeHeader::command(self)
    }
    fn signature(&self) -> Option<&[u8]> {
        self.signature.as_deref()
    }
    fn schema(&self) -> Option<&[u8]> {
        self.schema.as_deref()
    }
    fn federation(&self) -> Option<&[u8]> {
        self.federation.as_deref()
    }
    fn relay_count(&self) -> usize {
        self.relays.len()
    }
    fn relay(&self, index: usize) -> Option<&[u8]> {
        self.relays.get(index).map(|r| &r[..])
    }
}
