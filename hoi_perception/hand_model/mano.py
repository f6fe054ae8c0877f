"""MANO hand layer: smplx's MANO with HO-3D's 21 joints, for the real model or the stand-in.

Every stage uses this one layer. It runs smplx's MANO code (linear blend skinning,
batched, differentiable, any torch device and dtype) on arrays read from

* the real MANO_RIGHT / MANO_LEFT files (.pkl as released, or .npz), when a file or
  directory is given by ``HandModelConfig.mano_dir`` or, failing that, the environment
  variable ``HOI_MANO_DIR``;
* otherwise the stand-in shipped in ``assets/`` (see ``standin.py``), which has MANO's
  exact array layout.

Outputs are in metres. ``HandOutput.joints`` has 21 joints in HO-3D order: smplx's 16
MANO joints (0 wrist; 1-3 index; 4-6 middle; 7-9 pinky; 10-12 ring; 13-15 thumb)
followed by five fingertip vertices, thumb, index, middle, ring, pinky = vertices
744, 333, 444, 555, 672 (HO-3D's choice; FreiHAND, smplx and manopth use slightly
different ids, see ``joint_orders.FINGERTIP_VERTEX_IDS``).

PCA pose is handled here rather than by smplx: smplx silently treats 45 PCA
coefficients as axis-angle, while here ``num_pca_comps=45`` is an exact change of basis.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import smplx
import torch
from smplx.utils import Struct

from hoi_perception.config import ConfigError
from hoi_perception.hand_model.joint_orders import FINGERTIP_VERTEX_IDS, HO3D_PARENTS, MANO_PARENTS

LOG = logging.getLogger(__name__)

MANO_DIR_ENV = "HOI_MANO_DIR"
# The stand-in models shipped with the package (regenerate with standin.py).
ASSET_DIR = Path(__file__).resolve().parent / "assets"
STANDIN_FILES = {"right": "mano_standin_right.npz", "left": "mano_standin_left.npz"}
Side = Literal["right", "left"]

# Arrays a MANO-format file must hold and their shapes (None: any size on that axis).
MANO_ARRAY_SHAPES: dict[str, tuple[int | None, ...]] = {
    "v_template": (778, 3),
    "shapedirs": (778, 3, None),
    "posedirs": (778, 3, 135),
    "J_regressor": (16, 778),
    "weights": (778, 16),
    "kintree_table": (2, 16),
    "f": (1538, 3),
    "hands_components": (45, 45),
    "hands_mean": (45,),
}
NUM_BETAS = 10


class MANOFileError(ValueError):
    """A MANO model file is missing or does not hold MANO's arrays."""


@dataclass
class HandModelConfig:
    """Which hand model to load and how its pose is parameterised."""

    # Directory holding MANO_RIGHT/MANO_LEFT (.pkl or .npz), or one such file.
    # None: $HOI_MANO_DIR when set, else the shipped stand-in.
    mano_dir: Path | None = None
    # Pose given as PCA coefficients (num_pca_comps of them) instead of 45 axis-angle values.
    use_pca: bool = False
    num_pca_comps: int = 45
    # True: zero pose is the flat hand. False: zero pose is the model's mean (relaxed) pose.
    flat_hand_mean: bool = True

    def validate(self) -> None:
        if not 1 <= self.num_pca_comps <= 45:
            raise ConfigError(f"num_pca_comps: expected 1 to 45, got {self.num_pca_comps}")


@dataclass
class HandOutput:
    """Posed hand, metres, in the frame given by global_orient and transl."""

    vertices: torch.Tensor  # (B, 778, 3)
    joints: torch.Tensor  # (B, 21, 3), HO-3D order


