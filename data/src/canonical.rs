//! Byte-stable files: the same numbers always give the same bytes, so two runs with the same
//! seed can be compared with `cmp`.

/// Rewrites a serialised safetensors file's JSON header with its keys sorted. The `safetensors`
/// crate writes the `__metadata__` map in `HashMap` order, which changes from process to
/// process; the tensor data (whose offsets are relative to the end of the header) is unchanged.
/// Input that is not a safetensors file is returned as it is.
pub fn sorted_safetensors_header(bytes: Vec<u8>) -> Vec<u8> {
    let Some(len) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
    else {
        return bytes;
    };
    let Some(header) = bytes.get(8..8 + len) else {
        return bytes;
    };
    // serde_json's map is a BTreeMap here (no `preserve_order`): parsing sorts the keys.
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(header) else {
        return bytes;
    };
    let mut json = value.to_string().into_bytes();
    // Pad with spaces to a multiple of 8, as safetensors does, so the data stays aligned.
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + bytes.len() - 8 - len);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&bytes[8 + len..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sorted_and_data_kept() {
        let header = br#"{"__metadata__":{"b":"1","a":"2"},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&1.5f32.to_le_bytes());
        let out = sorted_safetensors_header(bytes);
        let n = u64::from_le_bytes(out[..8].try_into().unwrap()) as usize;
        let text = std::str::from_utf8(&out[8..8 + n]).unwrap().trim_end();
        assert_eq!(
            text,
            r#"{"__metadata__":{"a":"2","b":"1"},"w":{"data_offsets":[0,4],"dtype":"F32","shape":[1]}}"#
        );
        assert_eq!(n % 8, 0);
        assert_eq!(&out[8 + n..], &1.5f32.to_le_bytes());
    }
}
