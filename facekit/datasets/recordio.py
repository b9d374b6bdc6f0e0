"""MXNet RecordIO (.rec + .idx) reader and writer in pure Python + NumPy (no mxnet).

Byte layout (dmlc-core recordio, as written by mxnet's ``MXRecordIO``/``im2rec``):
each record part is ``[u32 magic 0xced7230a][u32 lrec][data][zero pad to 4 bytes]``,
little-endian, with ``lrec = cflag << 29 | length``. The writer scans the payload at
4-aligned offsets; wherever the magic appears there it ends the current part (cflag 1
for the first part, 2 for middle parts) and drops those 4 bytes, and the final part has
cflag 3 (cflag 0 when nothing was split). The reader puts the magic back between parts.
The ``.idx`` file has one ``"key\\toffset\\n"`` line per record (offset of its first part).

Payloads of image records start with ``IRHeader`` packed as ``'IfQQ'`` (uint32 flag,
float32 label, uint64 id, uint64 id2; 24 bytes). When ``flag > 0``, ``flag`` float32 labels
follow the header and ``label`` is 0.

Readers use ``os.pread`` (no shared file position, so threads can share a handle) and
reopen their file in each new process, so DataLoader workers never share an offset.
"""
import numbers
import os
import struct
from collections import namedtuple

import cv2
import numpy as np

from .preprocess import decode_image

__all__ = ['MAGIC', 'RecordIOError', 'IRHeader', 'encode_record', 'RecordIOReader',
           'IndexedRecordIOReader', 'RecordIOWriter', 'IndexedRecordIOWriter',
           'pack', 'unpack', 'pack_img', 'unpack_img', 'read_idx_file']

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack('<I', MAGIC)
_LEN_MASK = (1 << 29) - 1
_IR_FORMAT = '<IfQQ'
_IR_SIZE = struct.calcsize(_IR_FORMAT)  # 24

IRHeader = namedtuple('IRHeader', ['flag', 'label', 'id', 'id2'])
IRHeader.__doc__ = """Image record header: flag (number of float labels, 0 = scalar), label
(float, or (flag,) float32 ndarray), id, id2 (uint64 user ids)."""


class RecordIOError(Exception):
    """Malformed RecordIO data; the message names the file, the key and the byte offset."""


def _pad4(n):
    return (-n) & 3


def encode_record(payload):
    """Frame one payload as the bytes mxnet's RecordIO writer produces (splitting at magic)."""
    payload = bytes(payload)
    n = len(payload)
    if n >= 1 << 29:
        raise ValueError(f'RecordIO payload of {n} bytes exceeds the 29-bit length field (512 MiB)')
    parts = []
    start = 0
    view = memoryview(payload)
    # Only 4-aligned occurrences split, and only within the first floor(n/4)*4 bytes,
    # exactly like dmlc::RecordIOWriter::WriteRecord.
    pos = payload.find(_MAGIC_BYTES)
    while 0 <= pos <= n - 4:
        if pos % 4 == 0:
            cflag = 1 if start == 0 else 2
            parts.append(struct.pack('<II', MAGIC, (cflag << 29) | (pos - start)))
            parts.append(view[start:pos])
            start = pos + 4
            pos = payload.find(_MAGIC_BYTES, start)
        else:
            pos = payload.find(_MAGIC_BYTES, pos + 1)
    cflag = 3 if start != 0 else 0
    parts.append(struct.pack('<II', MAGIC, (cflag << 29) | (n - start)))
    parts.append(view[start:])
    parts.append(b'\x00' * _pad4(n))
    return b''.join(bytes(p) for p in parts)


