//! The Redis Cluster hash slot of a key.
//!
//! A cluster splits the key space into 16,384 slots; a key's slot is the
//! CRC16 (XMODEM) of its hash tag (the text between the first `{` and the
//! next `}`, when not empty) or of the whole key, modulo 16,384. Every key of
//! one account carries the tag `{<account_id>}` ([`keys`](crate::keys)), so
//! every script of one account runs on one node.

/// How many slots a Redis Cluster has.
pub const SLOTS: usize = 16_384;

/// The cluster slot of `key`.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = hash_tag(key).unwrap_or(key);
    // Modulo 16,384, as Redis computes it.
    crc16_xmodem(hashed) & 0x3FFF
}

/// The part of `key` Redis hashes when it has a non-empty `{tag}`.
fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let rest = &key[open + 1..];
    let close = rest.iter().position(|&b| b == b'}')?;
    (close > 0).then(|| &rest[..close])
}

/// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, as Redis's `crc16.c`.
fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_is_redis_crc16() {
        // The check value of CRC16/XMODEM, also in Redis's own crc16.c.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
    }

    #[test]
    fn slots_follow_the_hash_tag_as_redis_does() {
        // Values from Redis's CLUSTER KEYSLOT and its cluster specification.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"user:{org_42}:credits"), key_slot(b"org_42"));
        assert_eq!(
            key_slot(b"user:{org_42}:idem:credits:evt_1"),
            key_slot(b"user:{org_42}:credits")
        );
        assert_eq!(
            key_slot(b"foo{}{bar}"),
            crc16_xmodem(b"foo{}{bar}") % 16_384,
            "an empty first tag hashes the whole key"
        );
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
    }
}