def resolve_mano_file(side: Side, mano_dir: str | Path | None = None) -> Path:
    """The model file for ``side``: given path, else $HOI_MANO_DIR, else the stand-in.

    A directory is searched for MANO_RIGHT/MANO_LEFT with .pkl then .npz, also in a
    ``mano/`` subdirectory (smplx's model-folder layout).
    """
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    if mano_dir is None and os.environ.get(MANO_DIR_ENV):
        mano_dir = os.environ[MANO_DIR_ENV]
        origin = f"${MANO_DIR_ENV}"
    else:
        origin = "mano_dir"
    if mano_dir is None:
        return ASSET_DIR / STANDIN_FILES[side]
    path = Path(mano_dir).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise MANOFileError(f"{origin}={path}: no such file or directory (expected MANO_{side.upper()}.pkl or .npz)")
    stem = f"MANO_{side.upper()}"
    candidates = [d / f"{stem}{ext}" for d in (path, path / "mano") for ext in (".pkl", ".npz")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = [str(c) for c in candidates]
    raise MANOFileError(f"{origin}={path}: no {stem}.pkl or {stem}.npz found (looked for {looked})")


class _ChumpyArray:
    """Stands in for chumpy objects while unpickling the official MANO files."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.state = state

    def to_numpy(self, key: str, path: Path) -> np.ndarray:
        if "x" not in self.state:
            raise MANOFileError(f"{path}: '{key}' is a derived chumpy expression; convert the file with chumpy "
                                f"installed (np.asarray(value.r) for each array) and save it as .npz")
        return np.asarray(_plain(self.state["x"], key, path))


class _MANOUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] == "chumpy":
            return _ChumpyArray
        return super().find_class(module, name)


def _plain(value: Any, key: str, path: Path) -> Any:
    if isinstance(value, _ChumpyArray):
        return value.to_numpy(key, path)
    if hasattr(value, "toarray"):  # scipy sparse (the official J_regressor)
        return value.toarray()
    return value


def load_mano_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Read and check a MANO-format file (.pkl as released, chumpy not needed; or .npz)."""
    path = Path(path)
    if not path.is_file():
        raise MANOFileError(f"{path}: MANO file not found")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                raw = {k: data[k] for k in data.files}
        elif path.suffix == ".pkl":
            with path.open("rb") as fh:
                raw = _MANOUnpickler(fh, encoding="latin1").load()
        else:
            raise MANOFileError(f"{path}: expected a .pkl or .npz MANO file")
    except MANOFileError:
        raise
    except Exception as exc:  # unreadable archive, truncated pickle, object arrays...
        raise MANOFileError(f"{path}: cannot read as a MANO {path.suffix} file: {exc}") from exc
    if not isinstance(raw, dict):
        raise MANOFileError(f"{path}: expected a mapping of MANO arrays, got {type(raw).__name__}")

    missing = [k for k in MANO_ARRAY_SHAPES if k not in raw]
    if missing:
        raise MANOFileError(f"{path}: missing MANO array(s) {missing}; a MANO file holds {list(MANO_ARRAY_SHAPES)}")
    arrays, problems = {}, []
    for key, expected in MANO_ARRAY_SHAPES.items():
        value = np.asarray(_plain(raw[key], key, path))
        shape_ok = value.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, value.shape))
        if not shape_ok or not np.issubdtype(value.dtype, np.number):
            want = "x".join("N" if e is None else str(e) for e in expected)
            problems.append(f"'{key}' has shape {value.shape} dtype {value.dtype}, expected {want} numbers")
        arrays[key] = value
    if not problems and arrays["shapedirs"].shape[2] < NUM_BETAS:
        problems.append(f"'shapedirs' has {arrays['shapedirs'].shape[2]} shape components, expected >= {NUM_BETAS}")
    if not problems and not np.all(np.isfinite(arrays["v_template"])):
        problems.append("'v_template' holds non-finite values")
    if not problems and (arrays["f"].min() < 0 or arrays["f"].max() >= 778):
        problems.append(f"'f' indexes vertices {arrays['f'].min()}..{arrays['f'].max()}, expected 0..777")
    if problems:
        raise MANOFileError(f"{path}: " + "; ".join(problems))
    return arrays


def _fix_left_shapedirs(left: dict[str, np.ndarray], right_path: Path) -> None:
    """The official MANO_LEFT's shapedirs x component has the wrong sign (smplx issue 48).

    A correct left model mirrors the right one, so its x shape offsets are the negated
    right ones; when they equal the right ones instead, flip them.
    """
    right = load_mano_arrays(right_path)["shapedirs"][:, 0, :NUM_BETAS]
    left_x = left["shapedirs"][:, 0, :NUM_BETAS]
    if np.abs(left_x - right).sum() < np.abs(left_x + right).sum():
        left["shapedirs"] = left["shapedirs"].copy()
        left["shapedirs"][:, 0, :] *= -1.0
        LOG.info("flipped the x sign of MANO_LEFT shapedirs (known bug of the official file)")


