"""Type stubs of the cgflow Python package (see the docstrings in cgflow/__init__.py)."""

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple, Union, overload

import numpy as np
import numpy.typing as npt
import openmm

__version__: str

PathLike = Union[str, os.PathLike[str]]
SystemLike = Union[openmm.System, str, os.PathLike[str]]
ProgressCallback = Callable[[str, int, int], None]

def platforms() -> list[str]: ...
def openmm_version() -> str: ...

class Energy:
    def __init__(
        self,
        system: SystemLike,
        platform: str = "CPU",
        properties: Optional[Mapping[str, str]] = None,
        temperature_k: float = 300.0,
        workers: Optional[int] = None,
    ) -> None: ...
    @property
    def n_atoms(self) -> int: ...
    @property
    def platform(self) -> str: ...
    @property
    def kt_kj_per_mol(self) -> float: ...
    @property
    def evaluations(self) -> int: ...
    def evaluate(self, positions_nm: npt.ArrayLike) -> Tuple[Any, np.ndarray]:
        """[n, atoms, 3] -> (energies [n] kJ/mol, forces [n, atoms, 3] kJ/mol/nm); [atoms, 3] ->
        (float, [atoms, 3])."""
    def reduced(self, positions_nm: npt.ArrayLike) -> Tuple[Any, np.ndarray]:
        """u = U/kT and du/dx (1/nm), shapes as evaluate."""

@dataclass
class Backmapped:
    positions_nm: np.ndarray
    cg_index: np.ndarray
    cg_achieved_rad: np.ndarray
    energies_kj_per_mol: np.ndarray
    reduced_energies: np.ndarray
    log_weights: np.ndarray
    weights: np.ndarray
    point_ess: np.ndarray
    point_free_energy_kt: np.ndarray
    evaluations: int
    rejected_chirality: int
    rejected_energy: int
    def to_mdtraj(self, topology: Any) -> Any:
        """An mdtraj.Trajectory of the structures (topology: mdtraj.Topology or a PDB path)."""

class Model:
    directory: str
    def __init__(self, directory: PathLike) -> None: ...
    @property
    def n_atoms(self) -> int: ...
    @property
    def cg_dims(self) -> int: ...
    @property
    def temperature_k(self) -> float: ...
    def backmap(
        self,
        cg: npt.ArrayLike,
        n: int,
        seed: int = 1,
        max_energy_kt: Optional[float] = None,
        max_rounds: int = 20,
        degrees: bool = False,
        system: Optional[PathLike] = None,
        platform: str = "CPU",
        properties: Optional[Mapping[str, str]] = None,
    ) -> Backmapped: ...

def load_model(directory: PathLike) -> Model: ...
def run(command: str, progress: Optional[ProgressCallback] = None, **settings: Any) -> None: ...
def md(progress: Optional[ProgressCallback] = None, **settings: Any) -> None: ...
def al(
    config: Union[str, Mapping[str, Any]],
    out: PathLike,
    resume: bool = False,
    progress: Optional[ProgressCallback] = None,
    **settings: Any,
) -> None: ...
