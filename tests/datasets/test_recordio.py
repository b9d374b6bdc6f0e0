import pickle
import struct
import threading

import numpy as np
import pytest

from facekit.datasets.recordio import (IndexedRecordIOReader, IndexedRecordIOWriter, IRHeader, RecordIOError,
                                       RecordIOReader, RecordIOWriter, encode_record, pack, pack_img, unpack,
                                       unpack_img)

M = b'\x0a\x23\xd7\xce'  # 0xced7230a little-endian


def lrec(cflag, length):
    return struct.pack('<I', cflag << 29 | length)


def test_plain_record_bytes():
    # 5-byte payload: header, data, 3 zero pad bytes
    assert encode_record(b'hello') == M + lrec(0, 5) + b'hello' + b'\x00' * 3
    assert encode_record(b'') == M + lrec(0, 0)
    assert encode_record(b'abcd') == M + lrec(0, 4) + b'abcd'


def test_split_at_aligned_magic_bytes():
    payload = b'ABCD' + M + b'EFG'
    expected = M + lrec(1, 4) + b'ABCD' + M + lrec(3, 3) + b'EFG' + b'\x00'
    assert encode_record(payload) == expected
    # magic first, two in a row, and magic as the last aligned word
    payload = M + M + b'xy' + b'zw' + M
    expected = (M + lrec(1, 0) + M + lrec(2, 0) + M + lrec(2, 4) + b'xyzw' + M + lrec(3, 0))
    assert encode_record(payload) == expected
    # unaligned magic is left alone
    payload = b'AB' + M + b'CD'
    assert encode_record(payload) == M + lrec(0, 8) + payload


def test_reader_reassembles_hand_assembled_file(tmp_path):
    p1 = b'ABCD' + M + b'EFG'
    p2 = b'plain'
    p3 = M + M + b'xyzw' + M
    blob = (M + lrec(1, 4) + b'ABCD' + M + lrec(3, 3) + b'EFG\x00'
            + M + lrec(0, 5) + b'plain\x00\x00\x00'
            + M + lrec(1, 0) + M + lrec(2, 0) + M + lrec(2, 4) + b'xyzw' + M + lrec(3, 0))
    rec = tmp_path / 'h.rec'
    rec.write_bytes(blob)
    assert list(RecordIOReader(rec)) == [p1, p2, p3]
    idx = tmp_path / 'h.idx'
    idx.write_text('7\t0\n8\t24\n9\t40\n')
    r = IndexedRecordIOReader(idx, rec)
    assert r.keys == [7, 8, 9]
    assert r.read_idx(9) == p3 and r.read_idx(7) == p1 and r.read_idx(8) == p2


def test_writer_matches_hand_assembly_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    payloads = [b'ABCD' + M + b'EFG', b'', rng.bytes(1001), M * 3, rng.bytes(64) + M + rng.bytes(5)]
    rec, idx = tmp_path / 'w.rec', tmp_path / 'w.idx'
    w = IndexedRecordIOWriter(idx, rec)
    for k, p in enumerate(payloads):
        w.write_idx(k * 10, p)
    w.close()
    data = rec.read_bytes()
    assert data.startswith(M + lrec(1, 4) + b'ABCD' + M + lrec(3, 3) + b'EFG\x00')
    assert len(data) % 4 == 0
    lines = idx.read_text().splitlines()
    assert lines[0] == '0\t0' and lines[1] == '10\t24'
    r = IndexedRecordIOReader(idx, rec)
    for k, p in enumerate(payloads):
        assert r.read_idx(k * 10) == p
    assert list(RecordIOReader(rec)) == payloads


def test_errors_name_file_key_offset(tmp_path):
    rec, idx = tmp_path / 'e.rec', tmp_path / 'e.idx'
    with RecordIOWriter(rec) as w:
        w.write(b'abcdefgh')
        w.write(b'ijkl')
    good = rec.read_bytes()
    # wrong magic at the second record (offset 16)
    rec.write_bytes(good[:16] + b'\x00\x00\x00\x00' + good[20:])
    idx.write_text('0\t0\n1\t16\n')
    r = IndexedRecordIOReader(idx, rec)
    with pytest.raises(RecordIOError, match=r'e\.rec \(key 1\).*bad magic 0x00000000 at byte offset 16'):
        r.read_idx(1)
    # truncated record: second record's data cut short
    rec.write_bytes(good[:26])
    with pytest.raises(RecordIOError, match=r'key 1.*truncated record at byte offset 16.*4 bytes'):
        IndexedRecordIOReader(idx, rec).read_idx(1)
    # .idx offset past EOF is caught when the index is opened
    rec.write_bytes(good)
    idx.write_text('0\t0\n1\t999\n')
    with pytest.raises(RecordIOError, match=r'e\.idx: key 1 .*byte offset 999.*past the end'):
        IndexedRecordIOReader(idx, rec)
    # a split record whose continuation is missing its middle flag
    rec.write_bytes(M + lrec(1, 0) + M + lrec(0, 0))
    with pytest.raises(RecordIOError, match='continue flag 0'):
        list(RecordIOReader(rec))


def test_pack_unpack_header_layouts():
    s = pack(IRHeader(0, 3.0, 7, 9), b'img')
    # 'IfQQ' = flag u32, label f32, id u64, id2 u64, then the payload
    assert s == struct.pack('<IfQQ', 0, 3.0, 7, 9) + b'img'
    h, rest = unpack(s)
    assert h == IRHeader(0, 3.0, 7, 9) and rest == b'img'
    s = pack((0, [5, 12], 0, 0), b'xy')
    assert s == struct.pack('<IfQQ', 2, 0.0, 0, 0) + struct.pack('<2f', 5, 12) + b'xy'
    h, rest = unpack(s)
    assert h.flag == 2 and h.label.tolist() == [5.0, 12.0] and rest == b'xy'
    with pytest.raises(RecordIOError, match='3 float labels'):
        unpack(struct.pack('<IfQQ', 3, 0, 0, 0) + b'1234')


def test_pack_img_colours_and_decode():
    img = np.zeros((16, 16, 3), np.uint8)
    img[..., 0] = 250  # pure red in RGB
    h, out = unpack_img(pack_img((0, 4, 1, 0), img, img_fmt='.png'))
    assert h.label == 4 and np.array_equal(out, img)
    h, out = unpack_img(pack_img((0, 4, 1, 0), img, quality=95))
    assert np.abs(out.astype(int) - img).max() <= 8 and out[..., 0].mean() > 200
    with pytest.raises(RecordIOError, match='record 5'):
        unpack_img(pack((0, 1, 0, 0), b'not an image'), key=5)


def test_threads_and_pickled_reader(tmp_path):
    rec, idx = tmp_path / 't.rec', tmp_path / 't.idx'
    payloads = [bytes([k]) * (k * 37 + 1) for k in range(40)]
    with IndexedRecordIOWriter(idx, rec) as w:
        for k, p in enumerate(payloads):
            w.write_idx(k, p)
    r = IndexedRecordIOReader(idx, rec)
    errors = []

    def work(seed):
        order = np.random.default_rng(seed).permutation(40)
        for k in order:
            if r.read_idx(int(k)) != payloads[k]:
                errors.append(k)
    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    clone = pickle.loads(pickle.dumps(r))  # what a spawned worker receives
    assert clone.read_idx(39) == payloads[39]
