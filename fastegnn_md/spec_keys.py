"""Names of the keys of ``DataSpec.extra`` (what a checkpoint remembers about its data), one constant each.

Every module that writes or reads ``extra`` uses these names, so a key is spelled once. The data
kind that writes a key documents its value (`fastegnn_md.data.kinds` and the adapters' kinds).
"""

#: Which data kind made the spec: one of the ``*_FORMAT`` values below.
DATASET_FORMAT = "dataset_format"
NBODY_FORMAT = "fastegnn-md nbody"
MD_FORMAT = "fastegnn-md md trajectory"
SPH_FORMAT = "fastegnn-md sph"

# N-body directories: the input and target frame of every pair.
FRAME_IN = "frame_in"
FRAME_OUT = "frame_out"

# Frames per jump (MD: after the stride; SPH: stored frames) and the MD reading stride.
JUMP = "jump"
STRIDE = "stride"

# MD trajectories.
NODE_ATTRS = "node_attrs"  # (N, F) nested list: the node attributes the model was trained with
NODE_ATTR_SOURCE = "node_attr_source"  # "charge", "mass" or "identity"
NODE_ATTR_RECIPE = "node_attr_recipe"  # identity attributes: the chemistry.IDENTITY_RECIPE they follow
TOPOLOGY = "topology"  # path of the topology file read in training
TRAJECTORY = "trajectory"  # list of trajectory paths read in training
MAKE_WHOLE = "make_whole"  # how periodic molecules were made whole
DISCARD_PS = "discard_ps"  # ps at the start of each training file left out as equilibration (absent: 0)
FIT = "fit"  # "first-frame": every frame superposed onto the file's first (absent: "none", the lab frame)
TOPOLOGY_PDB = "topology_pdb"  # the topology as PDB text
TOPOLOGY_SCOPE = "topology_scope"  # "all" or "selection": which atoms TOPOLOGY_PDB holds
TOPOLOGY_NUM_ATOMS = "topology_num_atoms"  # atoms in TOPOLOGY_PDB
TRAIN_FRAMES = "train_frames"  # {file name: [first, last]} frames the train split read (older: one [first, last])
VALID_FRAMES = "valid_frames"  # the same for the validation split

# SPH datasets.
FRAME_DT = "frame_dt"  # metadata dt: time between stored frames
NUM_STARTS = "num_starts"  # random input frames per trajectory ...
START_WINDOW = "start_window"  # ... among the first this many
SEED = "seed"  # seed of those draws
PARTICLE_TYPE_CONVENTION = "particle_type_convention"  # "deepmind" or "lagrangebench"
KINEMATIC_ATTR_COLUMNS = "kinematic_attr_columns"  # one-hot columns of walls (not moving)
BOUNDS = "bounds"  # metadata bounds, [[lo, hi]] per axis
CONNECTIVITY_RADIUS = "default_connectivity_radius"  # metadata default_connectivity_radius

# Any kind: the jump's fitted spread (`fastegnn_md.spread.JumpSpread.as_dict`), added by `calibrate`.
SPREAD = "spread"
