"""Install fastegnn-md. `adapters/` is installed as the subpackage `fastegnn_md.adapters`."""

from setuptools import setup

setup(
    name="fastegnn-md",
    version="0.1.0",
    description="Learned E(3)-equivariant jumps for molecular dynamics (FastEGNN, ICML 2024)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=[
        "fastegnn_md",
        "fastegnn_md.cli",
        "fastegnn_md.data",
        "fastegnn_md.models",
        "fastegnn_md.pretrained",
        "fastegnn_md.reports",
        "fastegnn_md.rollouts",
        "fastegnn_md.adapters",
        "fastegnn_md.adapters.mdanalysis",
        "fastegnn_md.adapters.openmm",
        "fastegnn_md.adapters.sph",
    ],
    package_dir={"fastegnn_md.adapters": "adapters"},
    package_data={"fastegnn_md.pretrained": ["*.pt", "*.json", "*.md"]},
    install_requires=[
        # The CPU build of torch 2.13.0 is what this project is tested with; an unpinned torch
        # would pull a multi-GB CUDA build.
        "torch==2.13.0",
        "numpy>=1.24",
        "scipy>=1.10",
        "tqdm>=4.60",
        "mdanalysis>=2.7",
        "matplotlib>=3.7",  # rollout report plots
        "openmm>=8.1",  # fastegnn-md simulate (reference MD)
        "pdbfixer>=1.9",  # hydrogens and missing heavy atoms for simulate
        "ase>=3.23",  # FastEGNNCalculator / FastEGNNDynamics (fastegnn_md.adapters.ase)
        "h5py>=3.8",  # LagrangeBench-style SPH datasets (fastegnn_md.adapters.sph)
        "google-crc32c>=1.5",  # CRCs of DeepMind TFRecord files, read without TensorFlow
        "pysplishsplash==2.19.0",  # fastegnn-md sph generate (SPlisHSPlasH DFSPH); needs Debian libgl1
        "pot>=0.9",  # Sinkhorn distance of SPH rollouts
    ],
    extras_require={
        "test": ["pytest>=7", "MDAnalysisTests>=2.7", "nbformat>=5", "nbclient>=0.8", "ipykernel>=6"],
        # Jupyter to open examples/virtual_nodes.ipynb; MDAnalysisTests holds the AdK files it reads.
        "notebook": ["notebook>=7", "ipykernel>=6", "MDAnalysisTests>=2.7"],
    },
    entry_points={"console_scripts": ["fastegnn-md = fastegnn_md.cli:main"]},
)
