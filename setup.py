"""bajax: train Baichuan-Audio-style speech LLMs in JAX."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
REQUIREMENTS = [
    line.strip()
    for line in (HERE / "requirements.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]

setup(
    name="bajax",
    version="0.1.0",
    description="JAX/Flax training system for Baichuan-Audio-style end-to-end speech LLMs",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["bajax", "bajax.*"]),
    package_data={"bajax.data": ["corpus/*", "corpus/**/*"]},
    install_requires=REQUIREMENTS,
    extras_require={
        # torch==2.13.0 is the CPU wheel available offline; a bare `torch` pulls a multi-GB CUDA build.
        "torch": ["torch==2.13.0", "transformers==5.23.0"],
        "dev": [
            "pytest==9.2.0",
            "pytest-xdist==3.8.0",
            "ruff==0.17.6",
            "nbclient==0.11.0",
            "nbformat==5.11.1",
            "ipykernel==7.4.0",
        ],
    },
    entry_points={"console_scripts": ["bajax=bajax.cli:console_main"]},
)
