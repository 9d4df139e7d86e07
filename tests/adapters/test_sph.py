"""SPH adapter: LagrangeBench HDF5 and DeepMind TFRecord readers/writers, metadata, particle
types and FramePairs.

The reference files are built here by hand (h5py directly; a TFRecord from this file's own
protobuf encoder and framing), independently of the adapter's writers. All arrays are tiny.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import google_crc32c
import h5py
import numpy as np
import pytest

from fastegnn_md.adapters.sph import (
    PARTICLE_TYPE_VOCABULARIES,
    SPHTrajectory,
    frame_pairs,
    infer_convention,
    open_sph_dataset,
    paper_starts,
    particle_types_to_attrs,
    read_deepmind,
    read_lagrangebench,
    read_metadata,
    trajectory_statistics,
    write_dataset,
    write_deepmind,
    write_lagrangebench,
)
from fastegnn_md.errors import DataError

T, N = 5, 7
METADATA = {"bounds": [[0.0, 1.0]] * 3, "dt": 0.005, "default_connectivity_radius": 0.035}


def random_positions(seed: int, frames: int = T, particles: int = N, dim: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).random((frames, particles, dim), dtype=np.float32)


def deepmind_trajectory(seed: int, key: int) -> SPHTrajectory:
    types = np.array([5, 5, 3, 5, 3, 5, 5], dtype=np.int64)  # water and boundary
    return SPHTrajectory(random_positions(seed), types, key, convention="deepmind")


# ---- an independent protobuf encoder and TFRecord framing ---------------------------------


def pb_varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = b""
    while value >= 0x80:
        out += bytes([(value & 0x7F) | 0x80])
        value >>= 7
    return out + bytes([value])


def pb_len(number: int, payload: bytes) -> bytes:
    return pb_varint(number << 3 | 2) + pb_varint(len(payload)) + payload


def pb_bytes_feature(*values: bytes) -> bytes:
    return pb_len(1, b"".join(pb_len(1, v) for v in values))


def pb_int64_feature(*values: int, packed: bool = True) -> bytes:
    if packed:
        body = pb_len(1, b"".join(pb_varint(v) for v in values))
    else:
        body = b"".join(pb_varint(1 << 3 | 0) + pb_varint(v) for v in values)
    return pb_len(3, body)


def pb_sequence_example(context: dict[str, bytes], lists: dict[str, list[bytes]]) -> bytes:
    features = b"".join(pb_len(1, pb_len(1, k.encode()) + pb_len(2, v)) for k, v in context.items())
    feature_lists = b"".join(
        pb_len(1, pb_len(1, k.encode()) + pb_len(2, b"".join(pb_len(1, f) for f in fs))) for k, fs in lists.items()
    )
    return pb_len(1, features) + pb_len(2, feature_lists)


def masked(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return ((crc >> 15 | crc << 17) + 0xA282EAD8) & 0xFFFFFFFF


def tf_record(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked(length)) + data + struct.pack("<I", masked(data))


def hand_example(positions: np.ndarray, types: np.ndarray, key: int, packed: bool = True) -> bytes:
    return pb_sequence_example(
        {
            "key": pb_int64_feature(key, packed=packed),
            "particle_type": pb_bytes_feature(types.astype("<i8").tobytes()),
            "unused_context": pb_bytes_feature(b"ignored"),
        },
        {"position": [pb_bytes_feature(frame.astype("<f4").tobytes()) for frame in positions]},
    )


@pytest.fixture
def hand_tfrecord(tmp_path: Path) -> tuple[Path, list[tuple[np.ndarray, np.ndarray, int]]]:
    expected = []
    records = b""
    for i, (key, packed) in enumerate([(0, True), (41, False), (-2, True)]):  # -2: 10-byte varint
        positions, types = random_positions(10 + i), np.array([5, 3, 5, 5, 3, 6, 5], dtype=np.int64)
        expected.append((positions, types, key))
        records += tf_record(hand_example(positions, types, key, packed))
    path = tmp_path / "train.tfrecord"
    path.write_bytes(records)
    return path, expected


# ---- readers on hand-made files -----------------------------------------------------------


def test_read_hand_written_lagrangebench_drops_padding(tmp_path: Path) -> None:
    path = tmp_path / "train.h5"
    first, second = random_positions(1), random_positions(2, frames=4, particles=5)
    types_first = np.array([0, 1, 0, -1, 2, 0, -1])
    with h5py.File(path, "w") as handle:
        handle.create_dataset("00000/position", data=first, compression="gzip")
        handle.create_dataset("00000/particle_type", data=types_first)
        handle.create_dataset("00001/position", data=second)
        handle.create_dataset("00001/particle_type", data=np.zeros(5, dtype=np.int64))

    read = list(read_lagrangebench(path))
    assert [t.key for t in read] == ["00000", "00001"]
    keep = types_first != -1
    np.testing.assert_array_equal(read[0].positions, first[:, keep])
    np.testing.assert_array_equal(read[0].particle_type, [0, 1, 0, 2, 0])
    assert read[0].positions.dtype == np.float32 and read[0].particle_type.dtype == np.int64
    np.testing.assert_array_equal(read[1].positions, second)
    assert read[0].convention == read[1].convention == "lagrangebench"


def test_read_hand_written_tfrecord(hand_tfrecord) -> None:
    path, expected = hand_tfrecord
    read = list(read_deepmind(path, dim=3))
    assert len(read) == len(expected)
    for trajectory, (positions, types, key) in zip(read, expected):
        np.testing.assert_array_equal(trajectory.positions, positions)
        np.testing.assert_array_equal(trajectory.particle_type, types)
        assert trajectory.key == key
        assert trajectory.convention == "deepmind"
        assert trajectory.positions.dtype == np.float32


# ---- writers round-trip -------------------------------------------------------------------


def test_writers_round_trip(tmp_path: Path) -> None:
    trajectories = [deepmind_trajectory(3, key=7), deepmind_trajectory(4, key=8)]
    write_deepmind(tmp_path / "a.tfrecord", trajectories)
    write_lagrangebench(tmp_path / "a.h5", trajectories)
    from_tf = list(read_deepmind(tmp_path / "a.tfrecord"))
    from_h5 = list(read_lagrangebench(tmp_path / "a.h5", convention="deepmind"))
    assert [t.key for t in from_tf] == [7, 8] and [t.key for t in from_h5] == ["00000", "00001"]
    for original, a, b in zip(trajectories, from_tf, from_h5):
        for copy in (a, b):
            np.testing.assert_array_equal(copy.positions, original.positions)
            np.testing.assert_array_equal(copy.particle_type, original.particle_type)
    with h5py.File(tmp_path / "a.h5") as handle:
        assert handle["00000/position"].compression == "gzip"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5", "a.tfrecord"]  # no temp files left
    # Our writer's bytes read back by the test's own framing: the first record is ours.
    data = (tmp_path / "a.tfrecord").read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    assert struct.unpack("<I", data[8:12])[0] == masked(data[:8])
    assert struct.unpack("<I", data[12 + length:16 + length])[0] == masked(data[12:12 + length])


def test_write_dataset_and_open(tmp_path: Path) -> None:
    splits = {"train": [deepmind_trajectory(5, 0), deepmind_trajectory(6, 1)], "valid": [deepmind_trajectory(7, 0)]}
    meta = write_dataset(tmp_path / "both", splits, METADATA)
    on_disk = json.loads((tmp_path / "both" / "metadata.json").read_text())
    assert on_disk == json.loads(json.dumps(meta))
    assert on_disk["dim"] == 3 and on_disk["sequence_length"] == T - 1 and on_disk["dt"] == 0.005
    assert on_disk["particle_type_convention"] == "deepmind" and on_disk["num_particles_max"] == N
    assert on_disk["vel_std"] == pytest.approx(trajectory_statistics(splits["train"])["vel_std"])

    metadata, trajectories = open_sph_dataset(tmp_path / "both", "valid")  # h5 preferred
    (read,) = list(trajectories)
    assert read.key == "00000" and read.metadata is metadata and read.convention == "deepmind"
    np.testing.assert_array_equal(read.positions, splits["valid"][0].positions)

    write_dataset(tmp_path / "tf", splits, METADATA, formats=("tfrecord",))
    assert not (tmp_path / "tf" / "train.h5").exists()
    metadata, trajectories = open_sph_dataset(tmp_path / "tf", "train")
    read = list(trajectories)
    assert [t.key for t in read] == [0, 1]
    np.testing.assert_array_equal(read[1].positions, splits["train"][1].positions)


def test_trajectory_statistics_hand_computed() -> None:
    # One water particle moving x_t = t^2 (per frame): v = 2t - 1 for t = 1..4, a = 2; the
    # boundary particle (type 3) moves wildly and must not count.
    x = np.zeros((5, 2, 3), dtype=np.float32)
    x[:, 0, 0] = np.arange(5) ** 2
    x[:, 1, :] = np.arange(5)[:, None] * 100
    stats = trajectory_statistics([SPHTrajectory(x, np.array([5, 3]), 0, convention="deepmind")])
    velocities = np.array([1.0, 3.0, 5.0, 7.0])
    assert stats["vel_mean"] == pytest.approx([velocities.mean(), 0, 0])
    assert stats["vel_std"] == pytest.approx([velocities.std(), 0, 0])
    assert stats["acc_mean"] == pytest.approx([2, 0, 0]) and stats["acc_std"] == pytest.approx([0, 0, 0])


# ---- corrupt and missing files ------------------------------------------------------------


def test_flipped_data_byte_is_a_data_crc_error(hand_tfrecord) -> None:
    path, _ = hand_tfrecord
    data = bytearray(path.read_bytes())
    second = 12 + struct.unpack("<Q", data[:8])[0] + 4  # start of record 1
    data[second + 12 + 20] ^= 0x01
    path.write_bytes(bytes(data))
    reader = read_deepmind(path)
    next(reader)  # record 0 is intact
    with pytest.raises(DataError, match=r"train\.tfrecord: record 1: data CRC mismatch"):
        next(reader)


def test_flipped_length_byte_is_a_length_crc_error(hand_tfrecord) -> None:
    path, _ = hand_tfrecord
    data = bytearray(path.read_bytes())
    data[1] ^= 0x04
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"train\.tfrecord: record 0: length CRC mismatch"):
        list(read_deepmind(path))


@pytest.mark.parametrize("cut", [3, 40])  # inside the last header / inside the last payload
def test_truncated_tfrecord(hand_tfrecord, cut: int) -> None:
    path, _ = hand_tfrecord
    data = path.read_bytes()
    last = len(data) - (12 + len(hand_example(*_expected_last(hand_tfrecord))) + 4)
    path.write_bytes(data[: last + cut])
    with pytest.raises(DataError, match=r"train\.tfrecord: record 2: .*truncated"):
        list(read_deepmind(path))


def _expected_last(hand_tfrecord) -> tuple[np.ndarray, np.ndarray, int]:
    return hand_tfrecord[1][-1]


def test_malformed_and_incomplete_examples(tmp_path: Path) -> None:
    path = tmp_path / "bad.tfrecord"
    path.write_bytes(tf_record(b"\x0a\xff\x01"))  # field 1 claims 255 bytes, has 1
    with pytest.raises(DataError, match=r"bad\.tfrecord: record 0: malformed SequenceExample"):
        list(read_deepmind(path))

    positions, types = random_positions(0), np.full(N, 5)
    no_position = pb_sequence_example({"particle_type": pb_bytes_feature(types.astype("<i8").tobytes())}, {})
    path.write_bytes(tf_record(hand_example(positions, types, 1)) + tf_record(no_position))
    with pytest.raises(DataError, match=r"record 1: no sequence feature 'position'"):
        list(read_deepmind(path))

    path.write_bytes(tf_record(hand_example(positions, types[:-1], 1)))  # 6 types, 7 particles
    with pytest.raises(DataError, match=r"record 0: 'position' frame 0 has 84 bytes; 6 particles"):
        list(read_deepmind(path))


def test_missing_files_and_metadata(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"metadata\.json: no such file"):
        read_metadata(tmp_path)
    (tmp_path / "metadata.json").write_text("{not json")
    with pytest.raises(DataError, match=r"metadata\.json: not valid JSON"):
        read_metadata(tmp_path)
    (tmp_path / "metadata.json").write_text(json.dumps({"dim": 3, "dt": 1.0}))
    with pytest.raises(DataError, match=r"missing required key\(s\) bounds, default_connectivity_radius"):
        read_metadata(tmp_path, "h5")

    (tmp_path / "valid.h5").write_bytes(b"")
    with pytest.raises(DataError, match=r"no train\.h5 or train\.tfrecord .*\(found: metadata\.json, valid\.h5\)"):
        open_sph_dataset(tmp_path, "train")

    write_deepmind(tmp_path / "test.tfrecord", [deepmind_trajectory(0, 0)])
    (tmp_path / "metadata.json").write_text(json.dumps(METADATA | {"dim": 3}))  # no DeepMind stats
    with pytest.raises(DataError, match=r"missing required key\(s\) sequence_length, vel_mean"):
        open_sph_dataset(tmp_path, "test")

    with pytest.raises(DataError, match=r"valid\.h5: not an HDF5 file"):
        read_lagrangebench(tmp_path / "valid.h5")
    with pytest.raises(DataError, match=r"nope\.tfrecord: no such file"):
        read_deepmind(tmp_path / "nope.tfrecord")


# ---- particle types and FramePairs --------------------------------------------------------


def test_particle_types_to_attrs() -> None:
    attrs, moving = particle_types_to_attrs(np.array([5, 3, 0, 8]), "deepmind")
    assert attrs.shape == (4, 9) and attrs.dtype == np.float64
    np.testing.assert_array_equal(attrs.argmax(axis=1), [5, 3, 0, 8])
    np.testing.assert_array_equal(attrs.sum(axis=1), 1)
    np.testing.assert_array_equal(moving, [True, False, True, True])

    attrs, moving = particle_types_to_attrs(np.array([0, 1, 2, 3, 0]), "lagrangebench")
    assert attrs.shape == (5, len(PARTICLE_TYPE_VOCABULARIES["lagrangebench"]))
    np.testing.assert_array_equal(attrs.argmax(axis=1), [0, 1, 2, 3, 0])
    np.testing.assert_array_equal(moving, [True, False, False, True, True])

    with pytest.raises(DataError, match=r"particle types \[-1, 9\] are not in the deepmind vocabulary"):
        particle_types_to_attrs(np.array([5, 9, -1]), "deepmind")
    assert infer_convention(np.array([3, 5])) == "deepmind"
    assert infer_convention(np.array([0, 1, 2])) == "lagrangebench"


def hand_case() -> SPHTrajectory:
    # Particle i moves along d_i as x_t = t^2 d_i + i: easy to difference by hand.
    d = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, -1.0]])
    t = np.arange(5.0)[:, None, None]
    x = (t**2) * d[None] + np.arange(3.0)[None, :, None]
    return SPHTrajectory(x, np.array([5, 3, 5]), "traj", convention="deepmind")


def test_frame_pairs_paper_and_backward_by_hand() -> None:
    trajectory, d = hand_case(), np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, -1.0]])
    offset = np.arange(3.0)[:, None]
    # jump 2, input frame 2, frame_dt 0.5: target x_4 = 16 d + i.
    (paper,) = frame_pairs(trajectory, jump=2, starts=[2], velocity="paper", frame_dt=0.5)
    np.testing.assert_allclose(paper.positions, 4 * d + offset)
    np.testing.assert_allclose(paper.target_positions, 16 * d + offset)
    np.testing.assert_allclose(paper.velocities, (9 - 4) * d / 0.5)  # (x_3 - x_2) / frame_dt
    assert paper.target_velocities is None
    assert paper.metadata["dt"] == 1.0 and paper.metadata["frames"] == (2, 4)
    assert paper.metadata["velocity_convention"] == "forward"

    (backward,) = frame_pairs(trajectory, jump=2, starts=[2], velocity="backward", frame_dt=0.5)
    np.testing.assert_allclose(backward.velocities, (4 - 0) * d / 1.0)  # (x_2 - x_0) / (2 * 0.5)
    np.testing.assert_allclose(backward.target_velocities, (16 - 4) * d / 1.0)
    assert backward.metadata["velocity_convention"] == "backward"

    np.testing.assert_array_equal(backward.moving, [True, False, True])
    assert backward.node_attrs.shape == (3, 9) and backward.node_attrs[1, 3] == 1.0
    with pytest.raises(DataError, match=r"trajectory traj: input frame\(s\) \[1\] have no pair"):
        frame_pairs(trajectory, jump=2, starts=[1], velocity="backward")
    with pytest.raises(DataError, match=r"5 frames are too few for jump 3 with 'backward'"):
        frame_pairs(trajectory, jump=3, velocity="backward")


def test_default_starts_follow_the_authors_sampling() -> None:
    trajectory = SPHTrajectory(random_positions(0, frames=300, particles=2), np.array([5, 3]), 0)
    pairs = frame_pairs(trajectory, jump=20, rng=1)
    starts = [p.metadata["frames"][0] for p in pairs]
    assert len(starts) == 15 == len(set(starts)) and starts == sorted(starts) and max(starts) < 250
    assert starts == paper_starts(300, 20, rng=1) != paper_starts(300, 20, rng=2)
    assert min(paper_starts(300, 20, "backward", rng=3, num_starts=230)) >= 20
    # A short trajectory: every valid start once.
    assert paper_starts(30, 20, "paper") == list(range(10))


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    def broken():
        yield deepmind_trajectory(0, 0)
        raise RuntimeError("simulated crash while writing")

    for writer, name in ((write_lagrangebench, "x.h5"), (write_deepmind, "x.tfrecord")):
        with pytest.raises(RuntimeError):
            writer(tmp_path / name, broken())
    assert list(tmp_path.iterdir()) == []