class _PreadFile:
    """A read-only file usable from threads (pread) and reopened after fork."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self._fd = None
        self._pid = None
        self._open()

    def _open(self):
        try:
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, 'O_BINARY', 0))
        except OSError as e:
            raise RecordIOError(f'cannot open RecordIO file {self.path}: {e.strerror}') from e
        self._pid = os.getpid()
        self.size = os.fstat(self._fd).st_size

    def pread(self, n, offset):
        if self._pid != os.getpid():
            self._open()
        return os.pread(self._fd, n, offset)

    def close(self):
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __getstate__(self):
        return {'path': self.path}

    def __setstate__(self, state):
        self.path = state['path']
        self._fd = None
        self._open()


class RecordIOReader:
    """Sequential and offset-based reading of a .rec file.

    Args:
        path: the .rec file.
    """

    def __init__(self, path):
        self._file = _PreadFile(path)
        self.path = self._file.path

    @property
    def size(self):
        return self._file.size

    def read_at(self, offset, key=None):
        """Read the record starting at byte ``offset``.

        Returns:
            (payload bytes, offset just past the record).
        Raises:
            RecordIOError naming file, key and offset for a bad magic, a truncated part,
            a bad continue-flag sequence or an offset past the end of the file.
        """
        where = f'{self.path} (key {key})' if key is not None else self.path
        if offset < 0 or offset >= self.size:
            raise RecordIOError(f'{where}: record offset {offset} is past the end of the file '
                                f'({self.size} bytes)')
        chunks = []
        pos = offset
        first = True
        while True:
            head = self._file.pread(8, pos)
            if len(head) < 8:
                if not first:
                    raise RecordIOError(f'{where}: split record starting at byte offset {offset} has no last '
                                        f'part (continue flag 3): the file ends at byte offset {pos}')
                raise RecordIOError(f'{where}: truncated record header at byte offset {pos} '
                                    f'(file has {self.size} bytes)')
            magic, lrec = struct.unpack('<II', head)
            if magic != MAGIC:
                chain = '' if first else f' (inside the split record starting at byte offset {offset})'
                raise RecordIOError(f'{where}: bad magic 0x{magic:08x} at byte offset {pos} '
                                    f'(expected 0x{MAGIC:08x}){chain}')
            cflag, length = lrec >> 29, lrec & _LEN_MASK
            if cflag > 3:
                raise RecordIOError(f'{where}: record part at byte offset {pos} has continue flag {cflag} '
                                    '(valid: 0 whole, 1 first, 2 middle, 3 last)')
            if first and cflag not in (0, 1):
                raise RecordIOError(f'{where}: record at byte offset {pos} starts with continue flag '
                                    f'{cflag} (expected 0 or 1)')
            if not first and cflag not in (2, 3):
                raise RecordIOError(f'{where}: split record part at byte offset {pos} has continue '
                                    f'flag {cflag} (expected 2 or 3; the record starts at byte offset {offset})')
            # The writer only splits at 4-aligned magics, so a first or middle part is a whole
            # number of words; any other length would put the restored magic at the wrong place.
            if cflag in (1, 2) and length % 4:
                raise RecordIOError(f'{where}: split record part at byte offset {pos} (continue flag {cflag}) '
                                    f'has length {length}, not a multiple of 4')
            data = self._file.pread(length, pos + 8) if length else b''
            if len(data) < length:
                raise RecordIOError(f'{where}: truncated record at byte offset {pos}: part declares '
                                    f'{length} bytes, file ends after {len(data)}')
            if not first:
                chunks.append(_MAGIC_BYTES)
            chunks.append(data)
            pos += 8 + length + _pad4(length)
            if cflag in (0, 3):
                return b''.join(chunks), pos
            first = False

    def __iter__(self):
        """Yield every payload in file order (no .idx needed)."""
        pos = 0
        while pos < self.size:
            payload, pos = self.read_at(pos)
            yield payload

    def close(self):
        self._file.close()


def read_idx_file(path):
    """Parse a .idx file -> (list of int keys in file order, dict key -> byte offset)."""
    keys, offsets = [], {}
    with open(path, 'r', encoding='ascii') as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            fields = line.split('\t')
            try:
                key, off = int(fields[0]), int(fields[1])
            except (ValueError, IndexError):
                raise RecordIOError(f'{path}:{lineno}: expected "key<TAB>offset", got {line!r}') from None
            if key not in offsets:
                keys.append(key)
            offsets[key] = off
    return keys, offsets


class IndexedRecordIOReader(RecordIOReader):
    """Random access by integer key through the .idx file (mxnet ``MXIndexedRecordIO``, 'r').

    Args:
        idx_path: the .idx file ("key\\toffset" lines).
        rec_path: the .rec file.
    """

    def __init__(self, idx_path, rec_path):
        super().__init__(rec_path)
        self.idx_path = os.fspath(idx_path)
        self.keys, self._offsets = read_idx_file(self.idx_path)
        for key in self.keys:
            if self._offsets[key] >= self.size:
                raise RecordIOError(f'{self.idx_path}: key {key} points to byte offset '
                                    f'{self._offsets[key]}, past the end of {self.path} ({self.size} bytes)')

    def __len__(self):
        return len(self.keys)

    def __contains__(self, key):
        return key in self._offsets

    def offset(self, key):
        try:
            return self._offsets[key]
        except KeyError:
            raise KeyError(f'key {key!r} is not in {self.idx_path}') from None

    def read_idx(self, key):
        """Payload bytes of the record with this key."""
        return self.read_at(self.offset(key), key=key)[0]


class RecordIOWriter:
    """Write records to a .rec file (mxnet ``MXRecordIO`` in 'w' mode).

    Args:
        path: output .rec path (truncated).
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._f = open(self.path, 'wb')

    def tell(self):
        return self._f.tell()

    def write(self, payload):
        self._f.write(encode_record(payload))

    def close(self):
        if not self._f.closed:
            self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class IndexedRecordIOWriter(RecordIOWriter):
    """Write records and their .idx lines (mxnet ``MXIndexedRecordIO`` in 'w' mode)."""

    def __init__(self, idx_path, rec_path):
        super().__init__(rec_path)
        self.idx_path = os.fspath(idx_path)
        self._fidx = open(self.idx_path, 'w', encoding='ascii')

    def write_idx(self, key, payload):
        pos = self.tell()
        self.write(payload)
        self._fidx.write(f'{int(key)}\t{pos}\n')

    def close(self):
        super().close()
        if not self._fidx.closed:
            self._fidx.close()


