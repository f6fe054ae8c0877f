"""pip installation for machines without ROS (training servers, laptops).

On a ROS 2 machine the package is built by colcon through CMakeLists.txt instead;
both install the same two Python packages and console commands.
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent

runtime = [
    "numpy>=1.24",
    "scipy>=1.10",
    "opencv-python-headless>=4.8",
    "pyyaml>=6.0",
    "tqdm>=4.60",
    "transforms3d>=0.4",
    # torch: CPU machines here use the pinned local build (pip install torch==2.13.0);
    # GPU users install the CUDA build for their driver first (see README).
    "torch>=2.1",
    "smplx>=0.1.28",
    "rosbags>=0.10.9",
    "onnx>=1.15",
    "onnxruntime>=1.17",
    "trimesh>=4.0",
    "pillow>=9.0",  # trimesh reads OBJ texture images through it
]

extras = {
    "train": ["tensorboard>=2.14", "matplotlib>=3.7"],  # matplotlib: the experiment scripts' plots
    "tensorrt": ["tensorrt>=10.0,<11"],  # fp16 plans use BuilderFlag.FP16, removed in 11
    # --hand-frontend mediapipe: LiteRT runs MediaPipe Hands' models; the model files themselves come
    # from `hoi-perception install-mediapipe-models` (mediapipe's wheel, never its dependencies).
    "mediapipe": ["ai-edge-litert>=1.2"],
    # pytest 9 rejects launch_testing's plugin hooks (ROS 2's launch tests); the ROS 2 wheels that
    # tools/ros2_jazzy/build_workspace.sh installs would otherwise pull it in.
    "test": ["pytest>=7.4,<9", "ruff>=0.5", "mypy>=2.4,<3", "catkin_pkg>=1.0"],
}

setup(
    name="hoi_perception",
    version="0.1.0",
    description="Real-time 3D hand mesh and object 6-DoF pose estimation for ROS 2, with semi-supervised training",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["hoi_perception", "hoi_perception.*", "hoi_training", "hoi_training.*"])
    + ["hoi_perception._config", "hoi_perception._msg"],
    # The shipped YAML files and message definitions live in config/ and msg/ (installed to
    # share/ by colcon); pip installs carry copies inside the package so they are found anywhere.
    package_dir={"hoi_perception._config": "config", "hoi_perception._msg": "msg"},
    package_data={
        "hoi_perception": ["hand_model/assets/*.npz", "checkpoints/*"],
        "hoi_perception._config": ["*.yaml", "*/*.yaml", "*.rviz", "*.xml"],
        "hoi_perception._msg": ["*.msg"],
    },
    install_requires=runtime,
    extras_require=extras,
    entry_points={
        "console_scripts": [
            "hoi-perception=hoi_perception.cli:main",
            "hoi-train=hoi_training.cli:main",
        ]
    },
)
