"""SPH particle datasets (Water-3D style) -> FramePairs, without TensorFlow or JAX.

Installed as `fastegnn_md.adapters.sph`. Two on-disk layouts of the same data are read and
written (docs/data-formats.md): DeepMind "Learning to simulate" (``metadata.json`` +
``{split}.tfrecord``, one ``tf.train.SequenceExample`` per trajectory) and LagrangeBench
(``metadata.json`` + ``{split}.h5``, one HDF5 group per trajectory).

Units: the dataset's own dimensionless lengths, and time in frames unless a ``frame_dt`` is
given (``metadata["dt"]`` is the time between stored frames). Nothing is converted.

Pipeline::

    open_sph_dataset(dir, split) -> SPHTrajectory ... -> frame_pairs(trajectory, jump) -> FramePair
                                                          (particle_types_to_attrs: node_attrs, moving)

=================  =================================================================================
module             job
=================  =================================================================================
`.trajectory`      `SPHTrajectory`; particle types -> one-hot attributes and the moving mask
`.metadata`        ``metadata.json`` and the keys each format needs
`.lagrangebench`   LagrangeBench HDF5 files
`.tfrecord`        TFRecord framing with CRC-32C checks
`.protobuf`        the ``tf.train.SequenceExample`` wire format
`.deepmind`        DeepMind TFRecord files
`.dataset`         dataset directories: split files, reading a split, writing a dataset, statistics
`.pairs`           FramePairs (the authors' random starts, `fastegnn_md.conventions`)
`.kind`            the ``sph`` data kind (`SPHOptions`, `open_sph_directory`, gravity axis)
=================  =================================================================================

Every name this adapter offered as a single module is importable from here.
"""

from ...conventions import SPLITS
from .dataset import open_sph_dataset, split_file, trajectory_statistics, write_dataset
from .deepmind import read_deepmind, write_deepmind
from .kind import (
    DEFAULT_GRAVITY_AXIS,
    GRAVITY_FROM_METADATA,
    SPHDatasetKind,
    SPHOptions,
    is_sph_directory,
    load_sph_pairs,
    metadata_gravity_axis,
    open_sph_directory,
    parse_gravity_axis,
    sph_options_for_spec,
)
from .lagrangebench import read_lagrangebench, write_lagrangebench
from .metadata import DEEPMIND_METADATA_KEYS, FORMATS, LAGRANGEBENCH_METADATA_KEYS, REQUIRED_METADATA_KEYS, read_metadata
from .pairs import PAPER_NUM_STARTS, PAPER_START_WINDOW, SPH_VELOCITY_CONVENTIONS, frame_pairs, paper_starts, valid_input_frames
from .protobuf import encode_sequence_example
from .tfrecord import frame_tfrecord, masked_crc32c, tfrecord_records
from .walls import box_wall_particles
from .trajectory import (
    DEEPMIND_KINEMATIC,
    DEEPMIND_WATER,
    KINEMATIC_TYPES,
    LAGRANGEBENCH_FLUID,
    PADDING_TYPE,
    PARTICLE_TYPE_VOCABULARIES,
    UNITS,
    SPHTrajectory,
    infer_convention,
    particle_types_to_attrs,
    trajectory_convention,
)

__all__ = [
    "SPLITS", "open_sph_dataset", "split_file", "trajectory_statistics", "write_dataset", "read_deepmind",
    "write_deepmind", "DEFAULT_GRAVITY_AXIS", "GRAVITY_FROM_METADATA", "SPHDatasetKind", "SPHOptions",
    "is_sph_directory", "load_sph_pairs", "metadata_gravity_axis", "open_sph_directory", "parse_gravity_axis",
    "sph_options_for_spec", "read_lagrangebench", "write_lagrangebench", "DEEPMIND_METADATA_KEYS", "FORMATS",
    "LAGRANGEBENCH_METADATA_KEYS", "REQUIRED_METADATA_KEYS", "read_metadata", "PAPER_NUM_STARTS",
    "PAPER_START_WINDOW", "SPH_VELOCITY_CONVENTIONS", "frame_pairs", "paper_starts", "valid_input_frames",
    "encode_sequence_example", "frame_tfrecord", "masked_crc32c", "tfrecord_records", "DEEPMIND_KINEMATIC",
    "DEEPMIND_WATER", "KINEMATIC_TYPES", "LAGRANGEBENCH_FLUID", "PADDING_TYPE", "PARTICLE_TYPE_VOCABULARIES",
    "UNITS", "SPHTrajectory", "infer_convention", "particle_types_to_attrs", "trajectory_convention",
    "box_wall_particles",
]
