"""cgflow: learned generative models on top of OpenMM energies, from Python.

The same Rust core as the ``cgflow`` command line, with numpy arrays in and out:

- :class:`Energy`: batched potential energies and forces of any OpenMM System;
- :func:`load_model`: a saved conditional flow, whose :meth:`Model.backmap` turns coarse-grained
  (CG) points into weighted all-atom structures;
- :func:`md`, :func:`al` and :func:`run`: the long-running commands (MD, active learning, umbrella
  sampling, ...) with the command line's settings, resumable, stopped by Ctrl-C at their next
  checkpoint.

Units: positions in nm, energies in kJ/mol (or kT where a name says so), forces in kJ/mol/nm,
angles in radians unless ``degrees=True``.

Errors are Python exceptions: ``ValueError`` for bad shapes, non-finite positions, malformed files
(a System XML OpenMM cannot read included) and unknown settings; ``FileNotFoundError`` for missing
files; ``RuntimeError`` with OpenMM's message for engine failures; ``KeyboardInterrupt`` for a run
stopped at a checkpoint by Ctrl-C.

Importing cgflow sets ``CANDLE_NUM_THREADS=1`` and ``RAYON_NUM_THREADS`` (to the core count) where
they are unset, as the command line does for flow training. The commands print their reports with
Rust's stdout, beside ``sys.stdout`` (a terminal shows them; a notebook shows the ``cgflow``
logger's progress instead). Under Python, OpenCL on the CPU (``./setup.sh --opencl-cpu``) is not
available: ``import openmm`` loads the OpenCL plugin before cgflow could name pocl to it.
"""

from __future__ import annotations

import json
import logging
import operator
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

# openmm first: it loads its platform plugins into the libOpenMM that the native module links
# (the same file, found relative to both modules), and the native module adopts them.
import openmm as _openmm

from . import _cgflow

__all__ = [
    "Energy",
    "Model",
    "Backmapped",
    "load_model",
    "md",
    "al",
    "run",
    "platforms",
    "openmm_version",
    "__version__",
]

__version__: str = _cgflow.__version__

_plugin_dir = (
    _openmm.Platform.getDefaultPluginsDirectory()
    if os.getenv("OPENMM_PLUGIN_DIR") is not None
    else os.path.join(_openmm.version.openmm_library_path, "plugins")
)
_cgflow.adopt_host_plugins(
    _plugin_dir,
    len(getattr(_openmm, "pluginLoadedLibNames", ())),
    list(_openmm.Platform.getPluginLoadFailures()),
)

_log = logging.getLogger("cgflow")

PathLike = Union[str, "os.PathLike[str]"]


def platforms() -> list:
    """Names of the OpenMM platforms available to cgflow (the same as ``openmm.Platform``'s)."""
    return list(_cgflow.platforms())


def openmm_version() -> str:
    """Version of the libOpenMM cgflow uses (the one ``import openmm`` loaded)."""
    return _cgflow.openmm_version()


def _system_source(system: Any) -> Tuple[str, bool]:
    """(text, is_xml) for a System given as an ``openmm.System``, an XML string or a path."""
    if isinstance(system, _openmm.System):
        return _openmm.XmlSerializer.serialize(system), True
    if isinstance(system, os.PathLike):
        return os.fspath(system), False
    if isinstance(system, str):
        if system.lstrip().startswith("<"):
            return system, True
        return system, False
    raise TypeError(
        f"system must be an openmm.System, an XML string or a path, not {type(system).__name__}"
    )


def _properties(properties: Optional[Mapping[str, str]]) -> list:
    if properties is None:
        return []
    if not isinstance(properties, Mapping):
        raise TypeError("properties must be a dict of platform property names to values")
    return [(str(k), str(v)) for k, v in properties.items()]


