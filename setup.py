"""lasagne-caption: the Lasagne CNN -> LSTM image-captioning seminar on a modern machine."""
from setuptools import find_packages, setup

setup(
    name="lasagne-caption",
    version="0.3.0",
    description="Theano/Lasagne-compatible toolkit for the CNN->LSTM image-captioning seminar",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["lasagne_caption", "lasagne_caption.*"]),
    # the trained models shipped with the package (lasagne_caption.pretrained)
    package_data={"lasagne_caption": ["shipped/*.npz", "shipped/*.npz.json", "shipped/*.md"]},
    python_requires=">=3.9,<3.12",
    install_requires=[
        # the legacy stack: these exact versions are known to import and train
        "theano-pymc==1.1.2",
        "lasagne==0.1",
        "numpy==1.23.5",
        "scipy==1.11.4",
        "scikit-image",
        "tqdm",
        "pandas",
        "matplotlib",
        # Lasagne 0.1 imports pkg_resources, which setuptools 81 removed
        "setuptools<81",
        # MobileNetV2 weights are read from a .tflite flatbuffer
        "tflite==2.18.0",
        "flatbuffers",
        # the MS-COCO caption metrics (BLEU, METEOR, ROUGE-L, CIDEr-D)
        "pycocoevalcap==1.2",
    ],
    extras_require={
        # mock: Lasagne 0.1's own suite (make lasagne-suite) needs the package, not
        # unittest.mock, which reads the properties of a spec (test_helper's mocks)
        "test": ["pytest", "hypothesis", "nbclient", "nbformat", "ipykernel", "mock>=5"],
        # the PyTorch peer for the speed benchmark only; 2.13.0 is the CPU build
        "bench": ["torch==2.13.0", "setuptools<81"],
        "dask": ["dask==2026.8.0", "distributed==2026.8.0"],  # encoders.distributed; tested pair
    },
)
