//! A pickle virtual machine that understands only what a PyTorch state dict needs.
//!
//! Unpickling normally means running arbitrary code; here no Python object is ever created.
//! `GLOBAL` opcodes produce names, and `REDUCE`/`NEWOBJ` on a name produce a [`Value::Call`]
//! record that the checkpoint reader interprets for a short allow-list of callables (tensor
//! rebuilds, storages, `OrderedDict`). Anything else is rejected there with its name.

use std::fmt;

/// A pickled value, without any Python semantics applied.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than 64 bits, as its little-endian two's-complement bytes.
    Long(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Key/value pairs in insertion order.
    Dict(Vec<(Value, Value)>),
    /// `module.name`, from `GLOBAL`/`STACK_GLOBAL`.
    Global(String, String),
    /// A callable applied to arguments (`REDUCE`, `NEWOBJ`); `state` from a later `BUILD`.
    Call {
        callable: Box<Value>,
        args: Vec<Value>,
        state: Option<Box<Value>>,
    },
    /// A persistent id (`BINPERSID`): in PyTorch checkpoints, a storage reference.
    Persistent(Box<Value>),
}

/// Why a pickle stream could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct PickleError {
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for PickleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pickle byte {}: {}", self.offset, self.message)
    }
}

enum Item {
    Mark,
    Value(Value),
}

/// Reads one pickle starting at `*pos` (advanced past its STOP opcode).
pub fn read(data: &[u8], pos: &mut usize) -> Result<Value, PickleError> {
    let mut vm = Vm {
        data,
        pos: *pos,
        stack: Vec::new(),
        memo: std::collections::HashMap::new(),
    };
    let value = vm.run()?;
    *pos = vm.pos;
    Ok(value)
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Item>,
    memo: std::collections::HashMap<u32, Value>,
}

