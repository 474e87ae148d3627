"""wirehead.arrays, .compression and .chunks: exact round trips, chunking, strict inputs, and safe decoding of crafted meta."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from helpers import trap_unpickling
from wirehead.arrays import normalize_sample, to_numpy
from wirehead.chunks import Encoded, StreamDecoder, decode, encode, join_chunks
from wirehead.compression import CODEC_PACKAGES, COMPRESSION_CODECS
from wirehead.errors import SampleError

NUMERIC = [
    "?", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8",
    "f2", "f4", "f8", "c8", "c16",
]
ORDERS = ["<", ">"]
SHAPES = [(), (0,), (3, 0, 2), (7,), (4, 5, 6), (2, 3, 4, 5)]
CODECS = list(COMPRESSION_CODECS)


def dtype_of(code: str, order: str) -> np.dtype:
    dt = np.dtype(code)
    return dt if dt.itemsize == 1 else dt.newbyteorder(order)


def make(dt: np.dtype, shape: tuple, seed: int = 0) -> np.ndarray:
    """Random bits of any dtype (NaN payloads, inf, -0.0 included by chance and by hand)."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    raw = rng.integers(0, 256, size=n * dt.itemsize, dtype=np.uint8)
    arr = raw.view(dt).reshape(shape) if dt.kind != "b" else (raw % 2).astype(bool).reshape(shape)
    return arr


def roundtrip(sample, kinds, compression="none", chunk=7):
    enc = encode(sample, kinds, compression)
    chunks = enc.chunks(chunk)
    assert all(len(c) <= chunk for c in chunks)
    return enc, decode(enc.meta, join_chunks(chunks, enc.stored_bytes))


def assert_same(out: np.ndarray, arr: np.ndarray) -> None:
    assert isinstance(out, np.ndarray)
    assert out.dtype == arr.dtype and out.dtype.str == arr.dtype.str
    assert out.shape == arr.shape
    assert out.tobytes() == arr.tobytes()


@pytest.mark.parametrize("code", NUMERIC)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_roundtrip_every_dtype_shape_and_byte_order(code, order, shape):
    arr = make(dtype_of(code, order), shape)
    enc, out = roundtrip((arr, np.int16(-3)), ["a", "b"])
    assert_same(out["a"], arr)
    assert out["b"].dtype == np.int16 and out["b"].shape == () and out["b"] == -3
    assert enc.meta[0]["dtype"] == arr.dtype.str and enc.meta[0]["shape"] == list(shape)
    assert enc.raw_bytes == arr.nbytes + 2


@pytest.mark.parametrize("codec_name", CODECS)
@pytest.mark.parametrize("code", ["f4", "i2", "u1", "?", "c16"])
def test_every_codec_roundtrips(codec_name, code):
    arr = make(dtype_of(code, ">"), (9, 11, 13), seed=3)
    smooth = np.zeros((32, 32, 32), np.int16)
    smooth[8:20, 4:30, :] = -7
    enc, out = roundtrip({"x": arr, "lab": smooth}, ["x", "lab"], codec_name, chunk=1000)
    assert_same(out["x"], arr)
    assert_same(out["lab"], smooth)
    if codec_name != "none":
        assert enc.meta[1]["codec"] == codec_name  # a label map always shrinks
        assert enc.meta[1]["length"] < smooth.nbytes
        assert out["lab"].flags.writeable


def test_compression_mapping_per_kind_and_no_gain_falls_back_to_none():
    noise = make(np.dtype("<u1"), (4096,), seed=1)
    lab = np.zeros((64, 64), np.uint8)
    enc, out = roundtrip((noise, lab), ["img", "lab"], {"img": "zstd", "lab": "blosc2"})
    assert [m["codec"] for m in enc.meta] == ["none", "blosc2"]
    assert_same(out["img"], noise)
    assert_same(out["lab"], lab)
    with pytest.raises(ValueError, match="nope"):
        encode((lab,), ["lab"], "nope")
    with pytest.raises(ValueError, match="other"):
        encode((lab,), ["lab"], {"other": "zstd"})


