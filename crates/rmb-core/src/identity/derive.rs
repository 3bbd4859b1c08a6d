//! Substrate's derivation junctions: how a junction's text becomes a chain code, and
//! ed25519's hard derivation (sr25519's lives in schnorrkel).

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use zeroize::Zeroizing;

pub(crate) type ChainCode = [u8; 32];
type Blake2b256 = Blake2b<U32>;

/// A junction's text is SCALE-encoded (a decimal number as a little-endian u64,
/// anything else as a length-prefixed string), then padded to 32 bytes, or hashed with
/// blake2b-256 when longer than 32 bytes.
pub(crate) fn junction_chain_code(code: &str) -> ChainCode {
    let encoded = match code.parse::<u64>() {
        Ok(n) => n.to_le_bytes().to_vec(),
        Err(_) => {
            let mut out = Vec::with_capacity(code.len() + 5);
            scale_compact_len(code.len(), &mut out);
            out.extend_from_slice(code.as_bytes());
            out
        }
    };
    let mut cc = [0u8; 32];
    if encoded.len() > 32 {
        cc.copy_from_slice(&Blake2b256::digest(&encoded));
    } else {
        cc[..encoded.len()].copy_from_slice(&encoded);
    }
    cc
}

/// SCALE "compact" encoding of a length.
fn scale_compact_len(n: usize, out: &mut Vec<u8>) {
    match n {
        0..=0x3f => out.push((n as u8) << 2),
        0x40..=0x3fff => out.extend_from_slice(&(((n as u16) << 2) | 1).to_le_bytes()),
        0x4000..=0x3fff_ffff => out.extend_from_slice(&(((n as u32) << 2) | 2).to_le_bytes()),
        _ => {
            let bytes = (n as u64).to_le_bytes();
            let used = 8 - (n as u64).leading_zeros() as usize / 8;
            out.push((((used - 4) as u8) << 2) | 3);
            out.extend_from_slice(&bytes[..used]);
        }
    }
}

/// ed25519 hard derivation: blake2b-256 of SCALE(("Ed25519HDKD", seed, chain_code)).
pub(crate) fn ed25519_hard(seed: &[u8; 32], cc: &ChainCode) -> Zeroizing<[u8; 32]> {
    const TAG: &[u8] = b"Ed25519HDKD";
    let mut hasher = Blake2b256::new();
    hasher.update([(TAG.len() as u8) << 2]);
    hasher.update(TAG);
    hasher.update(seed);
    hasher.update(cc);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&hasher.finalize());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_lengths_follow_scale() {
        let enc = |n| {
            let mut v = Vec::new();
            scale_compact_len(n, &mut v);
            v
        };
        assert_eq!(enc(5), vec![20]);
        assert_eq!(enc(64), vec![0x01, 0x01]);
        assert_eq!(enc(0x4000), vec![0x02, 0x00, 0x01, 0x00]);
        assert_eq!(enc(0x4000_0000), vec![0x03, 0x00, 0x00, 0x00, 0x40]);
    }

    #[test]
    fn numeric_junctions_encode_as_u64() {
        let cc = junction_chain_code("1");
        assert_eq!(cc[0], 1);
        assert!(cc[1..].iter().all(|b| *b == 0));
        let cc = junction_chain_code("Alice");
        assert_eq!(&cc[..6], &[20, b'A', b'l', b'i', b'c', b'e']);
    }

    #[test]
    fn long_junctions_are_hashed() {
        let long = "x".repeat(40);
        let cc = junction_chain_code(&long);
        assert_ne!(cc[0], 40 << 2);
    }
}