class HandModel(torch.nn.Module):
    """MANO through smplx, returning 778 vertices and 21 HO-3D-ordered joints (metres).

    Move it with ``.to(device, dtype)``; inputs must be on the same device and dtype.
    """

    def __init__(self, side: Side = "right", config: HandModelConfig | None = None):
        super().__init__()
        config = config or HandModelConfig()
        config.validate()
        self.side: Side = side
        self.config = config
        self.model_file = resolve_mano_file(side, config.mano_dir)
        self.is_standin = self.model_file.parent == ASSET_DIR and self.model_file.name in STANDIN_FILES.values()
        arrays = load_mano_arrays(self.model_file)
        if side == "left" and not self.is_standin:
            right_path = self.model_file.with_name(self.model_file.name.replace("LEFT", "RIGHT"))
            if right_path != self.model_file and right_path.is_file():
                _fix_left_shapedirs(arrays, right_path)
        # smplx prints a warning about models with only 10 shape components; MANO has 10.
        with contextlib.redirect_stdout(io.StringIO()):
            self.mano = smplx.MANO(
                model_path=str(self.model_file), data_struct=Struct(**arrays), is_rhand=side == "right",
                use_pca=False, flat_hand_mean=config.flat_hand_mean, num_betas=NUM_BETAS,
                create_global_orient=False, create_hand_pose=False, create_betas=False, create_transl=False,
            )
        components = np.asarray(arrays["hands_components"], dtype=np.float64)[: config.num_pca_comps]
        self.register_buffer("pca_components", torch.tensor(components, dtype=torch.float32), persistent=False)
        # Least-squares inverse: exact for orthogonal rows of any length (MANO's rows need
        # not be unit vectors), the best fit when fewer than 45 components are kept.
        self.register_buffer("pca_inverse", torch.tensor(np.linalg.pinv(components), dtype=torch.float32),
                             persistent=False)
        self.register_buffer("tip_vertex_ids", torch.tensor(FINGERTIP_VERTEX_IDS, dtype=torch.long), persistent=False)
        self.faces: np.ndarray = np.asarray(arrays["f"], dtype=np.int64)
        self.parents: tuple[int, ...] = HO3D_PARENTS
        self.mano_parents: tuple[int, ...] = MANO_PARENTS

    @property
    def pose_dim(self) -> int:
        """Length of ``hand_pose``: PCA coefficients or 45 axis-angle values."""
        return self.config.num_pca_comps if self.config.use_pca else 45

    @property
    def faces_tensor(self) -> torch.Tensor:
        return self.mano.faces_tensor

    def pca_to_axis_angle(self, coefficients: torch.Tensor) -> torch.Tensor:
        """(B, num_pca_comps) PCA coefficients to (B, 45) axis-angle, both relative to
        the pose origin the config chose (flat hand or mean hand)."""
        return coefficients @ self.pca_components

    def axis_angle_to_pca(self, hand_pose: torch.Tensor) -> torch.Tensor:
        """(B, 45) axis-angle to the PCA coefficients that reproduce it best (exactly with
        45 components); both relative to the pose origin the config chose."""
        return hand_pose @ self.pca_inverse

    def forward(self, global_orient: torch.Tensor, hand_pose: torch.Tensor, betas: torch.Tensor | None = None,
                transl: torch.Tensor | None = None) -> HandOutput:
        """Pose the hand.

        global_orient: (B, 3) axis-angle of the wrist; hand_pose: (B, 45) axis-angle of
        the 15 finger joints, or (B, num_pca_comps) with use_pca; betas: (B, 10) shape,
        zeros when None; transl: (B, 3) added to every output point.
        """
        batch = _check_input("global_orient", global_orient, 3, None)
        _check_input("hand_pose", hand_pose, self.pose_dim, batch)
        if betas is None:
            betas = global_orient.new_zeros(batch, NUM_BETAS)
        _check_input("betas", betas, NUM_BETAS, batch)
        if transl is not None:
            _check_input("transl", transl, 3, batch)
        if self.config.use_pca:
            hand_pose = self.pca_to_axis_angle(hand_pose)
        out = self.mano(betas=betas, global_orient=global_orient, hand_pose=hand_pose, transl=transl)
        vertices = out.vertices
        joints = torch.cat([out.joints, vertices[:, self.tip_vertex_ids]], dim=1)
        return HandOutput(vertices=vertices, joints=joints)


