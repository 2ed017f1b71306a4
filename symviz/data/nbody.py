"""Charged N-body simulator: the benchmark of Kipf et al. (2018) in the 3D form of Satorras et al. (2021).

The specification (Satorras, Hoogeboom, Welling, "E(n) Equivariant Graph Neural Networks", ICML 2021,
Sec. 5.1, following Kipf et al., "Neural Relational Inference for Interacting Systems", ICML 2018):

* ``n_particles = 5`` particles in 3D with charges ``q_i`` drawn uniformly from {+1, -1};
* initial positions ``x_i ~ N(0, 1)``, initial velocities of norm ``0.5`` in a random direction;
* Coulomb-like forces ``F_i = sum_j q_i q_j (x_i - x_j) / |x_i - x_j|^3`` (unit masses), each
  component clipped to ``[-100, 100]`` (``0.1 / dt``) so that close encounters stay finite;
* time step ``dt = 0.001``, leapfrog (kick-drift-kick) integration, one frame every 100 steps;
* the task: from positions, velocities and charges at frame 30 predict positions at frame 40,
  i.e. 1000 integration steps later. Standard sizes: 3000 train / 2000 val / 2000 test.

Everything is vectorised over simulations with numpy (float64) and reproducible by seed.

    >>> sim = simulate_charged(4, n_frames=3, seed=0)
    >>> sim.positions.shape, sim.velocities.shape, sim.charges.shape
    ((4, 3, 5, 3), (4, 3, 5, 3), (4, 5))
    >>> ds = charged_dataset(8, seed=1, frame_in=2, frame_out=4)
    >>> ds["loc"].shape, ds["target"].shape, ds["charges"].shape
    (torch.Size([8, 5, 3]), torch.Size([8, 5, 3]), torch.Size([8, 5, 1]))
    >>> prediction_horizon(ds)              # (4 - 2) frames x 100 steps x dt 0.001
    0.2
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ChargedSimulation", "simulate_charged", "coulomb_forces", "total_energy", "charged_dataset",
           "charged_splits", "NBodyDataset", "STANDARD_SIZES", "prediction_horizon"]

STANDARD_SIZES = {"train": 3000, "val": 2000, "test": 2000}
"""Split sizes of the standard benchmark (Satorras et al. 2021, Sec. 5.1)."""

_SPLIT_SEED_OFFSET = {"train": 0, "val": 1_000_003, "test": 2_000_003}


@dataclass
class ChargedSimulation:
    """Recorded frames of ``n_sims`` independent charged systems.

    Attributes:
        positions: ``(n_sims, n_frames, n_particles, 3)``; frame ``k`` is integration step ``k * sample_every``.
        velocities: ``(n_sims, n_frames, n_particles, 3)``, synchronous with the positions.
        charges: ``(n_sims, n_particles)`` in {+1, -1}.
        clipped: ``(n_sims,)`` bool, True where some force component hit the clip during the run
            (those runs do not conserve energy exactly).
        dt, sample_every: the integration step and the steps between recorded frames.
    """

    positions: np.ndarray
    velocities: np.ndarray
    charges: np.ndarray
    clipped: np.ndarray
    dt: float
    sample_every: int

    @property
    def times(self) -> np.ndarray:
        """Simulation time of each frame, ``(n_frames,)``."""
        return np.arange(self.positions.shape[1]) * self.dt * self.sample_every


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_positive_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def coulomb_forces(x: np.ndarray, q: np.ndarray, strength: float = 1.0, clip: float | None = None):
    """Pairwise Coulomb-like forces ``F_i = k sum_{j != i} q_i q_j (x_i - x_j) / |x_i - x_j|^3``.

    Args:
        x: positions ``(..., n, 3)``; q: charges ``(..., n)``.
        clip: clip every force component to ``[-clip, clip]`` (None: no clipping).
    Returns:
        ``(F, clipped)``: forces ``(..., n, 3)`` and a bool array ``(...)`` saying where a clip happened.

    >>> F, c = coulomb_forces(np.array([[0., 0, 0], [2, 0, 0]]), np.array([1., 1.]))
    >>> F.tolist()   # like charges repel with 1/r^2 = 0.25
    [[-0.25, 0.0, 0.0], [0.25, 0.0, 0.0]]
    """
    return _CoulombField(q, strength, clip)(x)


class _CoulombField:
    """:func:`coulomb_forces` for fixed charges, with the pair bookkeeping done once (the integrator
    evaluates it thousands of times). Same arithmetic, same results."""

    def __init__(self, q: np.ndarray, strength: float = 1.0, clip: float | None = None):
        n = q.shape[-1]
        self.I, self.J = np.triu_indices(n, k=1)                              # each pair once: half the work
        self.qq = (q[..., self.I] * q[..., self.J]) * strength                # (..., pairs)
        self.incidence = np.zeros((n, len(self.I)))                           # F_i = sum of +f (i = I) and -f (i = J)
        self.incidence[self.I, np.arange(len(self.I))] = 1.0
        self.incidence[self.J, np.arange(len(self.I))] = -1.0
        self.clip = clip

    def __call__(self, x: np.ndarray):
        diff = x[..., self.I, :] - x[..., self.J, :]                          # (..., pairs, 3)
        r2 = (diff * diff).sum(-1)
        f = (self.qq / (r2 * np.sqrt(r2)))[..., None] * diff                  # force on I from J
        F = np.matmul(self.incidence, f)
        if self.clip is None:
            return F, np.zeros(F.shape[:-2], dtype=bool)
        clipped = (np.abs(F) > self.clip).any(axis=(-1, -2))
        return np.clip(F, -self.clip, self.clip, out=F), clipped


def total_energy(x: np.ndarray, v: np.ndarray, q: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Kinetic plus Coulomb energy ``sum_i |v_i|^2 / 2 + k sum_{i<j} q_i q_j / |x_i - x_j|`` (unit masses).

    Shapes: ``x, v: (..., n, 3)``, ``q: (..., n)``; returns ``(...)``.
    """
    diff = x[..., :, None, :] - x[..., None, :, :]
    r = np.sqrt(np.einsum("...ijk,...ijk->...ij", diff, diff))
    n = x.shape[-2]
    iu = np.triu_indices(n, k=1)
    qq = q[..., :, None] * q[..., None, :]
    potential = strength * (qq[..., iu[0], iu[1]] / r[..., iu[0], iu[1]]).sum(-1)
    return 0.5 * (v ** 2).sum(axis=(-1, -2)) + potential