def test_special_float_bit_patterns_survive():
    bits = np.array([0x7FC00001, 0xFFC12345, 0x7F800000, 0xFF800000, 0x80000000, 0x00000001], "<u4")
    f = bits.view("<f4")
    d = np.array([np.nan, -np.inf, np.inf, -0.0, 5e-324], ">f8")
    for c in CODECS:
        _, out = roundtrip((f, d), ["f", "d"], c)
        assert_same(out["f"], f)
        assert_same(out["d"], d)
        assert np.signbit(out["d"][3])


@pytest.mark.parametrize("view", ["slice", "transpose", "fortran", "negative_stride"])
def test_non_contiguous_inputs(view):
    base = np.arange(4 * 5 * 6, dtype=">i4").reshape(4, 5, 6)
    arr = {
        "slice": base[:, 1:4, ::2],
        "transpose": base.transpose(2, 0, 1),
        "fortran": np.asfortranarray(base),
        "negative_stride": base[::-1, :, ::-3],
    }[view]
    assert not arr.flags.c_contiguous
    _, out = roundtrip((arr,), ["x"])
    assert out["x"].dtype.str == ">i4"
    np.testing.assert_array_equal(out["x"], arr)
    assert out["x"].tobytes() == arr.tobytes()


def test_float32_unit_interval_and_negative_int16_exact():
    rng = np.random.default_rng(5)
    img = rng.random((16, 16, 16), dtype=np.float32)
    img[0, 0, 0] = np.nextafter(np.float32(1), np.float32(0))
    lab = rng.integers(-300, 300, (16, 16, 16)).astype(np.int16)
    for c in CODECS:
        _, out = roundtrip((img, lab), ["image", "label"], c, chunk=1 << 12)
        assert np.array_equal(out["image"], img) and out["image"].dtype == np.float32
        assert np.array_equal(out["label"], lab) and out["label"].min() < 0


@settings(max_examples=60, deadline=None)
@given(
    arr=hnp.arrays(
        dtype=st.one_of(hnp.integer_dtypes(endianness="?"), hnp.unsigned_integer_dtypes(endianness="?"),
                        hnp.floating_dtypes(endianness="?"), hnp.complex_number_dtypes(endianness="?"),
                        hnp.boolean_dtypes()),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    ),
    codec_name=st.sampled_from(CODECS),
    chunk=st.integers(1, 64),
)
def test_roundtrip_property(arr, codec_name, chunk):
    _, out = roundtrip((arr,), ["x"], codec_name, chunk)
    assert_same(out["x"], arr)


def test_decoded_views_are_zero_copy_aligned_and_writable():
    a = np.arange(3, dtype=np.uint8)
    b = np.arange(5, dtype=np.float64)
    enc = encode((a, b), ["a", "b"])
    buf = join_chunks(enc.chunks(1 << 20), enc.stored_bytes)
    out = decode(enc.meta, buf)
    assert enc.meta[1]["offset"] % 16 == 0
    assert out["b"].flags.aligned and out["b"].flags.writeable
    assert np.shares_memory(out["b"], np.frombuffer(buf, np.uint8))
    ro = decode(enc.meta, bytes(buf))  # read-only buffers are copied once
    assert ro["b"].flags.writeable and np.array_equal(ro["b"], b)



def stream_decode(meta, chunks, total=None):
    """A sample decoded by a StreamDecoder fed ``chunks`` one by one (as a chunk-by-chunk read does)."""
    dec = StreamDecoder(meta, total)
    for c in chunks:
        dec.feed(c)
    return dec.finish()


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=4),
    codes=st.lists(st.sampled_from(["u1", ">i2", "<f4", "f8", "?", "c8"]), min_size=4, max_size=4),
    codec_name=st.sampled_from(CODECS),
    chunk=st.integers(1, 80),
    with_total=st.booleans(),
)
def test_stream_decoder_gives_what_decode_gives_for_any_chunking(sizes, codes, codec_name, chunk, with_total):
    arrays = [make(np.dtype(code), (n,), seed=n) for n, code in zip(sizes, codes)]
    kinds = [f"k{i}" for i in range(len(arrays))]
    enc = encode(arrays, kinds, codec_name)
    chunks = enc.chunks(chunk)
    out = stream_decode(enc.meta, chunks, enc.stored_bytes if with_total else None)
    ref = decode(enc.meta, join_chunks(chunks, enc.stored_bytes))
    assert list(out) == kinds
    for k, a in zip(kinds, arrays):
        assert_same(out[k], a)
        assert_same(out[k], ref[k])


