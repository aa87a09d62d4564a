"""Build-time mapping of the repository's top-level ``assets/`` into the wheel.

Everything else about the distribution is in ``pyproject.toml``. The shipped models live once, in
``assets/models/`` of the repository; a wheel (or a non-editable ``pip install .``) carries them as
the package data of ``interp._assets``, i.e. ``site-packages/interp/_assets/models/``, where
``interp.zoo`` finds them. Generated figures (``assets/figures``) and the report stay out of it.
"""

from setuptools import find_packages, setup

# import package -> repository folder it is built from
ASSETS = {"interp._assets": "assets"}

setup(
    packages=find_packages(include=["interp", "interp.*", "patching", "patching.*", "probes", "probes.*"]) + list(ASSETS),
    package_dir=ASSETS,
    include_package_data=False,  # only what package_data names (no MANIFEST-driven extras)
    package_data={
        "interp": ["circuits/*.md"],
        "interp._assets": [
            "models/*/model.json",
            "models/*/history.json",
            "models/*/model.safetensors",
            "models/*/tokenizer/*.json",
            "models/*/checkpoints/step_*.safetensors",
            "sae/*/*.json",  # shipped sparse autoencoders (SAELens format + training record), e.g. facts-bio's
            "sae/*/sae_weights.safetensors",
            "cards/*/*.json",  # stored long measurements that cards on the pretrained model compare with
        ],
    },
)
