"""The native module (private: use the cgflow package). Arrays cross as little-endian float64 bytes."""

from typing import Any, Callable, Optional

__version__: str

class NativeEnergy:
    n_atoms: int
    kt_kj_per_mol: float
    platform_name: str
    evaluations: int
    def __init__(
        self,
        system: str,
        is_xml: bool,
        platform_name: str,
        properties: list[tuple[str, str]],
        temperature_k: float,
        workers: Optional[int],
    ) -> None: ...
    def evaluate(self, positions_nm: bytes, reduced: bool) -> tuple[bytes, bytes]: ...
    def time_rust_evaluate(self, positions_nm: bytes, repeats: int) -> float: ...

class NativeModel:
    n_atoms: int
    cg_dims: int
    temperature_k: float
    def __init__(self, dir: str) -> None: ...
    def backmap(
        self,
        cg: bytes,
        degrees: bool,
        n: int,
        seed: int,
        max_energy_kt: Optional[float],
        max_rounds: int,
        system: Optional[str],
        platform_name: str,
        properties: list[tuple[str, str]],
    ) -> dict[str, Any]: ...

def run_command(words: list[str], progress: Optional[Callable[[str, int, int], None]] = ..., poll_s: float = ...) -> None: ...
def command_options(name: str) -> list[tuple[str, bool, bool]]: ...
def adopt_host_plugins(directory: str, loaded: int, failures: list[str]) -> bool: ...
def platforms() -> list[str]: ...
def openmm_version() -> str: ...