def test_stream_decoded_arrays_own_their_bytes_once_and_are_writable():
    a, b = np.arange(3, dtype=np.uint8), np.arange(50_000, dtype=np.float64)
    enc = encode((a, b, torch.arange(4, dtype=torch.bfloat16)), ["a", "b", "t"])
    chunks = [bytearray(c) for c in enc.chunks(1000)]
    out = stream_decode(enc.meta, chunks)
    for c in chunks:  # the chunks are copied from, never kept
        c[:] = b"\xff" * len(c)
    assert np.array_equal(out["a"], a) and np.array_equal(out["b"], b)
    assert out["b"].flags.aligned and out["b"].flags.writeable
    # each kind in a buffer of its own bytes: no joined stream behind the arrays
    assert out["b"].base is not None and out["b"].base.nbytes == b.nbytes < enc.stored_bytes
    assert isinstance(out["t"], torch.Tensor) and out["t"].dtype == torch.bfloat16
    assert torch.equal(out["t"], torch.arange(4, dtype=torch.bfloat16))


def test_stream_decoder_refuses_too_many_or_too_few_bytes():
    enc = encode((np.ones(100, np.float32),), ["x"], "zstd")
    chunks = enc.chunks(64)
    dec = StreamDecoder(enc.meta, enc.stored_bytes)
    for c in chunks[:-1]:
        dec.feed(c)
    with pytest.raises(ValueError, match=f"chunks hold {dec.fed} bytes, expected {enc.stored_bytes}"):
        dec.finish()
    dec.feed(chunks[-1])
    with pytest.raises(ValueError, match="corrupt sample: its chunks hold more than"):
        dec.feed(b"x")
    assert np.array_equal(dec.finish()["x"], np.ones(100, np.float32))
    for total in (-1, True, "80"):
        with pytest.raises(ValueError, match="corrupt sample: stored_bytes"):
            StreamDecoder(enc.meta, total)
    with pytest.raises(ValueError, match="corrupt sample"):  # a payload past the stream's end
        StreamDecoder(enc.meta, enc.stored_bytes - 1)


# -- torch ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.bool, torch.bfloat16, torch.float16,
                                   torch.uint8, torch.complex64])
@pytest.mark.parametrize("codec_name", CODECS)
def test_torch_tensors_come_back_as_cpu_tensors(dtype, codec_name):
    g = torch.Generator().manual_seed(0)
    t = (torch.randn(3, 4, 5, generator=g) * 100).to(dtype)
    enc, out = roundtrip((t, torch.tensor(7, dtype=dtype)), ["t", "s"], codec_name)
    assert enc.meta[0]["torch"] == str(dtype).removeprefix("torch.")
    for key, ref in (("t", t), ("s", torch.tensor(7, dtype=dtype))):
        got = out[key]
        assert isinstance(got, torch.Tensor) and got.device.type == "cpu"
        assert got.dtype == dtype and got.shape == ref.shape
        assert torch.equal(got.reshape(-1).view(torch.uint8), ref.reshape(-1).view(torch.uint8))


def test_bfloat16_stored_as_uint16_bits():
    t = torch.tensor([1.5, -0.0, float("nan"), float("inf")], dtype=torch.bfloat16)
    arr, name = to_numpy(t, "x")
    assert name == "bfloat16" and arr.dtype == np.uint16
    assert np.array_equal(arr, t.view(torch.uint16).numpy())


def test_non_contiguous_and_grad_tensors():
    base = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5).requires_grad_()
    t = base.transpose(0, 2)[:, 1:3]
    assert not t.is_contiguous()
    _, out = roundtrip((t, base.permute(2, 1, 0).to(torch.bfloat16)), ["a", "b"])
    assert torch.equal(out["a"], t.detach())
    assert out["b"].dtype == torch.bfloat16 and torch.equal(out["b"], base.detach().permute(2, 1, 0).to(torch.bfloat16))


def test_numpy_inputs_do_not_come_back_as_tensors():
    enc, out = roundtrip((np.ones(3, np.float32),), ["x"])
    assert enc.meta[0]["torch"] is None and isinstance(out["x"], np.ndarray)