def simulate_charged(n_sims: int, n_particles: int = 5, n_frames: int = 50, sample_every: int = 100,
                     dt: float = 0.001, clip: float | None = 100.0, loc_std: float = 1.0,
                     vel_norm: float = 0.5, strength: float = 1.0, seed: int = 0) -> ChargedSimulation:
    """Simulate ``n_sims`` charged systems with leapfrog (velocity Verlet) integration.

    One step: ``v += F(x) dt/2; x += v dt; v += F(x) dt/2`` (kick-drift-kick), which is symplectic:
    without clipping the energy error stays bounded, of order ``dt^2``. Frame ``k`` holds the state
    after ``k * sample_every`` steps (frame 0 is the initial state).

    Args:
        n_sims: number of independent systems (vectorised; memory ``~ n_sims * n_particles^2``).
        n_particles: particles per system (5 in the benchmark).
        n_frames: recorded frames (50 in the benchmark: 5000 steps).
        clip: elementwise force clip (100 = 0.1/dt in the benchmark), None for none.
        seed: the seed of a numpy Generator; the same seed gives the same systems.
    Returns:
        :class:`ChargedSimulation`.
    """
    n_sims = _check_positive_int("n_sims", n_sims)
    n_particles = _check_positive_int("n_particles", n_particles, 2)
    n_frames = _check_positive_int("n_frames", n_frames)
    sample_every = _check_positive_int("sample_every", sample_every)
    dt = _check_positive_float("dt", dt)
    loc_std = _check_positive_float("loc_std", loc_std)
    vel_norm = _check_positive_float("vel_norm", vel_norm)
    if clip is not None:
        clip = _check_positive_float("clip", clip)
    return _simulate([(n_sims, seed)], n_particles, n_frames, sample_every, dt, clip, loc_std, vel_norm, strength)[0]


