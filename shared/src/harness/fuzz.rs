//! Damaged inputs for the property tests of every reader the project owns (the mask CSV here,
//! IDX and npy in the trainer, the page's model files): a valid file with bytes overwritten,
//! deleted or inserted. No model code uses it.

/// `bytes` after each edit `(at, byte, op)` in turn: op 0 overwrites the byte at `at`, op 1
/// deletes it, any other op inserts `byte` there (`at` is taken modulo the current length + 1;
/// an overwrite or delete past the end inserts).
pub fn mutate_bytes(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, byte, op) in edits {
        let at = at % (bytes.len() + 1);
        match op {
            0 if at < bytes.len() => bytes[at] = byte,
            1 if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => bytes.insert(at, byte),
        }
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_overwrite_delete_and_insert_in_order() {
        let edits = [(1, b'X', 0), (0, 0, 1), (9, b'!', 2), (7, b'Y', 0)];
        // "abc" -> "aXc" -> "Xc".
        assert_eq!(mutate_bytes(b"abc".to_vec(), &edits[..2]), b"Xc".to_vec());
        // 9 % (2 + 1) = 0: inserted in front.
        assert_eq!(mutate_bytes(b"Xc".to_vec(), &edits[2..3]), b"!Xc".to_vec());
        // 7 % (3 + 1) = 3 is past the end: an overwrite there inserts.
        assert_eq!(mutate_bytes(b"!Xc".to_vec(), &edits[3..]), b"!XcY".to_vec());
        assert_eq!(mutate_bytes(Vec::new(), &[(5, 1, 1)]), vec![1]);
    }
}