# -- chunking -----------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(0, 50), min_size=1, max_size=4), chunk=st.integers(1, 40))
def test_chunks_bounded_and_join_back(sizes, chunk):
    arrays = [np.arange(n, dtype=np.uint8) for n in sizes]
    kinds = [f"k{i}" for i in range(len(arrays))]
    enc = encode(arrays, kinds)
    chunks = enc.chunks(chunk)
    assert chunks and all(0 < len(c) <= chunk for c in chunks) or chunks == [b""]
    assert all(len(c) == chunk for c in chunks[:-1])
    joined = join_chunks(chunks, enc.stored_bytes)
    assert bytes(joined) == b"".join(bytes(memoryview(p).cast("B")) for p in enc.parts)
    assert len(joined) == enc.stored_bytes
    out = decode(enc.meta, joined)
    for k, a in zip(kinds, arrays):
        assert_same(out[k], a)


def test_all_empty_sample_gives_one_empty_chunk():
    enc = encode((np.empty((0, 3), np.float32), np.empty(0, bool)), ["a", "b"])
    assert enc.stored_bytes == 0 and enc.chunks(5) == [b""]
    out = decode(enc.meta, join_chunks([b""], 0))
    assert out["a"].shape == (0, 3) and out["b"].dtype == bool


def test_chunk_and_join_errors():
    enc = encode((np.ones(10, np.uint8),), ["x"])
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            enc.chunks(bad)
    with pytest.raises(ValueError, match="expected 11"):
        join_chunks([b"12345", b"67890"], 11)
    joined = join_chunks([b"ab", bytearray(b"c"), memoryview(b"d")], 4)
    assert joined.tobytes() == b"abcd" and not memoryview(joined).readonly


# -- strict inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        np.array([1, "a"], dtype=object),
        np.array(["ab", "c"]),
        np.array([b"ab"]),
        np.zeros(2, dtype=[("a", "<f4")]),
        np.array(["2020-01-01"], dtype="datetime64[D]"),
        [[1, 2], [3]],
        [1.0, 2.0],
        None,
        "text",
        b"bytes",
        {"a": 1},
        object(),
    ],
    ids=["object", "unicode", "bytes_arr", "structured", "datetime", "ragged", "list", "None", "str",
         "bytes", "dict", "object()"],
)
def test_non_numeric_values_raise_type_error_naming_kind(value):
    with pytest.raises(TypeError, match="'label'"):
        encode((np.zeros(2), value), ["image", "label"])


def test_python_numbers_are_0d_arrays():
    arr, name = to_numpy(3, "x")
    assert arr.shape == () and arr.dtype.kind == "i" and name is None
    with pytest.raises(TypeError, match="'x'"):
        to_numpy(2**70, "x")


def test_sample_mismatches_raise_sample_error():
    kinds = ["image", "label"]
    with pytest.raises(SampleError, match=r"1 value.*2.*image.*label"):
        normalize_sample((np.zeros(1),), kinds)
    with pytest.raises(SampleError, match="3 value"):
        normalize_sample([1, 2, 3], kinds)
    with pytest.raises(SampleError, match=r"missing \['label'\]"):
        normalize_sample({"image": 1}, kinds)
    with pytest.raises(SampleError, match=r"unexpected \['extra'\]"):
        normalize_sample({"image": 1, "label": 2, "extra": 3}, kinds)
    with pytest.raises(SampleError, match="None"):
        normalize_sample(None, kinds)
    with pytest.raises(SampleError, match="ndarray"):
        normalize_sample(np.zeros(2), kinds)
    assert list(normalize_sample({"label": 2, "image": 1}, kinds)) == kinds
    assert isinstance(SampleError("x"), ValueError)


# -- crafted meta -------------------------------------------------------------------------------


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return trap_unpickling(monkeypatch)


def good():
    enc = encode((np.arange(6, dtype="<f4").reshape(2, 3),), ["x"])
    return enc.meta[0], join_chunks(enc.chunks(64), enc.stored_bytes)


