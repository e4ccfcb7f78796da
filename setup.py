"""pip-installable Python packages of DeltaWorld (deltaworld_core, and the ROS node's Python code).

The ROS 2 package itself (messages + node) is the ament_cmake package described by package.xml /
CMakeLists.txt; this file is for using the core library from any Python environment:
``pip install .`` after installing the torch build for your hardware (torch is deliberately not a
requirement here: an unpinned torch would make pip pick a multi-GB CUDA build on CPU machines).
The reproducible environment is ``./setup.sh`` (requirements.lock, CPU torch).
"""

from setuptools import find_packages, setup

setup(
    name="deltaworld",
    version="0.1.0",
    description="DeltaTok + DeltaWorld: K plausible futures of semantics and depth from a camera stream",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["deltaworld_core", "deltaworld_core.*", "deltaworld_ros"]),
    package_data={"deltaworld_core": ["configs/*.yaml", "weights/*/*.safetensors"]},
    install_requires=["numpy", "safetensors", "PyYAML", "opencv-python-headless", "onnx", "onnxruntime"],
    entry_points={
        "console_scripts": [
            "deltaworld-train=deltaworld_core.train:main",
            "deltaworld-evaluate=deltaworld_core.evaluate:main",
            "deltaworld-bench=deltaworld_core.bench:main",
            "deltaworld-forecast=deltaworld_core.forecast:main",
        ]
    },
)
