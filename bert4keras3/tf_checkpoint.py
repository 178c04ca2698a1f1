"""Read and write TensorFlow (V2 "tensor bundle") checkpoints with NumPy only.

A checkpoint prefix ``P`` is ``P.index`` (an SSTable: tensor name -> ``BundleEntryProto``)
plus data shards ``P.data-SSSSS-of-NNNNN`` holding the raw little-endian tensor bytes.
:class:`CheckpointReader` parses the index once and reads each variable on demand (a
seek and a read of its bytes), so a checkpoint larger than memory is read one variable at
a time. Supported: every numeric dtype released checkpoints use (float32/16/64,
bfloat16 (returned as float32 unless ``ml_dtypes`` is installed), int8..int64,
uint8..uint64, bool), several data shards, partitioned ("sliced") variables saved by
``tf.compat.v1`` partitioners (reassembled from their slices), scalar variables.
String variables read as object arrays of ``bytes``. :func:`write_checkpoint` writes
numeric variables as one data shard that TensorFlow's readers accept (index blocks and
tensors carry their masked CRC32C checksums, computed with a vectorised NumPy CRC32C).

Formats (from TensorFlow's sources: ``tensor_bundle.proto``, ``table/format.cc``,
``lib/strings/ordered_code.cc``): SSTable blocks hold prefix-compressed entries
``shared, unshared, value_len (varints), key suffix, value`` followed by restart offsets;
the 48-byte footer holds the metaindex and index block handles and the magic number.
"""
import os
import struct

import numpy as np

__all__ = ["CheckpointReader", "CheckpointFormatError", "write_checkpoint", "crc32c"]

_MAGIC = 0xDB4775248B80FB57
#: TensorFlow DataType enum -> NumPy dtype (bfloat16 handled apart)
_DTYPES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8",
           9: "int64", 10: "bool", 17: "uint16", 19: "float16", 22: "uint32", 23: "uint64",
           8: "complex64", 18: "complex128"}
_BFLOAT16, _STRING = 14, 7


class CheckpointFormatError(ValueError):
    """The files are not a TensorFlow V2 checkpoint this reader understands."""


def _varint(buf, pos):
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointFormatError("truncated varint in checkpoint index")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _signed64(value):
    return value - (1 << 64) if value >= 1 << 63 else value


def _fields(buf):
    """Protocol-buffer fields of ``buf`` as ``(number, value)`` (ints or bytes)."""
    pos, out = 0, []
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = bytes(buf[pos:pos + size]), pos + size
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise CheckpointFormatError(f"unsupported protobuf wire type {wire}")
        out.append((number, value))
    return out


def _block(data, offset, size):
    """Entries ``(key, value)`` of the SSTable block at ``offset`` (its trailer checked)."""
    if offset + size + 5 > len(data):
        raise CheckpointFormatError("block handle points past the end of the index file")
    compression = data[offset + size]
    if compression != 0:
        raise CheckpointFormatError(
            f"compressed index block (type {compression}); TensorFlow writes bundle indices "
            "uncompressed, so this is not a tensor-bundle checkpoint")
    block = data[offset:offset + size]
    restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * restarts
    pos, key, entries = 0, b"", []
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        key = key[:shared] + bytes(block[pos:pos + unshared])
        pos += unshared
        entries.append((key, bytes(block[pos:pos + length])))
        pos += length
    return entries


def _handle(buf, pos=0):
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return (offset, size), pos