@pytest.mark.parametrize(
    "change",
    [
        {"dtype": "|O"},
        {"dtype": "O"},
        {"dtype": "<U1"},
        {"dtype": "V4"},
        {"dtype": "(2,)f4"},
        {"dtype": "not a dtype"},
        {"dtype": 5},
        {"shape": [10**12, 10**12]},
        {"shape": [2, 3], "nbytes": 10**15},
        {"shape": [-2, -3]},
        {"shape": [True, 6]},
        {"shape": "2,3"},
        {"offset": 10**9},
        {"offset": 9},
        {"offset": -1},
        {"length": 10**6},
        {"nbytes": 20},
        {"codec": "zstd"},
        {"codec": "blosc2"},
        {"codec": "lz4"},
        {"torch": "load"},
        {"torch": "int32"},
        {"torch": 3},
        {"kind": None},
    ],
    ids=str,
)
def test_crafted_meta_raises_value_error(change, no_unpickling):
    meta, buf = good()
    with pytest.raises(ValueError, match="corrupt sample"):
        decode([{**meta, **change}], buf)
    with pytest.raises(ValueError, match="corrupt sample"):  # the same checks when decoding chunk by chunk
        stream_decode([{**meta, **change}], [buf], len(buf))


def test_unknown_codec_names_codec_and_packages(no_unpickling):
    meta, buf = good()
    with pytest.raises(ValueError, match="'snappy'"):
        decode([{**meta, "codec": "snappy"}], buf)


def test_missing_codec_package_is_named(monkeypatch):
    enc = encode((np.zeros(1000, np.int16),), ["x"], "lz4")
    buf = join_chunks(enc.chunks(1 << 20), enc.stored_bytes)
    import sys

    monkeypatch.setitem(sys.modules, "lz4.frame", None)
    monkeypatch.setitem(sys.modules, "lz4", None)
    with pytest.raises(ValueError, match="pip install lz4"):
        decode(enc.meta, buf)
    with pytest.raises(ValueError, match="pip install lz4"):
        encode((np.zeros(1000, np.int16),), ["x"], "lz4")


@pytest.mark.parametrize("codec_name", [c for c in CODECS if c != "none"])
def test_corrupt_compressed_payload_raises(codec_name, no_unpickling):
    enc = encode((np.zeros((50, 50), np.int16),), ["x"], codec_name)
    m = enc.meta[0]
    buf = join_chunks(enc.chunks(1 << 20), enc.stored_bytes)
    garbage = bytearray(b"\xff" * len(buf))
    for meta, data in [
        ({**m, "nbytes": m["nbytes"] * 2, "shape": [100, 50]}, buf),  # claims more than the frame
        ({**m, "length": m["length"] - 4}, buf),  # truncated
        (m, garbage),
    ]:
        with pytest.raises(ValueError, match="corrupt sample"):
            decode([meta], data)
        with pytest.raises(ValueError, match="corrupt sample"):
            stream_decode([meta], [data], len(data))


def test_overlapping_or_repeated_kinds_rejected(no_unpickling):
    enc = encode((np.ones(8, np.uint8), np.ones(8, np.uint8)), ["a", "b"])
    buf = join_chunks(enc.chunks(64), enc.stored_bytes)
    a, b = enc.meta
    for dec in (decode, lambda meta, buf: StreamDecoder(meta, len(buf))):
        with pytest.raises(ValueError, match="overlap"):
            dec([a, {**b, "offset": 4}], buf)
        with pytest.raises(ValueError, match="repeats"):
            dec([a, {**b, "kind": "a"}], buf)
        with pytest.raises(ValueError, match="corrupt sample"):
            dec({"a": a}, buf)


def test_encoded_is_frozen_and_meta_bson_safe():
    enc = encode((np.ones((2, 2), ">f8"), torch.zeros(2, dtype=torch.bfloat16)), ["a", "b"], "zstd")
    assert isinstance(enc, Encoded)
    with pytest.raises(Exception):
        enc.stored_bytes = 3  # type: ignore[misc]
    for m in enc.meta:
        assert set(m) == {"kind", "dtype", "shape", "codec", "offset", "length", "nbytes", "torch"}
        for v in m.values():
            assert v is None or type(v) in (str, int, list)
    assert sum(len(memoryview(p).cast("B")) for p in enc.parts) == enc.stored_bytes
    assert CODEC_PACKAGES["blosc2"] == "blosc2"


def test_codec_does_not_import_torch_for_numpy_samples():
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from wirehead import chunks\n"
        "e = chunks.encode((np.ones((4, 4), np.float32), np.zeros(3, np.uint8)), ['a', 'b'], 'zstd')\n"
        "chunks.decode(e.meta, chunks.join_chunks(e.chunks(8), e.stored_bytes))\n"
        "assert 'torch' not in sys.modules, 'encode/decode imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