impl Vm<'_> {
    fn err<T>(&self, message: impl Into<String>) -> Result<T, PickleError> {
        Err(PickleError {
            offset: self.pos,
            message: message.into(),
        })
    }

    fn take(&mut self, n: usize) -> Result<&[u8], PickleError> {
        if self.pos + n > self.data.len() {
            return self.err(format!(
                "truncated: needs {n} more bytes, the file ends (is it complete?)"
            ));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PickleError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn line(&mut self) -> Result<String, PickleError> {
        let rest = &self.data[self.pos..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return self.err("unterminated text line");
        };
        let s = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.pos += end + 1;
        Ok(s)
    }

    fn string(&mut self, n: usize) -> Result<String, PickleError> {
        let bytes = self.take(n)?.to_vec();
        String::from_utf8(bytes).or_else(|_| self.err("string is not UTF-8"))
    }

    fn pop(&mut self) -> Result<Value, PickleError> {
        match self.stack.pop() {
            Some(Item::Value(v)) => Ok(v),
            Some(Item::Mark) => self.err("unexpected mark on the stack"),
            None => self.err("stack underflow"),
        }
    }

    fn top(&mut self) -> Result<&mut Value, PickleError> {
        let offset = self.pos;
        match self.stack.last_mut() {
            Some(Item::Value(v)) => Ok(v),
            _ => Err(PickleError {
                offset,
                message: "expected a value on the stack".into(),
            }),
        }
    }

    /// Pops everything above the topmost mark (and the mark).
    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let Some(m) = self.stack.iter().rposition(|i| matches!(i, Item::Mark)) else {
            return self.err("no mark on the stack");
        };
        let items = self.stack.split_off(m + 1);
        self.stack.pop();
        Ok(items
            .into_iter()
            .map(|i| match i {
                Item::Value(v) => v,
                Item::Mark => Value::None,
            })
            .collect())
    }

    fn push(&mut self, v: Value) {
        self.stack.push(Item::Value(v));
    }

    fn memo_get(&mut self, key: u32) -> Result<(), PickleError> {
        match self.memo.get(&key) {
            Some(v) => {
                let v = v.clone();
                self.push(v);
                Ok(())
            }
            None => self.err(format!("memo key {key} was never stored")),
        }
    }

    fn memo_put(&mut self, key: u32) -> Result<(), PickleError> {
        let v = self.top()?.clone();
        self.memo.insert(key, v);
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<(), PickleError> {
        if !items.len().is_multiple_of(2) {
            return self.err("odd number of items for a dict");
        }
        let offset = self.pos;
        let dict = self.top()?;
        // `OrderedDict()` arrives as a call; its items land in a dict argument we keep.
        let pairs = match dict {
            Value::Dict(pairs) => pairs,
            Value::Call { args, .. } => {
                if args.is_empty() {
                    args.push(Value::Dict(Vec::new()));
                }
                match &mut args[0] {
                    Value::Dict(pairs) => pairs,
                    _ => {
                        return Err(PickleError {
                            offset,
                            message: "SETITEMS on a call whose argument is not a dict".into(),
                        })
                    }
                }
            }
            _ => {
                return Err(PickleError {
                    offset,
                    message: "SETITEMS on something that is not a dict".into(),
                })
            }
        };
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            pairs.push((k, v));
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> Result<(), PickleError> {
        match self.top()? {
            Value::List(list) => {
                list.extend(items);
                Ok(())
            }
            _ => self.err("APPEND on something that is not a list"),
        }
    }

    fn run(&mut self) -> Result<Value, PickleError> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return self.err(format!("unsupported pickle protocol {proto}"));
                    }
                }
                0x95 => {
                    self.take(8)?; // FRAME: a length hint only
                }
                b'.' => return self.pop(),
                b'(' => self.stack.push(Item::Mark),
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(v as i64))
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v as i64))
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(v as i64))
                }
                0x8a => {
                    // LONG1: little-endian two's complement of n bytes.
                    let n = self.u8()? as usize;
                    let bytes = self.take(n)?;
                    if n > 8 {
                        let wide = bytes.to_vec();
                        self.push(Value::Long(wide));
                        continue;
                    }
                    let mut v: i64 = 0;
                    for (i, &b) in bytes.iter().enumerate() {
                        v |= (b as i64) << (8 * i);
                    }
                    if n > 0 && n < 8 && bytes[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.push(Value::Int(v))
                }
                b'I' => {
                    let line = self.line()?;
                    match line.as_str() {
                        "01" => self.push(Value::Bool(true)),
                        "00" => self.push(Value::Bool(false)),
                        s => match s.parse() {
                            Ok(v) => self.push(Value::Int(v)),
                            Err(_) => return self.err(format!("bad INT `{s}`")),
                        },
                    }
                }
                b'G' => {
                    let b = self.take(8)?;
                    let v = f64::from_be_bytes(b.try_into().expect("8 bytes"));
                    self.push(Value::Float(v))
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.string(n)?;
                    self.push(Value::Str(s))
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.string(n)?;
                    self.push(Value::Str(s))
                }
                b'T' | b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.push(Value::Bytes(b))
                }
                b'U' | b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.push(Value::Bytes(b))
                }
                b')' => self.push(Value::Tuple(Vec::new())),
                b']' => self.push(Value::List(Vec::new())),
                b'}' => self.push(Value::Dict(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(items))
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(items))
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Dict(Vec::new()));
                    self.set_items(items)?;
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Value::Tuple(items))
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    self.memo_put(k)?
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    self.memo_put(k)?
                }
                b'h' => {
                    let k = self.u8()? as u32;
                    self.memo_get(k)?
                }
                b'j' => {
                    let k = self.u32()?;
                    self.memo_get(k)?
                }
                b'0' => {
                    self.stack.pop();
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v)
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push(Value::Global(module, name))
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.push(Value::Global(m, n)),
                        _ => return self.err("STACK_GLOBAL needs two strings"),
                    }
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let args = match args {
                        Value::Tuple(a) => a,
                        _ => return self.err("call arguments are not a tuple"),
                    };
                    self.push(Value::Call {
                        callable: Box::new(callable),
                        args,
                        state: None,
                    })
                }
                b'b' => {
                    let state = self.pop()?;
                    match self.top()? {
                        Value::Call { state: s, .. } => *s = Some(Box::new(state)),
                        // A plain dict's BUILD (attributes) carries nothing we need.
                        Value::Dict(_) => {}
                        _ => return self.err("BUILD on something that is not an object"),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.push(Value::Persistent(Box::new(pid)))
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                other => {
                    return self.err(format!(
                    "opcode 0x{other:02x} is not used by PyTorch checkpoints and is not supported"
                ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_python_pickles() {
        // pickle.dumps({'a': [1, -2, 300, 70000], 'b': (1.5, 'x', None, True)}, protocol=2)
        let bytes: &[u8] = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffM,\x01Jp\x11\x01\x00eX\x01\x00\x00\x00bq\x03(G?\xf8\x00\x00\x00\x00\x00\x00X\x01\x00\x00\x00xq\x04N\x88tq\x05u.";
        let mut pos = 0;
        let v = read(bytes, &mut pos).unwrap();
        assert_eq!(pos, bytes.len());
        assert_eq!(
            v,
            Value::Dict(vec![
                (
                    Value::Str("a".into()),
                    Value::List(vec![
                        Value::Int(1),
                        Value::Int(-2),
                        Value::Int(300),
                        Value::Int(70000)
                    ])
                ),
                (
                    Value::Str("b".into()),
                    Value::Tuple(vec![
                        Value::Float(1.5),
                        Value::Str("x".into()),
                        Value::None,
                        Value::Bool(true)
                    ])
                ),
            ])
        );
    }

    #[test]
    fn long1_is_signed() {
        // pickle.dumps([-1, 2**40], protocol=2)
        let bytes: &[u8] = b"\x80\x02]q\x00(J\xff\xff\xff\xff\x8a\x06\x00\x00\x00\x00\x00\x01e.";
        let mut pos = 0;
        let v = read(bytes, &mut pos).unwrap();
        assert_eq!(v, Value::List(vec![Value::Int(-1), Value::Int(1 << 40)]));
    }

    #[test]
    fn truncated_input_is_an_error() {
        let bytes: &[u8] = b"\x80\x02]q\x00(K\x01";
        let mut pos = 0;
        let e = read(bytes, &mut pos).unwrap_err();
        assert!(e.message.contains("truncated"), "{e}");
    }
}