class NumpyHandPoser:
    """A :class:`HandModel`'s MANO in NumPy (float64) for full axis-angle poses.

    The runtime re-meshes one or two filtered hands per frame; at that size PyTorch's
    per-operation dispatch costs more than the arithmetic (about 70 small ops, 1 ms on
    the 2-core target against 0.2 ms here). Same arrays and the same steps as smplx's
    ``lbs`` (Rodrigues with its 1e-8 offset, pose-corrective blend shapes, the kinematic
    chain, linear blend skinning), then the fingertip vertices, as ``HandModel.forward``.
    """

    def __init__(self, model: HandModel) -> None:
        mano = model.mano

        def array(tensor: torch.Tensor) -> np.ndarray:
            return tensor.detach().double().cpu().numpy()

        self.v_template = array(mano.v_template)  # (V, 3)
        self.shapedirs = array(mano.shapedirs)[..., :NUM_BETAS]  # (V, 3, 10)
        self.posedirs = array(mano.posedirs)  # (135, 3V)
        regressor = array(mano.J_regressor)  # (16, V)
        self.joint_template = regressor @ self.v_template  # (16, 3)
        self.joint_shapedirs = np.einsum("jv,vkl->jkl", regressor, self.shapedirs)  # (16, 3, 10)
        self.lbs_weights = array(mano.lbs_weights)  # (V, 16)
        self.parents = mano.parents.cpu().numpy().astype(np.int64)
        self.pose_mean = array(mano.pose_mean)  # (48,)
        self.tip_vertex_ids = np.asarray(FINGERTIP_VERTEX_IDS, dtype=np.int64)

    def __call__(self, pose: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """pose (B, 48) axis-angle (global orientation, then 15 joints), betas (B, 10) ->
        vertices (B, 778, 3) and joints (B, 21, 3), metres, as ``HandModel.forward``."""
        pose = np.asarray(pose, dtype=np.float64)
        betas = np.asarray(betas, dtype=np.float64)
        if pose.ndim != 2 or pose.shape[1] != 48:
            raise ValueError(f"pose: expected shape (B, 48) axis-angle, got {pose.shape}")
        if betas.shape != (pose.shape[0], NUM_BETAS):
            raise ValueError(f"betas: expected shape ({pose.shape[0]}, {NUM_BETAS}), got {betas.shape}")
        batch = pose.shape[0]
        v_shaped = self.v_template + np.einsum("vkl,bl->bvk", self.shapedirs, betas)
        joints = self.joint_template + np.einsum("jkl,bl->bjk", self.joint_shapedirs, betas)  # (B, 16, 3)
        rotations = _rodrigues((pose + self.pose_mean).reshape(batch, -1, 3))  # (B, 16, 3, 3)
        pose_feature = (rotations[:, 1:] - np.eye(3)).reshape(batch, -1)
        v_posed = v_shaped + (pose_feature @ self.posedirs).reshape(batch, -1, 3)
        relative = joints.copy()
        relative[:, 1:] -= joints[:, self.parents[1:]]
        local = np.zeros((batch, len(self.parents), 4, 4))
        local[:, :, :3, :3] = rotations
        local[:, :, :3, 3] = relative
        local[:, :, 3, 3] = 1.0
        world = np.empty_like(local)
        world[:, 0] = local[:, 0]
        for i in range(1, len(self.parents)):
            world[:, i] = world[:, self.parents[i]] @ local[:, i]
        posed_joints = world[:, :, :3, 3].copy()
        skinning = world.copy()  # transforms relative to the rest pose: subtract R J
        skinning[:, :, :3, 3] -= np.einsum("bjkl,bjl->bjk", world[:, :, :3, :3], joints)
        # Per-vertex blend of the joints' 3x4 transforms as one matrix product (B, V, 12).
        blended = (self.lbs_weights @ skinning[:, :, :3, :].reshape(batch, -1, 12)).reshape(batch, -1, 3, 4)
        vertices = (blended[..., :3] @ v_posed[..., None])[..., 0] + blended[..., 3]
        return vertices, np.concatenate([posed_joints, vertices[:, self.tip_vertex_ids]], axis=1)


def _rodrigues(rotvecs: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) of axis-angle vectors (..., 3), exactly as smplx's ``batch_rodrigues``."""
    angle = np.linalg.norm(rotvecs + 1e-8, axis=-1, keepdims=True)
    axis = rotvecs / angle
    sin, cos = np.sin(angle)[..., None], np.cos(angle)[..., None]
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zeros = np.zeros_like(x)
    cross = np.stack([zeros, -z, y, z, zeros, -x, -y, x, zeros], axis=-1).reshape(axis.shape[:-1] + (3, 3))
    return np.eye(3) + sin * cross + (1.0 - cos) * (cross @ cross)


def _check_input(name: str, value: torch.Tensor, width: int, batch: int | None) -> int:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape (B, {width}), got {type(value).__name__}")
    if value.ndim != 2 or value.shape[1] != width or (batch is not None and value.shape[0] != batch):
        want = f"({batch if batch is not None else 'B'}, {width})"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(value.shape)}")
    return value.shape[0]
