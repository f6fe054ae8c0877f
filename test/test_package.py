"""The ROS 2 package metadata and the console commands."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from catkin_pkg.package import parse_package

ROOT = Path(__file__).resolve().parents[1]


def test_package_xml_parses_with_catkin_pkg():
    pkg = parse_package(ROOT / "package.xml")
    pkg.validate()
    assert pkg.name == "hoi_perception" and pkg.package_format == 3
    names = {d.name for d in pkg.build_depends + pkg.exec_depends + pkg.buildtool_depends + pkg.build_export_depends}
    for needed in ("ament_cmake", "rosidl_default_generators", "rosidl_default_runtime", "rclpy", "sensor_msgs",
                   "geometry_msgs", "std_msgs", "tf2_msgs", "lifecycle_msgs", "visualization_msgs", "diagnostic_msgs",
                   "launch_ros", "python3-numpy", "python3-opencv", "python3-torch"):
        assert needed in names, needed
    for unused in ("tf2_ros", "message_filters"):  # the node does without them (not installable from the wheels)
        assert unused not in names, unused
    assert "rosidl_interface_packages" in [g.name for g in pkg.member_of_groups]
    assert pkg.get_build_type() == "ament_cmake"


def test_cmake_avoids_the_rosidl_python_clash():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert "rosidl_generate_interfaces" in cmake
    # ament_python_install_package(${PROJECT_NAME}) clashes with the generated hoi_perception.msg module.
    assert not re.search(r"^\s*ament_python_install_package\(", cmake, re.M)
    assert "share/${PROJECT_NAME}" in cmake
    # rosidl's generated typesupport libraries need the C and C++ compilers (project(... NONE) fails)
    assert re.search(r"^project\(hoi_perception C CXX\)", cmake, re.M)


def test_installed_config_is_found_under_share(tmp_path):
    """colcon installs config/ to <prefix>/share/hoi_perception/config, the package to lib/pythonX.Y/site-packages."""
    package = tmp_path / "lib" / "python3.11" / "site-packages" / "hoi_perception"
    package.mkdir(parents=True)
    (package / "config.py").write_text((ROOT / "hoi_perception" / "config.py").read_text())
    share = tmp_path / "share" / "hoi_perception" / "config"
    share.mkdir(parents=True)
    code = ("import importlib.util, sys\n"
            "spec = importlib.util.spec_from_file_location('installed_config', sys.argv[1])\n"
            "module = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(module)\n"
            "print(module.config_dir())")
    out = subprocess.run([sys.executable, "-c", code, str(package / "config.py")], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == str(share)


@pytest.mark.parametrize("module", ["hoi_perception.cli", "hoi_training.cli"])
def test_console_commands_have_help(module):
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=True)
    assert "usage:" in out.stdout


def test_setup_declares_both_commands():
    setup = (ROOT / "setup.py").read_text()
    assert "hoi-perception=hoi_perception.cli:main" in setup and "hoi-train=hoi_training.cli:main" in setup