def _read_table(path):
    """Every ``(key, value)`` of the SSTable ``path``, in key order."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 48 or struct.unpack_from("<Q", data, len(data) - 8)[0] != _MAGIC:
        raise CheckpointFormatError(
            f"{path!r} is not a TensorFlow checkpoint index (no SSTable magic number at its "
            "end); expected the '.index' file of a TF2/tf.compat.v1 checkpoint")
    footer = data[len(data) - 48:]
    _, pos = _handle(footer)  # metaindex (unused)
    (offset, size), _ = _handle(footer, pos)
    entries = []
    for _, value in _block(data, offset, size):
        (block_offset, block_size), _ = _handle(value)
        entries.extend(_block(data, block_offset, block_size))
    return entries


def _shape(buf):
    dims = []
    for number, value in _fields(buf):
        if number == 2:
            size = dict(_fields(value)).get(1, 0)
            dims.append(_signed64(size))
        elif number == 3 and value:
            raise CheckpointFormatError("a checkpoint variable has an unknown rank")
    return tuple(dims)


def _slice(buf):
    """``[(start, length or -1)]`` per dimension of a ``TensorSliceProto``."""
    out = []
    for number, value in _fields(buf):
        if number == 1:
            extent = dict(_fields(value))
            out.append((_signed64(extent.get(1, 0)), _signed64(extent[2]) if 2 in extent else -1))
    return out


class _Entry:
    __slots__ = ("dtype", "shape", "shard", "offset", "size", "slices")

    def __init__(self, value):
        self.dtype, self.shape, self.shard, self.offset, self.size = 1, (), 0, 0, 0
        self.slices = []
        for number, field in _fields(value):
            if number == 1:
                self.dtype = field
            elif number == 2:
                self.shape = _shape(field)
            elif number == 3:
                self.shard = field
            elif number == 4:
                self.offset = field
            elif number == 5:
                self.size = field
            elif number == 7:
                self.slices.append(_slice(field))


# -- TensorFlow's ordered code, for the keys of variable slices ------------------------

def _ordered_string(value):
    return value.replace(b"\xff", b"\xff\x00").replace(b"\x00", b"\x00\xff") + b"\x00\x01"


def _ordered_unsigned(value):
    raw = value.to_bytes(8, "big").lstrip(b"\x00")
    return bytes([len(raw)]) + raw


def _ordered_signed(value):
    """``OrderedCode::WriteSignedNumIncreasing``: length-prefixed in the leading bits."""
    x = ~value if value < 0 else value
    if x < 64:
        return bytes([(0x80 ^ value) & 0xFF])
    # n bytes carry 7n - 1 significant bits (n <= 8), then 9 and 10 bytes for 64 bits
    bits = x.bit_length() + 1
    length = next(n for n in range(2, 11) if bits <= 7 * n or n == 10)
    header = [0, 0x80, 0xC0, 0xE0, 0xF0, 0xF8, 0xFC, 0xFE, 0xFF, 0xFF, 0xFF]
    header2 = {9: 0x80, 10: 0xC0}
    raw = bytearray((value & ((1 << 80) - 1)).to_bytes(10, "big") if value >= 0
                    else ((1 << 80) + value).to_bytes(10, "big"))[10 - length:]
    raw[0] ^= header[length]
    raw[1] ^= header2.get(length, 0)
    return bytes(raw)


def _slice_key(name, extents):
    key = _ordered_unsigned(0) + _ordered_string(name.encode("utf-8"))
    key += _ordered_unsigned(len(extents))
    for start, length in extents:
        key += _ordered_signed(start) + _ordered_signed(length)
    return key


class CheckpointReader:
    """Variables of the TensorFlow checkpoint ``prefix``, read on demand with NumPy.

    ``shapes`` / ``dtypes``: ``{name: shape}`` / ``{name: numpy dtype name}`` of every
    variable (``"bfloat16"``, ``"string"`` as such); ``get(name)`` reads one variable.

    Example::

        reader = CheckpointReader("chinese_L-12_H-768_A-12/bert_model.ckpt")
        emb = reader.get("bert/embeddings/word_embeddings")
    """

    def __init__(self, prefix):
        prefix = os.fspath(prefix)
        if prefix.endswith(".index"):
            prefix = prefix[:-len(".index")]
        index = prefix + ".index"
        if not os.path.exists(index):
            raise FileNotFoundError(f"checkpoint index not found: expected {index!r}")
        self.prefix = prefix
        entries = _read_table(index)
        self.num_shards, self.little_endian = 1, True
        self._entries, self._slices = {}, {}
        for key, value in entries:
            if key == b"":
                header = dict(_fields(value))
                self.num_shards = header.get(1, 1)
                self.little_endian = header.get(2, 0) == 0
            elif key[:1] == b"\x00":  # a slice of a partitioned variable
                self._slices[key] = _Entry(value)
            else:
                self._entries[key.decode("utf-8")] = _Entry(value)
        self.shapes = {name: e.shape for name, e in self._entries.items()}
        self.dtypes = {name: self._dtype_name(e.dtype) for name, e in self._entries.items()}

    @staticmethod
    def _dtype_name(code):
        if code == _BFLOAT16:
            return "bfloat16"
        if code == _STRING:
            return "string"
        if code not in _DTYPES:
            return f"unsupported(DataType {code})"
        return _DTYPES[code]

    def __contains__(self, name):
        return name in self._entries

    def _data_file(self, shard):
        return f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}"

    def _read(self, entry, shape, name):
        dtype = self._dtype_name(entry.dtype)
        if dtype.startswith("unsupported"):
            raise CheckpointFormatError(f"variable {name!r} has dtype {dtype}; expected a "
                                        "numeric or string variable")
        path = self._data_file(entry.shard)
        with open(path, "rb") as f:
            f.seek(entry.offset)
            raw = f.read(entry.size)
        if len(raw) != entry.size:
            raise CheckpointFormatError(f"{path!r} ends before variable {name!r} "
                                        f"({entry.size} bytes at offset {entry.offset})")
        order = "<" if self.little_endian else ">"
        count = int(np.prod(shape, dtype="int64"))
        if dtype == "string":  # varint lengths, a 4-byte checksum, then the bytes
            lengths, pos = [], 0
            for _ in range(count):
                length, pos = _varint(raw, pos)
                lengths.append(length)
            pos += 4
            values = []
            for length in lengths:
                values.append(raw[pos:pos + length])
                pos += length
            return np.array(values + [None], dtype=object)[:-1].reshape(shape)
        if dtype == "bfloat16":
            bits = np.frombuffer(raw, order + "u2").astype("uint32") << 16
            array = bits.view("float32")
            try:
                import ml_dtypes

                array = array.astype(ml_dtypes.bfloat16)
            except ImportError:
                pass
        else:
            array = np.frombuffer(raw, np.dtype(dtype).newbyteorder(order))
            array = array.astype(np.dtype(dtype).newbyteorder("="), copy=True)
        if array.size != count:
            raise CheckpointFormatError(f"variable {name!r}: {array.size} values for shape "
                                        f"{tuple(shape)}")
        return array.reshape(shape)

    def get(self, name):
        """The variable ``name`` as a NumPy array (partitioned variables reassembled)."""
        if name not in self._entries:
            raise KeyError(f"variable {name!r} not in checkpoint {self.prefix!r}")
        entry = self._entries[name]
        if not entry.slices:
            return self._read(entry, entry.shape, name)
        dtype = self._dtype_name(entry.dtype)
        if dtype == "string":
            raise CheckpointFormatError(f"partitioned string variable {name!r} is not supported")
        out = None
        for extents in entry.slices:
            key = _slice_key(name, extents)
            if key not in self._slices:
                raise CheckpointFormatError(f"slice {extents} of {name!r} is missing from the "
                                            "checkpoint index")
            index = tuple(slice(None) if length < 0 else slice(start, start + length)
                          for start, length in extents)
            shape = tuple(dim if length < 0 else length
                          for dim, (_, length) in zip(entry.shape, extents))
            part = self._read(self._slices[key], shape, name)
            if out is None:
                out = np.zeros(entry.shape, part.dtype)
            out[index] = part
        return out


# -- writing ---------------------------------------------------------------------------

def _crc_table():
    table = np.zeros(256, "uint32")
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table[byte] = crc
    return table


_TABLE = _crc_table()


def _byte_tables(images):
    """Four 256-entry tables applying the GF(2)-linear map with ``images[bit] = map(1 << bit)``."""
    values = np.arange(256)
    tables = []
    for k in range(4):
        table = np.zeros(256, "uint32")
        for b in range(8):
            table[(values >> b) & 1 == 1] ^= images[8 * k + b]
        tables.append(table)
    return tables


def _apply_linear(tables, x):
    return (tables[0][x & 0xFF] ^ tables[1][(x >> 8) & 0xFF]
            ^ tables[2][(x >> 16) & 0xFF] ^ tables[3][x >> 24])


_BASIS = np.array([1 << bit for bit in range(32)], "uint32")


def _zero_shift_tables(count):
    """Byte tables of the linear map "feed ``count`` zero bytes" on a raw CRC32C state."""
    power = _byte_tables(_TABLE[_BASIS & 0xFF] ^ (_BASIS >> 8))  # one zero byte
    result = None
    while count:
        if count & 1:  # result = power o result
            images = _BASIS if result is None else _apply_linear(result, _BASIS)
            result = _byte_tables(_apply_linear(power, images))
        count >>= 1
        if count:  # power = power o power
            power = _byte_tables(_apply_linear(power, _apply_linear(power, _BASIS)))
    return result


def _raw_crc_lanes(lanes):
    """Raw CRC32C (initial state 0, no final xor) of each row of a ``uint8`` matrix."""
    state = np.zeros(lanes.shape[0], "uint32")
    for column in lanes.T:
        state = _TABLE[(state ^ column) & 0xFF] ^ (state >> 8)
    return state


def crc32c(data):
    """CRC32C (Castagnoli) of ``data`` (bytes-like), vectorised over 4096 lanes with NumPy."""
    buf = np.frombuffer(memoryview(data).cast("B"), "uint8")
    n = buf.size
    lanes = 4096 if n >= 1 << 16 else 1
    width = n // lanes
    head = _raw_crc_lanes(buf[:lanes * width].reshape(lanes, width)) if width else \
        np.zeros(1, "uint32")
    # combine the lanes pairwise: crc(A || B) = shift_|B|(crc(A)) ^ crc(B)
    span = width
    while head.size > 1:
        shifted = _apply_linear(_zero_shift_tables(span), head[0::2])
        head, span = shifted ^ head[1::2], span * 2
    raw = int(head[0])
    tail = buf[lanes * width:]
    state = np.array([raw], "uint32")
    for byte in tail:
        state = _TABLE[(state ^ byte) & 0xFF] ^ (state >> 8)
    raw = int(state[0])
    # standard CRC32C: initial state ~0 (= raw crc of the message xor the shifted ~0)
    if n:
        ones = np.array([0xFFFFFFFF], "uint32")
        raw ^= int(_apply_linear(_zero_shift_tables(n), ones)[0])
    else:
        raw ^= 0xFFFFFFFF
    return raw ^ 0xFFFFFFFF


def _masked(crc):
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _put_varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number, wire, payload):
    tag = _put_varint(number << 3 | wire)
    if wire == 0:
        return tag + _put_varint(payload & ((1 << 64) - 1))
    if wire == 5:
        return tag + struct.pack("<I", payload)
    return tag + _put_varint(len(payload)) + payload


def _block_bytes(entries):
    """An SSTable block (every entry a restart point, no prefix sharing) + its trailer."""
    body, restarts = bytearray(), []
    for key, value in entries:
        restarts.append(len(body))
        body += _put_varint(0) + _put_varint(len(key)) + _put_varint(len(value)) + key + value
    if not restarts:
        restarts = [0]
    body += b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))
    trailer = struct.pack("<I", _masked(crc32c(bytes(body) + b"\x00")))
    return bytes(body), b"\x00" + trailer


_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}


def write_checkpoint(prefix, arrays):
    """Write ``{name: array}`` as the TensorFlow checkpoint ``prefix`` (``.index`` + one shard).

    Numeric arrays only (bfloat16 through ``ml_dtypes``); TensorFlow's
    ``tf.train.load_checkpoint`` and ``tf.compat.v1.train.Saver.restore`` read the result.
    Returns the sorted variable names.
    """
    prefix = os.fspath(prefix)
    folder = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(folder, exist_ok=True)
    entries, offset = [], 0
    with open(f"{prefix}.data-00000-of-00001", "wb") as data:
        for name in sorted(arrays):
            array = np.asarray(arrays[name])  # (ascontiguousarray would make scalars 1-D)
            if array.dtype.name == "bfloat16":
                code = _BFLOAT16
            elif array.dtype.newbyteorder("=") in _CODES:
                code = _CODES[array.dtype.newbyteorder("=")]
                array = array.astype(array.dtype.newbyteorder("<"), copy=False)
            else:
                raise TypeError(f"cannot write variable {name!r} of dtype {array.dtype}; "
                                "expected a numeric dtype")
            raw = array.tobytes(order="C")
            data.write(raw)
            shape = b"".join(_field(2, 2, _field(1, 0, int(d))) for d in array.shape)
            entry = (_field(1, 0, code) + _field(2, 2, shape) + _field(4, 0, offset)
                     + _field(5, 0, len(raw)) + _field(6, 5, _masked(crc32c(raw))))
            entries.append((name.encode("utf-8"), entry))
            offset += len(raw)
    header = _field(1, 0, 1) + _field(3, 2, _field(1, 0, 1))  # 1 shard, producer 1
    entries.insert(0, (b"", header))
    out, index = bytearray(), []
    for start in range(0, len(entries), 64):
        chunk = entries[start:start + 64]
        body, trailer = _block_bytes(chunk)
        index.append((chunk[-1][0], _put_varint(len(out)) + _put_varint(len(body))))
        out += body + trailer
    handles = []
    for block in ([], index):
        body, trailer = _block_bytes(block)
        handles.append(_put_varint(len(out)) + _put_varint(len(body)))
        out += body + trailer
    footer = (handles[0] + handles[1]).ljust(40, b"\x00") + struct.pack("<Q", _MAGIC)
    with open(prefix + ".index", "wb") as f:
        f.write(bytes(out) + footer)
    return sorted(arrays)
