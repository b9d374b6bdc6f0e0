"""Malformed RecordIO chains are refused with the file and the byte offset named.

Every file here is assembled by hand from the MXNet RecordIO layout (DESIGN.md): each part is
``[u32 magic 0xced7230a][u32 lrec = cflag << 29 | length][data][zero pad to 4]``, cflag 0 a
whole record, 1/2/3 the first/middle/last part of a record split where the magic stood.
"""
import struct

import pytest

from facekit.datasets.recordio import IndexedRecordIOReader, RecordIOError, RecordIOReader

MAGIC = struct.pack('<I', 0xCED7230A)


def part(cflag, data):
    return MAGIC + struct.pack('<I', cflag << 29 | len(data)) + data + b'\x00' * (-len(data) % 4)


def write(tmp_path, *parts, name='m.rec'):
    path = tmp_path / name
    path.write_bytes(b''.join(parts))
    return str(path)


def test_valid_three_part_chain_is_joined_with_the_magic_restored(tmp_path):
    # Control for the refusals below: 1 -> 2 -> 3 joins to a + MAGIC + b + MAGIC + c.
    path = write(tmp_path, part(0, b'abc'), part(1, b'AAAA'), part(2, b'BBBBBBBB'), part(3, b'CC'))
    reader = RecordIOReader(path)
    assert reader.read_at(0) == (b'abc', 12)
    payload, end = reader.read_at(12)
    assert payload == b'AAAA' + MAGIC + b'BBBBBBBB' + MAGIC + b'CC'
    assert end == 12 + 12 + 16 + 12 == reader.size
    assert list(reader) == [b'abc', payload]


@pytest.mark.parametrize('cflag', [2, 3])
def test_record_starting_with_a_middle_or_last_part_is_refused(tmp_path, cflag):
    # The second record (offset 12) starts with a continuation part.
    path = write(tmp_path, part(0, b'abc'), part(cflag, b'xxxx'), part(0, b'yy'))
    reader = RecordIOReader(path)
    with pytest.raises(RecordIOError, match=rf'm\.rec: record at byte offset 12 starts with continue flag {cflag}'):
        reader.read_at(12)
    with pytest.raises(RecordIOError, match='byte offset 12'):
        list(reader)


def test_first_record_of_the_file_with_cflag_3_is_refused(tmp_path):
    path = write(tmp_path, part(3, b'last'))
    with pytest.raises(RecordIOError, match=r'm\.rec: record at byte offset 0 starts with continue flag 3'):
        RecordIOReader(path).read_at(0)


def test_first_part_without_its_end_is_refused(tmp_path):
    path = write(tmp_path, part(0, b'ok'), part(1, b'head'))
    with pytest.raises(RecordIOError,
                       match=r'm\.rec: split record starting at byte offset 12 has no last part.*byte offset 24'):
        RecordIOReader(path).read_at(12)


def test_middle_part_without_its_end_is_refused(tmp_path):
    path = write(tmp_path, part(1, b'head'), part(2, b'midd'))
    with pytest.raises(RecordIOError, match=r'split record starting at byte offset 0 has no last part.*offset 24'):
        RecordIOReader(path).read_at(0)


@pytest.mark.parametrize('cflag', [0, 1])
def test_chain_interrupted_by_a_new_record_is_refused(tmp_path, cflag):
    # 1 followed by a whole record (0) or a new first part (1): the first record lost its end.
    path = write(tmp_path, part(1, b'head'), part(cflag, b'next'), part(3, b'tail'))
    with pytest.raises(RecordIOError, match=rf'part at byte offset 12 has continue flag {cflag} '
                                            r'\(expected 2 or 3; the record starts at byte offset 0\)'):
        RecordIOReader(path).read_at(0)


def test_bad_magic_inside_a_chain_names_both_offsets(tmp_path):
    broken = b'\x00\x00\x00\x00' + struct.pack('<I', 3 << 29 | 4) + b'tail'
    path = write(tmp_path, part(1, b'head'), broken)
    with pytest.raises(RecordIOError, match=r'bad magic 0x00000000 at byte offset 12 .*'
                                            r'split record starting at byte offset 0'):
        RecordIOReader(path).read_at(0)


def test_truncated_continuation_part_is_refused(tmp_path):
    # The last part declares 8 bytes, the file holds 3 of them.
    path = write(tmp_path, part(1, b'head'), MAGIC + struct.pack('<I', 3 << 29 | 8) + b'abc')
    with pytest.raises(RecordIOError, match=r'truncated record at byte offset 12: part declares 8 bytes, '
                                            r'file ends after 3'):
        RecordIOReader(path).read_at(0)


def test_split_part_whose_length_is_not_whole_words_is_refused(tmp_path):
    # The writer splits only at 4-aligned magics, so a first part of 5 bytes cannot come from it.
    path = write(tmp_path, part(1, b'12345'), part(3, b'tail'))
    with pytest.raises(RecordIOError, match=r'part at byte offset 0 \(continue flag 1\) has length 5, '
                                            r'not a multiple of 4'):
        RecordIOReader(path).read_at(0)


@pytest.mark.parametrize('cflag', [4, 7])
def test_continue_flag_beyond_3_is_refused(tmp_path, cflag):
    path = write(tmp_path, part(cflag, b'data'))
    with pytest.raises(RecordIOError, match=rf'part at byte offset 0 has continue flag {cflag}'):
        RecordIOReader(path).read_at(0)


def test_indexed_reader_names_idx_key_and_offset(tmp_path):
    rec = write(tmp_path, part(0, b'good'), part(2, b'orphan'), name='d.rec')
    idx = tmp_path / 'd.idx'
    idx.write_text('0\t0\n1\t12\n')
    reader = IndexedRecordIOReader(str(idx), rec)
    assert reader.read_idx(0) == b'good'
    with pytest.raises(RecordIOError, match=r'd\.rec \(key 1\): record at byte offset 12 starts with continue flag 2'):
        reader.read_idx(1)