def _simulate(parts, n_particles, n_frames, sample_every, dt, clip, loc_std, vel_norm, strength):
    """Simulate several independently seeded groups ``parts = [(n_sims, seed), ...]`` in one integration
    (systems do not interact, so each group's result is the same as alone; one loop over time steps
    instead of one per group: the numpy calls are the cost, not the arithmetic)."""
    xs, vs, qs = [], [], []
    for n_sims, seed in parts:
        rng = np.random.default_rng(seed)
        xs.append(rng.normal(0.0, loc_std, size=(n_sims, n_particles, 3)))
        v = rng.normal(size=(n_sims, n_particles, 3))
        vs.append(v * (vel_norm / np.linalg.norm(v, axis=-1, keepdims=True)))
        qs.append(rng.choice(np.array([1.0, -1.0]), size=(n_sims, n_particles)))
    x, v, q = np.concatenate(xs), np.concatenate(vs), np.concatenate(qs)
    n_sims = x.shape[0]

    pos = np.empty((n_sims, n_frames, n_particles, 3))
    vel = np.empty_like(pos)
    pos[:, 0], vel[:, 0] = x, v
    forces = _CoulombField(q, strength, clip)
    F, clipped = forces(x)
    half_dt = 0.5 * dt
    for step in range(1, (n_frames - 1) * sample_every + 1):
        v += half_dt * F
        x += dt * v
        F, c = forces(x)
        clipped |= c
        v += half_dt * F
        if step % sample_every == 0:
            pos[:, step // sample_every], vel[:, step // sample_every] = x, v
    out, start = [], 0
    for n, _ in parts:
        sl = slice(start, start + n)
        out.append(ChargedSimulation(pos[sl], vel[sl], q[sl], clipped[sl], dt, sample_every))
        start += n
    return out


def charged_dataset(n_samples: int, seed: int = 0, frame_in: int = 30, frame_out: int = 40,
                    n_particles: int = 5, dtype: torch.dtype = torch.float32, **sim_kwargs) -> dict:
    """The prediction task as tensors: state at ``frame_in`` -> positions at ``frame_out``.

    Returns a dict of tensors (``S = n_samples``, ``n = n_particles``):
    ``loc (S, n, 3)``, ``vel (S, n, 3)``, ``charges (S, n, 1)``, ``target (S, n, 3)``, and the numbers
    that say how far apart input and target are: ``frame_in``, ``frame_out``, ``sample_every`` (steps
    between frames) and ``dt`` (see :func:`prediction_horizon`). Only ``frame_out + 1`` frames are simulated.
    """
    return _datasets([(n_samples, seed)], frame_in, frame_out, n_particles, dtype, **sim_kwargs)[0]


_SIM_DEFAULTS = dict(sample_every=100, dt=0.001, clip=100.0, loc_std=1.0, vel_norm=0.5, strength=1.0)


def _datasets(parts, frame_in=30, frame_out=40, n_particles=5, dtype=torch.float32, **sim_kwargs) -> list[dict]:
    """:func:`charged_dataset` of several ``(n_samples, seed)`` groups, simulated in one integration."""
    frame_in = _check_positive_int("frame_in", frame_in, 0)
    frame_out = _check_positive_int("frame_out", frame_out, 1)
    if frame_out <= frame_in:
        raise ValueError(f"frame_out must be after frame_in, got frame_in={frame_in}, frame_out={frame_out}")
    unknown = set(sim_kwargs) - set(_SIM_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown simulator arguments {sorted(unknown)}; expected some of {sorted(_SIM_DEFAULTS)}")
    for n, _ in parts:
        _check_positive_int("n_samples", n)
    kw = {**_SIM_DEFAULTS, **sim_kwargs}
    # the same checks as simulate_charged
    _check_positive_int("n_particles", n_particles, 2)
    _check_positive_int("sample_every", kw["sample_every"])
    for name in ("dt", "loc_std", "vel_norm"):
        kw[name] = _check_positive_float(name, kw[name])
    if kw["clip"] is not None:
        kw["clip"] = _check_positive_float("clip", kw["clip"])
    sims = _simulate(parts, n_particles, frame_out + 1, kw["sample_every"], kw["dt"], kw["clip"], kw["loc_std"],
                     kw["vel_norm"], kw["strength"])
    t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)
    return [{"loc": t(sim.positions[:, frame_in]), "vel": t(sim.velocities[:, frame_in]),
             "charges": t(sim.charges[..., None]), "target": t(sim.positions[:, frame_out]),
             "frame_in": frame_in, "frame_out": frame_out, "sample_every": sim.sample_every, "dt": sim.dt}
            for sim in sims]


_TIME_KEYS = ("frame_in", "frame_out", "sample_every", "dt")


def prediction_horizon(split: dict) -> float:
    """Simulation time between input and target of a :func:`charged_dataset` dict:
    ``(frame_out - frame_in) * sample_every * dt`` (1.0 in the benchmark: 1000 steps of 0.001)."""
    missing = [k for k in _TIME_KEYS if k not in split]
    if missing:
        raise ValueError(f"split has no {', '.join(missing)}: expected a dict from charged_dataset or charged_splits")
    return (split["frame_out"] - split["frame_in"]) * split["sample_every"] * split["dt"]


class NBodyDataset(torch.utils.data.Dataset):
    """A map-style dataset over :func:`charged_dataset` tensors; items are ``(loc, vel, charges, target)``."""

    def __init__(self, tensors: dict):
        missing = {"loc", "vel", "charges", "target"} - set(tensors)
        if missing:
            raise ValueError(f"tensors is missing keys {sorted(missing)}; expected loc, vel, charges, target")
        self.tensors = tensors

    def __len__(self) -> int:
        return int(self.tensors["loc"].shape[0])

    def __getitem__(self, i):
        t = self.tensors
        return t["loc"][i], t["vel"][i], t["charges"][i], t["target"][i]


SMOKE_SYSTEMS = 100
"""Systems per split that :func:`charged_splits` simulates at most in a smoke run (`symviz run --smoke`)."""


def charged_splits(n_train: int = 3000, n_val: int = 2000, n_test: int = 2000, seed: int = 0,
                   cache: bool = True, **kwargs) -> dict[str, dict]:
    """Train/val/test dicts of :func:`charged_dataset`, each split from its own derived seed.

    With ``cache=True`` the tensors are stored in ``symviz.train.cache_dir()/nbody`` keyed by every
    argument, so a second call costs milliseconds. A smoke run (`symviz run --smoke`) simulates at most
    :data:`SMOKE_SYSTEMS` systems per split (full mode's 7,000 take minutes on a CPU; the sizes are in the key).
    """
    from symviz.train import smoke_cap

    sizes = {"train": n_train, "val": n_val, "test": n_test}
    for name, n in sizes.items():
        _check_positive_int(f"n_{name}", n)
    sizes = {name: smoke_cap(n, SMOKE_SYSTEMS) for name, n in sizes.items()}
    out, todo, paths = {}, [], {}
    for name, n in sizes.items():
        split_seed = int(seed) + _SPLIT_SEED_OFFSET[name]
        if cache:
            from symviz.train import cache_dir
            key = "_".join(f"{k}={kwargs[k]}" for k in sorted(kwargs))
            paths[name] = path = cache_dir() / "nbody" / f"charged_{name}_{n}_{split_seed}_{key}.pt"
            if path.exists():
                try:
                    data = torch.load(path, weights_only=True)
                    if all(k in data for k in _TIME_KEYS):   # files of older versions lack them: simulate again
                        out[name] = data
                        continue
                except Exception:  # corrupt cache file: simulate again and overwrite it
                    pass
        todo.append((name, n, split_seed))
    if todo:                     # the missing splits in one integration (each from its own seed, as alone)
        for (name, _, _), data in zip(todo, _datasets([(n, sd) for _, n, sd in todo], **kwargs)):
            out[name] = data
            if name in paths:
                path = paths[name]
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                torch.save(data, tmp)
                tmp.replace(path)
    return {name: out[name] for name in sizes}