def _positions_array(positions_nm: Any, n_atoms: int) -> Tuple[np.ndarray, bool]:
    """Positions as a C-contiguous float64 array [n, atoms, 3], and whether one configuration was
    given as [atoms, 3]. openmm.unit quantities are converted to nm."""
    if hasattr(positions_nm, "value_in_unit"):
        from openmm import unit

        positions_nm = positions_nm.value_in_unit(unit.nanometer)
    try:
        x = np.asarray(positions_nm, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"positions: not an array of numbers ({e})") from None
    single = x.ndim == 2
    if single:
        x = x[np.newaxis]
    if x.ndim != 3 or x.shape[1] != n_atoms or x.shape[2] != 3:
        raise ValueError(
            f"positions: expected shape [n, {n_atoms}, 3] or [{n_atoms}, 3], got {list(np.shape(positions_nm))}"
        )
    if x.shape[0] == 0:
        raise ValueError("positions: no configurations")
    bad = ~np.isfinite(x)
    if bad.any():
        c, a, _ = np.argwhere(bad)[0]
        raise ValueError(f"positions: configuration {c}, atom {a} is not finite ({x[c, a].tolist()})")
    return np.ascontiguousarray(x, dtype="<f8"), single


def _positive_int(name: str, value: Any) -> int:
    """`value` as a positive int (numpy integers too; not bools), else ValueError naming it."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    try:
        n = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if n < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return n


def _from_bytes(data: bytes, shape: Sequence[int]) -> np.ndarray:
    return np.frombuffer(data, dtype="<f8").reshape(shape).copy()


class Energy:
    """Batched potential energies and forces of an OpenMM System.

    Parameters
    ----------
    system:
        An ``openmm.System``, a System XML string, or the path of a serialized System.
    platform:
        OpenMM platform: ``"CPU"``, ``"Reference"``, or ``"CUDA"`` / ``"OpenCL"`` where installed.
    properties:
        Platform properties, e.g. ``{"Precision": "double"}``. On the CPU platform each worker's
        context uses one thread unless ``Threads`` is given.
    temperature_k:
        Temperature that defines kT for :meth:`reduced`.
    workers:
        Worker threads, each with its own OpenMM Context (default: one per allowed CPU core).

    Example
    -------
    >>> e = cgflow.Energy("aldp_obc1.xml", platform="Reference")
    >>> energies, forces = e.evaluate(positions)   # [n], [n, atoms, 3]
    """

    def __init__(
        self,
        system: Any,
        platform: str = "CPU",
        properties: Optional[Mapping[str, str]] = None,
        temperature_k: float = 300.0,
        workers: Optional[int] = None,
    ) -> None:
        text, is_xml = _system_source(system)
        if workers is not None:
            workers = _positive_int("workers", workers)
        self._native = _cgflow.NativeEnergy(
            text, is_xml, str(platform), _properties(properties), float(temperature_k), workers
        )

    @property
    def n_atoms(self) -> int:
        """Atoms per configuration."""
        return self._native.n_atoms

    @property
    def platform(self) -> str:
        """The OpenMM platform the contexts run on."""
        return self._native.platform_name

    @property
    def kt_kj_per_mol(self) -> float:
        """kT in kJ/mol."""
        return self._native.kt_kj_per_mol

    @property
    def evaluations(self) -> int:
        """Configurations evaluated so far (exact; each configuration of each batch counts once)."""
        return self._native.evaluations

    def _call(self, positions_nm: Any, reduced: bool) -> Tuple[Any, np.ndarray]:
        x, single = _positions_array(positions_nm, self.n_atoms)
        energies, forces = self._native.evaluate(x.tobytes(), reduced)
        energies = _from_bytes(energies, (x.shape[0],))
        forces = _from_bytes(forces, x.shape)
        if single:
            return float(energies[0]), forces[0]
        return energies, forces

    def evaluate(self, positions_nm: Any) -> Tuple[Any, np.ndarray]:
        """Potential energies (kJ/mol) and forces (kJ/mol/nm).

        ``positions_nm`` is ``[n, atoms, 3]`` (returns arrays ``[n]`` and ``[n, atoms, 3]``) or
        ``[atoms, 3]`` (returns a float and ``[atoms, 3]``). NaN or infinite positions and wrong
        shapes raise ``ValueError``. Overlapping atoms can give infinite energies; those are
        returned as they are.
        """
        return self._call(positions_nm, reduced=False)

    def reduced(self, positions_nm: Any) -> Tuple[Any, np.ndarray]:
        """Reduced energies u = U/kT and their gradients du/dx (1/nm), shapes as :meth:`evaluate`."""
        return self._call(positions_nm, reduced=True)

    def __repr__(self) -> str:
        return f"cgflow.Energy(atoms={self.n_atoms}, platform={self.platform!r}, evaluations={self.evaluations})"


@dataclass
class Backmapped:
    """All-atom structures for CG points, ordered by point (the ``n`` structures of point 0 first).

    Attributes
    ----------
    positions_nm: ``[structures, atoms, 3]``, in the frame of the internal coordinates.
    cg_index: ``[structures]``, the CG point of each structure.
    cg_achieved_rad: ``[structures, cg_dims]``, the CG angles measured back from each structure.
    energies_kj_per_mol, reduced_energies: ``[structures]``, U in kJ/mol and u = U/kT.
    log_weights: ``[structures]``, ln w = -u + ln|det dx/dz| - ln q(x | s).
    weights: ``[structures]``, importance weights normalised over the structures of each point.
    point_ess, point_free_energy_kt: per CG point, the Kish effective sample size and -ln of the
        mean weight over every draw of the point (up to a constant).
    evaluations, rejected_chirality, rejected_energy: energy evaluations made, and draws rejected
        as D-amino acids (never evaluated) or for their energy.
    """

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

    def to_mdtraj(self, topology: Any):
        """The structures as an ``mdtraj.Trajectory`` (needs mdtraj). ``topology`` is an
        ``mdtraj.Topology``, or a PDB path whose atoms label the structures."""
        try:
            import mdtraj
        except ImportError as e:
            raise ImportError("Backmapped.to_mdtraj needs mdtraj: pip install mdtraj") from e
        if not isinstance(topology, mdtraj.Topology):
            topology = mdtraj.load_topology(os.fspath(topology))
        if topology.n_atoms != self.positions_nm.shape[1]:
            raise ValueError(
                f"the topology has {topology.n_atoms} atoms, the structures {self.positions_nm.shape[1]}"
            )
        return mdtraj.Trajectory(self.positions_nm.astype(np.float32), topology)


class Model:
    """A saved conditional molecular model: a flow q(x | s) over a molecule's fine coordinates
    given its CG coordinates s. Use :func:`load_model`."""

    def __init__(self, directory: PathLike) -> None:
        self.directory = os.fspath(directory)
        self._native = _cgflow.NativeModel(self.directory)

    @property
    def n_atoms(self) -> int:
        """Atoms per structure."""
        return self._native.n_atoms

    @property
    def cg_dims(self) -> int:
        """CG coordinates per point (2 for alanine dipeptide's phi, psi; 4 for Ace-(Ala)2-Nme's backbone)."""
        return self._native.cg_dims

    @property
    def temperature_k(self) -> float:
        """Temperature of the model, in K."""
        return self._native.temperature_k

    def backmap(
        self,
        cg: Any,
        n: int,
        seed: int = 1,
        max_energy_kt: Optional[float] = None,
        max_rounds: int = 20,
        degrees: bool = False,
        system: Optional[PathLike] = None,
        platform: str = "CPU",
        properties: Optional[Mapping[str, str]] = None,
    ) -> Backmapped:
        """``n`` all-atom structures for each CG point, with energies and importance weights.

        ``cg`` is ``[points, cg_dims]`` (or one point ``[cg_dims]``), radians in [-pi, pi] (or
        degrees in [-180, 180] with ``degrees=True``). The structures' CG angles equal the requested
        ones up to rounding. Draws of the wrong chirality are never returned; with ``max_energy_kt``
        structures above that reduced energy are redrawn too (up to ``max_rounds`` rounds).
        ``system`` overrides the System the model carries. Reproducible from ``seed``.
        """
        n = _positive_int("n", n)
        max_rounds = _positive_int("max_rounds", max_rounds)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        try:
            points = np.asarray(cg, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"cg: not an array of numbers ({e})") from None
        if points.ndim == 1:
            points = points[np.newaxis]
        d = self.cg_dims
        if points.ndim != 2 or points.shape[1] != d or points.shape[0] == 0:
            raise ValueError(f"cg: expected shape [points, {d}] or [{d}], got {list(np.shape(cg))}")
        if max_energy_kt is not None and np.isnan(max_energy_kt):
            raise ValueError("max_energy_kt is NaN")
        result = self._native.backmap(
            np.ascontiguousarray(points, dtype="<f8").tobytes(),
            bool(degrees),
            n,
            int(seed),
            None if max_energy_kt is None else float(max_energy_kt),
            max_rounds,
            None if system is None else os.fspath(system),
            str(platform),
            _properties(properties),
        )
        m = len(result["cg_index"])
        atoms = result["n_atoms"]
        return Backmapped(
            positions_nm=_from_bytes(result["positions_nm"], (m, atoms, 3)),
            cg_index=np.asarray(result["cg_index"], dtype=np.int64),
            cg_achieved_rad=_from_bytes(result["cg_achieved_rad"], (m, d)),
            energies_kj_per_mol=_from_bytes(result["energies_kj_per_mol"], (m,)),
            reduced_energies=_from_bytes(result["reduced_energies"], (m,)),
            log_weights=_from_bytes(result["log_weights"], (m,)),
            weights=_from_bytes(result["weights"], (m,)),
            point_ess=np.asarray(result["point_ess"], dtype=np.float64),
            point_free_energy_kt=np.asarray(result["point_free_energy_kt"], dtype=np.float64),
            evaluations=int(result["evaluations"]),
            rejected_chirality=int(result["rejected_chirality"]),
            rejected_energy=int(result["rejected_energy"]),
        )

    def __repr__(self) -> str:
        return f"cgflow.Model({self.directory!r}, atoms={self.n_atoms}, cg_dims={self.cg_dims})"


def load_model(directory: PathLike) -> Model:
    """Loads a model folder written by ``cgflow al`` / ``cgflow.al`` (``<run>/model``).
    A missing folder raises ``FileNotFoundError``; a malformed one ``ValueError``."""
    return Model(directory)


ProgressCallback = Callable[[str, int, int], None]


class _LogProgress:
    """Default progress report: a line on the ``cgflow`` logger when a phase starts and at every
    tenth of it."""

    def __init__(self) -> None:
        self.phase: Optional[str] = None
        self.tenth = -1

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase != self.phase:
            self.phase, self.tenth = phase, -1
        tenth = 10 * done // total if total > 0 else 10
        if tenth > self.tenth:
            self.tenth = tenth
            _log.info("%s: %d/%d", phase, done, total)


def _value_word(command: str, key: str, v: Any) -> str:
    """One option value as a word: paths as paths, a tuple (or a numpy vector) comma-joined."""
    if isinstance(v, bool):
        raise ValueError(f"cgflow.{command}: {key} takes a value, not {v!r}")
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, tuple) or (isinstance(v, list) and all(not isinstance(x, (list, tuple)) for x in v)):
        return ",".join(str(x) for x in v)
    if isinstance(v, (list, dict)):
        raise ValueError(f"cgflow.{command}: {key} takes one value, not {v!r}")
    return str(v)


def _words(command: str, settings: Mapping[str, Any]) -> list:
    """The command-line words of ``command`` with ``settings`` (keyword names are the long options
    with '_' for '-'; ``None`` leaves an option at its default); unknown names raise
    ``ValueError`` naming them. Values are joined to their option (``--seed=-1``), so that negative
    numbers are not read as options."""
    options = {long: (takes_value, repeatable) for long, takes_value, repeatable in _cgflow.command_options(command)}
    words = [command]
    for key, value in settings.items():
        long = key.replace("_", "-")
        if long not in options:
            known = ", ".join(sorted(o.replace("-", "_") for o in options))
            raise ValueError(f"cgflow.{command}: unknown setting {key!r} (known: {known})")
        takes_value, repeatable = options[long]
        if value is None:
            continue
        if not takes_value:
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"cgflow.{command}: {key} is a switch: give True or False, not {value!r}")
            if value:
                words.append(f"--{long}")
            continue
        if repeatable:
            # A list repeats the option; a dict gives KEY=VALUE items (platform properties).
            if isinstance(value, Mapping):
                values = [f"{k}={v}" for k, v in value.items()]
            elif isinstance(value, list):
                values = value
            else:
                values = [value]
        elif isinstance(value, list):
            raise ValueError(f"cgflow.{command}: {key} is given once, not as a list (a tuple is one comma-separated value)")
        else:
            values = [value]
        words += [f"--{long}={_value_word(command, key, v)}" for v in values]
    return words


def run(command: str, progress: Optional[ProgressCallback] = None, **settings: Any) -> None:
    """Runs any ``cgflow`` command with the command line's settings as keyword arguments:
    ``run("umbrella", out="runs/u", windows=24, resume=True)`` is ``cgflow umbrella --out runs/u
    --windows 24 --resume``. A list repeats a repeatable option and a tuple is one comma-separated
    value (``dihedral=[(4, 6, 8, 14), (6, 8, 14, 16)]``); switches take True/False.

    The call releases the GIL. ``progress(phase, done, total)`` is called as the run advances and
    once at its end (default: lines on the ``cgflow`` logger); an exception from it stops the run
    like Ctrl-C and is raised. Ctrl-C asks the run to stop: ``md``, ``umbrella``, ``al`` and
    ``grid`` stop at their next checkpoint and raise ``KeyboardInterrupt`` (continue with
    ``resume=True``: nothing is lost); the other commands keep no checkpoints, so they run to their
    end first. Only one command runs per process at a time.
    """
    words = _words(command, settings)
    _cgflow.run_command(words, progress if progress is not None else _LogProgress())


def md(progress: Optional[ProgressCallback] = None, **settings: Any) -> None:
    """Langevin MD of many walkers (``cgflow md``): e.g. ``md(system="aldp_obc1.xml",
    positions="min_energy.pdb", out="runs/md", walkers=64, steps=10000)``. See ``cgflow md
    --help`` for every setting; :func:`run` for progress, Ctrl-C and resuming."""
    run("md", progress=progress, **settings)


def al(
    config: Union[str, Mapping[str, Any]],
    out: PathLike,
    resume: bool = False,
    progress: Optional[ProgressCallback] = None,
    **settings: Any,
) -> None:
    """Active learning of a CG free-energy surface (``cgflow al``).

    ``config`` is a preset name (``"tiny"``, ``"fast"``, ``"reference"``) or a settings dict with
    the fields of the settings file (``cgflow al --print-config``); unknown fields raise
    ``ValueError`` naming them. The run folder ``out`` gets the log, PNGs, checkpoints and, when
    the run ends, ``out/model`` for :func:`load_model`. Other command-line options (``system``,
    ``structure``, ``cg`` (any molecule: e.g. ``cg="backbone"``), ``topology``, ``reference`` (a list
    for several marginal references, e.g. ``["0,1=r2.npy", "2,3=r3.npy"]``), ``platform``,
    ``iterations``) are keyword arguments.
    """
    for reserved in ("config", "preset", "out", "resume"):
        if reserved in settings:
            raise ValueError(f"cgflow.al: give {reserved!r} as its own argument")
    if isinstance(config, str):
        run("al", progress=progress, preset=config, out=out, resume=resume, **settings)
        return
    if not isinstance(config, Mapping):
        raise TypeError("config must be a preset name or a dict of settings")
    handle, path = tempfile.mkstemp(prefix="cgflow-al-", suffix=".json")
    try:
        with os.fdopen(handle, "w") as f:
            json.dump(dict(config), f)
        run("al", progress=progress, config=path, out=out, resume=resume, **settings)
    finally:
        os.unlink(path)