def pack(header, s):
    """IRHeader (or 4-tuple) + payload bytes -> record payload, as ``mx.recordio.pack``.

    A numeric ``label`` is stored in the header (flag 0); a sequence of labels is stored
    as float32 after the header with ``flag = len(labels)`` and header label 0.
    """
    header = IRHeader(*header)
    if isinstance(header.label, numbers.Number):
        head = struct.pack(_IR_FORMAT, 0, float(header.label), int(header.id), int(header.id2))
        return head + bytes(s)
    labels = np.asarray(header.label, dtype=np.float32).reshape(-1)
    head = struct.pack(_IR_FORMAT, labels.size, 0.0, int(header.id), int(header.id2))
    return head + labels.astype('<f4').tobytes() + bytes(s)


def unpack(s):
    """Record payload -> (IRHeader, remaining bytes), as ``mx.recordio.unpack``."""
    if len(s) < _IR_SIZE:
        raise RecordIOError(f'record payload of {len(s)} bytes is shorter than the {_IR_SIZE}-byte IRHeader')
    flag, label, id1, id2 = struct.unpack_from(_IR_FORMAT, s, 0)
    s = s[_IR_SIZE:]
    if flag > 0:
        if len(s) < 4 * flag:
            raise RecordIOError(f'IRHeader declares {flag} float labels but only {len(s)} bytes follow')
        label = np.frombuffer(s, dtype='<f4', count=flag).astype(np.float32)
        s = s[4 * flag:]
    return IRHeader(flag, label, id1, id2), s


def pack_img(header, img, quality=95, img_fmt='.jpg'):
    """Encode an HWC uint8 **RGB** image with OpenCV and pack it with ``header``.

    The stored bytes are a normal JPEG/PNG (OpenCV writes BGR order into the file, as
    mxnet's ``pack_img`` does with a BGR array), so mxnet and this reader agree on colours.
    """
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    fmt = img_fmt.lower()
    if fmt in ('.jpg', '.jpeg'):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif fmt == '.png':
        params = [cv2.IMWRITE_PNG_COMPRESSION, int(quality) if 0 <= quality <= 9 else 3]
    else:
        raise ValueError(f'pack_img: img_fmt must be .jpg or .png, got {img_fmt!r}')
    ok, buf = cv2.imencode(fmt, img, params)
    if not ok:
        raise ValueError(f'pack_img: OpenCV could not encode an image of shape {img.shape} as {fmt}')
    return pack(header, buf.tobytes())


def unpack_img(s, key=None):
    """Record payload -> (IRHeader, HWC uint8 RGB image) decoded by OpenCV."""
    header, buf = unpack(s)
    try:
        return header, decode_image(buf, source=f'record {key}')
    except ValueError as e:
        raise RecordIOError(str(e)) from e
